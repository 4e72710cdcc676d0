use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use catalogue::{
    api::{
        NEXT_PAGE_TOKEN_TRAILER,
        proto::{ListProductsRequest, Product},
    },
    domain::{self, ProductId, SearchQuery},
    store::{ListPage, MemoryStore, Store, StoreError},
};
use futures::StreamExt;
use tokio::sync::Notify;
use tonic::{Code, Streaming, transport::Channel};

use crate::helpers::{Backend, CATALOGUE_SIZE, TestApp, backend_tests, seed_products};

use catalogue::api::proto::catalogue_service_client::CatalogueServiceClient;

backend_tests!(
    default_page_streams_the_first_products_in_id_order,
    page_tokens_walk_the_whole_catalogue,
    category_filter_returns_only_that_category,
    out_of_range_page_sizes_are_invalid_argument,
    malformed_page_token_is_invalid_argument,
);

/// Reads a whole stream: its products and its next page token, if any.
async fn read_page(
    client: &mut CatalogueServiceClient<Channel>,
    request: ListProductsRequest,
) -> Result<(Vec<Product>, Option<String>), tonic::Status> {
    let mut stream: Streaming<Product> = client.list_products(request).await?.into_inner();
    let mut products = Vec::new();
    while let Some(product) = stream.message().await? {
        products.push(product);
    }
    let token = stream
        .trailers()
        .await?
        .and_then(|trailers| trailers.get(NEXT_PAGE_TOKEN_TRAILER).cloned())
        .map(|token| token.to_str().expect("ascii token").to_owned());
    Ok((products, token))
}

async fn default_page_streams_the_first_products_in_id_order(backend: Backend) {
    let mut app = TestApp::builder().backend(backend).spawn().await;

    let (products, token) = read_page(&mut app.client, ListProductsRequest::default())
        .await
        .expect("list succeeds");

    assert_eq!(
        products,
        seed_products()[..domain::DEFAULT_LIST_PAGE_SIZE as usize]
    );
    assert!(token.is_some(), "more products follow the first page");
}

async fn page_tokens_walk_the_whole_catalogue(backend: Backend) {
    let mut app = TestApp::builder().backend(backend).spawn().await;
    let mut seen = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;

    loop {
        let request = ListProductsRequest {
            page_size: 200,
            page_token: page_token.clone(),
            ..Default::default()
        };
        let (products, token) = read_page(&mut app.client, request)
            .await
            .expect("page succeeds");
        pages += 1;
        seen.extend(products);
        match token {
            Some(token) => page_token = token,
            None => break,
        }
    }

    assert_eq!(pages, CATALOGUE_SIZE.div_ceil(200));
    assert_eq!(seen, seed_products(), "every product once, in id order");
}

async fn category_filter_returns_only_that_category(backend: Backend) {
    let mut app = TestApp::builder().backend(backend).spawn().await;
    let expected: Vec<Product> = seed_products()
        .into_iter()
        .filter(|p| p.category_id == "kitchen")
        .collect();
    assert!(!expected.is_empty());

    let request = ListProductsRequest {
        page_size: 1000,
        category_id: "kitchen".into(),
        ..Default::default()
    };
    let (products, token) = read_page(&mut app.client, request)
        .await
        .expect("list succeeds");

    assert_eq!(products, expected);
    assert_eq!(token, None, "the whole category fits one page");
}

async fn out_of_range_page_sizes_are_invalid_argument(backend: Backend) {
    let mut app = TestApp::builder().backend(backend).spawn().await;

    for page_size in [-1, domain::MAX_LIST_PAGE_SIZE as i32 + 1] {
        let request = ListProductsRequest {
            page_size,
            ..Default::default()
        };
        let status = read_page(&mut app.client, request)
            .await
            .expect_err("refused");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "page_size {page_size}"
        );
        assert!(
            status.message().contains("page_size"),
            "{}",
            status.message()
        );
    }
}

async fn malformed_page_token_is_invalid_argument(backend: Backend) {
    let mut app = TestApp::builder().backend(backend).spawn().await;

    let request = ListProductsRequest {
        page_token: "not a token".into(),
        ..Default::default()
    };
    let status = read_page(&mut app.client, request)
        .await
        .expect_err("refused");

    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "page_token is malformed");
}

/// A memory store whose list fetches after the first wait at a gate the test
/// holds, and which reports when a waiting fetch is abandoned.
struct GatedStore {
    inner: MemoryStore,
    fetches: AtomicUsize,
    fetch_waiting: Notify,
    fetch_abandoned: Notify,
}

struct AbandonGuard<'a>(&'a Notify);

impl Drop for AbandonGuard<'_> {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

#[async_trait]
impl Store for GatedStore {
    fn system(&self) -> &'static str {
        "gated"
    }

    async fn get_product(
        &self,
        id: &ProductId,
    ) -> Result<Option<catalogue::domain::Product>, StoreError> {
        self.inner.get_product(id).await
    }

    async fn list_products(
        &self,
        page: ListPage<'_>,
    ) -> Result<Vec<catalogue::domain::Product>, StoreError> {
        if self.fetches.fetch_add(1, Ordering::SeqCst) > 0 {
            // Held until the call is dropped: the gate never opens.
            let _abandoned = AbandonGuard(&self.fetch_abandoned);
            self.fetch_waiting.notify_one();
            std::future::pending::<()>().await;
        }
        self.inner.list_products(page).await
    }

    async fn search_products(
        &self,
        query: &SearchQuery,
        limit: u32,
    ) -> Result<Vec<catalogue::domain::Product>, StoreError> {
        self.inner.search_products(query, limit).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[tokio::test]
async fn cancelling_a_stream_stops_the_work_on_the_server() {
    let store = Arc::new(GatedStore {
        inner: MemoryStore::seeded(2_000),
        fetches: AtomicUsize::new(0),
        fetch_waiting: Notify::new(),
        fetch_abandoned: Notify::new(),
    });
    let mut app = TestApp::builder().store(store.clone()).spawn().await;
    let request = ListProductsRequest {
        page_size: 1000,
        ..Default::default()
    };
    let mut stream = app
        .client
        .list_products(request)
        .await
        .expect("stream opens")
        .into_inner();
    let first = stream
        .next()
        .await
        .expect("a product")
        .expect("not an error");
    assert_eq!(first.id, seed_products()[0].id);

    // The server is now fetching the second chunk, held at the gate.
    tokio::time::timeout(Duration::from_secs(10), store.fetch_waiting.notified())
        .await
        .expect("server asks for the second chunk");
    drop(stream);

    // Cancelling drops the server's stream, and with it the fetch in flight.
    tokio::time::timeout(Duration::from_secs(10), store.fetch_abandoned.notified())
        .await
        .expect("the fetch in flight is abandoned");
    assert_eq!(
        store.fetches.load(Ordering::SeqCst),
        2,
        "no fetch after the cancel"
    );
}
