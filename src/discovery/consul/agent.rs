//! The agent HTTP client: the transport every call shares, and the health
//! endpoint's answer read into `Instance`s.

use std::{
    fmt::{self, Write as _},
    net::SocketAddr,
    time::Duration,
};

use reqwest::{Method, Url, header::CONTENT_TYPE};
use serde::Deserialize;

use super::{error::ConsulError, settings::ConsulAddr};

/// Timeout of a registration, a deregistration or a one-off health query;
/// a blocking query gets its `wait` on top.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// An agent is local: one that does not accept within this is not there.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The response header of a blocking query's index.
const INDEX_HEADER: &str = "x-consul-index";
/// Characters of an agent's error answer kept in the error.
const MAX_ERROR_BODY_CHARS: usize = 512;

/// One instance of a service: an IP address or DNS name, and a port.
/// Displays as `HOST:PORT` with an IPv6 address in brackets, so
/// `format!("http://{instance}")` is a valid URI.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instance {
    pub host: String,
    pub port: u16,
}

impl From<SocketAddr> for Instance {
    fn from(addr: SocketAddr) -> Self {
        Self {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A client of one Consul agent's HTTP API.
#[derive(Debug, Clone)]
pub struct ConsulClient {
    http: reqwest::Client,
    agent: ConsulAddr,
}

impl ConsulClient {
    /// A client of the agent at `agent`; it connects on first use.
    pub fn new(agent: ConsulAddr) -> Result<Self, ConsulError> {
        let http = reqwest::Client::builder()
            // A proxy from HTTP_PROXY has no business between an instance
            // and its local agent.
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(ConsulError::Client)?;
        Ok(Self { http, agent })
    }

    /// The agent this client talks to.
    pub fn agent(&self) -> &ConsulAddr {
        &self.agent
    }

    /// The instances of `service` whose checks all pass, sorted.
    pub async fn healthy_instances(&self, service: &str) -> Result<Vec<Instance>, ConsulError> {
        self.health(service, None)
            .await
            .map(|answer| answer.instances)
    }

    /// `GET /v1/health/service/:service?passing=true`, blocking on `index`
    /// for at most `wait` when `blocking` is `Some((index, wait))`.
    pub(super) async fn health(
        &self,
        service: &str,
        blocking: Option<(u64, Duration)>,
    ) -> Result<HealthAnswer, ConsulError> {
        let mut url = self.agent.endpoint(&["health", "service", service]);
        let mut timeout = REQUEST_TIMEOUT;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("passing", "true");
            if let Some((index, wait)) = blocking {
                query
                    .append_pair("index", &index.to_string())
                    .append_pair("wait", &go_duration(wait));
                timeout += wait + wait / 16;
            }
        }
        let answer = self.send(Method::GET, url.clone(), None, timeout).await?;
        let entries: Vec<HealthEntry> =
            serde_json::from_slice(&answer.body).map_err(|source| ConsulError::MalformedJson {
                url: url.to_string(),
                source,
            })?;
        let mut instances: Vec<Instance> = entries
            .into_iter()
            .filter_map(HealthEntry::instance)
            .collect();
        instances.sort();
        instances.dedup();
        Ok(HealthAnswer {
            url,
            index: answer.index,
            instances,
        })
    }

    pub(super) async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Answer, ConsulError> {
        let unreachable = |source| ConsulError::Unreachable {
            method: method.clone(),
            url: url.to_string(),
            source,
        };
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .timeout(timeout);
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let index = response
            .headers()
            .get(INDEX_HEADER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok());
        let body = response.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            let body = String::from_utf8_lossy(&body);
            return Err(ConsulError::Status {
                method,
                url: url.into(),
                status,
                body: body.trim().chars().take(MAX_ERROR_BODY_CHARS).collect(),
            });
        }
        Ok(Answer { index, body })
    }
}

/// A successful answer of the agent.
pub(super) struct Answer {
    /// `X-Consul-Index`, on endpoints that support blocking queries.
    index: Option<u64>,
    body: bytes::Bytes,
}

pub(super) struct HealthAnswer {
    pub(super) url: Url,
    pub(super) index: Option<u64>,
    pub(super) instances: Vec<Instance>,
}

/// One entry of the health endpoint's answer; of everything else Consul
/// sends, nothing is needed.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthEntry {
    node: HealthNode,
    service: HealthService,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthNode {
    #[serde(default)]
    address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthService {
    #[serde(default)]
    address: String,
    #[serde(default)]
    port: u16,
}

impl HealthEntry {
    /// At `Service.Address`, or at `Node.Address` when the service registered
    /// none (Consul then uses the agent's address); an entry without a port
    /// is no gRPC endpoint, and is left out.
    fn instance(self) -> Option<Instance> {
        let host = if self.service.address.is_empty() {
            self.node.address
        } else {
            self.service.address
        };
        (!host.is_empty() && self.service.port != 0).then_some(Instance {
            host,
            port: self.service.port,
        })
    }
}

/// A duration as Go's `time.ParseDuration` reads it, which is how Consul
/// takes intervals: whole seconds as hours, minutes and seconds ("10s",
/// "1m", "1m30s"), anything finer in milliseconds ("250ms").
pub(super) fn go_duration(duration: Duration) -> String {
    if duration.subsec_nanos() != 0 {
        return format!("{}ms", duration.as_millis());
    }
    let seconds = duration.as_secs();
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let mut text = String::new();
    if hours > 0 {
        let _ = write!(text, "{hours}h");
    }
    if minutes > 0 {
        let _ = write!(text, "{minutes}m");
    }
    if seconds > 0 || text.is_empty() {
        let _ = write!(text, "{seconds}s");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_the_way_go_parses_them() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(10), "10s"),
            (Duration::from_secs(60), "1m"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600 + 1), "1h1s"),
            (Duration::from_millis(1500), "1500ms"),
        ];
        for (duration, expected) in cases {
            assert_eq!(go_duration(duration), expected, "{duration:?}");
        }
    }

    #[test]
    fn a_service_without_an_address_is_at_its_node_and_one_without_a_port_is_left_out() {
        let entries: Vec<HealthEntry> = serde_json::from_value(serde_json::json!([
            {"Node": {"Address": "10.0.0.1"}, "Service": {"Address": "", "Port": 50051}},
            {"Node": {"Address": "10.0.0.2"}, "Service": {"Address": "10.0.0.9", "Port": 50051}},
            {"Node": {"Address": "10.0.0.3"}, "Service": {"Address": "10.0.0.3", "Port": 0}},
        ]))
        .unwrap();

        let instances: Vec<String> = entries
            .into_iter()
            .filter_map(HealthEntry::instance)
            .map(|instance| instance.to_string())
            .collect();

        assert_eq!(instances, ["10.0.0.1:50051", "10.0.0.9:50051"]);
    }
}
