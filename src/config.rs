//! The only place that reads flags and environment. Every flag has an
//! environment variable; a flag beats its variable.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    admin::AdminToken, discovery::consul::ConsulConfig, store::StoreOptions,
    telemetry::sampling::SamplerKind,
};

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
    /// Run a simulator of the inventory upstream.
    Upstream(UpstreamSimulatorConfig),
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

    /// Address of the HTTP admin server (/healthz, /readyz, /debug/pprof/).
    /// Loopback by default: profiles reveal internals.
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

    /// How long the server keeps serving after SIGTERM/Ctrl-C with health
    /// NOT_SERVING and /readyz failing, before it stops accepting calls:
    /// time for balancers watching its health to stop sending new ones.
    #[arg(long, env = "CATALOGUE_DRAIN_DELAY", default_value = "1s",
          value_parser = humantime::parse_duration)]
    pub drain_delay: Duration,

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

    /// Bearer token the admin server's /debug/* routes require
    /// (`Authorization: Bearer TOKEN`); /healthz and /readyz stay open.
    #[arg(long, env = "CATALOGUE_ADMIN_TOKEN", hide_env_values = true,
          value_parser = AdminToken::parse)]
    pub admin_token: Option<AdminToken>,
    #[command(flatten)]
    pub telemetry: TelemetryConfig,

    #[command(flatten)]
    pub faults: FaultsConfig,

    #[command(flatten)]
    pub upstream: UpstreamConfig,

    #[command(flatten)]
    pub protection: ProtectionConfig,

    #[command(flatten)]
    pub consul: ConsulConfig,
}

/// The inventory upstream GetProduct enriches products with, and how far it
/// is trusted.
#[derive(Debug, Clone, Args)]
pub struct UpstreamConfig {
    /// Inventory upstream (gRPC), e.g. http://127.0.0.1:50052. Unset: stock
    /// comes from the store.
    #[arg(long, env = "CATALOGUE_UPSTREAM_URL")]
    pub upstream_url: Option<String>,

    /// Timeout of an upstream call when the caller set no deadline.
    #[arg(long, env = "CATALOGUE_UPSTREAM_TIMEOUT", default_value = "1s",
          value_parser = humantime::parse_duration)]
    pub upstream_timeout: Duration,

    /// Kept from the caller's deadline to answer with stale stock in time.
    #[arg(long, env = "CATALOGUE_UPSTREAM_DEADLINE_MARGIN", default_value = "20ms",
          value_parser = humantime::parse_duration)]
    pub upstream_deadline_margin: Duration,

    /// Bulkhead: upstream calls in flight at once.
    #[arg(long, env = "CATALOGUE_UPSTREAM_MAX_CONCURRENCY", default_value_t = 64)]
    pub upstream_max_concurrency: usize,

    /// How long a call waits for a bulkhead slot before degrading.
    #[arg(long, env = "CATALOGUE_UPSTREAM_BULKHEAD_WAIT", default_value = "10ms",
          value_parser = humantime::parse_duration)]
    pub upstream_bulkhead_wait: Duration,

    /// Failure ratio (0..1) over a window that opens the circuit breaker.
    #[arg(long, env = "CATALOGUE_BREAKER_FAILURE_RATIO", default_value_t = 0.5)]
    pub breaker_failure_ratio: f64,

    /// Calls a window needs before its failure ratio counts.
    #[arg(long, env = "CATALOGUE_BREAKER_MIN_REQUESTS", default_value_t = 20)]
    pub breaker_min_requests: u32,

    /// Length of the breaker's counting window while closed.
    #[arg(long, env = "CATALOGUE_BREAKER_INTERVAL", default_value = "10s",
          value_parser = humantime::parse_duration)]
    pub breaker_interval: Duration,

    /// How long the breaker stays open before probing.
    #[arg(long, env = "CATALOGUE_BREAKER_OPEN_TIMEOUT", default_value = "5s",
          value_parser = humantime::parse_duration)]
    pub breaker_open_timeout: Duration,

    /// Probe calls admitted while half-open; that many successes close it.
    #[arg(long, env = "CATALOGUE_BREAKER_PROBES", default_value_t = 3)]
    pub breaker_probes: u32,
}

/// Server-side overload protection. The defaults are safe for a 2-core
/// machine.
#[derive(Debug, Clone, Args)]
pub struct ProtectionConfig {
    /// Calls handled at once across all connections; calls beyond it are
    /// refused at once with UNAVAILABLE (health checks are never refused).
    #[arg(long, env = "CATALOGUE_MAX_CONCURRENT_CALLS", default_value_t = 1024)]
    pub max_concurrent_calls: usize,

    /// `grpc-retry-pushback-ms` sent with a refused call.
    #[arg(long, env = "CATALOGUE_RETRY_PUSHBACK", default_value = "100ms",
          value_parser = humantime::parse_duration)]
    pub retry_pushback: Duration,

    /// Longest a call may take when the client sets no shorter grpc-timeout.
    #[arg(long, env = "CATALOGUE_REQUEST_TIMEOUT", default_value = "10s",
          value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// A call whose client reads nothing for this long (its flow-control
    /// window stays shut) gives back its slot and ends with
    /// DEADLINE_EXCEEDED. Time the server spends producing does not count.
    #[arg(long, env = "CATALOGUE_STREAM_IDLE_TIMEOUT", default_value = "30s",
          value_parser = humantime::parse_duration)]
    pub stream_idle_timeout: Duration,

    /// Open client connections; connections beyond it are closed at once.
    #[arg(long, env = "CATALOGUE_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// Turn every protection off (concurrency limit, request timeout, idle
    /// timeout, connection limit, bulkhead, breaker): the Go-style failure mode, for
    /// the overload experiment only.
    #[arg(long, env = "CATALOGUE_NO_PROTECTION")]
    pub no_protection: bool,
}

