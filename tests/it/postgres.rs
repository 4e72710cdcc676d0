//! Opening a PostgreSQL store whose `search_path` names a schema that does
//! not exist yet.

use std::time::{SystemTime, UNIX_EPOCH};

use catalogue::{
    domain::ProductId,
    store::{self, StoreOptions, seed},
};

use crate::helpers::{Backend, PgSchema, TestApp, test_database_url};

#[tokio::test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: build and run with TEST_DATABASE_URL set"
)]
async fn the_schema_search_path_names_is_created_before_migrating() {
    let url = test_database_url();
    // Never created by anyone, and with a hyphen: only a quoted identifier
    // creates it.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let fresh = PgSchema::claim(
        &url,
        &format!("catalogue-fresh-{}-{nanos}", std::process::id()),
    );
    let schema = &fresh.name;
    let options = StoreOptions {
        database_url: fresh.url(),
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
    .bind(schema)
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

    assert!(
        tables.contains(&"products".to_owned()),
        "the migrations ran in {schema}: {tables:?}, {open_error:?}"
    );
    assert!(matches!(product, Ok(true)), "the store serves: {product:?}");
}

/// An app on a fresh schema with `extra` flags, and a transaction of the
/// test's that holds an exclusive lock on `products`: every statement of
/// the app on it waits.
async fn app_behind_a_locked_table(
    extra: &[&str],
) -> (TestApp, sqlx::Transaction<'static, sqlx::Postgres>) {
    let app = TestApp::builder()
        .backend(Backend::Postgres)
        .args(extra)
        .spawn()
        .await;
    let pool = app.schema().expect("a PostgreSQL app").pool().await;
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    (app, lock)
}

/// GetProduct with a deadline far beyond the store's timeouts: the store
/// fails first (UNAVAILABLE), or nothing bounds it and the deadline does.
async fn get_product_within_a_minute(app: &TestApp) -> tonic::Code {
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
    app.wait_for_in_flight(1.0).await;

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
