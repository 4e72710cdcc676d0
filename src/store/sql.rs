//! What the two SQL stores share: `SqlStore`, one `Store` over an sqlx
//! pool, and `SqlBackend`, the little that differs between PostgreSQL and
//! SQLite (the statements, how `image_urls` is stored, how a product is
//! bound into an insert, the full-text query's syntax).
//!
//! Generic, not dynamic: each backend gets its own copy of the code at
//! compile time, exactly what it ran when each store wrote its own.
//!
//! The pool is shared out: searches (the costly statements) may hold all
//! but a quarter of its connections (at least one kept back, unless the
//! pool has only one), so a flood of searches leaves connections for
//! GetProduct and ListProducts; a
//! search that finds the share taken waits at most `--db-acquire-timeout`,
//! then is UNAVAILABLE. The share is the pool's, not a client's: behind a
//! proxy or a mesh sidecar every call comes from one address, and the
//! per-address share of calls is `protection`'s. The health ping has a
//! connection of its own (a pool of one, `health`), so calls holding every
//! pooled connection cannot turn health NOT_SERVING.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::{
    ColumnIndex, ConnectOptions as _, Connection as _, Database, Decode, Encode, Executor,
    IntoArguments, Pool, QueryBuilder, Row, Transaction, Type, query_builder::Separated,
};

use super::{ListPage, Operation, PoolStats, SEED_BATCH_SIZE, Statements, Store, StoreError, seed};
use crate::domain::{Product, ProductId, SearchQuery};

/// The insert every seed batch starts with; `SqlBackend::push_product`
/// binds the values in this order.
const INSERT_PRODUCTS: &str = "INSERT INTO products (id, name, description, price_cents, \
                               stock_qty, image_urls, created_at, category_id) ";

/// What one SQL database does its own way. Implemented by sqlx's
/// `Postgres` and `Sqlite`.
pub(super) trait SqlBackend: Database {
    /// The `db.system` name.
    const SYSTEM: &'static str;
    /// One boolean: whether the catalogue's `products` table is there.
    /// Looked up in the database's catalogue, so it waits for no lock on
    /// the table (a locked table is every replica's, and no reason to take
    /// this one out of rotation).
    const CATALOGUE_PRESENT: &'static str;
    /// `GET_PRODUCT` binds the id; `LIST_PRODUCTS` the id to start after,
    /// the category (or NULL) and the limit; `SEARCH_PRODUCTS` the search
    /// terms, the category (or NULL), the limit and the offset.
    const STATEMENTS: Statements;

    /// The `image_urls` column of the product `id`, which each database
    /// stores its own way.
    fn image_urls(row: &Self::Row, id: &str) -> Result<Vec<String>, StoreError>;

    /// The query's words (never empty) as the search statement's first
    /// parameter.
    fn search_terms(words: &[String]) -> String;

    /// Binds `product`'s columns in `INSERT_PRODUCTS` order.
    fn push_product(row: Separated<'_, Self, &'static str>, product: &Product);
}

/// A product as the statements select it.
fn product_from_row<DB>(row: &DB::Row) -> Result<Product, StoreError>
where
    DB: SqlBackend,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    i64: for<'r> Decode<'r, DB> + Type<DB>,
    i32: for<'r> Decode<'r, DB> + Type<DB>,
{
    let id: String = row.try_get("id")?;
    Ok(Product {
        image_urls: DB::image_urls(row, &id)?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        price_cents: row.try_get("price_cents")?,
        stock_qty: row.try_get("stock_qty")?,
        created_at: row.try_get("created_at")?,
        category_id: row.try_get("category_id")?,
        id,
    })
}

/// A store in a SQL database: `PgStore` or `SqliteStore`.
pub struct SqlStore<DB: Database> {
    pub(super) pool: Pool<DB>,
    /// The health ping's own connection (a pool of one).
    health: Pool<DB>,
    /// The connections of `pool` searches may hold at once.
    search_share: tokio::sync::Semaphore,
    /// `--db-acquire-timeout`: the longest a search waits for its share.
    acquire_timeout: Duration,
    /// Why the pool last timed out, found out at most once a second (see
    /// `explain`); the lock makes concurrent timeouts share one attempt.
    diagnosis: tokio::sync::Mutex<Option<(Instant, Option<String>)>>,
}

/// How long one diagnosis of a pool timeout stands.
const DIAGNOSIS_TTL: Duration = Duration::from_secs(1);

impl<DB: Database> SqlStore<DB> {
    /// A store serving calls from `pool` and health pings from `health`.
    pub(super) fn new(pool: Pool<DB>, health: Pool<DB>) -> Self {
        let size = pool.options().get_max_connections();
        let kept_back = (size / 4).max(1);
        let search_share = size.saturating_sub(kept_back).max(1);
        Self {
            acquire_timeout: pool.options().get_acquire_timeout(),
            search_share: tokio::sync::Semaphore::new(search_share as usize),
            pool,
            health,
            diagnosis: tokio::sync::Mutex::new(None),
        }
    }

