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
        acquire_timeout: std::time::Duration::from_secs(5),
        statement_timeout: std::time::Duration::from_secs(5),
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

/// An app on a fresh schema with `extra` flags, its schema's url, and a
/// transaction of the test's that holds an exclusive lock on `products`:
/// every statement of the app on it waits.
async fn app_behind_a_locked_table(
    extra: &[&str],
) -> (
    crate::helpers::TestApp,
    sqlx::Transaction<'static, sqlx::Postgres>,
) {
    let url = crate::helpers::postgres_schema(&crate::helpers::test_database_url()).await;
    let app = crate::helpers::spawn_app_at(
        &url,
        extra,
        crate::helpers::test_log_sink(),
        tempfile::tempdir().unwrap(),
    )
    .await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    (app, lock)
}

/// GetProduct with a deadline far beyond the store's timeouts: the store
/// fails first (UNAVAILABLE), or nothing bounds it and the deadline does.
async fn get_product_within_a_minute(app: &crate::helpers::TestApp) -> tonic::Code {
    let mut request = tonic::Request::new(catalogue::api::proto::GetProductRequest {
        product_id: seed::products(1).next().unwrap().id.as_str().to_owned(),
    });
    request.set_timeout(std::time::Duration::from_secs(60));
    let mut client = app.client.clone();
    match client.get_product(request).await {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: build and run with TEST_DATABASE_URL set"
)]
async fn a_statement_that_runs_past_its_timeout_fails_the_call() {
    let (app, lock) =
        app_behind_a_locked_table(&["--db-statement-timeout", "200ms", "--request-timeout", "1h"])
            .await;

    let code = get_product_within_a_minute(&app).await;

    assert_eq!(
        code,
        tonic::Code::Unavailable,
        "cut off by statement_timeout: the database is slow or locked, retry"
    );
    drop(lock);
}

#[tokio::test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: build and run with TEST_DATABASE_URL set"
)]
async fn a_call_waits_for_a_pooled_connection_at_most_the_acquire_timeout() {
    let (app, lock) = app_behind_a_locked_table(&[
        "--db-pool-size",
        "1",
        "--db-acquire-timeout",
        "200ms",
        "--db-statement-timeout",
        "1h",
        "--request-timeout",
        "1h",
    ])
    .await;
    // The pool's one connection waits on the lock...
    let holding = tokio::spawn({
        let app_client = app.client.clone();
        async move {
            let mut client = app_client;
            let request = catalogue::api::proto::GetProductRequest {
                product_id: seed::products(1).next().unwrap().id.as_str().to_owned(),
            };
            client.get_product(request).await.map(drop)
        }
    });
    crate::helpers::wait_for_in_flight(&app, 1.0).await;

    // ...so the next call has none to take.
    let code = get_product_within_a_minute(&app).await;

    assert_eq!(
        code,
        tonic::Code::Unavailable,
        "no connection within the acquire timeout: busy, retry"
    );
    drop(lock);
    holding
        .await
        .unwrap()
        .expect("served once the lock is gone");
}
