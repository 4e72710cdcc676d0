use clap::Parser;

use catalogue::{
    app::{self, App},
    config::{Cli, Command, LoadConfig, ServeConfig, UpstreamSimulatorConfig},
    load,
    telemetry::{Telemetry, runtime::runtime_builder},
    upstream::simulator::UpstreamSimulator,
};

// jemalloc with heap profiling on, for /debug/pprof/heap.
catalogue::jemalloc_global_allocator!();

fn main() -> anyhow::Result<()> {
    let command = Cli::parse().into_command();
    runtime_builder().build()?.block_on(async {
        match command {
            Command::Serve(config) => serve(config).await,
            Command::Load(config) => drive(config).await,
            Command::Upstream(config) => simulate(config).await,
        }
    })
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let sink = tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stdout);
    let mut telemetry = Telemetry::init(&config.telemetry, sink)?;
    let app = App::build(config, &mut telemetry).await?;
    app.run_until_stopped(app::shutdown_signal()).await?;
    Ok(())
}

async fn drive(config: LoadConfig) -> anyhow::Result<()> {
    let summary = load::run(&config).await?;
    if config.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{summary}");
    }
    Ok(())
}

async fn simulate(config: UpstreamSimulatorConfig) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let simulator = UpstreamSimulator::bind(&config).await?;
    tracing::info!(
        grpc = %simulator.grpc_addr()?,
        admin = %simulator.admin_addr()?,
        latency_ms = config.latency_ms,
        error_rate = config.error_rate,
        hang_rate = config.hang_rate,
        "inventory upstream simulator is serving"
    );
    simulator.run(app::shutdown_signal()).await?;
    Ok(())
}