    /// `error`, or for a pool timeout its cause. A pool that cannot open a
    /// connection (refused, unreachable, the file gone) retries until
    /// `--db-acquire-timeout` and reports only that it timed out: one
    /// connection opened outside the pool tells whether the database is
    /// unreachable (and why) or only busy.
    async fn explain(&self, error: sqlx::Error) -> StoreError {
        if !matches!(error, sqlx::Error::PoolTimedOut) {
            return error.into();
        }
        let mut diagnosis = self.diagnosis.lock().await;
        let cause = match &*diagnosis {
            Some((at, cause)) if at.elapsed() < DIAGNOSIS_TTL => cause.clone(),
            _ => {
                let cause = self.connect_once().await;
                *diagnosis = Some((Instant::now(), cause.clone()));
                cause
            }
        };
        match cause {
            Some(cause) => StoreError::Unreachable(cause),
            None => error.into(),
        }
    }

    /// Why a new connection cannot be opened; `None` if one can.
    async fn connect_once(&self) -> Option<String> {
        let options = self.pool.connect_options();
        match tokio::time::timeout(self.acquire_timeout, options.connect()).await {
            Ok(Ok(connection)) => {
                let _ = connection.close().await;
                None
            }
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some(format!(
                "no connection opened within --db-acquire-timeout ({:?})",
                self.acquire_timeout
            )),
        }
    }
}

/// Seeds `count` products in `transaction` unless the catalogue has some,
/// and commits. The caller has begun the transaction with what keeps a
/// second seeder out until then.
pub(super) async fn seed_empty<DB>(
    mut transaction: Transaction<'_, DB>,
    count: u32,
) -> Result<(), StoreError>
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    bool: for<'r> sqlx::Decode<'r, DB> + Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let seeded: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM products)")
        .fetch_one(&mut *transaction)
        .await?;
    if seeded {
        return Ok(());
    }
    let products: Vec<Product> = seed::products(count).collect();
    for batch in products.chunks(SEED_BATCH_SIZE) {
        let mut insert = QueryBuilder::<DB>::new(INSERT_PRODUCTS);
        insert.push_values(batch, DB::push_product);
        insert.build().execute(&mut *transaction).await?;
    }
    transaction.commit().await?;
    tracing::info!(
        products = count,
        db_system = DB::SYSTEM,
        "seeded the catalogue"
    );
    Ok(())
}

/// A statement's result, its error explained (`SqlStore::explain`).
trait OrElseExplain<T> {
    async fn or_else_explain<DB: Database>(self, store: &SqlStore<DB>) -> Result<T, StoreError>;
}

impl<T> OrElseExplain<T> for Result<T, sqlx::Error> {
    async fn or_else_explain<DB: Database>(self, store: &SqlStore<DB>) -> Result<T, StoreError> {
        match self {
            Ok(value) => Ok(value),
            Err(error) => Err(store.explain(error).await),
        }
    }
}

#[async_trait]
impl<DB> Store for SqlStore<DB>
where
    DB: SqlBackend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a str>: Encode<'a, DB> + Type<DB>,
    String: for<'a> Encode<'a, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    i64: for<'a> Encode<'a, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    i32: for<'r> Decode<'r, DB> + Type<DB>,
    bool: for<'r> Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
{
    fn system(&self) -> &'static str {
        DB::SYSTEM
    }

    fn statement(&self, operation: Operation) -> Option<&'static str> {
        Some(DB::STATEMENTS.of(operation))
    }

    fn pool_stats(&self) -> Option<PoolStats> {
        Some(PoolStats::of(&self.pool))
    }

    async fn get_product(&self, id: &ProductId) -> Result<Option<Product>, StoreError> {
        sqlx::query(DB::STATEMENTS.get_product)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .or_else_explain(self)
            .await?
            .as_ref()
            .map(product_from_row::<DB>)
            .transpose()
    }

    async fn list_products(&self, page: ListPage<'_>) -> Result<Vec<Product>, StoreError> {
        sqlx::query(DB::STATEMENTS.list_products)
            .bind(page.after.map_or("", ProductId::as_str))
            .bind(page.category.map(|category| category.as_str()))
            .bind(i64::from(page.limit))
            .fetch_all(&self.pool)
            .await
            .or_else_explain(self)
            .await?
            .iter()
            .map(product_from_row::<DB>)
            .collect()
    }

    async fn search_products(
        &self,
        query: &SearchQuery,
        limit: u32,
    ) -> Result<Vec<Product>, StoreError> {
        let _share = tokio::time::timeout(self.acquire_timeout, self.search_share.acquire())
            .await
            .map_err(|_| StoreError::SearchesBusy)?
            .map_err(|_| StoreError::SearchesBusy)?;
        sqlx::query(DB::STATEMENTS.search_products)
            .bind(DB::search_terms(query.text.words()))
            .bind(query.category.as_ref().map(|category| category.as_str()))
            .bind(i64::from(limit))
            .bind(i64::from(query.offset.get()))
            .fetch_all(&self.pool)
            .await
            .or_else_explain(self)
            .await?
            .iter()
            .map(product_from_row::<DB>)
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let present: bool = sqlx::query_scalar(DB::CATALOGUE_PRESENT)
            .fetch_one(&self.health)
            .await
            .or_else_explain(self)
            .await?;
        if present {
            Ok(())
        } else {
            Err(StoreError::CatalogueMissing)
        }
    }
}
