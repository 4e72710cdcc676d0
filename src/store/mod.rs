//! Where products live: the `Store` trait and its three backends.
//!
//! - `sqlite://…`: the embedded default, created, migrated and seeded on first start;
//! - `postgres://…`: production, migrated on start;
//! - `memory`: the seeded catalogue in process memory, for benchmarks.
//!
//! Stores know nothing about tonic or protobuf: they take validated values
//! from `domain` and return `Product`s.

mod failure;
mod instrumented;
mod memory;
mod postgres;
pub mod seed;
mod sql;
mod sqlite;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use futures::{Stream, stream};

use crate::domain::{CategoryId, ListCursor, ListQuery, Product, ProductId, SearchQuery};

pub use instrumented::{InstrumentedStore, pool_gauges};
pub use memory::MemoryStore;
pub use postgres::PgStore;
pub use sql::SqlStore;
pub use sqlite::SqliteStore;

/// Rows fetched per round trip while streaming a list. A stream holds at most
/// one chunk in memory and no database connection between chunks, so a slow
/// reader costs neither memory nor a pool slot.
pub(crate) const LIST_CHUNK_SIZE: u32 = 200;

/// Rows written per statement while seeding.
const SEED_BATCH_SIZE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database url {0:?}: expected sqlite://…, postgres://… or memory")]
    UnsupportedUrl(String),
    #[error(
        "search_path {search_path:?} names no schema to create tables in: \
         name one in the database url (postgres://…?options[search_path]=SCHEMA)"
    )]
    NoSchema { search_path: String },
    #[error(
        "could not create schema {schema:?}, which search_path names: {source} \
         (create it, or grant this user CREATE on the database)"
    )]
    CreateSchema { schema: String, source: sqlx::Error },
    #[error("stored product {id} is corrupt: {reason}")]
    Corrupt { id: String, reason: String },
    /// The pool timed out, and a connection of its own could not be opened
    /// either: the database is unreachable, for the reason given.
    #[error("no connection to the database: {0}")]
    Unreachable(String),
    /// The database answers, but holds no catalogue: its file replaced, its
    /// table dropped.
    #[error("the catalogue is missing: the database has no products table")]
    CatalogueMissing,
    /// Searches hold their share of the pool, and none came free within
    /// `--db-acquire-timeout`.
    #[error("every connection searches may use is busy")]
    SearchesBusy,
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub database_url: String,
    /// Products seeded into an empty catalogue.
    pub seed_products: u32,
    /// Upper bound on open database connections.
    pub pool_size: u32,
    /// Longest a call waits for a pooled connection before failing.
    pub acquire_timeout: Duration,
    /// Longest one statement may run (PostgreSQL's `statement_timeout`;
    /// SQLite's busy timeout, its wait for a lock).
    pub statement_timeout: Duration,
}

impl StoreError {
    /// No pooled connection came free within `--db-acquire-timeout`: the
    /// database is saturated, and a retry (elsewhere, or later) may succeed.
    pub(crate) fn is_busy(&self) -> bool {
        matches!(
            self,
            Self::Database(sqlx::Error::PoolTimedOut) | Self::SearchesBusy
        )
    }

    /// The database's state, not a defect of the service: unreachable,
    /// restarting, out of resources, busy, locked, read-only, or without
    /// its catalogue (see `failure`). A retry, later or on another replica,
    /// may succeed.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Self::Database(error) => failure::is_transient(error),
            Self::Unreachable(_) | Self::CatalogueMissing | Self::SearchesBusy => true,
            _ => false,
        }
    }
}

/// One page of products in id order: ids after `after`, optionally of one
/// category, at most `limit`.
#[derive(Debug, Clone)]
pub struct ListPage<'a> {
    pub after: Option<&'a ProductId>,
    pub category: Option<&'a CategoryId>,
    pub limit: u32,
}

/// The store calls, as spans and metrics name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    GetProduct,
    ListProducts,
    SearchProducts,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Self::GetProduct => "get_product",
            Self::ListProducts => "list_products",
            Self::SearchProducts => "search_products",
        }
    }
}

/// A SQL store's statements, one per operation (`db.statement` of its spans).
struct Statements {
    get_product: &'static str,
    list_products: &'static str,
    search_products: &'static str,
}

impl Statements {
    fn of(&self, operation: Operation) -> &'static str {
        match operation {
            Operation::GetProduct => self.get_product,
            Operation::ListProducts => self.list_products,
            Operation::SearchProducts => self.search_products,
        }
    }
}

/// A snapshot of a connection pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections, idle or in use.
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

impl PoolStats {
    fn of<DB: sqlx::Database>(pool: &sqlx::Pool<DB>) -> Self {
        Self {
            size: pool.size(),
            idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
            max: pool.options().get_max_connections(),
        }
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The `db.system` name of the backend.
    fn system(&self) -> &'static str;

    /// The statement an operation runs, for spans: placeholders only, never
    /// values. `None` for stores that do not speak SQL.
    fn statement(&self, _operation: Operation) -> Option<&'static str> {
        None
    }

