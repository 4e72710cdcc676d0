//! The command line: `Cli` composes the flags each subsystem defines for
//! itself (`AdminConfig`, `TelemetryConfig`, `FaultsConfig`, `UpstreamConfig`,
//! `ProtectionConfig`, `ConsulConfig`, `LoadConfig`,
//! `UpstreamSimulatorConfig`) with the server's own. Every flag has an
//! environment variable, and a flag beats its variable. Values are parsed
//! into their types here, at the edge: a bad one ends start-up with status
//! 2 and a message naming the flag. Only `main` and `app` import this
//! module; the subsystems never do.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    admin::AdminConfig,
    discovery::consul::ConsulConfig,
    faults::FaultsConfig,
    load::LoadConfig,
    protection::ProtectionConfig,
    store::StoreOptions,
    telemetry::TelemetryConfig,
    upstream::{UpstreamConfig, simulator::UpstreamSimulatorConfig},
    values::positive_duration,
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

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address of the gRPC server.
    #[arg(long, env = "CATALOGUE_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,

    /// Address of the health lane: gRPC health Check (the gRPC port's
    /// statuses) answered on its own thread and runtime, so that probes are
    /// answered while a flood saturates the gRPC port's workers; what
    /// Kubernetes probes. NOT_SERVING as well once the main runtime has not
    /// run for --health-stall-limit, and from the shutdown on.
    #[arg(long, env = "CATALOGUE_HEALTH_ADDR", default_value = "127.0.0.1:50050")]
    pub health_addr: SocketAddr,

    /// No health lane: health is answered on the gRPC port only.
    #[arg(long, env = "CATALOGUE_NO_HEALTH_LANE", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_health_lane: bool,

    /// The health lane answers NOT_SERVING once the main runtime has not
    /// run its heartbeat (every 250 ms) for this long: a wedged process
    /// leaves rotation, a saturated one (beats a few hundred ms late) stays.
    #[arg(long, env = "CATALOGUE_HEALTH_STALL_LIMIT", default_value = "10s", value_parser = positive_duration)]
    pub health_stall_limit: Duration,

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

    /// Longest a call waits for a database connection from the pool (less
    /// than --request-timeout, so a saturated pool fails calls, not waits
    /// them out).
    #[arg(long, env = "CATALOGUE_DB_ACQUIRE_TIMEOUT", default_value = "1s", value_parser = positive_duration)]
    pub db_acquire_timeout: Duration,

    /// Longest one SQL statement may run (PostgreSQL's statement_timeout;
    /// for SQLite, the longest wait for a lock).
    #[arg(long, env = "CATALOGUE_DB_STATEMENT_TIMEOUT", default_value = "5s", value_parser = positive_duration)]
    pub db_statement_timeout: Duration,

    /// How often the store is pinged in the background: while it fails,
    /// the catalogue service's gRPC health is NOT_SERVING (the server's, "",
    /// stays SERVING: a liveness probe must not restart a pod for its
    /// database's outage).
    #[arg(long, env = "CATALOGUE_STORE_HEALTH_INTERVAL", default_value = "2s", value_parser = positive_duration)]
    pub store_health_interval: Duration,

    /// How long the server keeps serving after SIGTERM/Ctrl-C with health
    /// NOT_SERVING and /readyz failing, before it stops accepting calls:
    /// time for balancers watching its health to stop sending new ones.
    #[arg(long, env = "CATALOGUE_DRAIN_DELAY", default_value = "1s", value_parser = humantime::parse_duration)]
    pub drain_delay: Duration,

    /// How long in-flight calls and streams may drain after SIGTERM/Ctrl-C.
    #[arg(long, env = "CATALOGUE_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Largest response message, in bytes (grpc-go's default); requests are
    /// decoded up to 64 KiB.
    #[arg(long, env = "CATALOGUE_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Concurrent HTTP/2 streams per connection.
    #[arg(long, env = "CATALOGUE_MAX_CONCURRENT_STREAMS", default_value_t = 200)]
    pub max_concurrent_streams: u32,

    /// Once serving, write the bound addresses here as one JSON object
    /// ({"grpc", "admin", "health", "console"}), atomically: scripts start the server
    /// on port 0 and read where it listens from this file.
    #[arg(long, env = "CATALOGUE_READY_FILE")]
    pub ready_file: Option<PathBuf>,

    #[command(flatten)]
    pub admin: AdminConfig,

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

impl ServeConfig {
    pub(crate) fn store_options(&self) -> StoreOptions {
        StoreOptions {
            database_url: self.database_url.clone(),
            seed_products: self.seed_products,
            pool_size: self.db_pool_size,
            acquire_timeout: self.db_acquire_timeout,
            statement_timeout: self.db_statement_timeout,
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
