//! Server-side overload protection that no tower or tonic layer provides in
//! the shape a gRPC service needs:
//!
//! - `ShedLayer`: a concurrency limit shared by every connection. A call
//!   beyond it is refused at once with UNAVAILABLE (retryable) and a
//!   `grpc-retry-pushback-ms` hint, and counted; it never waits in a queue.
//!   Health checks are never refused: an overloaded server must still tell
//!   its load balancer how it is.
//! - Fair calls: one connection may hold at most `--max-calls-per-connection`
//!   of the global slots (a quarter by default), so a client with a few
//!   connections cannot take them all; health `Watch` streams, which never
//!   end by themselves and are never shed by the global limit, have a bound
//!   of their own (`--max-health-watches`). One client IP may hold at most
//!   `--max-calls-per-peer` (three quarters), so the last quarter is always
//!   someone else's; and the last eighth of the slots is a reserve only an
//!   IP holding fewer than its share (1 to 4 calls, by the reserve's size)
//!   may take, so that whatever 16 other addresses hold, a new one is
//!   served (see `peers.rs`).
//! - Idle calls: an admitted call that makes no progress for
//!   `--stream-idle-timeout` because of its client, whichever way, gives its
//!   slot back and ends with DEADLINE_EXCEEDED: a client that reads nothing
//!   (its flow-control window stays shut), or, on a call whose requests are
//!   a stream (reflection), one that neither sends the next request nor
//!   ends them. hyper stops polling a response body while the client's
//!   window is shut, so no code in the body runs then, and no trailers can
//!   end it: the timer's own waker (`Lease`) returns the slot and closes the
//!   call's connection, which is what releases the body and h2's buffers of
//!   it (a client that leaves a stream unread that long loses the
//!   connection).
//! - Deadlines: a call that has not answered by `--request-timeout` (or the
//!   client's shorter `grpc-timeout`) ends with DEADLINE_EXCEEDED, gRPC's
//!   code for a deadline, and is counted so (tonic's own server timeout ends
//!   it CANCELLED, "the client went away"). A stream's deadline covers its
//!   whole life (a unary response is whole once answered): ListProducts and
//!   reflection end `--stream-timeout` after they started, or at the
//!   client's `grpc-timeout` if sooner, with DEADLINE_EXCEEDED trailers.
//!   Health Watch streams, which must outlive any timeout, are bounded by
//!   the client's `grpc-timeout` only. One timer serves a call's response:
//!   the idle timer, set to the sooner of the idle instant and the call's
//!   deadline. A call with no deadline of its response's (every unary
//!   call) has no timer: its connection's sweep (`connections.rs`) ends
//!   it, at between 1 and 1.25 times the idle timeout.
//! - `guard_connections` (`connections.rs`): bounds on open connections, in
//!   all and per client IP with a reserve for addresses holding few
//!   (`peers.rs`), a handshake timeout, an idle timeout, and a backoff after
//!   failed accepts.
//!
//! - Headers: a call whose headers are over 16 KiB is refused with
//!   RESOURCE_EXHAUSTED naming the size and the limit, whatever the flags.
//!
//! `ProtectionConfig` is the flags; `Limits` what is in force, with
//! `--no-protection` resolved once.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering},
    },
    task::{Context, Poll, Wake, Waker, ready},
    time::Duration,
};

use bytes::Bytes;
use clap::Args;
use futures::task::AtomicWaker;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use metrics::Counter;
use parking_lot::Mutex;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tonic::{Status, metadata::MetadataValue};
use tower::{Layer, Service};

use crate::{
    method::Method,
    metrics::{Metrics, names},
    values::{self, positive_duration},
};

mod capacity;
mod connections;
mod peers;

use capacity::{Capacity, Slot};
use connections::{Answer, ConnectionControl};
pub use connections::{
    ConnectionInfo, GuardedConnection, expose_tcp_info, fit_to_fd_limit, guard_connections,
    raise_fd_limit,
};
pub use peers::{AddressSlot, AddressSlots, Refusal};

/// Server-side overload protection. The defaults are safe for a 2-core
/// machine.
#[derive(Debug, Clone, Args)]
pub struct ProtectionConfig {
    /// Calls handled at once across all connections; calls beyond it are
    /// refused at once with UNAVAILABLE (health checks are never refused).
    #[arg(long, env = "CATALOGUE_MAX_CONCURRENT_CALLS", default_value_t = 1024)]
    pub max_concurrent_calls: usize,

    /// `grpc-retry-pushback-ms` sent with a refused call.
    #[arg(long, env = "CATALOGUE_RETRY_PUSHBACK", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub retry_pushback: Duration,

    /// Longest a call may take when the client sets no shorter grpc-timeout.
    #[arg(long, env = "CATALOGUE_REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Longest a server stream (ListProducts, reflection) lives when the
    /// client sets no shorter grpc-timeout; one cut off ends with
    /// DEADLINE_EXCEEDED. Its first answer is still due within
    /// --request-timeout. Health Watch streams are not bounded by it.
    #[arg(long, env = "CATALOGUE_STREAM_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub stream_timeout: Duration,

    /// A call whose client reads nothing for this long (its flow-control
    /// window stays shut), or, on reflection's bidirectional stream, sends
    /// no next request and does not end them, gives back its slot and ends
    /// with DEADLINE_EXCEEDED; one left unread closes its connection (only
    /// that releases its buffers). Time the server spends producing does
    /// not count.
    #[arg(long, env = "CATALOGUE_STREAM_IDLE_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    pub stream_idle_timeout: Duration,

    /// Open client connections; connections beyond it are closed at once.
    /// Lowered, with a warning, to what the open-files limit allows.
    #[arg(long, env = "CATALOGUE_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// Open connections from one client IP; more are closed at once.
    #[arg(long, env = "CATALOGUE_MAX_CONNECTIONS_PER_PEER", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_peer: u32,

    /// Close a connection this long after it opened: a GOAWAY, then
    /// --max-connection-age-grace for its calls to finish (0s: never). It
    /// bounds what any one connection can hold on to, and behind an L4
    /// load balancer it makes clients reconnect, and so spread over
    /// replicas added since they first connected.
    #[arg(long, env = "CATALOGUE_MAX_CONNECTION_AGE", default_value = "30m", value_parser = humantime::parse_duration)]
    pub max_connection_age: Duration,

    /// After --max-connection-age, how long a connection's calls may take
    /// to finish before it is closed.
    #[arg(long, env = "CATALOGUE_MAX_CONNECTION_AGE_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub max_connection_age_grace: Duration,

