//! What the database tests share: a PostgreSQL schema of their own (dropped
//! when the test ends, passed or failed), the catalogue's gRPC health, and a
//! TCP relay in front of PostgreSQL that a test can cut.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::Mutex, task::JoinSet};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::{Logs, TestApp, spawn_app_at};

/// A fresh schema in `TEST_DATABASE_URL`'s database, dropped on drop.
pub struct PgSchema {
    /// The server's url, without the schema.
    pub server_url: String,
    pub name: String,
}

impl PgSchema {
    /// `None`, having said so, when no PostgreSQL is configured or it does
    /// not answer: the test is skipped, never counted as run.
    pub async fn create() -> Option<Self> {
        let Some(server_url) = std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|url| !url.is_empty())
        else {
            eprintln!("skipped: no database (TEST_DATABASE_URL is not set)");
            return None;
        };
        let Ok(pool) = sqlx::PgPool::connect(&server_url).await else {
            eprintln!("skipped: no database ({server_url} does not answer)");
            return None;
        };
        let url = crate::helpers::postgres_schema(&server_url).await;
        pool.close().await;
        let name = url
            .rsplit_once("search_path]=")
            .map(|(_, name)| name.to_owned())
            .expect("postgres_schema names its schema");
        Some(Self { server_url, name })
    }

    /// A url whose connections use this schema, through `server_url`.
    pub fn url_via(&self, server_url: &str) -> String {
        let separator = if server_url.contains('?') { '&' } else { '?' };
        format!("{server_url}{separator}options[search_path]={}", self.name)
    }

    pub fn url(&self) -> String {
        self.url_via(&self.server_url)
    }

    /// A pool of the test's own on the server.
    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.url()).await.expect("connects")
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let (url, name) = (self.server_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let pool = sqlx::PgPool::connect(&url).await?;
                // A lock a failed test left held (its transaction rolled
                // back only once its runtime runs again) would stop the
                // drop: its holders go first.
                sqlx::query(
                    "SELECT pg_terminate_backend(l.pid) FROM pg_locks l \
                     JOIN pg_class c ON c.oid = l.relation \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND l.pid <> pg_backend_pid()",
                )
                .bind(&name)
                .execute(&pool)
                .await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
                )))
                .execute(&pool)
                .await?;
                pool.close().await;
                Ok::<_, sqlx::Error>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop schema {}: {dropped:?}", self.name);
        }
    }
}

/// An app on `url` with `extra` flags, its log lines kept.
pub async fn app_on(url: &str, extra: &[&str]) -> (TestApp, Logs) {
    let logs = Logs::default();
    let app = spawn_app_at(url, extra, logs.sink(), tempfile::tempdir().unwrap()).await;
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
