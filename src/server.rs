//! The gRPC server: the transport and its limits (HTTP/2, TCP keepalive,
//! message sizes), the layers around every call (telemetry, protection, the
//! panic catcher), the services behind them (catalogue, health, reflection)
//! and the health status that follows the store. `app` decides when it
//! runs; this says what it is.

mod by_service;

use std::{any::Any, future::Future, sync::Arc};

use futures::TryStreamExt as _;
use tokio::net::TcpListener;
use tonic::{
    Status,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::{
    ServingStatus,
    pb::health_server::{Health, HealthServer},
    server::{HealthReporter, HealthService},
};
use tower::Layer as _;
use tower_http::catch_panic::CatchPanicLayer;

use self::by_service::CatalogueFirstLayer;

use crate::{
    api::{CatalogueApi, proto, proto::catalogue_service_server::CatalogueServiceServer},
    faults::{FaultInjector, FaultLayer, Faulty},
    grpc::{GrpcTelemetryLayer, Rpc},
    method::{Kind, Method},
    metrics::Metrics,
    protection::{Limits, ShedLayer, expose_tcp_info, guard_connections},
    store::Store,
};

/// h2's guard against streams reset by protocol errors (the "rapid reset"
/// family): tonic passes `None` to hyper by default, which turns it off.
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
/// Streams a client may open and reset before the server accepts them.
const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 64;
/// Largest request message: a request of the contract is a few hundred
/// bytes (an id, a query, a page token). Responses keep
/// `--max-message-bytes`.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// h2's bound on request headers; `ShedLayer` refuses a call over a quarter.
const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// TCP keepalive on accepted connections: the kernel finds a peer that
/// vanished (no FIN, no RST) on an idle connection, even one still in its
/// handshake: first probe after 60 s idle, then every 10 s, three
/// unanswered probes close it.
const TCP_KEEPALIVE_TIME: std::time::Duration = std::time::Duration::from_secs(60);
const TCP_KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
const TCP_KEEPALIVE_RETRIES: u32 = 3;
/// A connection whose sent data stays unacknowledged this long is closed by
/// the kernel (`TCP_USER_TIMEOUT`, as grpc-go sets it): a peer that vanished
/// while the server was writing to it, where keepalive probes do not run.
///
/// The kernel's two timers are how dead peers are found. HTTP/2 keepalive
/// pings would find them too, and a client process hung behind a live
/// kernel, but hyper's keepalive reads the clock and polls a timer at every
/// poll of every connection: 1,472 instructions of a GetProduct's 59,133
/// (callgrind, `scripts/instructions.py`). A hung client's unread answers
/// end at `--stream-idle-timeout`, its connection at
/// `--connection-idle-timeout` or `--max-connection-age` (docs/overload.md).
const TCP_USER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// The services the server answers besides reflection.
pub struct Services<H> {
    /// The catalogue, behind its fault layer (`catalogue`).
    pub catalogue: Faulty<CatalogueServiceServer<CatalogueApi>>,
    pub health: HealthServer<H>,
}

/// The catalogue service: `api` behind the fault layer, its requests
/// bounded to `MAX_REQUEST_BYTES` and its answers to `max_message_bytes`.
pub fn catalogue(
    api: CatalogueApi,
    faults: Arc<FaultInjector>,
    max_message_bytes: usize,
) -> Faulty<CatalogueServiceServer<CatalogueApi>> {
    FaultLayer::new(faults).layer(
        CatalogueServiceServer::new(api)
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(max_message_bytes),
    )
}

/// The gRPC server future: `services` and reflection behind the telemetry
/// layer and the protection `limits` set, with the HTTP/2 limits set
/// explicitly; it stops accepting when `shutdown` resolves.
pub fn serve<H: Health, S: Future<Output = ()> + Send>(
    services: Services<H>,
    listener: TcpListener,
    telemetry: GrpcTelemetryLayer,
    limits: &Limits,
    metrics: &Metrics,
    max_concurrent_streams: u32,
    shutdown: S,
) -> Result<
    impl Future<Output = Result<(), tonic::transport::Error>> + Send + use<H, S>,
    tonic_reflection::server::Error,
> {
    // Lists what this server serves, not every service of the descriptors
    // (the catalogue's set holds the inventory upstream's too).
    let reflection = |reflection_service| {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(Method::SERVICE)
            .with_service_name(HEALTH_SERVICE)
            .with_service_name(reflection_service)
    };
    let reflection_v1 = reflection(REFLECTION_V1_SERVICE).build_v1()?;
    let reflection_v1alpha = reflection(REFLECTION_V1ALPHA_SERVICE).build_v1alpha()?;
    let reflection_v1 = reflection_v1.max_decoding_message_size(MAX_REQUEST_BYTES);
    let reflection_v1alpha = reflection_v1alpha.max_decoding_message_size(MAX_REQUEST_BYTES);
    let health_service = services.health.max_decoding_message_size(MAX_REQUEST_BYTES);
    let incoming = guard_connections(
        TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(TCP_KEEPALIVE_TIME))
            .with_keepalive_interval(Some(TCP_KEEPALIVE_INTERVAL))
            .with_keepalive_retries(Some(TCP_KEEPALIVE_RETRIES))
            .inspect_ok(bound_unacknowledged_data),
        limits,
        metrics,
    );
    // No `Server::timeout`: it ends a late call CANCELLED; `ShedLayer`
    // enforces the request timeout and ends it DEADLINE_EXCEEDED.
    let server = Server::builder()
        .max_concurrent_streams(max_concurrent_streams)
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESET_STREAMS))
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES);
    // Only the age: tonic 0.14 given a grace as well never sends the
    // GOAWAY (it waits out age and grace, then drops the connection).
    // `GuardedConnection` closes it once the grace is over.
    let server = match limits.max_connection_age {
        Some((age, _grace)) => server.max_connection_age(age),
        None => server,
    };
    let shed = ShedLayer::new(limits, metrics);
    Ok(server
        // Outermost first: telemetry sees the INTERNAL a caught panic becomes
        // and the UNAVAILABLE of a shed call.
        .layer(tower::util::MapRequestLayer::new(
            expose_tcp_info::<tonic::body::Body>,
        ))
        .layer(telemetry)
        .layer(shed)
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(CatalogueFirstLayer::new(services.catalogue))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, shutdown))
}