    /// A connection with no call open for this long is closed (checked
    /// every quarter of it, so it is closed within 1.25 times it); 0s:
    /// never. Clients reconnect when they next call.
    #[arg(long, env = "CATALOGUE_CONNECTION_IDLE_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub connection_idle_timeout: Duration,

    /// A connection that has not sent the HTTP/2 preface and a whole first
    /// HEADERS block this long after it was accepted is closed.
    #[arg(long, env = "CATALOGUE_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,

    /// Calls one connection may hold at once of --max-concurrent-calls;
    /// beyond it that connection's calls are refused with UNAVAILABLE.
    /// Default: a quarter of --max-concurrent-calls.
    #[arg(long, env = "CATALOGUE_MAX_CALLS_PER_CONNECTION",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_calls_per_connection: Option<u32>,

    /// Calls one client IP may hold at once over all its connections;
    /// beyond it its calls are refused with UNAVAILABLE, so the rest of
    /// --max-concurrent-calls is always someone else's. Default: three
    /// quarters of --max-concurrent-calls (and at least
    /// --max-calls-per-connection). Behind a proxy that is every
    /// caller's peer (a sidecar), raise it to --max-concurrent-calls.
    #[arg(long, env = "CATALOGUE_MAX_CALLS_PER_PEER",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_calls_per_peer: Option<u32>,

    /// Health Watch streams open at once across all connections; one more
    /// is refused with UNAVAILABLE (health Check calls are never refused).
    #[arg(long, env = "CATALOGUE_MAX_HEALTH_WATCHES", default_value_t = 1024)]
    pub max_health_watches: usize,

    /// Turn every protection off (concurrency limit, request timeout, idle
    /// timeout, connection limit, bulkhead, breaker): the Go-style failure mode, for
    /// the overload experiment only.
    #[arg(long, env = "CATALOGUE_NO_PROTECTION", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_protection: bool,
}

/// The protection in force: `ProtectionConfig` with `--no-protection`
/// resolved, once, into limits that are simply absent.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_concurrent_calls: usize,
    pub retry_pushback: Duration,
    /// `None`: a call may take as long as its client allows.
    pub request_timeout: Option<Duration>,
    /// A stream's whole life; `None`: as long as its client allows.
    pub stream_timeout: Option<Duration>,
    /// `None`: a call keeps its slot however long its client stalls.
    pub stream_idle_timeout: Option<Duration>,
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
    /// `None`: a connection may take as long as it likes to start.
    pub handshake_timeout: Option<Duration>,
    /// `--max-connection-age` and its grace: a GOAWAY at the age, the
    /// connection closed at age + grace. `None`: connections live on.
    pub max_connection_age: Option<(Duration, Duration)>,
    /// `None`: a connection with no call open stays open.
    pub connection_idle_timeout: Option<Duration>,
    pub max_calls_per_connection: usize,
    pub max_calls_per_peer: usize,
    pub max_health_watches: usize,
    /// Whether the upstream's bulkhead and breaker may refuse.
    pub upstream_guarded: bool,
}

impl ProtectionConfig {
    fn connection_age(&self) -> Option<(Duration, Duration)> {
        (!self.max_connection_age.is_zero())
            .then_some((self.max_connection_age, self.max_connection_age_grace))
    }

    pub fn limits(&self) -> Limits {
        if self.no_protection {
            return Limits {
                max_concurrent_calls: usize::MAX,
                retry_pushback: self.retry_pushback,
                request_timeout: None,
                stream_timeout: None,
                stream_idle_timeout: None,
                max_connections: usize::MAX,
                max_connections_per_peer: usize::MAX,
                handshake_timeout: None,
                max_connection_age: self.connection_age(),
                connection_idle_timeout: None,
                max_calls_per_connection: usize::MAX,
                max_calls_per_peer: usize::MAX,
                max_health_watches: usize::MAX,
                upstream_guarded: false,
            };
        }
        let per_connection = self
            .max_calls_per_connection
            .map_or(self.max_concurrent_calls / 4, |calls| calls as usize);
        // By default never less than one connection's share.
        let per_peer = self.max_calls_per_peer.map_or(
            (self.max_concurrent_calls / 4 * 3).max(per_connection),
            |calls| calls as usize,
        );
        Limits {
            max_concurrent_calls: self.max_concurrent_calls,
            retry_pushback: self.retry_pushback,
            request_timeout: Some(self.request_timeout),
            stream_timeout: Some(self.stream_timeout),
            stream_idle_timeout: Some(self.stream_idle_timeout),
            max_connections: self.max_connections,
            max_connections_per_peer: self.max_connections_per_peer as usize,
            handshake_timeout: Some(self.handshake_timeout),
            max_connection_age: self.connection_age(),
            connection_idle_timeout: (!self.connection_idle_timeout.is_zero())
                .then_some(self.connection_idle_timeout),
            max_calls_per_connection: per_connection.max(1),
            max_calls_per_peer: per_peer.max(1),
            max_health_watches: self.max_health_watches,
            upstream_guarded: true,
        }
    }
}

