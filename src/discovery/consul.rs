//! Consul: registering this instance with an agent, and resolving the healthy
//! instances of a service.
//!
//! The agent's HTTP API, as Consul documents it:
//! - `PUT /v1/agent/service/register`: the service definition, with a gRPC
//!   health check on the catalogue's health service (`Registrar::register`);
//! - `PUT /v1/agent/service/deregister/:service_id` (`Registrar::deregister`);
//! - `GET /v1/health/service/:service?passing=true`, once
//!   (`ConsulClient::healthy_instances`) or as blocking queries (`index` and
//!   `wait` parameters, `X-Consul-Index` header: `ConsulClient::watch`).
//!
//! Plain HTTP to an agent, normally the one on the same host: no TLS, no ACL
//! token.

use std::{
    collections::BTreeMap,
    fmt::{self, Write as _},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use futures::Stream;
use reqwest::{Method, StatusCode, Url, header::CONTENT_TYPE};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::ConsulConfig;

/// Timeout of a registration, a deregistration or a one-off health query;
/// a blocking query gets its `wait` on top.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// An agent is local: one that does not accept within this is not there.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The tag every registration carries.
const TAG: &str = "grpc";
/// The response header of a blocking query's index.
const INDEX_HEADER: &str = "x-consul-index";
/// Longest pause of a watch between failed queries.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Characters of an agent's error answer kept in the error.
const MAX_ERROR_BODY_CHARS: usize = 512;

/// What can go wrong reading Consul flags or talking to an agent.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    #[error("invalid consul address {addr:?}: {reason}")]
    InvalidAddr { addr: String, reason: String },
    #[error("invalid consul target {target:?}: {reason} (expected consul://HOST:PORT/SERVICE)")]
    InvalidTarget { target: String, reason: String },
    #[error("invalid advertise address {addr:?}: {reason}")]
    InvalidAdvertiseAddr { addr: String, reason: String },
    #[error(
        "the gRPC server listens on every interface ({0}), which is no address to \
         advertise: set --consul-advertise-addr to the address other hosts reach it at"
    )]
    UnspecifiedAdvertiseAddr(SocketAddr),
    #[error("could not build the consul HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("{method} {url}: consul agent unreachable: {source}")]
    Unreachable {
        method: Method,
        url: String,
        source: reqwest::Error,
    },
    #[error("{method} {url}: consul agent answered {status}: {body}")]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("{url}: consul agent sent malformed JSON: {source}")]
    MalformedJson {
        url: String,
        source: serde_json::Error,
    },
    #[error("{url}: consul agent sent no X-Consul-Index header, so the watch cannot block")]
    MissingIndex { url: String },
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
    fn endpoint(&self, segments: &[&str]) -> Url {
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

/// `consul://HOST:PORT/SERVICE`: the healthy instances of SERVICE as the
/// agent at HOST:PORT knows them (what `catalogue load --target` takes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsulTarget {
    pub agent: ConsulAddr,
    pub service: String,
}

impl ConsulTarget {
    /// How a target naming Consul starts.
    pub const PREFIX: &str = "consul://";

    /// Refuses anything but `consul://HOST:PORT/SERVICE`, SERVICE one path
    /// segment.
    pub fn parse(target: &str) -> Result<Self, ConsulError> {
        let invalid = |reason: &str| ConsulError::InvalidTarget {
            target: target.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = target
            .strip_prefix(Self::PREFIX)
            .ok_or_else(|| invalid("the scheme must be consul"))?;
        let (authority, service) = rest
            .split_once('/')
            .ok_or_else(|| invalid("no service name"))?;
        if authority.is_empty() {
            return Err(invalid("no agent address"));
        }
        if service.is_empty()
            || service
                .chars()
                .any(|c| matches!(c, '/' | '?' | '#') || c.is_whitespace())
        {
            return Err(invalid("the service name must be one path segment"));
        }
        let agent = ConsulAddr::parse(&format!("http://{authority}"))
            .map_err(|error| invalid(&error.to_string()))?;
        Ok(Self {
            agent,
            service: service.to_owned(),
        })
    }
}

/// Where other hosts reach this instance: `HOST` or `HOST:PORT` (an IPv6
/// address with a port in brackets). Without a port, the gRPC listener's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertiseAddr {
    host: String,
    port: Option<u16>,
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

/// One instance of a service: an IP address or DNS name, and a port.
/// Displays as `HOST:PORT` with an IPv6 address in brackets, so
/// `format!("http://{instance}")` is a valid URI.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instance {
    pub host: String,
    pub port: u16,
}

