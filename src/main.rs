use clap::Parser;

use catalogue::{
    app::{self, App},
    config::{Cli, Command, ServeConfig},
    telemetry,
};

// jemalloc with heap profiling on, for /debug/pprof/heap.
catalogue::jemalloc_global_allocator!();

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().into_command() {
        Command::Serve(config) => serve(config).await,
    }
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    telemetry::init(telemetry::subscriber(config.log_format, std::io::stdout));
    let app = App::build(config).await?;
    tracing::info!(grpc = %app.grpc_addr(), admin = %app.admin_addr(), "catalogue is serving");
    app.run_until_stopped(app::shutdown_signal()).await?;
    Ok(())
}
