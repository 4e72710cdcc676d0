use catalogue::{
    app::App,
    config::{Cli, Command},
    load,
    runtime::{TaskList, runtime_builder, shutdown_signal},
    telemetry::{LogSink, Telemetry},
    upstream::simulator::UpstreamSimulator,
};
use clap::Parser;

catalogue::jemalloc_global_allocator!(); // heap profiling on, for /debug/pprof/heap

/// A start-up error is written once, as one line, and exits 1 (clap's own
/// errors exit 2 before this).
fn main() -> std::process::ExitCode {
    let Err(error) = run() else {
        return std::process::ExitCode::SUCCESS;
    };
    // Causes a message already quotes are not repeated.
    let mut message = error.to_string();
    for cause in error.chain().skip(1).map(ToString::to_string) {
        if !message.contains(&cause) {
            message = format!("{message}: {cause}");
        }
    }
    eprintln!("catalogue: {message}");
    std::process::ExitCode::FAILURE
}

fn run() -> anyhow::Result<()> {
    let command = Cli::parse().into_command();
    // Lists its live tasks for /debug/pprof/tasks.
    let tasks = TaskList::default();
    let runtime = tasks.record(&mut runtime_builder()).build()?;
    runtime.block_on(async {
        match command {
            Command::Serve(config) => {
                let telemetry =
                    Telemetry::init(&config.telemetry, LogSink::stdout())?.with_tasks(tasks);
                telemetry.set_global_default()?;
                let app = App::build(config, &telemetry).await?;
                app.run_until_stopped(shutdown_signal()).await?;
            }
            Command::Load(config) => {
                // Standard output is the summary's.
                Telemetry::logs_only(&config.logs, LogSink::stderr())?.set_global_default()?;
                let summary = load::run(&config).await?;
                summary.print(config.json)?;
            }
            Command::Upstream(config) => {
                Telemetry::logs_only(&config.logs, LogSink::stdout())?.set_global_default()?;
                let simulator = UpstreamSimulator::bind(&config).await?;
                simulator.run(shutdown_signal()).await?;
            }
        }
        Ok(())
    })
}
