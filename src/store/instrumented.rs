//! `InstrumentedStore`: any store, with a duration sample for every call and
//! a CLIENT span for every call whose RPC is exported. One decorator serves
//! all three backends.

use std::{future::Future, sync::Arc, time::Instant};

use async_trait::async_trait;
use metrics::Histogram;

use super::{ListPage, Operation, PoolStats, Store, StoreError};
use crate::{
    domain::{Product, ProductId, SearchQuery},
    metrics::{Metrics, names},
    traces::{StoreCall, record_store_call},
};

const OPERATIONS: [Operation; 3] = [
    Operation::GetProduct,
    Operation::ListProducts,
    Operation::SearchProducts,
];

pub struct InstrumentedStore {
    inner: Arc<dyn Store>,
    /// Per operation, `[ok, error]`, made once.
    durations: [[Histogram; 2]; 3],
}

impl InstrumentedStore {
    pub fn new(inner: Arc<dyn Store>, metrics: &Metrics) -> Self {
        let system = inner.system();
        let durations = OPERATIONS.map(|operation| {
            ["ok", "error"].map(|outcome| {
                metrics.histogram(
                    &names::STORE_QUERY_SECONDS,
                    &[
                        ("db_system", system),
                        ("operation", operation.name()),
                        ("outcome", outcome),
                    ],
                )
            })
        });
        Self { inner, durations }
    }

    async fn observe<T>(
        &self,
        operation: Operation,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let statement = self.inner.statement(operation);
        // SQL stores name the span after the statement's verb and table.
        let span_name = if statement.is_some() {
            "SELECT products"
        } else {
            operation.name()
        };
        /// Every operation reads the one table.
        const COLLECTION: &str = "products";
        let started = Instant::now();
        let result = call.await;
        let ended = Instant::now();
        let outcome = usize::from(result.is_err());
        self.durations[operation as usize][outcome].record((ended - started).as_secs_f64());
        // Made a span when the call it belongs to ends, if it is exported.
        record_store_call(|| StoreCall {
            name: span_name,
            system: self.inner.system(),
            collection: COLLECTION,
            operation: operation.name(),
            statement,
            started,
            ended,
            failed: result.is_err(),
        });
        result
    }
}

/// What sets the gauges of `store`'s connection pool on a scrape; `None`
/// for a store without a pool. Its gauges are `metrics`'.
pub fn pool_gauges(
    store: Arc<dyn Store>,
    metrics: &Metrics,
) -> Option<impl Fn() + Send + Sync + 'static> {
    store.pool_stats()?;
    let system = store.system();
    let pool = |state| {
        metrics.gauge(
            &names::STORE_POOL_CONNECTIONS,
            &[("db_system", system), ("state", state)],
        )
    };
    let (idle, in_use) = (pool("idle"), pool("in_use"));
    let max = metrics.gauge(&names::STORE_POOL_MAX, &[("db_system", system)]);
    Some(move || {
        if let Some(pool) = store.pool_stats() {
            idle.set(f64::from(pool.idle));
            in_use.set(f64::from(pool.size.saturating_sub(pool.idle)));
            max.set(f64::from(pool.max));
        }
    })
}

#[async_trait]
impl Store for InstrumentedStore {
    fn system(&self) -> &'static str {
        self.inner.system()
    }

    fn statement(&self, operation: Operation) -> Option<&'static str> {
        self.inner.statement(operation)
    }

    fn pool_stats(&self) -> Option<PoolStats> {
        self.inner.pool_stats()
    }

    async fn get_product(&self, id: &ProductId) -> Result<Option<Product>, StoreError> {
        self.observe(Operation::GetProduct, self.inner.get_product(id))
            .await
    }

    async fn list_products(&self, page: ListPage<'_>) -> Result<Vec<Product>, StoreError> {
        self.observe(Operation::ListProducts, self.inner.list_products(page))
            .await
    }

    async fn search_products(
        &self,
        query: &SearchQuery,
        limit: u32,
    ) -> Result<Vec<Product>, StoreError> {
        self.observe(
            Operation::SearchProducts,
            self.inner.search_products(query, limit),
        )
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}
