//! What the database tests share: a PostgreSQL schema of their own (dropped
//! when the test ends, passed or failed).

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
