//! What the database tests share (besides `helpers::PgSchema`, a schema of
//! their own): the catalogue's gRPC health, and a TCP relay in front of
//! PostgreSQL that a test can cut.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::Mutex, task::JoinSet};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::{Logs, TestApp};

/// An app on `url` with `extra` flags, its log lines kept.
pub async fn app_on(url: &str, extra: &[&str]) -> (TestApp, Logs) {
    let logs = Logs::default();
    let app = TestApp::builder()
        .database_url(url)
        .args(extra)
        .logs(&logs)
        .spawn()
        .await;
    (app, logs)
}

const SERVICE: &str = "catalogue.v1.CatalogueService";

/// The catalogue service's gRPC health now.
pub async fn health(app: &TestApp) -> ServingStatus {
    HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest {
            service: SERVICE.into(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status()
}

/// Waits (polling every 20 ms, at most 30 s) until the catalogue's health
/// is `wanted`.
pub async fn wait_for_health(app: &TestApp, wanted: ServingStatus) {
    let mut last = None;
    for _ in 0..1500 {
        let status = health(app).await;
        if status == wanted {
            return;
        }
        last = Some(status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("health stayed {last:?}, never {wanted:?}");
}

/// Whether health leaves SERVING within `window` (a Watch stream, so no
/// change is missed).
pub async fn leaves_serving_within(app: &TestApp, window: Duration) -> bool {
    let mut watch = HealthClient::new(app.channel.clone())
        .watch(HealthCheckRequest {
            service: SERVICE.into(),
        })
        .await
        .expect("watch answers")
        .into_inner();
    tokio::time::timeout(window, async {
        while let Some(Ok(response)) = watch.message().await.transpose() {
            if response.status() != ServingStatus::Serving {
                return;
            }
        }
        std::future::pending::<()>().await;
    })
    .await
    .is_ok()
}

/// A TCP relay to PostgreSQL that the test can cut: every relayed
/// connection reset and new ones refused (the listener closed).
pub struct Relay {
    pub addr: SocketAddr,
    connections: Arc<Mutex<JoinSet<()>>>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Relays `127.0.0.1:PORT` to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, upstream)
    }

    /// Relays again on the same port after `cut`.
    pub async fn restart(addr: SocketAddr, upstream: String) -> Self {
        let listener = TcpListener::bind(addr)
            .await
            .expect("the port is free again");
        Self::serve(listener, upstream)
    }

    fn serve(listener: TcpListener, upstream: String) -> Self {
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let accepting = tokio::spawn({
            let connections = connections.clone();
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let upstream = upstream.clone();
                    connections.lock().await.spawn(async move {
                        if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                }
            }
        });
        Self {
            addr,
            connections,
            accepting,
        }
    }

    /// Closes the listener (new connections are refused) and drops every
    /// relayed connection.
    pub async fn cut(self) {
        self.accepting.abort();
        let _ = self.accepting.await;
        self.connections.lock().await.shutdown().await;
    }
}

/// `TEST_DATABASE_URL` with its host and port replaced by `addr`.
pub fn url_through(server_url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = server_url.split_once("://").expect("a url");
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let user = authority.rsplit_once('@').map(|(user, _)| user);
    match user {
        Some(user) => format!("{scheme}://{user}@{addr}/{path}"),
        None => format!("{scheme}://{addr}/{path}"),
    }
}

/// `host:port` of a PostgreSQL url.
pub fn server_addr(server_url: &str) -> String {
    let rest = server_url.split_once("://").expect("a url").1;
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    }
}