/// Paths that are never shed by the global or the per-connection limit.
const NEVER_SHED_PREFIX: &str = "/grpc.health.v1.Health/";
/// Health streams, bounded on their own (`--max-health-watches`).
const HEALTH_WATCH_PATH: &str = "/grpc.health.v1.Health/Watch";
/// Reflection's one method, a bidirectional stream.
const REFLECTION_PATHS: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Request headers per call (grpc-go's default as well). h2 takes up to
/// four times as much (`http2_max_header_list_size` where the server is
/// built) so that a call over this gets a gRPC status naming the limit:
/// beyond h2's bound, h2 answers HTTP 431, which gRPC clients see as
/// UNKNOWN or UNAVAILABLE with no word of the size.
pub(crate) const MAX_HEADER_LIST_BYTES: usize = 16 * 1024;

/// What `Shed` reads of a call's headers, in one pass over them.
struct RequestHeaders {
    /// Their size as HTTP/2's SETTINGS_MAX_HEADER_LIST_SIZE counts it
    /// (name, value and 32 bytes a field; the path and authority too).
    bytes: usize,
    /// The client's `grpc-timeout`, if it sent one that parses.
    grpc_timeout: Option<Duration>,
}

impl RequestHeaders {
    fn of<B>(request: &Request<B>) -> Self {
        const FIELD_OVERHEAD: usize = 32;
        let uri = request.uri();
        let mut bytes = uri.path_and_query().map_or(0, |path| path.as_str().len())
            + uri
                .authority()
                .map_or(0, |authority| authority.as_str().len());
        let mut grpc_timeout = None;
        for (name, value) in request.headers() {
            bytes += name.as_str().len() + value.len() + FIELD_OVERHEAD;
            if grpc_timeout.is_none() && *name == values::GRPC_TIMEOUT {
                grpc_timeout = Some(value);
            }
        }
        Self {
            bytes,
            grpc_timeout: grpc_timeout.and_then(values::grpc_timeout_value),
        }
    }

    /// RESOURCE_EXHAUSTED naming the size and the limit, for headers over
    /// `MAX_HEADER_LIST_BYTES`.
    fn too_many_bytes(&self) -> Option<Response<tonic::body::Body>> {
        (self.bytes > MAX_HEADER_LIST_BYTES).then(|| {
            Status::resource_exhausted(format!(
                "request headers of {} bytes are over the limit of {MAX_HEADER_LIST_BYTES} bytes",
                self.bytes
            ))
            .into_http()
        })
    }
}

/// Whether a call's response is a stream bounded by `--stream-timeout`
/// rather than `--request-timeout`.
fn is_stream(path: &str) -> bool {
    Method::from_path(path).map_or_else(
        || REFLECTION_PATHS.contains(&path),
        |method| method.kind().streams_responses(),
    )
}

/// The sooner of two optional bounds.
fn sooner(one: Option<Duration>, other: Option<Duration>) -> Option<Duration> {
    match (one, other) {
        (Some(one), Some(other)) => Some(one.min(other)),
        (one, other) => one.or(other),
    }
}

/// The global concurrency limit; see the module docs.
#[derive(Clone)]
pub struct ShedLayer {
    permits: Arc<Capacity>,
    watches: Arc<Capacity>,
    pushback_ms: String,
    shed: Counter,
    shed_by_connection: Counter,
    shed_by_peer: Counter,
    shed_reserved: Counter,
    shed_watch: Counter,
    /// The last of the call slots, shared by IPs holding few calls.
    reserve: peers::Reserve,
    max_calls_per_peer: usize,
    /// `None`: a call keeps its slot however long its client stalls.
    idle_timeout: Option<Duration>,
    idle_expired: Counter,
    /// `None`: only the client's `grpc-timeout` bounds a call.
    request_timeout: Option<Duration>,
    /// `None`: only the client's `grpc-timeout` bounds a stream.
    stream_timeout: Option<Duration>,
}

impl ShedLayer {
    pub fn new(limits: &Limits, metrics: &Metrics) -> Self {
        let max_calls = limits.max_concurrent_calls;
        // The registry keeps the value; the handle is not needed again. No
        // limit is no line at the top of a chart.
        if max_calls < usize::MAX {
            metrics
                .gauge(&names::MAX_CONCURRENT_CALLS, &[])
                .set(max_calls as f64);
        }
        Self {
            permits: Capacity::new(max_calls),
            watches: Capacity::new(limits.max_health_watches),
            pushback_ms: limits.retry_pushback.as_millis().to_string(),
            shed: metrics.counter(&names::SHED, &[("reason", "concurrency_limit")]),
            shed_by_connection: metrics.counter(&names::SHED, &[("reason", "connection_limit")]),
            shed_by_peer: metrics.counter(&names::SHED, &[("reason", "peer_limit")]),
            shed_reserved: metrics.counter(&names::SHED, &[("reason", "reserved_for_new_peers")]),
            reserve: peers::Reserve::of(max_calls),
            max_calls_per_peer: limits.max_calls_per_peer,
            shed_watch: metrics.counter(&names::SHED, &[("reason", "health_watch_limit")]),
            idle_timeout: limits.stream_idle_timeout,
            idle_expired: metrics.counter(&names::IDLE_CALLS_EXPIRED, &[]),
            request_timeout: limits.request_timeout,
            stream_timeout: limits.stream_timeout,
        }
    }

    /// When a call must have answered, and when its response must have
    /// ended, after it started: the server's timeouts, or the client's
    /// `grpc-timeout` if sooner. A unary call's response is whole once
    /// answered (only the idle timeout bounds its sending).
    fn deadlines(
        &self,
        path: &str,
        client: Option<Duration>,
    ) -> (Option<Duration>, Option<Duration>) {
        let answer = sooner(self.request_timeout, client);
        if path == HEALTH_WATCH_PATH {
            (answer, client)
        } else if is_stream(path) {
            let whole = sooner(self.stream_timeout, client);
            (sooner(answer, whole), whole)
        } else {
            (answer, None)
        }
    }

    /// The slots a call takes, or the counter of the limit that refuses it.
    fn admit<B>(&self, request: &Request<B>) -> Result<Option<Slots>, &Counter> {
        let path = request.uri().path();
        let info = request.extensions().get::<ConnectionInfo>();
        if path == HEALTH_WATCH_PATH {
            return match self.watches.try_take() {
                Some(watch) => Ok(Some(Slots::new(
                    watch,
                    None,
                    info.map(|info| info.control.clone()),
                ))),
                None => Err(&self.shed_watch),
            };
        }
        if path.starts_with(NEVER_SHED_PREFIX) {
            if let Some(info) = info {
                info.control.touch();
            }
            return Ok(None);
        }
        let Some(info) = info else {
            let call = self.permits.try_take().ok_or(&self.shed)?;
            return Ok(Some(Slots::new(call, None, None)));
        };
        // The IP's slot is taken first and what the IP held is read as it
        // is taken, so that calls of one IP arriving at the same instant
        // are told different holdings and the reserve's share holds for
        // them too. A refusal gives the slots taken so far back at once.
        let peer = info.peer_calls.try_take_counted();
        let held = peer.as_ref().map_or(self.max_calls_per_peer, |(_, free)| {
            self.max_calls_per_peer.saturating_sub(*free)
        });
        if self.reserve.refuses(held, self.permits.available()) {
            return Err(&self.shed_reserved);
        }
        let call = self.permits.try_take().ok_or(&self.shed)?;
        let (peer, _) = peer.ok_or(&self.shed_by_peer)?;
        let connection = info.calls.try_take().ok_or(&self.shed_by_connection)?;
        Ok(Some(Slots::new(
            call,
            Some([peer, connection]),
            Some(info.control.clone()),
        )))
    }

    fn refusal(&self) -> Response<tonic::body::Body> {
        let mut status = Status::unavailable("server overloaded: retry later");
        if let Ok(pushback) = MetadataValue::try_from(self.pushback_ms.as_str()) {
            status
                .metadata_mut()
                .insert("grpc-retry-pushback-ms", pushback);
        }
        status.into_http()
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Shed {
            inner,
            layer: Arc::new(self.clone()),
        }
    }
}

/// Cloned for every call (tonic clones the service stack per request): the
/// layer's limits and counters are shared, not copied.
#[derive(Clone)]
pub struct Shed<S> {
    inner: S,
    layer: Arc<ShedLayer>,
}

impl<S, B> Service<Request<tonic::body::Body>> for Shed<S>
where
    S: Service<Request<tonic::body::Body>, Response = Response<B>>,
    B: Body<Data = Bytes>,
{
    type Response = Response<ShedBody<B>>;
    type Error = S::Error;
    type Future = ShedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<tonic::body::Body>) -> Self::Future {
        let headers = RequestHeaders::of(&request);
        if let Some(response) = headers.too_many_bytes() {
            return ShedFuture::Refused {
                response: Some(response),
            };
        }
        let permit = match self.layer.admit(&request) {
            Ok(slots) => slots,
            Err(refused) => {
                refused.increment(1);
                return ShedFuture::Refused {
                    response: Some(self.layer.refusal()),
                };
            }
        };
        let (timeout, lasts) = self
            .layer
            .deadlines(request.uri().path(), headers.grpc_timeout);
        // The deadlines count from here, before the inner call, so that the
        // answer's is never later than tonic's own (which would end the
        // call CANCELLED). Its timer is made only if the call has to wait.
        let started = (timeout.is_some() || lasts.is_some()).then(Instant::now);
        // A deadline past what an `Instant` holds is none.
        let after = |span: Option<Duration>| {
            started
                .zip(span)
                .and_then(|(started, span)| started.checked_add(span))
        };
        let (due, ends) = (after(timeout), after(lasts));
        let lease = permit.map(|permit| Lease::new(permit, ends, &self.layer));
        if let (Some(lease), Some(idle)) = (&lease, self.layer.idle_timeout)
            && REFLECTION_PATHS.contains(&request.uri().path())
        {
            request = request.map(|body| RequestWatch::wrap(body, lease, idle));
        }
        ShedFuture::Admitted {
            deadline: None,
            due,
            timeout,
            inner: self.inner.call(request),
            lease,
            idle_timeout: self.layer.idle_timeout,
        }
    }
}

