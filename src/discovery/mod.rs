//! Where a catalogue's replicas are, and which of them may take calls.
//!
//! A [`Target`] names the replicas: one URL, several (comma separated),
//! `dns:///host:port` (every address the name resolves to, resolved again
//! every few seconds: a Kubernetes headless Service), or
//! `consul://agent:port/service` (the instances whose Consul checks pass,
//! followed with blocking queries). [`Balanced::connect`]
//! turns it into one client that spreads calls with tower's
//! power-of-two-choices balancer (least pending calls) over the replicas
//! whose `grpc.health.v1` Watch of the health service it is given says
//! SERVING: a replica that drains
//! (NOT_SERVING) or goes away stops getting calls as soon as its Watch says
//! so, and gets them again when it is back.
//!
//! [`consul`] registers an instance with a Consul agent and reads the
//! healthy instances of a service from it.

pub mod consul;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    convert::Infallible,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::{StreamExt, stream};
use http::Uri;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{IntervalStream, ReceiverStream};
use tokio_util::task::AbortOnDropHandle;
use tonic::{
    body::Body,
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tower::{
    BoxError, Service, ServiceExt,
    balance::p2c::Balance,
    buffer::Buffer,
    discover::Change,
    load::{CompleteOnResponse, PendingRequestsDiscover},
    util::BoxCloneSyncService,
};

/// How often a `dns:///` target is resolved again.
const DNS_REFRESH: Duration = Duration::from_secs(5);
/// Bounds of the wait before watching a replica's health again.
const WATCH_RETRY_MIN: Duration = Duration::from_millis(100);
const WATCH_RETRY_MAX: Duration = Duration::from_secs(1);
/// Calls waiting for a replica to be ready (the balancer's buffer).
const BALANCER_BUFFER: usize = 1024;
/// Changes of the replica set not yet seen by the balancer.
const CHANGES_BUFFER: usize = 64;
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("invalid target {target:?}: {reason}")]
    Invalid { target: String, reason: String },
}

/// Where the replicas are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Fixed addresses: `http://a:50051,http://b:50051`.
    Urls(Vec<Uri>),
    /// `dns:///host:port`: every address `host` resolves to.
    Dns { host: String, port: u16 },
    /// `consul://agent:port/service`.
    Consul(consul::ConsulTarget),
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| TargetError::Invalid {
            target: text.to_owned(),
            reason: reason.to_owned(),
        };
        if text.starts_with(consul::ConsulTarget::PREFIX) {
            return consul::ConsulTarget::parse(text)
                .map(Self::Consul)
                .map_err(|error| invalid(&error.to_string()));
        }
        if let Some(name) = text.strip_prefix("dns:///") {
            let (host, port) = name
                .rsplit_once(':')
                .ok_or_else(|| invalid("dns:/// needs host:port"))?;
            let port = port.parse().map_err(|_| invalid("bad port"))?;
            if host.is_empty() {
                return Err(invalid("dns:/// needs a host name"));
            }
            return Ok(Self::Dns {
                host: host.to_owned(),
                port,
            });
        }
        let urls = text
            .split(',')
            .map(|url| {
                let uri: Uri = url.trim().parse().map_err(|_| invalid("not a URL"))?;
                match (uri.scheme_str(), uri.authority()) {
                    (Some("http"), Some(_)) => Ok(uri),
                    _ => Err(invalid("each address must be http://host:port")),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::Urls(urls))
    }
}

impl Target {
    /// The replica set, as it changes.
    fn resolve(self) -> stream::BoxStream<'static, BTreeSet<String>> {
        match self {
            Self::Urls(urls) => {
                let set = urls.iter().map(replica_name).collect();
                stream::once(async move { set })
                    .chain(stream::pending())
                    .boxed()
            }
            Self::Dns { host, port } => {
                let name = format!("{host}:{port}");
                IntervalStream::new(tokio::time::interval(DNS_REFRESH))
                    .filter_map(move |_| {
                        let name = name.clone();
                        // A failed lookup keeps the replicas we have.
                        async move {
                            match tokio::net::lookup_host(&name).await {
                                Ok(addrs) => {
                                    Some(addrs.map(|addr| format!("http://{addr}")).collect())
                                }
                                Err(error) => {
                                    tracing::warn!(%name, %error, "dns lookup failed");
                                    None
                                }
                            }
                        }
                    })
                    .boxed()
            }
            Self::Consul(target) => match consul::ConsulClient::new(target.agent) {
                Ok(client) => client
                    .watch(&target.service, consul::WatchOptions::default())
                    // A failed query keeps the replicas we have.
                    .filter_map(|instances| async move {
                        match instances {
                            Ok(instances) => Some(
                                instances
                                    .iter()
                                    .map(|instance| format!("http://{instance}"))
                                    .collect(),
                            ),
                            Err(error) => {
                                tracing::warn!(%error, "consul lookup failed");
                                None
                            }
                        }
                    })
                    .boxed(),
                Err(error) => {
                    tracing::warn!(%error, "no consul client");
                    stream::pending().boxed()
                }
            },
        }
    }
}

