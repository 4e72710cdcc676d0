//! The production store: PostgreSQL through sqlx, a generated `tsvector`
//! column with a GIN index for search.

use std::str::FromStr;

use sqlx::{
    PgPool, Postgres, Row,
    postgres::{PgConnectOptions, PgPoolOptions, PgRow},
    query_builder::Separated,
};

use super::{
    Statements, StoreError, StoreOptions,
    sql::{self, SqlBackend, SqlStore},
};
use crate::domain::Product;

/// The product columns every read selects, as a literal for `concat!`.
macro_rules! columns {
    () => {
        "id, name, description, price_cents, stock_qty, image_urls, \
         floor(extract(epoch FROM created_at))::bigint AS created_at, category_id"
    };
}

/// Any constant serves: it only has to be the same for every replica.
const SEED_LOCK_KEY: i64 = 0x6361_7461_6c6f_6775; // "catalogu"

/// The production store.
pub type PgStore = SqlStore<Postgres>;

impl PgStore {
    /// Connects, creates the schema `search_path` names if it is missing,
    /// applies migrations and seeds an empty catalogue.
    pub async fn open(options: &StoreOptions) -> Result<Self, StoreError> {
        let statement_timeout = format!("{}ms", options.statement_timeout.as_millis().max(1));
        let connect = PgConnectOptions::from_str(&options.database_url)?
            .options([("statement_timeout", statement_timeout)]);
        let pool = PgPoolOptions::new()
            .max_connections(options.pool_size)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.clone())
            .await?;
        create_schema_if_missing(&pool).await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let health = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(connect);
        let store = Self::new(pool, health);
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
        sql::seed_empty(transaction, count).await
    }
}

/// Creates the schema new tables would go in when none of the schemas
/// `search_path` names exists (`DATABASE_URL=…?options[search_path]=NAME`
/// with no schema NAME yet), which PostgreSQL would otherwise refuse with
/// "no schema has been selected to create in". The first schema named
/// other than `$user` and `pg_*` is the one created.
async fn create_schema_if_missing(pool: &PgPool) -> Result<(), StoreError> {
    const CURRENT_SCHEMA: &str = "SELECT current_schema()";
    let current: Option<String> = sqlx::query_scalar(CURRENT_SCHEMA).fetch_one(pool).await?;
    if current.is_some() {
        return Ok(());
    }
    let search_path: String = sqlx::query_scalar("SELECT current_setting('search_path')")
        .fetch_one(pool)
        .await?;
    let Some(schema) = schema_to_create(&search_path) else {
        return Err(StoreError::NoSchema { search_path });
    };
    let create = format!("CREATE SCHEMA IF NOT EXISTS {}", quote_identifier(&schema));
    if let Err(source) = sqlx::query(sqlx::AssertSqlSafe(create)).execute(pool).await {
        // Replicas starting together race to create it: one wins, the
        // others find it there.
        let current: Option<String> = sqlx::query_scalar(CURRENT_SCHEMA).fetch_one(pool).await?;
        if current.is_none() {
            return Err(StoreError::CreateSchema { schema, source });
        }
    }
    tracing::info!(%schema, "created the schema search_path names");
    Ok(())
}

/// The schema to create for a `search_path` setting none of whose schemas
/// exists: its first entry that is neither `$user` nor a system schema.
fn schema_to_create(search_path: &str) -> Option<String> {
    search_path_entries(search_path)?
        .into_iter()
        .find(|name| !name.is_empty() && name != "$user" && !name.starts_with("pg_"))
}

/// The schema names of a `search_path` setting as PostgreSQL reads the
/// list: unquoted names folded to lowercase, `""` in a quoted name standing
/// for one `"`. `None` for an unterminated quote, which PostgreSQL refuses.
fn search_path_entries(search_path: &str) -> Option<Vec<String>> {
    let mut entries = Vec::new();
    let mut rest = search_path.trim_start();
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut name = String::new();
            let mut chars = quoted.char_indices().peekable();
            loop {
                match chars.next()? {
                    (_, '"') if chars.next_if(|&(_, c)| c == '"').is_some() => name.push('"'),
                    (at, '"') => {
                        rest = &quoted[at + 1..];
                        break;
                    }
                    (_, c) => name.push(c),
                }
            }
            entries.push(name);
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            entries.push(rest[..end].trim_end().to_ascii_lowercase());
            rest = &rest[end..];
        }
        rest = rest.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(entries)
}

/// `name` as a quoted SQL identifier.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl SqlBackend for Postgres {
    const SYSTEM: &'static str = "postgresql";
    const CATALOGUE_PRESENT: &'static str = "SELECT to_regclass('products') IS NOT NULL";
    const STATEMENTS: Statements = Statements {
        get_product: concat!("SELECT ", columns!(), " FROM products WHERE id = $1"),
        list_products: concat!(
            "SELECT ",
            columns!(),
            " FROM products WHERE id > $1 AND ($2::text IS NULL OR category_id = $2) ORDER BY id LIMIT $3"
        ),
        search_products: concat!(
            "SELECT ",
            columns!(),
            " FROM products, plainto_tsquery('simple', $1) AS query",
            " WHERE search @@ query AND ($2::text IS NULL OR category_id = $2)",
            " ORDER BY ts_rank(search, query) DESC, id LIMIT $3 OFFSET $4"
        ),
    };

    /// A `text[]`.
    fn image_urls(row: &PgRow, _id: &str) -> Result<Vec<String>, StoreError> {
        Ok(row.try_get("image_urls")?)
    }

    /// `plainto_tsquery` reads words separated by spaces as all required.
    fn search_terms(words: &[String]) -> String {
        words.join(" ")
    }

    fn push_product(mut row: Separated<'_, Self, &'static str>, product: &Product) {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_to_create_is_the_first_real_one_search_path_names() {
        let cases = [
            ("catalogue", Some("catalogue")),
            ("Catalogue-New", Some("catalogue-new")),
            ("\"$user\", public", Some("public")),
            ("$user,pg_catalog, shop ,x", Some("shop")),
            ("\"My \"\"Shop\"\"\", b", Some("My \"Shop\"")),
            ("\"$user\"", None),
            ("", None),
            ("\"unterminated", None),
        ];
        for (search_path, expected) in cases {
            assert_eq!(
                schema_to_create(search_path).as_deref(),
                expected,
                "{search_path:?}"
            );
        }
    }

    #[test]
    fn identifiers_are_quoted_with_inner_quotes_doubled() {
        assert_eq!(quote_identifier("catalogue-new"), "\"catalogue-new\"");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}
