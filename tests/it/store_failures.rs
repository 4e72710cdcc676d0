//! The database's state, as clients and health see it: a transient failure
//! is UNAVAILABLE (retry, maybe elsewhere) with its cause in the log; a
//! missing catalogue turns health NOT_SERVING; a flood of calls neither
//! flips health nor takes every pooled connection.

use std::time::Duration;

use catalogue::{
    api::proto::{GetProductRequest, SearchRequest},
    store::seed,
};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::{
    db::{Relay, app_on, leaves_serving_within, server_addr, url_through, wait_for_health},
    helpers::{Backend, PgSchema, TestApp},
};

fn first_id() -> String {
    seed::products(1).next().unwrap().id
}

async fn get_product_code(app: &TestApp) -> Code {
    let mut request = tonic::Request::new(GetProductRequest {
        product_id: first_id(),
    });
    request.set_timeout(Duration::from_secs(60));
    match app.client.clone().get_product(request).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// GetProduct of the first seeded product.
async fn get_first(mut client: Client) -> Result<(), tonic::Status> {
    client
        .get_product(GetProductRequest {
            product_id: first_id(),
        })
        .await
        .map(drop)
}

type Client = catalogue::api::proto::catalogue_service_client::CatalogueServiceClient<
    tonic::transport::Channel,
>;

/// `count` calls made at once, each by `call` on a client of `app`'s.
fn spawn_calls<F, C>(
    app: &TestApp,
    count: usize,
    call: C,
) -> Vec<tokio::task::JoinHandle<Result<(), tonic::Status>>>
where
    C: Fn(Client) -> F,
    F: std::future::Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    (0..count)
        .map(|_| tokio::spawn(call(app.client.clone())))
        .collect()
}

/// A transaction of the test's holding `products` locked against every
/// statement of the app.
async fn lock_products(pool: &sqlx::PgPool) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    lock
}

/// An app on a schema of its own with `extra` flags (no call or pool wait
/// cut short), a pool of the test's, and its lock on `products`; `None`
/// without a database.
async fn app_behind_a_locked_table(
    extra: &[&str],
) -> Option<(
    PgSchema,
    TestApp,
    sqlx::PgPool,
    sqlx::Transaction<'static, sqlx::Postgres>,
)> {
    let schema = PgSchema::create().await?;
    let flags = [
        &["--db-acquire-timeout", "1h", "--request-timeout", "1h"][..],
        extra,
    ]
    .concat();
    let (app, _logs) = app_on(&schema.url(), &flags).await;
    let pool = schema.pool().await;
    let lock = lock_products(&pool).await;
    Some((schema, app, pool, lock))
}

/// Backends of the app waiting for `products`' lock whose statement
/// contains `statement`.
async fn waiting_on_products(pool: &sqlx::PgPool, statement: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
         WHERE l.relation = 'products'::regclass AND NOT l.granted AND a.query LIKE $1",
    )
    .bind(format!("%{statement}%"))
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn wait_for_waiting(pool: &sqlx::PgPool, statement: &str, count: i64) {
    let mut last = 0;
    for _ in 0..1500 {
        last = waiting_on_products(pool, statement).await;
        if last == count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{last} statements like {statement:?} wait for the lock, never {count}");
}

#[tokio::test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: build and run with TEST_DATABASE_URL set"
)]
async fn a_backend_killed_mid_query_is_unavailable_with_its_cause_logged() {
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let (app, logs) = app_on(&schema.url(), &["--request-timeout", "1h"]).await;
    let pool = schema.pool().await;
    let lock = lock_products(&pool).await;
    let call = spawn_calls(&app, 1, get_first).remove(0);
    wait_for_waiting(&pool, "WHERE id = $1", 1).await;

    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_locks \
         WHERE relation = 'products'::regclass AND NOT granted",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(killed, [true], "the app's backend was killed");
    let status = call.await.unwrap().expect_err("its call fails");
    drop(lock);

    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let text = logs.text();
    assert!(
        text.contains("terminating connection due to administrator command"),
        "the cause is logged: {text}"
    );
    assert_eq!(get_product_code(&app).await, Code::Ok, "and it recovers");
}

#[tokio::test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: build and run with TEST_DATABASE_URL set"
)]
async fn a_database_that_refuses_connections_is_unavailable_and_not_serving() {
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let upstream = server_addr(&schema.server_url);
    let relay = Relay::start(upstream.clone()).await;
    let addr = relay.addr;
    let url = schema.url_via(&url_through(&schema.server_url, addr));
    let (app, logs) = app_on(
        &url,
        &[
            "--store-health-interval",
            "100ms",
            "--db-acquire-timeout",
            "500ms",
        ],
    )
    .await;
    assert_eq!(get_product_code(&app).await, Code::Ok);

    relay.cut().await;
    let codes = [get_product_code(&app).await, get_product_code(&app).await];
    wait_for_health(&app, ServingStatus::NotServing).await;

    assert_eq!(codes, [Code::Unavailable; 2], "{}", logs.text());
    let text = logs.text();
    assert!(
        text.contains("Connection refused") || text.contains("connection refused"),
        "the cause is logged: {text}"
    );
    let _relay = Relay::restart(addr, upstream).await;
    wait_for_health(&app, ServingStatus::Serving).await;
    assert_eq!(get_product_code(&app).await, Code::Ok, "and it recovers");
}

