//! The admin server's flags.

use std::{net::SocketAddr, time::Duration};

use clap::Args;

use super::{guard::AdminToken, server::AdminLimits};

/// Where the admin server listens and who may call it.
#[derive(Debug, Clone, Args)]
pub struct AdminConfig {
    /// Address of the HTTP admin server (/metrics, /healthz, /readyz,
    /// /faults, /debug/pprof/). Loopback by default: a non-loopback address
    /// needs --admin-token (or --admin-insecure).
    #[arg(long, env = "CATALOGUE_ADMIN_ADDR", default_value = "127.0.0.1:6060")]
    pub admin_addr: SocketAddr,

    /// Bearer token every admin route but /healthz, /readyz and /metrics
    /// requires (`Authorization: Bearer TOKEN`).
    #[arg(long, env = "CATALOGUE_ADMIN_TOKEN", hide_env_values = true,
          value_parser = AdminToken::parse)]
    pub admin_token: Option<AdminToken>,

    /// Serve the admin port on a non-loopback --admin-addr without
    /// --admin-token, on purpose (a private network such as compose's).
    #[arg(long, env = "CATALOGUE_ADMIN_INSECURE", value_parser = clap::builder::BoolishValueParser::new())]
    pub admin_insecure: bool,

    /// Admin connections open at once; one more is closed as it is accepted.
    #[arg(long, env = "CATALOGUE_ADMIN_MAX_CONNECTIONS", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub admin_max_connections: u32,

    /// An admin connection that has not sent a whole request head this long
    /// after it opened (or after its last answer) is closed.
    #[arg(long, env = "CATALOGUE_ADMIN_HEADER_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub admin_header_timeout: Duration,
}

/// Why the admin settings are refused at start.
#[derive(Debug, thiserror::Error)]
#[error(
    "--admin-addr {0} is not a loopback address and no --admin-token is set: anyone who \
     reaches it could change faults and take profiles; set --admin-token, or pass \
     --admin-insecure to serve it unauthenticated on purpose"
)]
pub struct InsecureAdmin(SocketAddr);

impl AdminConfig {
    /// Refuses an unauthenticated admin port reachable from other hosts,
    /// unless `--admin-insecure` says so.
    pub fn check(&self) -> Result<(), InsecureAdmin> {
        if self.admin_addr.ip().is_loopback() || self.admin_token.is_some() || self.admin_insecure {
            return Ok(());
        }
        Err(InsecureAdmin(self.admin_addr))
    }

    /// The admin server's bounds, as the flags set them.
    pub fn limits(&self) -> AdminLimits {
        AdminLimits {
            max_connections: self.admin_max_connections as usize,
            header_timeout: self.admin_header_timeout,
        }
    }
}
