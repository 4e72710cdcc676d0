//! The only place that reads flags and environment. Every flag has an
//! environment variable; a flag beats its variable.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::store::StoreOptions;

/// An observability-first reference gRPC catalogue service.
#[derive(Debug, Parser)]
#[command(name = "catalogue", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// With no subcommand, `catalogue` serves.
    #[command(flatten)]
    pub serve: ServeConfig,
}

#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once at start; boxing buys nothing"
)]
pub enum Command {
    /// Serve the catalogue over gRPC (the default).
    Serve(ServeConfig),
    /// Drive a running catalogue with a weighted mix of calls.
    Load(LoadConfig),
}

impl Cli {
    /// The command to run, `serve` when none was named.
    pub fn into_command(self) -> Command {
        self.command.unwrap_or(Command::Serve(self.serve))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address of the gRPC server.
    #[arg(long, env = "CATALOGUE_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,

    /// Address of the HTTP admin server (/healthz, /readyz). Loopback by
    /// default: later it serves profiles, which reveal internals.
    #[arg(long, env = "CATALOGUE_ADMIN_ADDR", default_value = "127.0.0.1:6060")]
    pub admin_addr: SocketAddr,

    /// Where products live: sqlite://PATH (created on first start),
    /// postgres://USER@HOST/DB, or memory.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://catalogue.db")]
    pub database_url: String,

    /// Products seeded into an empty catalogue.
    #[arg(long, env = "CATALOGUE_SEED_PRODUCTS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub seed_products: u32,

    /// Maximum database connections.
    #[arg(long, env = "CATALOGUE_DB_POOL_SIZE", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_pool_size: u32,

    /// How long in-flight calls and streams may drain after SIGTERM/Ctrl-C.
    #[arg(long, env = "CATALOGUE_SHUTDOWN_GRACE", default_value = "10s",
          value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Largest request or response message, in bytes (grpc-go's default).
    #[arg(long, env = "CATALOGUE_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Concurrent HTTP/2 streams per connection.
    #[arg(long, env = "CATALOGUE_MAX_CONCURRENT_STREAMS", default_value_t = 200)]
    pub max_concurrent_streams: u32,

    #[command(flatten)]
    pub telemetry: TelemetryConfig,

    #[command(flatten)]
    pub faults: FaultsConfig,
}

/// Faults switched on at start; `PUT /faults` on the admin port changes them
/// at run time. All off by default.
#[derive(Debug, Clone, Default, Args)]
pub struct FaultsConfig {
    /// Added delay per call, in milliseconds.
    #[arg(long, env = "CATALOGUE_FAULT_LATENCY_MS")]
    pub fault_latency_ms: Option<u64>,
    /// Fraction of calls (0..1) failed with --fault-error-code.
    #[arg(long, env = "CATALOGUE_FAULT_ERROR_RATE")]
    pub fault_error_rate: Option<f64>,
    /// gRPC code name of injected errors (default UNAVAILABLE).
    #[arg(long, env = "CATALOGUE_FAULT_ERROR_CODE")]
    pub fault_error_code: Option<String>,
    /// Synchronous sleep inside the async handler, in milliseconds: the
    /// classic Tokio mistake.
    #[arg(long, env = "CATALOGUE_FAULT_BLOCKING_MS")]
    pub fault_blocking_ms: Option<u64>,
    /// Busy loop per call, in milliseconds.
    #[arg(long, env = "CATALOGUE_FAULT_CPU_BURN_MS")]
    pub fault_cpu_burn_ms: Option<u64>,
    /// Bytes retained per call until the faults are reset.
    #[arg(long, env = "CATALOGUE_FAULT_LEAK_BYTES_PER_CALL")]
    pub fault_leak_bytes_per_call: Option<u64>,
    /// Pause between streamed messages, in milliseconds.
    #[arg(long, env = "CATALOGUE_FAULT_SLOW_STREAM_MS")]
    pub fault_slow_stream_ms: Option<u64>,
    /// Limit the faults to these methods (comma separated, e.g. GetProduct).
    #[arg(long, env = "CATALOGUE_FAULT_METHODS", value_delimiter = ',')]
    pub fault_methods: Option<Vec<String>>,
}

/// `catalogue load`: open loop with --rps, closed loop with --concurrency.
#[derive(Debug, Clone, Args)]
pub struct LoadConfig {
    /// The catalogue to drive.
    #[arg(
        long,
        env = "CATALOGUE_LOAD_TARGET",
        default_value = "http://127.0.0.1:50051"
    )]
    pub target: String,

    /// HTTP/2 connections to spread calls over.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub connections: u32,

    /// Weighted mix of calls, e.g. get=80,list=10,search=10.
    #[arg(long, default_value = "get=80,list=10,search=10")]
    pub mix: crate::load::Mix,

    /// Open loop: calls per second, sent on schedule whatever the latency
    /// (latency counts from the intended send time).
    #[arg(long, conflicts_with = "concurrency")]
    pub rps: Option<f64>,

    /// Closed loop: calls in flight at once (the default, 16).
    #[arg(long)]
    pub concurrency: Option<u32>,

    /// How long to run.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// Deadline of each call (sent as grpc-timeout).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub deadline: Duration,

    /// Most calls in flight in open-loop mode; beyond it sends are skipped
    /// and counted, so a stalled server cannot make the client unbounded.
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,

    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Which signals to produce, and where to send them. Each can be turned off
/// so that its cost can be measured.
#[derive(Debug, Clone, Args)]
pub struct TelemetryConfig {
    /// Log line format; filter with RUST_LOG (default "info").
    #[arg(long, env = "CATALOGUE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// OTLP/gRPC collector to export traces to, e.g. http://127.0.0.1:4317.
    /// Unset: no traces are exported. The other standard OTEL_* variables
    /// (OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG, OTEL_RESOURCE_ATTRIBUTES,
    /// OTEL_EXPORTER_OTLP_TIMEOUT, ...) are read by the OpenTelemetry SDK.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// `service.name` of exported traces.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "catalogue")]
    pub service_name: String,

    /// Trace health checks and reflection calls too (off: they would drown
    /// real traffic).
    #[arg(long, env = "CATALOGUE_TRACE_HEALTH_CHECKS")]
    pub trace_health_checks: bool,

    /// Address tokio-console attaches to.
    #[arg(long, env = "CATALOGUE_CONSOLE_ADDR", default_value = "127.0.0.1:6669")]
    pub console_addr: SocketAddr,

    /// Do not serve tokio-console (its instrumentation has a cost under load).
    #[arg(long, env = "CATALOGUE_NO_CONSOLE")]
    pub no_console: bool,

    /// Do not export Tokio runtime, task and process metrics (sampled on
    /// each scrape of /metrics).
    #[arg(long, env = "CATALOGUE_NO_RUNTIME_METRICS")]
    pub no_runtime_metrics: bool,
}

impl ServeConfig {
    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            database_url: self.database_url.clone(),
            seed_products: self.seed_products,
            pool_size: self.db_pool_size,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_subcommand_means_serve_with_top_level_flags() {
        let cli = Cli::try_parse_from(["catalogue", "--database-url", "memory"]).unwrap();
        let Command::Serve(config) = cli.into_command() else {
            panic!("not serve");
        };
        assert_eq!(config.database_url, "memory");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Cli::try_parse_from(["catalogue", "--seed-products", "-1"]).is_err());
        assert!(Cli::try_parse_from(["catalogue", "serve", "--shutdown-grace", "soon"]).is_err());
    }
}