#[tokio::test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: build and run with TEST_DATABASE_URL set"
)]
async fn a_dropped_catalogue_is_not_serving_and_unavailable() {
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let (app, _logs) = app_on(&schema.url(), &["--store-health-interval", "100ms"]).await;
    let pool = schema.pool().await;

    sqlx::query("ALTER TABLE products RENAME TO products_gone")
        .execute(&pool)
        .await
        .unwrap();
    wait_for_health(&app, ServingStatus::NotServing).await;
    let code = get_product_code(&app).await;
    sqlx::query("ALTER TABLE products_gone RENAME TO products")
        .execute(&pool)
        .await
        .unwrap();

    assert_eq!(code, Code::Unavailable);
    wait_for_health(&app, ServingStatus::Serving).await;
}

#[tokio::test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: build and run with TEST_DATABASE_URL set"
)]
async fn calls_holding_every_pooled_connection_do_not_flip_health() {
    let Some((_schema, app, pool, lock)) =
        app_behind_a_locked_table(&["--db-pool-size", "2", "--store-health-interval", "100ms"])
            .await
    else {
        return;
    };
    let calls = spawn_calls(&app, 4, get_first);
    app.wait_for_in_flight(4.0).await;
    wait_for_waiting(&pool, "WHERE id = $1", 2).await;

    // Twenty health intervals with both connections taken and two calls
    // queued for them.
    let flipped = leaves_serving_within(&app, Duration::from_secs(2)).await;
    drop(lock);
    for call in calls {
        call.await.unwrap().expect("served once the lock is gone");
    }

    assert!(!flipped, "health followed the pool, not the database");
}

#[tokio::test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: build and run with TEST_DATABASE_URL set"
)]
async fn a_search_flood_leaves_pooled_connections_for_other_calls() {
    let Some((_schema, app, pool, lock)) =
        app_behind_a_locked_table(&["--db-pool-size", "4"]).await
    else {
        return;
    };
    let searches = spawn_calls(&app, 8, |mut client| async move {
        client
            .search_products(SearchRequest {
                query: "lamp".into(),
                ..Default::default()
            })
            .await
            .map(drop)
    });
    app.wait_for_value(
        "grpc_server_in_flight_requests",
        &[("grpc_method", "SearchProducts")],
        8.0,
    )
    .await;
    let get = spawn_calls(&app, 1, get_first).remove(0);

    // The GetProduct reaches the database while eight searches wait.
    wait_for_waiting(&pool, "WHERE id = $1", 1).await;
    let searching = waiting_on_products(&pool, "search @@ query").await;
    drop(lock);

    get.await.unwrap().expect("the get is served");
    for search in searches {
        search.await.unwrap().expect("the searches are served");
    }
    assert!(searching < 4, "{searching} searches held connections");
}

/// An app on a SQLite file of its own, pinging its store every 100 ms.
async fn sqlite_app() -> (TestApp, crate::helpers::Logs) {
    let logs = crate::helpers::Logs::default();
    let app = TestApp::builder()
        .backend(Backend::Sqlite)
        .args(&["--store-health-interval", "100ms"])
        .logs(&logs)
        .spawn()
        .await;
    (app, logs)
}

/// Calls enough to open a new pooled connection or two: none may fail
/// INTERNAL.
async fn codes_of_a_few_calls(app: &TestApp) -> Vec<Code> {
    let mut codes = Vec::new();
    for _ in 0..8 {
        codes.push(get_product_code(app).await);
    }
    codes
}

fn remove_sqlite_files(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}

#[tokio::test]
async fn a_deleted_sqlite_file_is_not_serving_and_never_created_again() {
    let (app, _logs) = sqlite_app().await;
    let path = app.sqlite_path();

    remove_sqlite_files(&path);
    wait_for_health(&app, ServingStatus::NotServing).await;
    let codes = codes_of_a_few_calls(&app).await;

    assert!(!path.exists(), "no empty database was created in its place");
    assert!(
        codes
            .iter()
            .all(|code| matches!(code, Code::Ok | Code::Unavailable)),
        "{codes:?}"
    );
    let ready = reqwest::get(app.admin_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_sqlite_file_replaced_by_an_empty_database_is_not_serving_and_unavailable() {
    let (app, _logs) = sqlite_app().await;
    let path = app.sqlite_path();

    remove_sqlite_files(&path);
    let empty = sqlx::SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true),
    )
    .await
    .unwrap();
    sqlx::query("CREATE TABLE other (x)")
        .execute(&empty)
        .await
        .unwrap();
    empty.close().await;
    wait_for_health(&app, ServingStatus::NotServing).await;
    let codes = codes_of_a_few_calls(&app).await;

    assert!(
        codes
            .iter()
            .all(|code| matches!(code, Code::Ok | Code::Unavailable)),
        "{codes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_creating_one_new_sqlite_file_at_once_both_open() {
    let directory = tempfile::tempdir().unwrap();
    let options = catalogue::store::StoreOptions {
        database_url: format!("sqlite://{}", directory.path().join("new.db").display()),
        seed_products: 2000,
        pool_size: 2,
        acquire_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(5),
    };

    let (first, second) = tokio::join!(
        catalogue::store::open(&options),
        catalogue::store::open(&options)
    );

    for opened in [first, second] {
        let store = opened.expect("both open");
        let product = store
            .get_product(&catalogue::domain::ProductId::parse(&first_id()).unwrap())
            .await
            .unwrap();
        assert!(product.is_some(), "seeded once, seen by both");
    }
}