pin_project! {
    #[project = ShedFutureProjection]
    pub enum ShedFuture<F> {
        Admitted {
            #[pin] inner: F,
            // Made the first time the call has to wait with a deadline to
            // keep: an untimed call, or one answered at once, has no timer.
            // Boxed: a tokio `Sleep` is 232 bytes, which every layer above
            // would otherwise move for every call, timed or not.
            deadline: Option<Pin<Box<Sleep>>>,
            // When the call must have answered.
            due: Option<Instant>,
            // How long after it started.
            timeout: Option<Duration>,
            // `None` for calls that are never shed.
            lease: Option<Arc<Lease>>,
            idle_timeout: Option<Duration>,
        },
        Refused { response: Option<Response<tonic::body::Body>> },
    }
}

impl<F, B, E> Future for ShedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ShedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ShedFutureProjection::Admitted {
                inner,
                deadline,
                due,
                timeout,
                lease,
                idle_timeout,
            } => {
                let result = match (inner.poll(cx), *due, *timeout) {
                    (Poll::Ready(result), ..) => result,
                    (Poll::Pending, Some(due), Some(timeout)) => {
                        ready!(
                            deadline
                                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)))
                                .as_mut()
                                .poll(cx)
                        );
                        let status = Status::deadline_exceeded(format!(
                            "deadline exceeded: no answer within {timeout:?} \
                             (--request-timeout or the client's grpc-timeout)"
                        ));
                        let response = status.into_http().map(|inner| ShedBody::Refused { inner });
                        return Poll::Ready(Ok(response));
                    }
                    (Poll::Pending, ..) => return Poll::Pending,
                };
                Poll::Ready(result.map(|response| {
                    // The permit is held until the response's last byte (a
                    // stream counts against the limit for its whole life),
                    // until the client stalls for the idle timeout, or until
                    // the call's deadline.
                    let idle = lease
                        .take()
                        .map(|lease| IdleWatch::new(lease, *idle_timeout));
                    response.map(|inner| ShedBody::Admitted {
                        inner,
                        idle,
                        ended: false,
                    })
                }))
            }
            ShedFutureProjection::Refused { response } => {
                let response = response.take().expect("polled after completion");
                Poll::Ready(Ok(response.map(|inner| ShedBody::Refused { inner })))
            }
        }
    }
}

