//! The embedded default store: SQLite through sqlx, FTS5 for search.

use std::str::FromStr;

use sqlx::{
    Row, Sqlite,
    query_builder::Separated,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
    },
};

use super::{
    Statements, StoreError, StoreOptions,
    sql::{self, SqlBackend, SqlStore},
};
use crate::domain::Product;

/// The product columns every read selects, as a literal for `concat!`:
/// statements are `&'static str`, built at compile time, never per call.
macro_rules! columns {
    () => {
        "p.id, p.name, p.description, p.price_cents, p.stock_qty, p.image_urls, p.created_at, p.category_id"
    };
}

/// The embedded default store.
pub type SqliteStore = SqlStore<Sqlite>;

impl SqliteStore {
    /// Opens the database file (creating it), applies migrations and seeds an
    /// empty catalogue on one connection, closed before serving; then opens
    /// the pool that serves, whose connections never create a file: a file
    /// deleted or moved under the running service is an error to report,
    /// not an empty catalogue to serve.
    pub async fn open(options: &StoreOptions) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::from_str(&options.database_url)?
            // WAL lets readers proceed while a writer commits.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(options.statement_timeout);
        let in_memory = options.database_url.contains(":memory:")
            || options.database_url.contains("mode=memory");
        let pool_options = || {
            SqlitePoolOptions::new()
                .max_connections(options.pool_size)
                .acquire_timeout(options.acquire_timeout)
        };
        if in_memory {
            // One pool, or each would have a database of its own.
            let pool = pool_options().connect_with(connect).await?;
            prepare(&pool, options.seed_products).await?;
            return Ok(Self::new(pool.clone(), pool));
        }
        // Processes starting together on one new file take turns: the
        // first creates, migrates and seeds it, the others then find it so.
        let turn = SetupTurn::take(connect.get_filename()).await?;
        let setup = pool_options()
            .max_connections(1)
            .connect_with(connect.clone().create_if_missing(true))
            .await?;
        prepare(&setup, options.seed_products).await?;
        setup.close().await;
        drop(turn);
        let serving = connect.create_if_missing(false);
        let pool = pool_options().connect_with(serving.clone()).await?;
        // A new connection for every ping (none is kept past its use): a
        // kept one would go on reading a deleted file.
        let health = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .max_lifetime(std::time::Duration::ZERO)
            .connect_lazy_with(serving);
        Ok(Self::new(pool, health))
    }
}

/// An advisory lock (`flock`) on the database file, held while this process
/// creates, migrates and seeds it. Taken before and dropped after any SQLite
/// connection of this process to the file: closing a file descriptor drops
/// the process's POSIX locks on the file, SQLite's included, so this one is
/// never closed while SQLite holds any.
struct SetupTurn {
    /// Held for its lock, which goes with it.
    _file: std::fs::File,
}

impl SetupTurn {
    async fn take(path: &std::path::Path) -> Result<Self, StoreError> {
        let path = path.to_owned();
        let locked = tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            file.lock()?;
            Ok::<_, std::io::Error>(file)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|locked| locked);
        locked
            .map(|file| Self { _file: file })
            .map_err(|error| StoreError::Database(sqlx::Error::Io(error)))
    }
}

/// Migrates and seeds the database `pool` reaches.
async fn prepare(pool: &sqlx::SqlitePool, seed_products: u32) -> Result<(), StoreError> {
    sqlx::migrate!("./migrations/sqlite").run(pool).await?;
    // One write transaction: SQLite serialises writers, so two processes
    // starting together cannot both seed.
    let transaction = pool.begin_with("BEGIN IMMEDIATE").await?;
    sql::seed_empty(transaction, seed_products).await
}

impl SqlBackend for Sqlite {
    const SYSTEM: &'static str = "sqlite";
    const CATALOGUE_PRESENT: &'static str =
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'products')";
    const STATEMENTS: Statements = Statements {
        get_product: concat!("SELECT ", columns!(), " FROM products p WHERE p.id = ?1"),
        list_products: concat!(
            "SELECT ",
            columns!(),
            " FROM products p WHERE p.id > ?1 AND (?2 IS NULL OR p.category_id = ?2) ORDER BY p.id LIMIT ?3"
        ),
        search_products: concat!(
            "SELECT ",
            columns!(),
            " FROM products_fts f JOIN products p ON p.rowid = f.rowid",
            " WHERE products_fts MATCH ?1 AND (?2 IS NULL OR p.category_id = ?2)",
            " ORDER BY bm25(products_fts, 10.0, 1.0), p.id LIMIT ?3 OFFSET ?4"
        ),
    };

    /// A JSON array of strings in a `TEXT` column.
    fn image_urls(row: &SqliteRow, id: &str) -> Result<Vec<String>, StoreError> {
        let image_urls: String = row.try_get("image_urls")?;
        serde_json::from_str(&image_urls).map_err(|error| StoreError::Corrupt {
            id: id.to_owned(),
            reason: format!("image_urls is not a JSON array of strings: {error}"),
        })
    }

    /// Every word quoted: an FTS5 string, never FTS5 syntax. Words are
    /// alphanumeric, so they hold no quote to escape.
    fn search_terms(words: &[String]) -> String {
        words
            .iter()
            .map(|word| format!("\"{word}\""))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn push_product(mut row: Separated<'_, Self, &'static str>, product: &Product) {
        row.push_bind(&product.id)
            .push_bind(&product.name)
            .push_bind(&product.description)
            .push_bind(product.price_cents)
            .push_bind(product.stock_qty)
            .push_bind(serde_json::to_string(&product.image_urls).unwrap_or_default())
            .push_bind(product.created_at)
            .push_bind(&product.category_id);
    }
}