/// `http://host:port`, the name a replica is known and counted by.
fn replica_name(uri: &Uri) -> String {
    let authority = uri.authority().map_or("", |authority| authority.as_str());
    format!("http://{authority}")
}

/// The client every call goes through: cloneable, shareable, balanced.
pub(crate) type BalancedService =
    BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BalanceError>;

/// Why the balancer could not make a call. A named type rather than
/// `BoxError`: with a boxed `dyn Error` as its error, futures of tonic's
/// generated clients over this service are not provably `Send`.
#[derive(Debug)]
pub(crate) struct BalanceError(BoxError);

impl std::fmt::Display for BalanceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BalanceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

/// Calls handed to each replica so far, by address.
#[derive(Clone, Default)]
pub(crate) struct Replicas(Arc<Mutex<BTreeMap<String, Arc<AtomicU64>>>>);

impl Replicas {
    fn counter(&self, replica: &str) -> Arc<AtomicU64> {
        self.0.lock().entry(replica.to_owned()).or_default().clone()
    }

    /// Replica address → calls sent to it.
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.0
            .lock()
            .iter()
            .map(|(replica, calls)| (replica.clone(), calls.load(Ordering::Relaxed)))
            .collect()
    }
}

/// A client balanced over a target's healthy replicas. Dropping it stops
/// discovery and every health watcher.
pub(crate) struct Balanced {
    pub service: BalancedService,
    pub replicas: Replicas,
    _discovery: AbortOnDropHandle<()>,
}

impl Balanced {
    /// Starts discovery; calls wait (in a buffer of 1,024) until a replica
    /// says `health_service` is SERVING (the service the calls are for, not
    /// the server's "": a draining replica turns its services NOT_SERVING
    /// first). Each replica gets `connections` HTTP/2 connections.
    pub fn connect(target: Target, health_service: &'static str, connections: u32) -> Self {
        let (changes, discovered) = mpsc::channel(CHANGES_BUFFER);
        let replicas = Replicas::default();
        let discovery = AbortOnDropHandle::new(tokio::spawn(follow(
            target.resolve(),
            health_service,
            connections.max(1),
            changes,
            replicas.clone(),
        )));
        let discover = PendingRequestsDiscover::new(
            ReceiverStream::new(discovered),
            CompleteOnResponse::default(),
        );
        let balance = Balance::new(discover);
        Self {
            service: BoxCloneSyncService::new(
                Buffer::new(balance, BALANCER_BUFFER).map_err(BalanceError),
            ),
            replicas,
            _discovery: discovery,
        }
    }
}

type Key = (String, u32);
type Changes = mpsc::Sender<Result<Change<Key, Replica>, Infallible>>;

/// Keeps one health watcher per resolved replica.
async fn follow(
    mut resolved: stream::BoxStream<'static, BTreeSet<String>>,
    health_service: &'static str,
    connections: u32,
    changes: Changes,
    replicas: Replicas,
) {
    // Aborted when dropped: with this task, or when their replica goes.
    let mut watchers: HashMap<String, AbortOnDropHandle<()>> = HashMap::new();
    while let Some(set) = resolved.next().await {
        let gone: Vec<String> = watchers
            .keys()
            .filter(|replica| !set.contains(*replica))
            .cloned()
            .collect();
        for replica in gone {
            watchers.remove(&replica);
            for connection in 0..connections {
                let key = (replica.clone(), connection);
                if changes.send(Ok(Change::Remove(key))).await.is_err() {
                    return;
                }
            }
        }
        for replica in set {
            if let std::collections::hash_map::Entry::Vacant(entry) = watchers.entry(replica) {
                let replica = entry.key().clone();
                let served = replicas.counter(&replica);
                entry.insert(AbortOnDropHandle::new(tokio::spawn(watch(
                    replica,
                    health_service,
                    connections,
                    changes.clone(),
                    served,
                ))));
            }
        }
    }
    // The target will not change again; the watchers go on.
    for (_, watcher) in watchers {
        let _ = watcher.await;
    }
}

