//! The Consul flags (`--consul-*`) and the addresses they parse into.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use clap::Args;
use reqwest::Url;

use super::error::ConsulError;

/// Registration with a Consul agent; off unless `--consul-addr` is set.
#[derive(Debug, Clone, Args)]
pub struct ConsulConfig {
    /// Consul agent to register with, e.g. http://127.0.0.1:8500 (or
    /// 127.0.0.1:8500, as Consul's CLI takes it). Unset: no registration.
    /// Not Consul's own CONSUL_HTTP_ADDR: a shell set up for the consul CLI
    /// should not make every instance register.
    #[arg(long, env = "CATALOGUE_CONSUL_ADDR", value_parser = ConsulAddr::parse)]
    pub consul_addr: Option<ConsulAddr>,

    /// Service name to register under: the name clients resolve.
    #[arg(
        long,
        env = "CATALOGUE_CONSUL_SERVICE_NAME",
        default_value = "catalogue"
    )]
    pub consul_service_name: String,

    /// Address other hosts reach the gRPC listener at, HOST or HOST:PORT
    /// (default: --grpc-addr, which then must not be 0.0.0.0 or [::]).
    #[arg(long, env = "CATALOGUE_CONSUL_ADVERTISE_ADDR", value_parser = AdvertiseAddr::parse)]
    pub consul_advertise_addr: Option<AdvertiseAddr>,

    /// How often the agent calls the gRPC health check.
    #[arg(long, env = "CATALOGUE_CONSUL_CHECK_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub consul_check_interval: Duration,

    /// How long the check may stay critical before the agent removes the
    /// instance, should it die without deregistering (Consul's minimum: 1m).
    #[arg(long, env = "CATALOGUE_CONSUL_DEREGISTER_CRITICAL_SERVICE_AFTER", default_value = "1m", value_parser = humantime::parse_duration)]
    pub consul_deregister_critical_service_after: Duration,
}

/// The HTTP address of a Consul agent: `http://HOST:PORT`, or `HOST:PORT` as
/// Consul's own CLI takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsulAddr(Url);

impl ConsulAddr {
    /// Refuses https (this build has no TLS client), other schemes, and
    /// anything after the port.
    pub fn parse(addr: &str) -> Result<Self, ConsulError> {
        let invalid = |reason: &str| ConsulError::InvalidAddr {
            addr: addr.to_owned(),
            reason: reason.to_owned(),
        };
        let url = if addr.contains("://") {
            Url::parse(addr)
        } else {
            Url::parse(&format!("http://{addr}"))
        }
        .map_err(|error| invalid(&error.to_string()))?;
        match url.scheme() {
            "http" => {}
            "https" => {
                return Err(invalid(
                    "https is not supported (no TLS client in this build): \
                     talk to the local agent over http",
                ));
            }
            _ => return Err(invalid("the scheme must be http")),
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("nothing may follow HOST:PORT"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("credentials do not belong in the address"));
        }
        Ok(Self(url))
    }

    /// `/v1/` and then `segments`, each percent-encoded as one path segment.
    pub(super) fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.0.clone();
        url.path_segments_mut()
            .expect("an http url has path segments")
            .clear()
            .push("v1")
            .extend(segments);
        url
    }
}

impl fmt::Display for ConsulAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str().trim_end_matches('/'))
    }
}

/// Where other hosts reach this instance: `HOST` or `HOST:PORT` (an IPv6
/// address with a port in brackets). Without a port, the gRPC listener's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertiseAddr {
    pub(super) host: String,
    pub(super) port: Option<u16>,
}

impl AdvertiseAddr {
    /// Refuses an unspecified address (`0.0.0.0`, `::`), which reaches
    /// nothing, port 0, and hosts that are neither an IP address nor a DNS
    /// name.
    pub fn parse(addr: &str) -> Result<Self, ConsulError> {
        let invalid = |reason: &str| ConsulError::InvalidAdvertiseAddr {
            addr: addr.to_owned(),
            reason: reason.to_owned(),
        };
        let (host, port) = if let Ok(socket) = addr.parse::<SocketAddr>() {
            (socket.ip().to_string(), Some(socket.port()))
        } else if let Ok(ip) = addr.parse::<IpAddr>() {
            (ip.to_string(), None)
        } else if let Some((host, port)) = addr.rsplit_once(':') {
            let port = port
                .parse::<u16>()
                .map_err(|_| invalid("the port must be a number"))?;
            (host.to_owned(), Some(port))
        } else {
            (addr.to_owned(), None)
        };
        match host.parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() => {
                return Err(invalid("an unspecified address reaches nothing"));
            }
            Ok(_) => {}
            Err(_) if is_dns_name(&host) => {}
            Err(_) => return Err(invalid("the host must be an IP address or a DNS name")),
        }
        if port == Some(0) {
            return Err(invalid("port 0 is not a port to advertise"));
        }
        Ok(Self { host, port })
    }
}

fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_address_without_a_scheme_is_http() {
        for addr in [
            "127.0.0.1:8500",
            "http://127.0.0.1:8500",
            "http://127.0.0.1:8500/",
        ] {
            let parsed = ConsulAddr::parse(addr).expect(addr);
            assert_eq!(parsed.to_string(), "http://127.0.0.1:8500", "{addr}");
        }
        assert_eq!(
            ConsulAddr::parse("consul.internal:8500")
                .unwrap()
                .to_string(),
            "http://consul.internal:8500"
        );
    }

    #[test]
    fn an_agent_address_over_https_or_with_a_path_is_refused() {
        for addr in [
            "https://127.0.0.1:8501",
            "unix:///var/run/consul.sock",
            "http://127.0.0.1:8500/v1",
            "http://127.0.0.1:8500?dc=eu",
            "http://token@127.0.0.1:8500",
            "",
        ] {
            assert!(ConsulAddr::parse(addr).is_err(), "{addr:?} was accepted");
        }
        let error = ConsulAddr::parse("https://127.0.0.1:8501").unwrap_err();
        assert!(
            error.to_string().contains("https is not supported"),
            "{error}"
        );
    }

    #[test]
    fn endpoints_percent_encode_each_segment() {
        let agent = ConsulAddr::parse("127.0.0.1:8500").unwrap();
        assert_eq!(
            agent.endpoint(&["health", "service", "a b/c"]).as_str(),
            "http://127.0.0.1:8500/v1/health/service/a%20b%2Fc"
        );
    }

    #[test]
    fn an_advertise_address_takes_a_host_and_an_optional_port() {
        let cases = [
            ("10.1.2.3", "10.1.2.3", None),
            ("10.1.2.3:7000", "10.1.2.3", Some(7000)),
            ("fd00::7", "fd00::7", None),
            ("[fd00::7]:7000", "fd00::7", Some(7000)),
            ("catalogue-1.internal", "catalogue-1.internal", None),
            (
                "catalogue-1.internal:7000",
                "catalogue-1.internal",
                Some(7000),
            ),
        ];
        for (addr, host, port) in cases {
            let parsed = AdvertiseAddr::parse(addr).expect(addr);
            assert_eq!((parsed.host.as_str(), parsed.port), (host, port), "{addr}");
        }
    }

    #[test]
    fn an_advertise_address_that_reaches_nothing_is_refused() {
        for addr in [
            "0.0.0.0",
            "0.0.0.0:50051",
            "::",
            "[::]:50051",
            "host:0",
            "host:port",
            "a:b:c",
            "",
            "bad host",
        ] {
            assert!(AdvertiseAddr::parse(addr).is_err(), "{addr:?} was accepted");
        }
    }
}
