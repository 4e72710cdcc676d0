use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use async_trait::async_trait;
use catalogue::{
    domain::{Product, ProductId, SearchQuery},
    store::{ListPage, MemoryStore, Store, StoreError},
};
use futures::StreamExt;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::helpers::{Backend, TestApp, backend_tests};

backend_tests!(
    health_reports_serving_for_the_server_and_the_service,
    admin_liveness_and_readiness_answer_ok,
);

const SERVICE: &str = "catalogue.v1.CatalogueService";

async fn health_reports_serving_for_the_server_and_the_service(backend: Backend) {
    let app = TestApp::builder().backend(backend).spawn().await;
    let mut health = HealthClient::new(app.channel.clone());

    for service in ["", SERVICE] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check answers")
            .into_inner();
        assert_eq!(
            response.status(),
            ServingStatus::Serving,
            "service {service:?}"
        );
    }
    let status = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(status.code(), tonic::Code::NotFound);
}

async fn admin_liveness_and_readiness_answer_ok(backend: Backend) {
    let app = TestApp::builder().backend(backend).spawn().await;

    for path in ["/healthz", "/readyz"] {
        let response = reqwest::get(app.admin_url(path))
            .await
            .expect("admin answers");
        assert_eq!(response.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn reflection_lists_and_describes_the_services() {
    let app = TestApp::builder().spawn().await;
    let mut reflection = ServerReflectionClient::new(app.channel.clone());
    let requests = futures::stream::iter([
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(SERVICE.into())),
        },
    ]);

    let mut responses = reflection
        .server_reflection_info(requests)
        .await
        .expect("reflection answers")
        .into_inner();

    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let mut names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            SERVICE,
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection"
        ],
        "exactly what this server serves (not the inventory upstream's service)"
    );
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected file descriptors");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

#[tokio::test]
async fn health_watch_streams_the_change_to_not_serving_on_shutdown() {
    let mut app = TestApp::builder().spawn().await;
    let mut health = HealthClient::new(app.channel.clone());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: SERVICE.into(),
        })
        .await
        .expect("watch opens")
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);

    app.begin_shutdown();

    let next = watch.next().await.unwrap().unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);
    drop(watch);
    app.stopped().await.expect("clean shutdown");
}

/// A memory store whose database can be made to go away.
pub(crate) struct FlakyStore {
    inner: MemoryStore,
    pub(crate) down: AtomicBool,
}

#[async_trait]
impl Store for FlakyStore {
    fn system(&self) -> &'static str {
        "flaky"
    }

    async fn get_product(&self, id: &ProductId) -> Result<Option<Product>, StoreError> {
        self.inner.get_product(id).await
    }

    async fn list_products(&self, page: ListPage<'_>) -> Result<Vec<Product>, StoreError> {
        self.inner.list_products(page).await
    }

    async fn search_products(
        &self,
        query: &SearchQuery,
        limit: u32,
    ) -> Result<Vec<Product>, StoreError> {
        self.inner.search_products(query, limit).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::UnsupportedUrl("gone".into()));
        }
        Ok(())
    }
}

/// An app over a `FlakyStore`, pinged every 50 ms.
pub(crate) async fn spawn_with_flaky_store() -> (TestApp, Arc<FlakyStore>) {
    let store = Arc::new(FlakyStore {
        inner: MemoryStore::seeded(10),
        down: false.into(),
    });
    let app = TestApp::builder()
        .store(store.clone())
        .args(&["--store-health-interval", "50ms"])
        .spawn()
        .await;
    (app, store)
}

#[tokio::test]
async fn the_catalogue_is_not_serving_while_its_store_is_down_and_the_server_stays_up() {
    let (app, store) = spawn_with_flaky_store().await;
    let mut health = HealthClient::new(app.channel.clone());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: SERVICE.into(),
        })
        .await
        .unwrap()
        .into_inner();
    // Bounded, so that a status that never comes fails the test.
    let mut next = async || {
        let status = tokio::time::timeout(std::time::Duration::from_secs(20), watch.next())
            .await
            .expect("a status within 20 s")
            .expect("a status")
            .expect("streamed");
        status.status()
    };
    assert_eq!(next().await, ServingStatus::Serving);

    store.down.store(true, Ordering::SeqCst);
    assert_eq!(
        next().await,
        ServingStatus::NotServing,
        "the store went away"
    );
    let server = health
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        server.status(),
        ServingStatus::Serving,
        "liveness is untouched"
    );

    store.down.store(false, Ordering::SeqCst);
    assert_eq!(next().await, ServingStatus::Serving, "the store is back");
}