impl Instance {
    /// The socket address, when the host is an IP address (a DNS name needs
    /// resolving first).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip = self.host.parse::<IpAddr>().ok()?;
        Some(SocketAddr::new(ip, self.port))
    }
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

/// What this instance tells the agent about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The logical name clients resolve.
    pub service_name: String,
    /// `NAME-HOST-PORT`. Unique per agent, so replicas on one host do not
    /// replace each other, and stable, so a restarted instance replaces its
    /// own earlier registration instead of adding a second.
    pub service_id: String,
    /// Where other hosts reach the gRPC listener; the agent's health check
    /// calls it there too.
    pub instance: Instance,
    /// The gRPC health service the check asks about: the catalogue's, not
    /// the server's (""), so the check fails as soon as a draining instance
    /// turns it NOT_SERVING.
    pub health_service: String,
    pub check_interval: Duration,
    /// How long the check may stay critical before the agent removes the
    /// instance: the backstop for a process that died without deregistering.
    pub deregister_critical_service_after: Duration,
}

impl Registration {
    /// The registration of the gRPC listener bound at `grpc_addr`: at the
    /// advertise address if one is configured, else at `grpc_addr`, which
    /// then must not be unspecified (`0.0.0.0` tells other hosts nothing).
    pub fn new(
        config: &ConsulConfig,
        grpc_addr: SocketAddr,
        health_service: &str,
    ) -> Result<Self, ConsulError> {
        let instance = match &config.consul_advertise_addr {
            Some(advertised) => Instance {
                host: advertised.host.clone(),
                port: advertised.port.unwrap_or(grpc_addr.port()),
            },
            None if grpc_addr.ip().is_unspecified() => {
                return Err(ConsulError::UnspecifiedAdvertiseAddr(grpc_addr));
            }
            None => Instance::from(grpc_addr),
        };
        Ok(Self {
            service_id: service_id(&config.consul_service_name, &instance),
            service_name: config.consul_service_name.clone(),
            instance,
            health_service: health_service.to_owned(),
            check_interval: config.consul_check_interval,
            deregister_critical_service_after: config.consul_deregister_critical_service_after,
        })
    }

    /// The body of `PUT /v1/agent/service/register`, in Consul's names.
    fn definition(&self) -> ServiceDefinition<'_> {
        ServiceDefinition {
            name: &self.service_name,
            id: &self.service_id,
            address: &self.instance.host,
            port: self.instance.port,
            tags: [TAG],
            meta: BTreeMap::from([("version", env!("CARGO_PKG_VERSION"))]),
            check: CheckDefinition {
                grpc: format!("{}/{}", self.instance, self.health_service),
                grpc_use_tls: false,
                interval: go_duration(self.check_interval),
                deregister_critical_service_after: go_duration(
                    self.deregister_critical_service_after,
                ),
            },
        }
    }
}

