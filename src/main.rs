use clap::Parser;

use catalogue::{
    app::{self, App},
    config::{Cli, Command, LoadConfig, ServeConfig},
    load,
    telemetry::{Telemetry, runtime::runtime_builder},
};

fn main() -> anyhow::Result<()> {
    let command = Cli::parse().into_command();
    runtime_builder().build()?.block_on(async {
        match command {
            Command::Serve(config) => serve(config).await,
            Command::Load(config) => drive(config).await,
        }
    })
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let sink = tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stdout);
    let mut telemetry = Telemetry::init(&config.telemetry, sink)?;
    let app = App::build(config, &mut telemetry).await?;
    tracing::info!(
        grpc = %app.grpc_addr(),
        admin = %app.admin_addr(),
        console = ?app.console_addr(),
        "catalogue is serving"
    );
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
