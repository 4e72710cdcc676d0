use catalogue::{
    app::{self, App},
    config::{Cli, Command},
    load,
    telemetry::{LogSink, Telemetry, runtime::runtime_builder, tasks::TaskList},
    upstream::simulator::UpstreamSimulator,
};
use clap::Parser;

catalogue::jemalloc_global_allocator!(); // heap profiling on, for /debug/pprof/heap

fn main() -> anyhow::Result<()> {
    let command = Cli::parse().into_command();
    // Lists its live tasks for /debug/pprof/tasks.
    let tasks = TaskList::default();
    let runtime = tasks.record(&mut runtime_builder()).build()?;
    runtime.block_on(async {
        match command {
            Command::Serve(config) => {
                let mut telemetry =
                    Telemetry::init(&config.telemetry, LogSink::stdout())?.with_tasks(tasks);
                telemetry.set_global_default()?;
                let app = App::build(config, &mut telemetry).await?;
                app.run_until_stopped(app::shutdown_signal()).await?;
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
                simulator.run(app::shutdown_signal()).await?;
            }
        }
        Ok(())
    })
}
