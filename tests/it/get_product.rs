use tonic::Code;

use crate::helpers::{Backend, TestApp, backend_tests, seed_products};

backend_tests!(
    returns_the_seeded_product,
    empty_id_is_invalid_argument,
    unknown_id_is_not_found_naming_the_id,
);

async fn returns_the_seeded_product(backend: Backend) {
    let mut app = TestApp::builder().backend(backend).spawn().await;
    let expected = seed_products()[41].clone();

    let product = app
        .get_product(&expected.id)
        .await
        .expect("seeded product is found");

    assert_eq!(product, expected);
    assert!(product.price_eur > 0.0);
    assert!(!product.image_urls.is_empty());
}

async fn empty_id_is_invalid_argument(backend: Backend) {
    let mut app = TestApp::builder().backend(backend).spawn().await;

    let status = app.get_product("").await.expect_err("empty id is refused");

    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "product_id is required");
}

async fn unknown_id_is_not_found_naming_the_id(backend: Backend) {
    let mut app = TestApp::builder().backend(backend).spawn().await;

    let status = app
        .get_product("prod-missing")
        .await
        .expect_err("unknown id is not found");

    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("prod-missing"),
        "{}",
        status.message()
    );
}

/// An answer starts in a buffer of `api::codec::BUFFER` bytes and grows:
/// a product far larger than that comes back whole.
#[tokio::test]
async fn a_product_larger_than_the_answer_buffer_comes_back_whole() {
    let mut app = TestApp::builder().backend(Backend::Sqlite).spawn().await;
    let database = sqlx::SqlitePool::connect(&format!("sqlite://{}", app.sqlite_path().display()))
        .await
        .expect("the app's SQLite database");
    let description = "a long description ".repeat(1_000);
    sqlx::query(
        "INSERT INTO products (id, name, description, price_cents, stock_qty, image_urls, created_at, category_id) \
         VALUES ('prod-long', 'Long', ?, 100, 1, '[]', 0, 'home')",
    )
    .bind(&description)
    .execute(&database)
    .await
    .expect("the row is inserted");

    let product = app.get_product("prod-long").await.expect("found");

    assert!(description.len() > 16 * catalogue::api::codec::BUFFER);
    assert_eq!(product.description, description);
    assert_eq!(product.name, "Long");
}