/// `NAME-HOST-PORT`, anything but ASCII letters, digits, `.`, `-` and `_`
/// (an IPv6 address's colons) turned into `-`, so that the ID is one plain
/// path segment of the deregister URL.
fn service_id(name: &str, instance: &Instance) -> String {
    format!("{name}-{}-{}", instance.host, instance.port)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceDefinition<'a> {
    name: &'a str,
    #[serde(rename = "ID")]
    id: &'a str,
    address: &'a str,
    port: u16,
    tags: [&'static str; 1],
    meta: BTreeMap<&'static str, &'static str>,
    check: CheckDefinition,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CheckDefinition {
    /// `HOST:PORT/SERVICE`: the standard gRPC health check of SERVICE.
    #[serde(rename = "GRPC")]
    grpc: String,
    #[serde(rename = "GRPCUseTLS")]
    grpc_use_tls: bool,
    interval: String,
    deregister_critical_service_after: String,
}

/// Registers this instance with the agent once it serves, and deregisters it
/// first thing at shutdown, before health turns NOT_SERVING and the drain
/// begins, so that clients resolving through Consul stop picking it while it
/// still answers.
///
/// A registration that fails fails start-up, with the agent's answer in the
/// error. With `--consul-addr` set, Consul is how clients find this
/// instance: one that serves unregistered is capacity nobody uses, and a
/// warning in its log is easily missed, while a mistyped address or a
/// refused definition is best seen at once. An agent that is not up yet is
/// the supervisor's to retry (a restart with backoff), as for a database
/// that is not up yet.
///
/// A deregistration that fails is the caller's to log: shutdown goes on, the
/// check fails from the moment health turns NOT_SERVING, and the agent
/// removes the instance after `deregister_critical_service_after`.
#[derive(Debug, Clone)]
pub struct Registrar {
    client: ConsulClient,
    registration: Registration,
}

impl Registrar {
    /// `None` when no agent is configured.
    pub fn from_config(
        config: &ConsulConfig,
        grpc_addr: SocketAddr,
        health_service: &str,
    ) -> Result<Option<Self>, ConsulError> {
        let Some(agent) = &config.consul_addr else {
            return Ok(None);
        };
        Ok(Some(Self {
            client: ConsulClient::new(agent.clone())?,
            registration: Registration::new(config, grpc_addr, health_service)?,
        }))
    }

    /// What is registered.
    pub fn registration(&self) -> &Registration {
        &self.registration
    }

    /// Registers (or re-registers: the ID is stable) this instance.
    pub async fn register(&self) -> Result<(), ConsulError> {
        self.client.register(&self.registration).await?;
        tracing::info!(
            agent = %self.client.agent,
            service_id = %self.registration.service_id,
            instance = %self.registration.instance,
            "registered with consul"
        );
        Ok(())
    }

    /// Removes this instance; takes at most 5 seconds, on top of the
    /// shutdown grace period.
    pub async fn deregister(&self) -> Result<(), ConsulError> {
        self.client
            .deregister(&self.registration.service_id)
            .await?;
        tracing::info!(
            service_id = %self.registration.service_id,
            "deregistered from consul"
        );
        Ok(())
    }
}

/// How a watch queries the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchOptions {
    /// How long the agent may hold a blocking query while nothing changes
    /// (Consul's `wait`: at most 10 minutes; it adds up to 1/16 of jitter).
    pub wait: Duration,
    /// At most two queries start within any span this long: two answers in a
    /// row go through at once, while a service that keeps changing is polled
    /// at this pace instead of in a busy loop (Consul's advice for blocking
    /// queries).
    pub min_interval: Duration,
    /// Pause after a failed query, doubled for each failure in a row, up to
    /// 30 seconds.
    pub retry_after: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(5 * 60),
            min_interval: Duration::from_secs(1),
            retry_after: Duration::from_secs(1),
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

    /// `PUT /v1/agent/service/register`.
    pub async fn register(&self, registration: &Registration) -> Result<(), ConsulError> {
        let url = self.agent.endpoint(&["agent", "service", "register"]);
        let body = serde_json::to_vec(&registration.definition())
            .expect("a service definition of strings and numbers serialises");
        self.send(Method::PUT, url, Some(body), REQUEST_TIMEOUT)
            .await
            .map(drop)
    }

    /// `PUT /v1/agent/service/deregister/:service_id`.
    pub async fn deregister(&self, service_id: &str) -> Result<(), ConsulError> {
        let url = self
            .agent
            .endpoint(&["agent", "service", "deregister", service_id]);
        self.send(Method::PUT, url, None, REQUEST_TIMEOUT)
            .await
            .map(drop)
    }

    /// The instances of `service` whose checks all pass, sorted.
    pub async fn healthy_instances(&self, service: &str) -> Result<Vec<Instance>, ConsulError> {
        self.health(service, None)
            .await
            .map(|answer| answer.instances)
    }

    /// The healthy instances of `service` each time the set changes: at once,
    /// then after each blocking query (`index` = the last `X-Consul-Index`)
    /// that answers a different set. A failed query yields its error and the
    /// watch goes on after a pause, so a consumer can keep its last set
    /// through an agent restart. It never ends; drop it to stop.
    pub fn watch(
        &self,
        service: &str,
        options: WatchOptions,
    ) -> impl Stream<Item = Result<Vec<Instance>, ConsulError>> + Send + 'static {
        let watch = Watch {
            client: self.clone(),
            service: service.to_owned(),
            options,
            index: 0,
            last: None,
            failures: 0,
            retry_at: None,
            started: [None, None],
        };
        futures::stream::unfold(watch, |mut watch| async move {
            let item = watch.next().await;
            Some((item, watch))
        })
    }

    /// `GET /v1/health/service/:service?passing=true`, blocking on `index`
    /// for at most `wait` when `blocking` is `Some((index, wait))`.
    async fn health(
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

    async fn send(
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
struct Answer {
    /// `X-Consul-Index`, on endpoints that support blocking queries.
    index: Option<u64>,
    body: bytes::Bytes,
}

struct HealthAnswer {
    url: Url,
    index: Option<u64>,
    instances: Vec<Instance>,
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

/// The state of `ConsulClient::watch` between answers.
struct Watch {
    client: ConsulClient,
    service: String,
    options: WatchOptions,
    /// The index the next query blocks on; 0: a plain, non-blocking read.
    index: u64,
    /// The set last yielded: an answer that repeats it yields nothing.
    last: Option<Vec<Instance>>,
    failures: u32,
    retry_at: Option<Instant>,
    /// When the last two queries started, older first.
    started: [Option<Instant>; 2],
}

impl Watch {
    async fn next(&mut self) -> Result<Vec<Instance>, ConsulError> {
        loop {
            self.pace().await;
            let blocking = (self.index > 0).then_some((self.index, self.options.wait));
            let answer = match self.client.health(&self.service, blocking).await {
                Ok(answer) => answer,
                Err(error) => return Err(self.failed(error)),
            };
            let Some(index) = answer.index else {
                return Err(self.failed(ConsulError::MissingIndex {
                    url: answer.url.into(),
                }));
            };
            self.failures = 0;
            self.index = next_index(self.index, index);
            if self.last.as_ref() != Some(&answer.instances) {
                self.last = Some(answer.instances.clone());
                return Ok(answer.instances);
            }
        }
    }

    /// Waits out a pause after a failure, and keeps to two queries per
    /// `min_interval`.
    async fn pace(&mut self) {
        if let Some(retry_at) = self.retry_at.take() {
            tokio::time::sleep_until(retry_at).await;
        }
        if let Some(earlier) = self.started[0] {
            tokio::time::sleep_until(earlier + self.options.min_interval).await;
        }
        self.started = [self.started[1], Some(Instant::now())];
    }

    /// Schedules the next query after a pause that doubles with each failure
    /// in a row.
    fn failed(&mut self, error: ConsulError) -> ConsulError {
        let pause = self
            .options
            .retry_after
            .saturating_mul(2u32.saturating_pow(self.failures))
            .min(MAX_RETRY_AFTER.max(self.options.retry_after));
        self.failures = self.failures.saturating_add(1);
        self.retry_at = Some(Instant::now() + pause);
        error
    }
}

/// The index the next blocking query waits on, as Consul's documentation of
/// blocking queries asks: back to 0 (a fresh read) when the index went
/// backwards, and at least 1 after an answer, since index 0 does not block.
fn next_index(previous: u64, answered: u64) -> u64 {
    if answered < previous {
        0
    } else {
        answered.max(1)
    }
}

/// A duration as Go's `time.ParseDuration` reads it, which is how Consul
/// takes intervals: whole seconds as hours, minutes and seconds ("10s",
/// "1m", "1m30s"), anything finer in milliseconds ("250ms").
fn go_duration(duration: Duration) -> String {
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

    fn config(extra: &[&str]) -> ConsulConfig {
        use clap::Parser;
        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            consul: ConsulConfig,
        }
        let args = ["catalogue", "--consul-addr", "127.0.0.1:8500"];
        Flags::try_parse_from(args.iter().chain(extra))
            .expect("flags parse")
            .consul
    }

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
    fn a_consul_target_names_the_agent_and_the_service() {
        let target = ConsulTarget::parse("consul://127.0.0.1:8500/catalogue").unwrap();
        assert_eq!(target.agent.to_string(), "http://127.0.0.1:8500");
        assert_eq!(target.service, "catalogue");
        let target = ConsulTarget::parse("consul://[::1]:8500/catalogue").unwrap();
        assert_eq!(target.agent.to_string(), "http://[::1]:8500");
    }

    #[test]
    fn a_malformed_consul_target_is_refused_with_the_expected_form() {
        for target in [
            "http://127.0.0.1:8500/catalogue",
            "consul://127.0.0.1:8500",
            "consul://127.0.0.1:8500/",
            "consul:///catalogue",
            "consul://127.0.0.1:8500/catalogue/extra",
            "consul://127.0.0.1:8500/catalogue?dc=eu",
            "consul://127.0.0.1:notaport/catalogue",
        ] {
            let error = ConsulTarget::parse(target).expect_err(target);
            assert!(
                error.to_string().contains("consul://HOST:PORT/SERVICE"),
                "{error}"
            );
        }
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

    #[test]
    fn the_registration_defaults_to_the_bound_grpc_address() {
        let registration = Registration::new(
            &config(&[]),
            "127.0.0.1:50051".parse().unwrap(),
            "catalogue.v1.CatalogueService",
        )
        .unwrap();
        assert_eq!(registration.service_id, "catalogue-127.0.0.1-50051");
        assert_eq!(registration.instance.to_string(), "127.0.0.1:50051");
    }

    #[test]
    fn an_unspecified_grpc_address_needs_an_advertise_address() {
        let grpc_addr = "0.0.0.0:50051".parse().unwrap();
        let error = Registration::new(&config(&[]), grpc_addr, "s").unwrap_err();
        assert!(
            error.to_string().contains("--consul-advertise-addr"),
            "{error}"
        );

        let advertised = config(&["--consul-advertise-addr", "fd00::7"]);
        let registration = Registration::new(&advertised, grpc_addr, "s").unwrap();
        assert_eq!(registration.instance.to_string(), "[fd00::7]:50051");
        assert_eq!(registration.service_id, "catalogue-fd00--7-50051");
    }

    #[test]
    fn the_definition_uses_consul_field_names_and_go_durations() {
        let config = config(&[
            "--consul-service-name",
            "shop",
            "--consul-advertise-addr",
            "[fd00::7]:7000",
            "--consul-check-interval",
            "500ms",
            "--consul-deregister-critical-service-after",
            "90m",
        ]);
        let registration =
            Registration::new(&config, "127.0.0.1:1".parse().unwrap(), "pkg.Svc").unwrap();

        let body = serde_json::to_value(registration.definition()).unwrap();

        assert_eq!(
            body,
            serde_json::json!({
                "Name": "shop",
                "ID": "shop-fd00--7-7000",
                "Address": "fd00::7",
                "Port": 7000,
                "Tags": ["grpc"],
                "Meta": {"version": env!("CARGO_PKG_VERSION")},
                "Check": {
                    "GRPC": "[fd00::7]:7000/pkg.Svc",
                    "GRPCUseTLS": false,
                    "Interval": "500ms",
                    "DeregisterCriticalServiceAfter": "1h30m",
                },
            })
        );
    }

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
    fn the_blocking_index_resets_when_it_goes_backwards_and_never_stays_zero() {
        assert_eq!(next_index(0, 10), 10);
        assert_eq!(next_index(10, 12), 12);
        assert_eq!(next_index(10, 10), 10);
        assert_eq!(next_index(10, 4), 0, "backwards: start over");
        assert_eq!(next_index(0, 0), 1, "0 would not block");
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
