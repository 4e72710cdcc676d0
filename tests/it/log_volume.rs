//! Log volume under an error storm: each call site writes a bounded number
//! of WARN and ERROR lines a second, and says how many it held back.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use catalogue::{
    domain::{Product, ProductId, SearchQuery},
    store::{ListPage, MemoryStore, Store, StoreError},
};
use futures::{StreamExt, stream};
use tonic::Code;

use crate::helpers::{Logs, TestApp};

/// A store whose every `get_product` fails as a corrupt row would: an
/// INTERNAL status and an ERROR line per call.
struct FailingStore(MemoryStore);

#[async_trait]
impl Store for FailingStore {
    fn system(&self) -> &'static str {
        "failing"
    }

    async fn get_product(&self, id: &ProductId) -> Result<Option<Product>, StoreError> {
        Err(StoreError::Corrupt {
            id: id.as_str().to_owned(),
            reason: "the test's".into(),
        })
    }

    async fn list_products(&self, page: ListPage<'_>) -> Result<Vec<Product>, StoreError> {
        self.0.list_products(page).await
    }

    async fn search_products(
        &self,
        query: &SearchQuery,
        limit: u32,
    ) -> Result<Vec<Product>, StoreError> {
        self.0.search_products(query, limit).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

const CALLS: usize = 1000;
/// `--log-rate-limit`'s default.
const PER_SECOND: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_storm_writes_a_bounded_number_of_lines_and_counts_the_rest() {
    let logs = Logs::default();
    let app = TestApp::builder()
        .store(Arc::new(FailingStore(MemoryStore::seeded(10))))
        .logs(&logs)
        .spawn()
        .await;
    let started = Instant::now();

    let call = |n: usize| {
        let mut client = app.client.clone();
        async move {
            let request = catalogue::api::proto::GetProductRequest {
                product_id: format!("prod-{n}"),
            };
            client.get_product(request).await.expect_err("fails").code()
        }
    };
    let codes: Vec<Code> = stream::iter(0..CALLS)
        .map(call)
        .buffer_unordered(16)
        .collect()
        .await;
    let seconds = started.elapsed().as_secs() as usize + 1;
    // A window later, one more: the count of what was held back is written
    // before it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(call(CALLS).await, Code::Internal);

    assert!(codes.iter().all(|code| *code == Code::Internal));
    let text = logs.text();
    let errors = text
        .lines()
        .filter(|line| line.contains("internal error"))
        .count();
    let suppressed: usize = text
        .lines()
        .filter_map(|line| line.split("suppressed ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
        .sum();
    assert!(
        errors <= PER_SECOND * (seconds + 1) + 1,
        "{errors} error lines for {CALLS} calls in about {seconds} s"
    );
    assert_eq!(
        errors + suppressed,
        CALLS + 1,
        "every failed call is written or counted: {text}"
    );
}
