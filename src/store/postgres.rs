//! The production store: PostgreSQL through sqlx, a generated `tsvector`
//! column with a GIN index for search.

use std::{str::FromStr, time::Duration};

use async_trait::async_trait;
use sqlx::{
    PgPool, Postgres, QueryBuilder, Row,
    postgres::{PgConnectOptions, PgPoolOptions, PgRow},
};

use super::{
    ListPage, Operation, PoolStats, SEED_BATCH_SIZE, Statements, Store, StoreError, StoreOptions,
    seed,
};
use crate::domain::{Product, ProductId, SearchQuery};

/// The product columns every read selects, as a literal for `concat!`.
macro_rules! columns {
    () => {
        "id, name, description, price_cents, stock_qty, image_urls, \
         floor(extract(epoch FROM created_at))::bigint AS created_at, category_id"
    };
}

const GET_PRODUCT: &str = concat!("SELECT ", columns!(), " FROM products WHERE id = $1");
const LIST_PRODUCTS: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM products WHERE id > $1 AND ($2::text IS NULL OR category_id = $2) ORDER BY id LIMIT $3"
);
const SEARCH_PRODUCTS: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM products, plainto_tsquery('simple', $1) AS query",
    " WHERE search @@ query AND ($2::text IS NULL OR category_id = $2)",
    " ORDER BY ts_rank(search, query) DESC, id LIMIT $3 OFFSET $4"
);
const STATEMENTS: Statements = Statements {
    get_product: GET_PRODUCT,
    list_products: LIST_PRODUCTS,
    search_products: SEARCH_PRODUCTS,
};
/// Any constant serves: it only has to be the same for every replica.
const SEED_LOCK_KEY: i64 = 0x6361_7461_6c6f_6775; // "catalogu"

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects, applies migrations and seeds an empty catalogue.
    pub async fn open(options: &StoreOptions) -> Result<Self, StoreError> {
        let connect = PgConnectOptions::from_str(&options.database_url)?;
        let pool = PgPoolOptions::new()
            .max_connections(options.pool_size)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(connect)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let store = Self { pool };
        store.seed(options.seed_products).await?;
        Ok(store)
    }

    async fn seed(&self, count: u32) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await?;
        // Replicas starting together: one seeds, the others wait and then
        // find the catalogue full.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SEED_LOCK_KEY)
            .execute(&mut *transaction)
            .await?;
        let seeded: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM products)")
            .fetch_one(&mut *transaction)
            .await?;
        if seeded {
            return Ok(());
        }
        let products: Vec<Product> = seed::products(count).collect();
        for batch in products.chunks(SEED_BATCH_SIZE) {
            let mut insert: QueryBuilder<Postgres> = QueryBuilder::new(
                "INSERT INTO products (id, name, description, price_cents, stock_qty, image_urls, created_at, category_id) ",
            );
            insert.push_values(batch, |mut row, product| {
                row.push_bind(&product.id)
                    .push_bind(&product.name)
                    .push_bind(&product.description)
                    .push_bind(product.price_cents)
                    .push_bind(product.stock_qty)
                    .push_bind(&product.image_urls)
                    .push("to_timestamp(")
                    .push_bind_unseparated(product.created_at as f64)
                    .push_unseparated(")")
                    .push_bind(&product.category_id);
            });
            insert.build().execute(&mut *transaction).await?;
        }
        transaction.commit().await?;
        tracing::info!(products = count, "seeded the postgres catalogue");
        Ok(())
    }
}

fn product_from_row(row: &PgRow) -> Result<Product, StoreError> {
    Ok(Product {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        price_cents: row.try_get("price_cents")?,
        stock_qty: row.try_get("stock_qty")?,
        image_urls: row.try_get("image_urls")?,
        created_at: row.try_get("created_at")?,
        category_id: row.try_get("category_id")?,
    })
}

#[async_trait]
impl Store for PgStore {
    fn system(&self) -> &'static str {
        "postgresql"
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
        sqlx::query(SEARCH_PRODUCTS)
            .bind(query.text.words().join(" "))
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