    /// The connection pool's state, for stores that have one.
    fn pool_stats(&self) -> Option<PoolStats> {
        None
    }

    async fn get_product(&self, id: &ProductId) -> Result<Option<Product>, StoreError>;

    async fn list_products(&self, page: ListPage<'_>) -> Result<Vec<Product>, StoreError>;

    /// Products matching every word of the query, best first, ties by id;
    /// at most `limit`, skipping `query.offset`.
    async fn search_products(
        &self,
        query: &SearchQuery,
        limit: u32,
    ) -> Result<Vec<Product>, StoreError>;

    /// Cheap round trip proving the store answers and holds the catalogue
    /// (its table is there), on a connection of its own: calls holding
    /// every pooled connection do not make it fail.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Opens (creating, migrating and seeding where needed) the store the
/// database url names.
pub async fn open(options: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    let url = options.database_url.as_str();
    if url == "memory" {
        Ok(Arc::new(MemoryStore::seeded(options.seed_products)))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(options).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::open(options).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_owned()))
    }
}

/// What a list stream yields: products, then, when more follow the page, the
/// cursor of the next page.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Listed {
    Product(Product),
    NextPage(ListCursor),
}

/// Streams one `ListProducts` page in chunks of `LIST_CHUNK_SIZE`, fetching
/// each chunk only when the previous one has been consumed. Dropping the
/// stream (a cancelled call) stops the work at once, including a fetch in
/// flight.
pub(crate) fn list_stream(
    store: Arc<dyn Store>,
    query: ListQuery,
) -> impl Stream<Item = Result<Listed, StoreError>> + Send + 'static {
    struct State {
        store: Arc<dyn Store>,
        query: ListQuery,
        remaining: u32,
        buffered: std::vec::IntoIter<Product>,
        /// Set once the store has nothing after `query.after`.
        exhausted: bool,
        done: bool,
    }
    let remaining = query.page_size.get();
    let state = State {
        store,
        query,
        remaining,
        buffered: Vec::new().into_iter(),
        exhausted: false,
        done: false,
    };
    stream::try_unfold(state, |mut state| async move {
        loop {
            if state.done {
                return Ok(None);
            }
            if state.remaining == 0 {
                // The page is full: it has a successor unless the store is
                // exhausted, which the last chunk's extra row has told us.
                state.done = true;
                return Ok(match (&state.query.after, state.exhausted) {
                    (Some(last), false) => {
                        let next = Listed::NextPage(ListCursor(last.clone()));
                        Some((next, state))
                    }
                    _ => None,
                });
            }
            if let Some(product) = state.buffered.next() {
                state.remaining -= 1;
                state.query.after =
                    Some(
                        ProductId::parse(&product.id).map_err(|_| StoreError::Corrupt {
                            id: product.id.clone(),
                            reason: "invalid id".into(),
                        })?,
                    );
                return Ok(Some((Listed::Product(product), state)));
            }
            if state.exhausted {
                return Ok(None);
            }
            // The last chunk asks for one row more than the page needs, to
            // learn whether a next page exists.
            let last_chunk = state.remaining <= LIST_CHUNK_SIZE;
            let wanted = state.remaining.min(LIST_CHUNK_SIZE);
            let limit = if last_chunk { wanted + 1 } else { wanted };
            let chunk = state
                .store
                .list_products(ListPage {
                    after: state.query.after.as_ref(),
                    category: state.query.category.as_ref(),
                    limit,
                })
                .await?;
            state.exhausted = chunk.len() < limit as usize;
            let mut chunk = chunk;
            chunk.truncate(wanted as usize);
            state.buffered = chunk.into_iter();
        }
    })
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;

    use super::*;
    use crate::domain::PageSize;

    async fn list(store: &Arc<dyn Store>, after: Option<&str>, size: u32) -> Vec<Listed> {
        let query = ListQuery {
            after: after.map(|id| ProductId::parse(id).unwrap()),
            category: None,
            page_size: PageSize::parse(size as i32, 50, 1000).unwrap(),
        };
        list_stream(store.clone(), query)
            .try_collect()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_full_page_ends_with_the_next_cursor_unless_the_store_is_exhausted() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::seeded(450));

        let page = list(&store, None, 400).await;
        assert_eq!(page.len(), 401, "400 products and a cursor");
        let Listed::NextPage(cursor) = page.last().unwrap() else {
            panic!("last item is not a cursor: {:?}", page.last());
        };
        assert_eq!(cursor.0.as_str(), seed::product_id(400));

        let rest = list(&store, Some(cursor.0.as_str()), 50).await;
        assert_eq!(rest.len(), 50, "exactly the last 50 products, no cursor");
        assert!(matches!(rest.last(), Some(Listed::Product(p)) if p.id == seed::product_id(450)));
    }
}
