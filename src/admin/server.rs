//! The admin server's accept loop: HTTP/1 only, at most
//! `--admin-max-connections` open (one more is closed as it is accepted,
//! and counted), and a connection that has not sent a whole request head
//! within `--admin-header-timeout` is closed (hyper's header read timeout,
//! which `axum::serve` leaves off). On shutdown, open connections finish
//! the request in hand and close. Each connection is a task named
//! `admin-connection` (task dumps, tokio-console).

use std::{future::Future, sync::Arc, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use metrics::{Counter, counter};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::task::TaskTracker;

use crate::telemetry::{names, tasks::TaskList};

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
/// the open connections to finish. Call it inside the app's metrics scope:
/// the refusal counter is registered when it is called.
pub fn serve(
    listener: TcpListener,
    router: Router,
    limits: AdminLimits,
    tasks: TaskList,
    shutdown: impl Future<Output = ()> + Send,
) -> impl Future<Output = std::io::Result<()>> + Send {
    let refused = counter!(names::ADMIN_CONNECTIONS_REFUSED, "reason" => "max_connections");
    accept_loop(listener, router, limits, tasks, refused, shutdown)
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    limits: AdminLimits,
    tasks: TaskList,
    refused: Counter,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let connections = TaskTracker::new();
    let (closing, closed) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "admin server: accept failed; backing off");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            refused.increment(1);
            continue;
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