/// Offers one replica to the balancer while its health Watch of
/// `health_service` says SERVING.
async fn watch(
    replica: String,
    health_service: &'static str,
    connections: u32,
    changes: Changes,
    served: Arc<AtomicU64>,
) {
    let Ok(endpoint) = Endpoint::from_shared(replica.clone()) else {
        tracing::warn!(%replica, "not a valid replica address");
        return;
    };
    let channels: Vec<Channel> = (0..connections)
        .map(|_| {
            endpoint
                .clone()
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .connect_lazy()
        })
        .collect();
    let offer = |serving: bool| {
        let changes = changes.clone();
        let channels = channels.clone();
        let replica = replica.clone();
        let served = served.clone();
        async move {
            for (connection, channel) in (0u32..).zip(channels) {
                let key = (replica.clone(), connection);
                let change = if serving {
                    Change::Insert(
                        key,
                        Replica {
                            channel,
                            served: served.clone(),
                        },
                    )
                } else {
                    Change::Remove(key)
                };
                if changes.send(Ok(change)).await.is_err() {
                    return false;
                }
            }
            true
        }
    };
    let mut retry = WATCH_RETRY_MIN;
    let mut offered = false;
    loop {
        let mut health = HealthClient::new(channels[0].clone());
        let request = HealthCheckRequest {
            service: health_service.to_owned(),
        };
        if let Ok(response) = health.watch(request).await {
            let mut statuses = response.into_inner();
            while let Ok(Some(status)) = statuses.message().await {
                retry = WATCH_RETRY_MIN;
                let serving = status.status() == ServingStatus::Serving;
                if serving != offered {
                    tracing::info!(%replica, serving, "replica health changed");
                    if !offer(serving).await {
                        return;
                    }
                    offered = serving;
                }
            }
        }
        if offered {
            tracing::info!(%replica, "replica unreachable");
            if !offer(false).await {
                return;
            }
            offered = false;
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(WATCH_RETRY_MAX);
    }
}

/// One connection to one replica, counting the calls it is handed.
#[derive(Clone)]
struct Replica {
    channel: Channel,
    served: Arc<AtomicU64>,
}

impl Service<http::Request<Body>> for Replica {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = <Channel as Service<http::Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<http::Request<Body>>::poll_ready(&mut self.channel, cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        self.served.fetch_add(1, Ordering::Relaxed);
        self.channel.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_bad_ones_are_refused() {
        assert_eq!(
            "http://127.0.0.1:1, http://127.0.0.1:2"
                .parse::<Target>()
                .unwrap(),
            Target::Urls(vec![
                "http://127.0.0.1:1".parse().unwrap(),
                "http://127.0.0.1:2".parse().unwrap()
            ])
        );
        assert_eq!(
            "dns:///catalogue-headless:50051".parse::<Target>().unwrap(),
            Target::Dns {
                host: "catalogue-headless".into(),
                port: 50051
            }
        );
        assert!(matches!(
            "consul://127.0.0.1:8500/catalogue".parse::<Target>().unwrap(),
            Target::Consul(target) if target.service == "catalogue"
        ));
        for bad in [
            "",
            "dns:///nohost",
            "dns:///:1",
            "dns:///a:port",
            "127.0.0.1:1",
            "https://a:1",
            "http://a:1,",
            "consul://127.0.0.1:8500",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad:?} accepted");
        }
    }

    #[tokio::test]
    async fn dns_targets_resolve_to_every_address() {
        let mut set = Target::Dns {
            host: "localhost".into(),
            port: 50051,
        }
        .resolve();
        let first = set.next().await.expect("resolves");
        assert!(
            first.iter().any(|replica| replica.ends_with(":50051")),
            "{first:?}"
        );
    }
}