/// Sets `TCP_USER_TIMEOUT` on an accepted connection (Linux; elsewhere the
/// kernel's default retransmission limit stands). A connection it cannot be
/// set on is served without it, as tonic serves one its keepalive cannot be
/// set on.
fn bound_unacknowledged_data(stream: &tokio::net::TcpStream) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(error) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(TCP_USER_TIMEOUT))
    {
        tracing::debug!(%error, "TCP_USER_TIMEOUT not set");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = stream;
}

const HEALTH_SERVICE: &str = tonic_health::pb::health_server::SERVICE_NAME;
const REFLECTION_V1_SERVICE: &str =
    tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME;
const REFLECTION_V1ALPHA_SERVICE: &str =
    tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME;

/// Every method the gRPC server serves, for its telemetry: the catalogue's,
/// then health and reflection, traced only with `trace_health_checks`.
pub(crate) fn served_rpcs(trace_health_checks: bool) -> Vec<Rpc> {
    let catalogue = Method::ALL.map(|method| Rpc {
        service: Method::SERVICE,
        name: method.name(),
        kind: method.kind(),
        traced: true,
    });
    let tooling = [
        (HEALTH_SERVICE, "Check", Kind::Unary),
        (HEALTH_SERVICE, "Watch", Kind::ServerStream),
        (
            REFLECTION_V1_SERVICE,
            "ServerReflectionInfo",
            Kind::BidiStream,
        ),
        (
            REFLECTION_V1ALPHA_SERVICE,
            "ServerReflectionInfo",
            Kind::BidiStream,
        ),
    ]
    .map(|(service, name, kind)| Rpc {
        service,
        name,
        kind,
        traced: trace_health_checks,
    });
    catalogue.into_iter().chain(tooling).collect()
}

/// The gRPC health statuses: the catalogue's, which follows the store's, and
/// the server's own (""), which only the shutdown changes.
#[derive(Clone)]
pub(crate) struct HealthStatus {
    reporter: HealthReporter,
}

impl HealthStatus {
    /// The statuses, the catalogue SERVING, and the health service that
    /// answers from them.
    pub async fn serving() -> (Self, HealthServer<impl Health>) {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_serving::<CatalogueServiceServer<CatalogueApi>>()
            .await;
        (Self { reporter }, service)
    }

    /// The same statuses, answered by a second health service (the health
    /// lane's).
    pub(crate) fn service(&self) -> HealthService {
        HealthService::from_health_reporter(self.reporter.clone())
    }

    /// Pings the store every `interval` (each ping bounded by it) and sets
    /// the catalogue's status to follow: NOT_SERVING while the store fails,
    /// SERVING again once it answers, so probes and Consul checks that ask
    /// gRPC health (not `/readyz`) see a database outage. The server's own
    /// status is left alone: liveness must not restart a pod for it.
    pub(crate) async fn follow_store(self, store: Arc<dyn Store>, interval: std::time::Duration) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut serving = true;
        loop {
            ticks.tick().await;
            let answered = tokio::time::timeout(interval, store.ping()).await;
            let up = matches!(answered, Ok(Ok(())));
            if up == serving {
                continue;
            }
            serving = up;
            if up {
                tracing::info!("the store answers again: health SERVING");
                self.reporter
                    .set_serving::<CatalogueServiceServer<CatalogueApi>>()
                    .await;
            } else {
                let error = match answered {
                    Ok(Err(error)) => error.to_string(),
                    _ => format!("no answer within {interval:?}"),
                };
                tracing::warn!(%error, "the store does not answer: health NOT_SERVING");
                self.reporter
                    .set_not_serving::<CatalogueServiceServer<CatalogueApi>>()
                    .await;
            }
        }
    }

    /// Both statuses NOT_SERVING, so that balancers watching health stop
    /// sending.
    pub async fn stop(&self) {
        self.reporter
            .set_not_serving::<CatalogueServiceServer<CatalogueApi>>()
            .await;
        self.reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
    }

    /// Clears both statuses. Health Watch streams never end by themselves,
    /// and a drain would wait for them: clearing ends them (later checks get
    /// NOT_FOUND), so watchers' connections go.
    pub(crate) async fn clear(&mut self) {
        self.reporter
            .clear_service_status(proto::catalogue_service_server::SERVICE_NAME)
            .await;
        self.reporter.clear_service_status("").await;
    }
}

/// A panicking handler answers its call with INTERNAL; the server and every
/// other call are unaffected.
fn panic_response(panic: Box<dyn Any + Send + 'static>) -> http::Response<tonic::body::Body> {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload");
    tracing::error!(panic = message, "handler panicked");
    Status::internal("internal error").into_http()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[tokio::test]
    async fn an_accepted_connection_drops_data_unacknowledged_for_the_user_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, _client) = tokio::join!(listener.accept(), client);
        let (stream, _) = accepted.unwrap();
        let timeout = || socket2::SockRef::from(&stream).tcp_user_timeout().unwrap();
        assert_eq!(timeout(), None, "the kernel's default before");
        bound_unacknowledged_data(&stream);
        assert_eq!(timeout(), Some(TCP_USER_TIMEOUT));
    }
}
