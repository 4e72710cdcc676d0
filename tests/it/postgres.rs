//! Opening a PostgreSQL store whose `search_path` names a schema that does
//! not exist yet.

use std::time::{SystemTime, UNIX_EPOCH};

use catalogue::{
    domain::ProductId,
    store::{self, StoreOptions, seed},
};

#[tokio::test]
async fn the_schema_search_path_names_is_created_before_migrating() {
    let Ok(url) = std::env::var("TEST_DATABASE_URL") else {
        eprintln!("skipped: TEST_DATABASE_URL is not set");
        return;
    };
    // Never created by anyone, and with a hyphen: only a quoted identifier
    // creates it.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let schema = format!("catalogue-fresh-{}-{nanos}", std::process::id());
    let separator = if url.contains('?') { '&' } else { '?' };
    let options = StoreOptions {
        database_url: format!("{url}{separator}options[search_path]={schema}"),
        seed_products: 10,
        pool_size: 2,
    };

    let opened = store::open(&options).await;

    let admin = sqlx::PgPool::connect(&url)
        .await
        .expect("TEST_DATABASE_URL connects");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = $1 ORDER BY table_name",
    )
    .bind(&schema)
    .fetch_all(&admin)
    .await
    .expect("tables listed");
    let product = match &opened {
        Ok(store) => store
            .get_product(&ProductId::parse(&seed::product_id(1)).unwrap())
            .await
            .map(|product| product.is_some()),
        Err(_) => Ok(false),
    };
    let open_error = opened.err().map(|error| error.to_string());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(&admin)
    .await
    .expect("schema dropped");

    assert!(
        tables.contains(&"products".to_owned()),
        "the migrations ran in {schema}: {tables:?}, {open_error:?}"
    );
    assert!(matches!(product, Ok(true)), "the store serves: {product:?}");
}
