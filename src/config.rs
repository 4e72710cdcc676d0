//! The only place that reads flags and environment. Every flag has an
//! environment variable; a flag beats its variable.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{admin::AdminToken, store::StoreOptions};

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
pub enum Command {
    /// Serve the catalogue over gRPC (the default).
    Serve(ServeConfig),
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

    /// Log line format; filter with RUST_LOG (default "info").
    #[arg(long, env = "CATALOGUE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

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
        let Command::Serve(config) = cli.into_command();
        assert_eq!(config.database_url, "memory");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Cli::try_parse_from(["catalogue", "--seed-products", "-1"]).is_err());
        assert!(Cli::try_parse_from(["catalogue", "serve", "--shutdown-grace", "soon"]).is_err());
        assert!(Cli::try_parse_from(["catalogue", "--admin-token", ""]).is_err());
    }
}