pin_project! {
    #[project = ShedBodyProjection]
    pub enum ShedBody<B> {
        Admitted {
            #[pin] inner: B,
            // `None` for calls that are never shed.
            idle: Option<IdleWatch>,
            // Set once trailers of the call's own (idle, past its
            // deadline) went out.
            ended: bool,
        },
        Refused { #[pin] inner: tonic::body::Body },
    }
}

/// What an admitted call holds, given back when it is dropped: a global
/// slot (or, for a health Watch, a watch slot), its client IP's and its
/// connection's.
pub(crate) struct Slots {
    _call: Slot,
    /// Its client IP's and its connection's.
    _peer_and_connection: Option<[Slot; 2]>,
    /// Its connection's, which counts its open calls (a connection with
    /// none is idle), and which it closes when the call is stuck behind a
    /// client that reads nothing.
    control: Option<Arc<ConnectionControl>>,
}

impl Slots {
    fn new(
        call: Slot,
        peer_and_connection: Option<[Slot; 2]>,
        control: Option<Arc<ConnectionControl>>,
    ) -> Self {
        if let Some(control) = &control {
            control.call_opened();
        }
        Self {
            _call: call,
            _peer_and_connection: peer_and_connection,
            control,
        }
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        if let Some(control) = &self.control {
            control.call_closed();
        }
    }
}

/// A call's concurrency slot and the timer that ends its response: when
/// its client stops reading, or at its deadline.
///
/// The idle clock counts only while hyper holds a frame the body gave it
/// and has not asked for the next: that is, while the client's flow-control
/// window is shut. Time the body itself spends waiting (on the store, on a
/// fault's delay) never counts. The one timer is set to the sooner of the
/// idle instant and the call's deadline.
pub(crate) struct IdleWatch {
    lease: Arc<Lease>,
    /// `None` when the call has neither an idle timeout nor a deadline.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the timer has been polled with the lease as its waker.
    armed: bool,
    idle_timeout: Option<Duration>,
    /// When the call must have ended.
    ends: Option<Instant>,
    /// Instead of the timer, for a call with an idle timeout and no
    /// deadline on a connection that sweeps (`connections::Sweep`): the
    /// connection, and the call's key among its answers.
    swept: Option<(Arc<ConnectionControl>, usize)>,
}

/// The resolution of tokio's timers.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// Why a call was ended by a timer (`Lease::expired`).
const NOT_EXPIRED: u8 = 0;
/// Its client read nothing.
const IDLE: u8 = 1;
const PAST_DEADLINE: u8 = 2;
/// Its client sent no request, and did not end them.
const IDLE_REQUESTS: u8 = 3;

/// What the timer's waker reaches: it runs on the timer driver, not on the
/// call's task, which hyper does not poll while the client's window is
/// shut.
struct Lease {
    permit: Mutex<Option<Slots>>,
    /// True between handing hyper a frame and hyper asking for the next.
    waiting_on_client: AtomicBool,
    /// True while a streaming request waits for the client's next message.
    waiting_on_requests: AtomicBool,
    /// `NOT_EXPIRED`, `IDLE`, `PAST_DEADLINE` or `IDLE_REQUESTS`.
    expired: AtomicU8,
    /// The call's task while its body waits on the server: woken when the
    /// deadline passes, so the body ends the call.
    task: AtomicWaker,
    /// Set once the response is over: a streaming request still read (by a
    /// handler's own task) ends then.
    done: AtomicBool,
    /// The task reading a streaming request, woken when the response is
    /// over.
    requests_task: AtomicWaker,
    /// Set when the request is a stream watched by `RequestWatch`.
    requests_watched: AtomicBool,
    /// The connection's sweep when the call last began to wait on its
    /// client, for a call the sweep watches.
    since: AtomicU32,
    ends: Option<Instant>,
    expired_total: Counter,
}

impl Lease {
    fn new(permit: Slots, ends: Option<Instant>, layer: &ShedLayer) -> Arc<Self> {
        Arc::new(Self {
            permit: Mutex::new(Some(permit)),
            waiting_on_client: AtomicBool::new(false),
            waiting_on_requests: AtomicBool::new(false),
            expired: AtomicU8::new(NOT_EXPIRED),
            task: AtomicWaker::new(),
            done: AtomicBool::new(false),
            requests_task: AtomicWaker::new(),
            requests_watched: AtomicBool::new(false),
            since: AtomicU32::new(0),
            ends,
            expired_total: layer.idle_expired.clone(),
        })
    }

    /// Ends the call for `why`: its slots go back now, its trailers the
    /// next time hyper polls its body. When hyper cannot (`parked`: the
    /// client's window is shut), the call's connection is closed instead.
    fn expire(&self, why: u8, parked: bool) {
        if self
            .expired
            .compare_exchange(NOT_EXPIRED, why, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let permit = self.take_permit();
        if parked && let Some(control) = permit.as_ref().and_then(|slots| slots.control.as_ref()) {
            control.close();
        }
        drop(permit);
        if why != PAST_DEADLINE {
            self.expired_total.increment(1);
        }
        self.task.wake();
    }

    fn watches_requests(&self) -> bool {
        self.requests_watched.load(Ordering::Relaxed)
    }

    fn take_permit(&self) -> Option<Slots> {
        self.permit.lock().take()
    }

    /// The call's connection, if it came on a guarded one.
    fn connection(&self) -> Option<Arc<ConnectionControl>> {
        self.permit
            .lock()
            .as_ref()
            .and_then(|slots| slots.control.clone())
    }
}

impl Answer for Lease {
    fn waiting_since(&self) -> Option<u32> {
        self.waiting_on_client
            .load(Ordering::Acquire)
            .then(|| self.since.load(Ordering::Relaxed))
    }

    fn stalled(&self) {
        self.expire(IDLE, true);
    }
}

impl Wake for Lease {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.waiting_on_client.load(Ordering::Acquire) {
            // Only the client can move the call.
            let why = if self.ends.is_some_and(|ends| Instant::now() >= ends) {
                PAST_DEADLINE
            } else {
                IDLE
            };
            self.expire(why, true);
        }
        self.task.wake();
    }
}

impl IdleWatch {
    fn new(lease: Arc<Lease>, idle_timeout: Option<Duration>) -> Self {
        let ends = lease.ends;
        // Only an idle timeout (every unary call): the connection's sweep
        // watches it, if it has one, for less than a timer of its own.
        let swept = match (idle_timeout, ends) {
            (Some(_), None) => lease.connection().and_then(|control| {
                let key = control.watch(lease.clone())?;
                Some((control, key))
            }),
            _ => None,
        };
        let timed = swept.is_none() && (idle_timeout.is_some() || ends.is_some());
        let mut watch = Self {
            lease,
            timer: timed
                .then(|| Box::pin(tokio::time::sleep_until(ends.unwrap_or_else(Instant::now)))),
            armed: false,
            idle_timeout,
            ends,
            swept,
        };
        // Armed from the start: a client that opens with a zero window is
        // never polled for a first frame.
        watch.wait_on_client();
        watch
    }

    /// hyper asked for a frame: the client is reading.
    fn client_read(&self) {
        self.lease.waiting_on_client.store(false, Ordering::Release);
    }

    /// A frame went to hyper: from now on only the client can move the call.
    fn wait_on_client(&mut self) {
        if let Some((control, _)) = &self.swept {
            // Noted before the flag: a sweep that sees the flag sees when.
            self.lease.since.store(control.sweeps(), Ordering::Relaxed);
            self.lease.waiting_on_client.store(true, Ordering::Release);
            return;
        }
        let at = match (self.idle_timeout, self.ends) {
            (Some(idle), Some(ends)) => (Instant::now() + idle).min(ends),
            (Some(idle), None) => Instant::now() + idle,
            (None, Some(ends)) => ends,
            (None, None) => return,
        };
        self.lease.waiting_on_client.store(true, Ordering::Release);
        // A timer still running for an instant less than a tick of tokio's
        // timer wheel before `at` already fires when `at` would: a unary
        // call's answer, handed over right after the timer was armed, costs
        // no second registration.
        if let Some(timer) = &self.timer
            && self.armed
            && !timer.is_elapsed()
            && timer.deadline() <= at
            && at - timer.deadline() < TIMER_TICK
        {
            return;
        }
        self.arm(at);
    }

    /// Sets the timer to `at`, its waker the lease.
    fn arm(&mut self, at: Instant) {
        let Some(timer) = &mut self.timer else {
            return;
        };
        self.armed = true;
        timer.as_mut().reset(at);
        // Unconstrained: a call out of its cooperative budget would
        // otherwise be woken at once, through the lease, and expire.
        let waker = Waker::from(self.lease.clone());
        let mut polled = tokio::task::unconstrained(timer.as_mut());
        if Pin::new(&mut polled)
            .poll(&mut Context::from_waker(&waker))
            .is_ready()
        {
            waker.wake();
        }
    }

    /// Whether the timer fired at the call's deadline.
    fn past_deadline(&self) -> bool {
        match (&self.timer, self.ends) {
            (Some(timer), Some(ends)) => timer.is_elapsed() && timer.deadline() >= ends,
            _ => false,
        }
    }

    /// The trailers that end the call now, if the timer ended it.
    fn ending(&self) -> Option<Frame<Bytes>> {
        let why = match self.lease.expired.load(Ordering::Acquire) {
            NOT_EXPIRED if self.past_deadline() => PAST_DEADLINE,
            NOT_EXPIRED => return None,
            why => why,
        };
        let idle = self.idle_timeout.unwrap_or_default();
        let status = if why == IDLE {
            Status::deadline_exceeded(format!("call idle for {idle:?}: the client read nothing"))
        } else if why == IDLE_REQUESTS {
            Status::deadline_exceeded(format!(
                "call idle for {idle:?}: the client sent no request and did not end them"
            ))
        } else {
            Status::deadline_exceeded(
                "deadline exceeded: the call outlived its deadline \
                 (--stream-timeout, --request-timeout or the client's grpc-timeout)",
            )
        };
        Some(trailers(&status))
    }

    /// The body waits on the server (or on the client's next request):
    /// only the deadline counts. The task is woken at it; true if it has
    /// passed.
    fn wait_on_server(&mut self, cx: &Context<'_>) -> bool {
        let Some(timer) = &self.timer else {
            return false;
        };
        self.lease.task.register(cx.waker());
        let Some(ends) = self.ends else {
            return false;
        };
        if !timer.is_elapsed() {
            // Its wake, idle instant or deadline, reaches this task.
            return false;
        }
        if timer.deadline() >= ends {
            return true;
        }
        // An idle instant passed while the client was reading.
        self.arm(ends);
        false
    }
}

impl Drop for IdleWatch {
    fn drop(&mut self) {
        if let Some((control, key)) = self.swept.take() {
            control.unwatch(key);
        }
        // A streaming request (`RequestWatch`) shares the lease: the call's
        // slots go back with its response, and its requests end.
        if self.lease.watches_requests() {
            drop(self.lease.take_permit());
            self.lease.done.store(true, Ordering::Release);
            self.lease.requests_task.wake();
        }
    }
}

/// The body of a request that is a stream of messages, watched for a
/// client that stops sending without ending it: after the idle timeout the
/// call ends (`IDLE_REQUESTS`), and the requests end with the response.
struct RequestWatch {
    inner: tonic::body::Body,
    lease: Arc<Lease>,
    timer: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    /// The timer's waker.
    waker: Waker,
    /// Set once the requests ended.
    ended: bool,
}

/// A request timer's waker: it ends the call if the client still owes
/// the next request.
struct RequestsIdle(Arc<Lease>);

impl Wake for RequestsIdle {
    fn wake(self: Arc<Self>) {
        if self.0.waiting_on_requests.load(Ordering::Acquire)
            && !self.0.done.load(Ordering::Acquire)
        {
            self.0.expire(IDLE_REQUESTS, false);
        }
    }
}

impl RequestWatch {
    fn wrap(
        inner: tonic::body::Body,
        lease: &Arc<Lease>,
        idle_timeout: Duration,
    ) -> tonic::body::Body {
        lease.requests_watched.store(true, Ordering::Relaxed);
        let mut watch = Self {
            inner,
            lease: lease.clone(),
            timer: Box::pin(tokio::time::sleep(idle_timeout)),
            idle_timeout,
            waker: Waker::from(Arc::new(RequestsIdle(lease.clone()))),
            ended: false,
        };
        // The client owes the first request from the start.
        watch.wait_on_client();
        tonic::body::Body::new(watch)
    }

    /// The client owes the next request: the idle clock starts, unless it
    /// runs already.
    fn wait_on_client(&mut self) {
        if self.lease.waiting_on_requests.swap(true, Ordering::AcqRel) {
            return;
        }
        self.timer
            .as_mut()
            .reset(Instant::now() + self.idle_timeout);
        // Unconstrained, as `IdleWatch::arm`.
        let mut timer = tokio::task::unconstrained(self.timer.as_mut());
        if Pin::new(&mut timer)
            .poll(&mut Context::from_waker(&self.waker))
            .is_ready()
        {
            self.waker.wake_by_ref();
        }
    }
}

impl Body for RequestWatch {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        this.lease.requests_task.register(cx.waker());
        if this.lease.done.load(Ordering::Acquire) {
            this.ended = true;
            return Poll::Ready(None);
        }
        let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) else {
            this.wait_on_client();
            return Poll::Pending;
        };
        this.lease
            .waiting_on_requests
            .store(false, Ordering::Release);
        if !matches!(frame, Some(Ok(_))) {
            this.ended = true;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Trailers carrying `status`.
fn trailers(status: &Status) -> Frame<Bytes> {
    let mut trailers = http::HeaderMap::new();
    // A status made from a plain message always encodes.
    let _ = status.add_header(&mut trailers);
    Frame::trailers(trailers)
}

impl<B> Body for ShedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Data = Bytes;
    type Error = tonic::codegen::StdError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project() {
            ShedBodyProjection::Admitted { inner, idle, ended } => {
                let Some(idle) = idle else {
                    return inner.poll_frame(cx).map_err(Into::into);
                };
                if *ended {
                    return Poll::Ready(None);
                }
                idle.client_read();
                if let Some(trailers) = idle.ending() {
                    *ended = true;
                    return Poll::Ready(Some(Ok(trailers)));
                }
                let Poll::Ready(frame) = inner.poll_frame(cx) else {
                    if idle.wait_on_server(cx) {
                        *ended = true;
                        return Poll::Ready(idle.ending().map(Ok));
                    }
                    return Poll::Pending;
                };
                if matches!(&frame, Some(Ok(frame)) if frame.is_data()) {
                    idle.wait_on_client();
                }
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            ShedBodyProjection::Refused { inner } => inner.poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Admitted { ended: true, .. } => true,
            Self::Admitted { inner, .. } => inner.is_end_stream(),
            Self::Refused { inner } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Admitted { inner, .. } => inner.size_hint(),
            Self::Refused { inner } => inner.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(request_timeout: Option<Duration>) -> ShedLayer {
        ShedLayer::new(
            &layer_limits(request_timeout),
            &Metrics::new().expect("a recorder"),
        )
    }

    fn layer_limits(request_timeout: Option<Duration>) -> Limits {
        Limits {
            max_concurrent_calls: 1,
            retry_pushback: Duration::ZERO,
            request_timeout,
            stream_timeout: None,
            stream_idle_timeout: None,
            max_connections: 1,
            max_connections_per_peer: 1,
            handshake_timeout: None,
            max_connection_age: None,
            connection_idle_timeout: None,
            max_calls_per_connection: 1,
            max_calls_per_peer: 1,
            max_health_watches: 1,
            upstream_guarded: true,
        }
    }

    fn request(grpc_timeout: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(timeout) = grpc_timeout {
            request
                .headers_mut()
                .insert("grpc-timeout", timeout.parse().unwrap());
        }
        request
    }

    #[test]
    fn streams_connections_and_their_age_are_bounded_by_default() {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            protection: ProtectionConfig,
        }
        let limits = <Flags as clap::Parser>::parse_from(["test"])
            .protection
            .limits();

        let minutes = |minutes: u64| Duration::from_secs(60 * minutes);
        assert_eq!(limits.stream_timeout, Some(minutes(5)));
        assert_eq!(limits.connection_idle_timeout, Some(minutes(5)));
        assert_eq!(
            limits.max_connection_age,
            Some((minutes(30), Duration::from_secs(30)))
        );
    }

    #[test]
    fn calls_of_one_address_at_the_same_instant_take_no_more_than_its_share_of_the_reserve() {
        use std::sync::atomic::AtomicUsize;

        // 16 slots, of which the last 2 are the reserve: one call each for
        // an address holding none. Another address holds the other 14.
        let limits = Limits {
            max_concurrent_calls: 16,
            max_calls_per_connection: 16,
            max_calls_per_peer: 16,
            ..layer_limits(None)
        };
        let layer = ShedLayer::new(&limits, &Metrics::new().expect("a recorder"));
        let _others: Vec<Slot> = (0..14)
            .map(|_| layer.permits.try_take().expect("a slot"))
            .collect();
        for round in 0..2_000 {
            let address = Capacity::new(16);
            let ready = AtomicUsize::new(0);
            // Two calls of the fresh address, on two threads let go together.
            let admitted: usize = std::thread::scope(|scope| {
                let calls: Vec<_> = (0..2)
                    .map(|_| {
                        scope.spawn(|| {
                            let mut request = request(None);
                            request
                                .extensions_mut()
                                .insert(ConnectionInfo::of_address(address.clone()));
                            ready.fetch_add(1, Ordering::AcqRel);
                            while ready.load(Ordering::Acquire) < 2 {
                                std::hint::spin_loop();
                            }
                            layer.admit(&request).ok().flatten()
                        })
                    })
                    .collect();
                let slots: Vec<_> = calls.into_iter().map(|call| call.join().unwrap()).collect();
                slots.iter().flatten().count()
            });
            assert_eq!(
                admitted, 1,
                "round {round}: its share of the reserve is one call"
            );
        }
    }

    #[test]
    fn one_pass_over_the_headers_counts_their_bytes_and_finds_the_grpc_timeout() {
        let mut request = request(Some("200m"));
        request.headers_mut().insert("x-a", "bc".parse().unwrap());
        *request.uri_mut() = "/a/b".parse().unwrap();
        let headers = RequestHeaders::of(&request);
        assert_eq!(headers.grpc_timeout, Some(Duration::from_millis(200)));
        // The path, then `grpc-timeout: 200m` and `x-a: bc`, 32 bytes each.
        assert_eq!(headers.bytes, 4 + (12 + 4 + 32) + (3 + 2 + 32));
        assert!(headers.too_many_bytes().is_none());
    }

    #[test]
    fn a_call_is_bounded_by_the_sooner_of_the_request_timeout_and_the_clients() {
        let ten_seconds = Some(Duration::from_secs(10));
        let shorter = Some(Duration::from_millis(200));
        let answer = |layer: ShedLayer, timeout| {
            let request = request(timeout);
            let client = RequestHeaders::of(&request).grpc_timeout;
            layer.deadlines(request.uri().path(), client).0
        };
        assert_eq!(answer(layer(ten_seconds), Some("200m")), shorter);
        assert_eq!(answer(layer(shorter), Some("1H")), shorter);
        assert_eq!(answer(layer(ten_seconds), None), ten_seconds);
        assert_eq!(answer(layer(None), Some("200m")), shorter);
        assert_eq!(answer(layer(None), None), None);
        assert_eq!(answer(layer(ten_seconds), Some("soon")), ten_seconds);
    }

    /// A response body that never yields a frame: a stream whose server
    /// has nothing more to say.
    struct Silent;

    impl Body for Silent {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }

    /// The grpc-status of the trailers a `Silent` response to `path` ends
    /// with, under `limits`; `None` if it is still open after 5 s (far
    /// beyond the limits' deadlines).
    async fn status_of_silent_call(limits: &Limits, path: &str) -> Option<String> {
        use http_body_util::BodyExt as _;
        use tower::ServiceExt as _;
        let handler = tower::service_fn(|_: Request<tonic::body::Body>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Silent))
        });
        let request = Request::builder()
            .uri(path)
            .body(tonic::body::Body::empty())
            .unwrap();
        let response = ShedLayer::new(limits, &Metrics::new().expect("a recorder"))
            .layer(handler)
            .oneshot(request)
            .await
            .unwrap();
        let frame = tokio::time::timeout(Duration::from_secs(5), response.into_body().frame())
            .await
            .ok()??
            .ok()?;
        let trailers = frame.into_trailers().ok()?;
        Some(trailers.get("grpc-status")?.to_str().ok()?.to_owned())
    }

    fn streaming_limits() -> Limits {
        Limits {
            max_concurrent_calls: 8,
            request_timeout: Some(Duration::from_millis(100)),
            stream_timeout: Some(Duration::from_millis(300)),
            stream_idle_timeout: Some(Duration::from_secs(30)),
            max_calls_per_connection: 8,
            max_calls_per_peer: 8,
            ..layer_limits(None)
        }
    }

    #[tokio::test]
    async fn a_stream_the_server_keeps_open_ends_deadline_exceeded_at_the_stream_timeout() {
        let status = status_of_silent_call(
            &streaming_limits(),
            "/catalogue.v1.CatalogueService/ListProducts",
        )
        .await;

        assert_eq!(status.as_deref(), Some("4"), "DEADLINE_EXCEEDED");
    }

    #[tokio::test]
    async fn a_health_watch_outlives_the_stream_timeout() {
        let watch = status_of_silent_call(&streaming_limits(), HEALTH_WATCH_PATH).await;

        assert_eq!(watch, None, "a health Watch outlives every server timeout");
    }

    // On a paused clock (tokio's `test-util`): time moves only when the
    // test advances it, so each bound is checked to the millisecond, and
    // nothing is awaited that could let the clock jump on its own.

    const GET_PRODUCT: &str = "/catalogue.v1.CatalogueService/GetProduct";
    const LIST_PRODUCTS: &str = "/catalogue.v1.CatalogueService/ListProducts";

    fn call_to(path: &str) -> Request<tonic::body::Body> {
        Request::builder()
            .uri(path)
            .body(tonic::body::Body::empty())
            .unwrap()
    }

    /// The grpc-status a response carries in its headers (a refusal, or a
    /// deadline before any answer); `None` for an answer of the handler's.
    fn header_status<B>(response: &Response<B>) -> Option<&str> {
        response.headers().get("grpc-status")?.to_str().ok()
    }

    /// The layer around a handler that never answers.
    fn unanswered(
        limits: &Limits,
    ) -> impl Service<
        Request<tonic::body::Body>,
        Response = Response<ShedBody<Silent>>,
        Error = std::convert::Infallible,
    > + Clone {
        let handler = tower::service_fn(|_: Request<tonic::body::Body>| {
            std::future::pending::<Result<Response<Silent>, std::convert::Infallible>>()
        });
        ShedLayer::new(limits, &Metrics::new().expect("a recorder")).layer(handler)
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_past_its_deadline_ends_deadline_exceeded_exactly_when_the_clock_passes_it() {
        use tower::ServiceExt as _;
        let deadline = Duration::from_millis(100);
        let limits = Limits {
            max_concurrent_calls: 8,
            ..layer_limits(Some(deadline))
        };
        let mut call = Box::pin(unanswered(&limits).oneshot(call_to(GET_PRODUCT)));
        assert!(futures::poll!(&mut call).is_pending(), "admitted, waiting");

        tokio::time::advance(deadline - Duration::from_millis(1)).await;
        let before = futures::poll!(&mut call);
        tokio::time::advance(Duration::from_millis(1)).await;
        let at = futures::poll!(&mut call);

        assert!(
            before.is_pending(),
            "still waiting 1 ms before its deadline"
        );
        let Poll::Ready(Ok(response)) = at else {
            panic!("ended at its deadline");
        };
        assert_eq!(header_status(&response), Some("4"), "DEADLINE_EXCEEDED");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_over_the_concurrency_limit_is_refused_unavailable_with_a_pushback_hint() {
        use tower::ServiceExt as _;
        let limits = Limits {
            retry_pushback: Duration::from_millis(250),
            ..layer_limits(None)
        };
        let service = unanswered(&limits);
        let mut holding = Box::pin(service.clone().oneshot(call_to(GET_PRODUCT)));
        assert!(
            futures::poll!(&mut holding).is_pending(),
            "takes the one slot"
        );

        let refused = service.clone().oneshot(call_to(GET_PRODUCT)).await.unwrap();
        drop(holding);
        let mut after = Box::pin(service.oneshot(call_to(GET_PRODUCT)));

        assert_eq!(header_status(&refused), Some("14"), "UNAVAILABLE: retry");
        assert_eq!(
            refused
                .headers()
                .get("grpc-retry-pushback-ms")
                .and_then(|value| value.to_str().ok()),
            Some("250")
        );
        assert!(
            futures::poll!(&mut after).is_pending(),
            "the slot came back with the call that held it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_whose_client_reads_nothing_ends_at_the_idle_timeout_and_gives_its_slot_back()
    {
        use futures::StreamExt as _;
        use http_body_util::BodyExt as _;
        use tower::ServiceExt as _;
        let idle = Duration::from_secs(10);
        let limits = Limits {
            stream_idle_timeout: Some(idle),
            ..layer_limits(None)
        };
        // One message, then nothing more to say.
        let handler = tower::service_fn(|_: Request<tonic::body::Body>| async {
            let frames = futures::stream::iter([Ok::<_, std::convert::Infallible>(Frame::data(
                Bytes::from_static(b"message"),
            ))])
            .chain(futures::stream::pending());
            Ok::<_, std::convert::Infallible>(Response::new(http_body_util::StreamBody::new(
                frames,
            )))
        });
        let service = ShedLayer::new(&limits, &Metrics::new().expect("a recorder")).layer(handler);
        let mut stream = service
            .clone()
            .oneshot(call_to(LIST_PRODUCTS))
            .await
            .unwrap()
            .into_body();
        let first = stream.frame().await.unwrap().unwrap();
        assert!(first.is_data(), "the message went out");

        // The client reads nothing more: hyper never polls the body again.
        tokio::time::advance(idle - Duration::from_millis(1)).await;
        let before = service
            .clone()
            .oneshot(call_to(LIST_PRODUCTS))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_millis(1)).await;
        let after = service.oneshot(call_to(LIST_PRODUCTS)).await.unwrap();
        let trailers = stream
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_trailers()
            .unwrap();

        assert_eq!(
            header_status(&before),
            Some("14"),
            "1 ms before the idle timeout the stream holds the one slot"
        );
        assert_eq!(header_status(&after), None, "its slot came back at it");
        assert_eq!(
            trailers.get("grpc-status").and_then(|v| v.to_str().ok()),
            Some("4"),
            "DEADLINE_EXCEEDED: {trailers:?}"
        );
        let message = trailers
            .get("grpc-message")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        assert!(message.contains("idle"), "{message}");
    }
}