/// `catalogue upstream`: the inventory simulator.
#[derive(Debug, Clone, Args)]
pub struct UpstreamSimulatorConfig {
    /// gRPC address of the simulator.
    #[arg(long, default_value = "127.0.0.1:50052")]
    pub addr: SocketAddr,
    /// Admin address (`GET`/`PUT`/`DELETE /faults`).
    #[arg(long, default_value = "127.0.0.1:6061")]
    pub admin_addr: SocketAddr,
    /// Latency of every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Extra random latency, up to this many milliseconds.
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,
    /// Fraction (0..1) of calls answered UNAVAILABLE.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Fraction (0..1) of calls never answered.
    #[arg(long, default_value_t = 0.0)]
    pub hang_rate: f64,
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
    /// The catalogue to drive: a URL, several (comma separated),
    /// dns:///HOST:PORT for every address a name resolves to, or
    /// consul://AGENT:PORT/SERVICE for the instances whose checks pass. Calls are
    /// balanced over the replicas whose health check says SERVING.
    #[arg(
        long,
        env = "CATALOGUE_LOAD_TARGET",
        default_value = "http://127.0.0.1:50051"
    )]
    pub target: String,

    /// Attempts after the first for a call refused with UNAVAILABLE or cut
    /// off by a broken connection (every
    /// call is a read, safe to repeat); 0 turns retries off.
    #[arg(long, default_value_t = 2)]
    pub retries: u32,

    /// HTTP/2 connections to each replica.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub connections: u32,

    /// Weighted mix of calls, e.g. get=80,list=10,search=10 (also health:
    /// the standard health check).
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

    /// Page size of every ListProducts call; 0 picks one at random (10–200),
    /// with some streams read slowly and some cancelled. A fixed size reads
    /// every stream to its end at full speed (for benchmarks).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=1000))]
    pub list_page_size: i32,

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
    /// Unset: no traces are exported (and no call makes a span). The other
    /// standard OTEL_* variables (OTEL_RESOURCE_ATTRIBUTES,
    /// OTEL_EXPORTER_OTLP_TIMEOUT, OTEL_BSP_*, ...) are read by the
    /// OpenTelemetry SDK.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Which calls are traced, decided as each arrives (OpenTelemetry's
    /// sampler names): parentbased_* follow the caller's sampled flag when
    /// it sent a traceparent.
    #[arg(long, env = "OTEL_TRACES_SAMPLER", value_enum,
          default_value_t = SamplerKind::ParentBasedAlwaysOn)]
    pub trace_sampler: SamplerKind,

    /// The ratio samplers' share of new traces, 0..1.
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", default_value_t = 1.0,
          value_parser = ratio)]
    pub trace_sampler_arg: f64,

    /// This replica's name: the `instance_id` label of
    /// `catalogue_build_info` and the traces' `service.instance.id`.
    /// Default: HOSTNAME/PID.
    #[arg(long, env = "CATALOGUE_INSTANCE_ID")]
    pub instance_id: Option<String>,

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

    /// Serve tokio-console. Off by default: its instrumentation halves
    /// throughput under load, and with it on, tracing-subscriber can panic
    /// creating a span whose parent one layer filtered out
    /// (tokio-rs/tracing#3406).
    #[arg(long, env = "CATALOGUE_CONSOLE")]
    pub console: bool,

    /// Do not export Tokio runtime, task and process metrics (sampled on
    /// each scrape of /metrics).
    #[arg(long, env = "CATALOGUE_NO_RUNTIME_METRICS")]
    pub no_runtime_metrics: bool,
}

fn ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(format!("{text:?} is not a ratio between 0 and 1")),
    }
}

impl TelemetryConfig {
    /// `--instance-id`, or HOSTNAME/PID: unique among the replicas on one
    /// host, and among pods (whose host name is the pod's name).
    pub fn instance_id(&self) -> String {
        self.instance_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|name| name.trim().to_owned())
                .or_else(|_| std::env::var("HOSTNAME"))
                .unwrap_or_else(|_| "localhost".to_owned());
            format!("{host}/{}", std::process::id())
        })
    }
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
        assert!(Cli::try_parse_from(["catalogue", "--admin-token", ""]).is_err());
        assert!(Cli::try_parse_from(["catalogue", "--trace-sampler-arg", "1.5"]).is_err());
        assert!(Cli::try_parse_from(["catalogue", "--trace-sampler", "sometimes"]).is_err());
        assert!(
            Cli::try_parse_from(["catalogue", "--consul-addr", "https://consul:8501"]).is_err()
        );
        assert!(Cli::try_parse_from(["catalogue", "--consul-advertise-addr", "0.0.0.0"]).is_err());
    }

    #[test]
    fn consul_registration_has_defaults_beside_the_agent_address() {
        let cli = Cli::try_parse_from(["catalogue", "--consul-addr", "127.0.0.1:8500"]).unwrap();
        let Command::Serve(config) = cli.into_command() else {
            panic!("not serve");
        };
        let consul = config.consul;
        assert_eq!(
            consul.consul_addr.map(|addr| addr.to_string()).as_deref(),
            Some("http://127.0.0.1:8500")
        );
        assert_eq!(consul.consul_service_name, "catalogue");
        assert_eq!(consul.consul_advertise_addr, None);
        assert_eq!(consul.consul_check_interval, Duration::from_secs(10));
        assert_eq!(
            consul.consul_deregister_critical_service_after,
            Duration::from_secs(60)
        );
    }
}
