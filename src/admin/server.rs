//! The admin server's accept loop: HTTP/1 only, at most
//! `--admin-max-connections` open, a quarter of them (at least 4) from one
//! address, the last eighth for addresses holding few (one more is closed
//! as it is accepted, and counted by reason: one address reopening
//! connections as they close cannot starve the scraper's), and a
//! connection that has not sent a whole request head
//! within `--admin-header-timeout` is closed (hyper's header read timeout,
//! which `axum::serve` leaves off). On shutdown, open connections finish
//! the request in hand and close. Each connection is a task named
//! `admin-connection` (task dumps, tokio-console).

use std::{future::Future, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use metrics::Counter;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::{
    metrics::{Metrics, names},
    protection::{AddressSlots, Refusal},
    runtime::TaskList,
};

/// The bounds of the admin server.
#[derive(Debug, Clone, Copy)]
pub struct AdminLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// How long the loop waits after a failed accept (out of file descriptors,
/// say) before trying again, instead of spinning on the error.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `shutdown` resolves, then waits for
/// the open connections to finish. Its refusal counter is `metrics`'.
pub fn serve(
    listener: TcpListener,
    router: Router,
    limits: AdminLimits,
    tasks: TaskList,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send,
) -> impl Future<Output = std::io::Result<()>> + Send {
    let reason = |reason: &'static str| {
        metrics.counter(&names::ADMIN_CONNECTIONS_REFUSED, &[("reason", reason)])
    };
    let refused = Refused {
        total: reason("max_connections"),
        per_address: reason("max_connections_per_peer"),
        reserved: reason("reserved_for_new_peers"),
    };
    accept_loop(listener, router, limits, tasks, refused, shutdown)
}

/// The refusal counters, one per reason.
struct Refused {
    total: Counter,
    per_address: Counter,
    reserved: Counter,
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    limits: AdminLimits,
    tasks: TaskList,
    refused: Refused,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    // A quarter each, but never fewer than the 4 the reserve may let in;
    // admin connections make no gRPC calls: no call slots.
    let slots = AddressSlots::new(
        limits.max_connections,
        (limits.max_connections / 4).max(4),
        0,
    );
    let connections = TaskTracker::new();
    let (closing, closed) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "admin server: accept failed; backing off");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        let (stream, peer) = stream;
        let permit = match slots.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(refusal) => {
                let counter = match refusal {
                    Refusal::Total => &refused.total,
                    Refusal::PerAddress => &refused.per_address,
                    Refusal::Reserve => &refused.reserved,
                };
                counter.increment(1);
                continue;
            }
        };
        let service = TowerToHyperService::new(router.clone());
        let mut closed = closed.clone();
        let connection = connections.track_future(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = closed.wait_for(|closed| *closed) => {}
            }
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        });
        if let Err(error) = tasks.spawn("admin-connection", connection) {
            tracing::warn!(%error, "admin server: cannot spawn a connection's task");
        }
    }
    closing.send_replace(true);
    connections.close();
    connections.wait().await;
    Ok(())
}
