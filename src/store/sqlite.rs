//! The embedded default store: SQLite through sqlx, FTS5 for search.

use std::{str::FromStr, time::Duration};

use async_trait::async_trait;
use sqlx::{
    QueryBuilder, Row, Sqlite, SqlitePool,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
    },
};

use super::{
    ListPage, Operation, PoolStats, SEED_BATCH_SIZE, Statements, Store, StoreError, StoreOptions,
    seed,
};
use crate::domain::{Product, ProductId, SearchQuery};

/// The product columns every read selects, as a literal for `concat!`:
/// statements are `&'static str`, built at compile time, never per call.
macro_rules! columns {
    () => {
        "p.id, p.name, p.description, p.price_cents, p.stock_qty, p.image_urls, p.created_at, p.category_id"
    };
}

const GET_PRODUCT: &str = concat!("SELECT ", columns!(), " FROM products p WHERE p.id = ?1");
const LIST_PRODUCTS: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM products p WHERE p.id > ?1 AND (?2 IS NULL OR p.category_id = ?2) ORDER BY p.id LIMIT ?3"
);
const SEARCH_PRODUCTS: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM products_fts f JOIN products p ON p.rowid = f.rowid",
    " WHERE products_fts MATCH ?1 AND (?2 IS NULL OR p.category_id = ?2)",
    " ORDER BY bm25(products_fts, 10.0, 1.0), p.id LIMIT ?3 OFFSET ?4"
);
const STATEMENTS: Statements = Statements {
    get_product: GET_PRODUCT,
    list_products: LIST_PRODUCTS,
    search_products: SEARCH_PRODUCTS,
};

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens the database file (creating it), applies migrations and seeds an
    /// empty catalogue.
    pub async fn open(options: &StoreOptions) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::from_str(&options.database_url)?
            .create_if_missing(true)
            // WAL lets readers proceed while a writer commits.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(options.pool_size)
            .connect_with(connect)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let store = Self { pool };
        store.seed(options.seed_products).await?;
        Ok(store)
    }

    async fn seed(&self, count: u32) -> Result<(), StoreError> {
        // One write transaction: SQLite serialises writers, so two processes
        // starting together cannot both seed.
        let mut transaction = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let seeded: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM products)")
            .fetch_one(&mut *transaction)
            .await?;
        if seeded {
            return Ok(());
        }
        let products: Vec<Product> = seed::products(count).collect();
        for batch in products.chunks(SEED_BATCH_SIZE) {
            let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO products (id, name, description, price_cents, stock_qty, image_urls, created_at, category_id) ",
            );
            insert.push_values(batch, |mut row, product| {
                row.push_bind(&product.id)
                    .push_bind(&product.name)
                    .push_bind(&product.description)
                    .push_bind(product.price_cents)
                    .push_bind(product.stock_qty)
                    .push_bind(serde_json::to_string(&product.image_urls).unwrap_or_default())
                    .push_bind(product.created_at)
                    .push_bind(&product.category_id);
            });
            insert.build().execute(&mut *transaction).await?;
        }
        transaction.commit().await?;
        tracing::info!(products = count, "seeded the sqlite catalogue");
        Ok(())
    }
}

fn product_from_row(row: &SqliteRow) -> Result<Product, StoreError> {
    let id: String = row.try_get("id")?;
    let image_urls: String = row.try_get("image_urls")?;
    let image_urls = serde_json::from_str(&image_urls).map_err(|error| StoreError::Corrupt {
        id: id.clone(),
        reason: format!("image_urls is not a JSON array of strings: {error}"),
    })?;
    Ok(Product {
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        price_cents: row.try_get("price_cents")?,
        stock_qty: row.try_get("stock_qty")?,
        image_urls,
        created_at: row.try_get("created_at")?,
        category_id: row.try_get("category_id")?,
        id,
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn system(&self) -> &'static str {
        "sqlite"
    }

    fn statement(&self, operation: Operation) -> Option<&'static str> {
        Some(STATEMENTS.of(operation))
    }

    fn pool_stats(&self) -> Option<PoolStats> {
        Some(PoolStats::of(&self.pool))
    }

    async fn get_product(&self, id: &ProductId) -> Result<Option<Product>, StoreError> {
        sqlx::query(GET_PRODUCT)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(product_from_row)
            .transpose()
    }

    async fn list_products(&self, page: ListPage<'_>) -> Result<Vec<Product>, StoreError> {
        sqlx::query(LIST_PRODUCTS)
            .bind(page.after.map_or("", ProductId::as_str))
            .bind(page.category.map(|category| category.as_str()))
            .bind(i64::from(page.limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(product_from_row)
            .collect()
    }

    async fn search_products(
        &self,
        query: &SearchQuery,
        limit: u32,
    ) -> Result<Vec<Product>, StoreError> {
        if query.text.words().is_empty() {
            return Ok(Vec::new());
        }
        // Every word quoted: an FTS5 string, never FTS5 syntax. Words are
        // alphanumeric, so they hold no quote to escape.
        let match_expression = query
            .text
            .words()
            .iter()
            .map(|word| format!("\"{word}\""))
            .collect::<Vec<_>>()
            .join(" ");
        sqlx::query(SEARCH_PRODUCTS)
            .bind(match_expression)
            .bind(query.category.as_ref().map(|category| category.as_str()))
            .bind(i64::from(limit))
            .bind(i64::from(query.offset.get()))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(product_from_row)
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
