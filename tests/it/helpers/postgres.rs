//! A PostgreSQL schema of the test's own, dropped when the test ends
//! (passed or failed), so a run leaves nothing behind on a shared server
//! and never touches another run's schemas.

use std::{
    io::Write,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sqlx::Connection;

/// A schema in `TEST_DATABASE_URL`'s database, dropped on drop.
pub struct PgSchema {
    /// The server's url, without the schema.
    pub server_url: String,
    pub name: String,
}

impl PgSchema {
    /// A fresh schema, or `None` when no PostgreSQL is configured or it does
    /// not answer: the test is skipped, and says so on the terminal (built
    /// without `TEST_DATABASE_URL`, the tests that call this are ignored
    /// besides, so they are not counted as passed).
    pub async fn create() -> Option<Self> {
        let Some(server_url) = std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|url| !url.is_empty())
        else {
            say("skipped: no database (TEST_DATABASE_URL is not set)");
            return None;
        };
        match Self::create_on(&server_url).await {
            Ok(schema) => Some(schema),
            Err(error) => {
                say(&format!("skipped: no database ({server_url}: {error})"));
                None
            }
        }
    }

    /// A fresh schema for a test that runs only when built with
    /// `TEST_DATABASE_URL` (ignored otherwise, see `build.rs`): with the
    /// variable, PostgreSQL not answering is a failure, not a skip.
    pub async fn required() -> Self {
        let server_url = test_database_url();
        Self::create_on(&server_url)
            .await
            .unwrap_or_else(|error| panic!("{server_url}: {error}"))
    }

    async fn create_on(server_url: &str) -> Result<Self, sqlx::Error> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "catalogue_test_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut connection = sqlx::PgConnection::connect(server_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&mut connection)
            .await?;
        connection.close().await?;
        Ok(Self::claim(server_url, &name))
    }

    /// The schema `name` on `server_url`, made by someone else (or by
    /// nobody yet), dropped on drop like one of ours.
    pub fn claim(server_url: &str, name: &str) -> Self {
        Self {
            server_url: server_url.to_owned(),
            name: name.to_owned(),
        }
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

    async fn drop_now(server_url: &str, name: &str) -> Result<(), sqlx::Error> {
        let mut connection = sqlx::PgConnection::connect(server_url).await?;
        // Never wait forever: a schema left behind is named below.
        sqlx::query("SET lock_timeout = '10s'")
            .execute(&mut connection)
            .await?;
        // A lock a test left held (a transaction rolled back only once its
        // runtime runs again, which it does not while this drop blocks it)
        // would stop the drop: its holders, and whoever waits behind them,
        // go first.
        sqlx::query(
            "SELECT pg_terminate_backend(l.pid) FROM pg_locks l \
             JOIN pg_class c ON c.oid = l.relation \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND l.pid <> pg_backend_pid()",
        )
        .bind(name)
        .execute(&mut connection)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
        )))
        .execute(&mut connection)
        .await?;
        connection.close().await
    }
}

impl Drop for PgSchema {
    /// Drops the schema before the test returns, so a process that exits
    /// right after (`cargo nextest`: one test a process) still does it.
    fn drop(&mut self) {
        let (server_url, name) = (self.server_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on:
        // a thread of its own, with a runtime of its own, does the work.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(async {
                    tokio::time::timeout(
                        Duration::from_secs(30),
                        Self::drop_now(&server_url, &name),
                    )
                    .await
                    .map_err(|_| "timed out".to_owned())?
                    .map_err(|error| error.to_string())
                })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            say(&format!("schema {} left behind: {dropped:?}", self.name));
        }
    }
}

/// The PostgreSQL server of the tests. Only tests built with the variable
/// set run (the others are ignored), so here it must be set.
pub fn test_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .expect("TEST_DATABASE_URL was set when the tests were built, and must be set to run them")
}

/// Writes `line` to the terminal, not to the test's captured output
/// (which `cargo test` never shows for a test that passes).
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}
