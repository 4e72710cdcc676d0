//! Bad input and broken handlers cost one call, never the server.

use std::sync::Arc;

use async_trait::async_trait;
use catalogue::{
    api::proto::{GetProductRequest, Product},
    domain::{self, ProductId, SearchQuery},
    store::{ListPage, MemoryStore, Store, StoreError},
};
use tonic::{Code, codegen::http::uri::PathAndQuery};

use crate::helpers::{TestApp, seed_products};

/// A store whose `get_product` panics for one id.
struct PanickingStore(MemoryStore);

#[async_trait]
impl Store for PanickingStore {
    fn system(&self) -> &'static str {
        "panicking"
    }

    async fn get_product(&self, id: &ProductId) -> Result<Option<domain::Product>, StoreError> {
        if id.as_str() == "boom" {
            panic!("the store exploded");
        }
        self.0.get_product(id).await
    }

    async fn list_products(&self, page: ListPage<'_>) -> Result<Vec<domain::Product>, StoreError> {
        self.0.list_products(page).await
    }

    async fn search_products(
        &self,
        query: &SearchQuery,
        limit: u32,
    ) -> Result<Vec<domain::Product>, StoreError> {
        self.0.search_products(query, limit).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_panicking_handler_fails_its_call_with_internal_and_the_server_keeps_serving() {
    let mut app = TestApp::builder()
        .store(Arc::new(PanickingStore(MemoryStore::seeded(10))))
        .spawn()
        .await;

    let status = app.get_product("boom").await.expect_err("the call fails");
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(
        status.message(),
        "internal error",
        "the panic message is not leaked"
    );

    let product = app
        .get_product(&seed_products()[0].id)
        .await
        .expect("the next call is served");
    assert_eq!(product.id, seed_products()[0].id);
}

#[tokio::test]
async fn an_oversized_message_is_refused_and_the_server_keeps_serving() {
    let mut app = TestApp::builder().spawn().await;
    // Requests are decoded up to 64 KiB (a request of the contract is a few
    // hundred bytes), far below the 4 MiB --max-message-bytes of responses.
    let over = "x".repeat(65 * 1024);
    let under = "x".repeat(63 * 1024);

    let status = app
        .get_product(&over)
        .await
        .expect_err("oversized request refused");
    // tonic reports a message over the limit as OUT_OF_RANGE.
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    let status = app.get_product(&under).await.expect_err("no such id");
    assert_ne!(status.code(), Code::OutOfRange, "decoded: {status:?}");

    app.get_product(&seed_products()[0].id)
        .await
        .expect("the next call is served");
}

/// A message whose field 1 is a varint where `GetProductRequest` has a string.
#[derive(Clone, PartialEq, prost::Message)]
struct WrongWireType {
    #[prost(int64, tag = "1")]
    product_id: i64,
}

#[tokio::test]
async fn malformed_protobuf_is_an_error_and_the_server_keeps_serving() {
    let mut app = TestApp::builder().spawn().await;
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    grpc.ready().await.expect("channel ready");

    let status = grpc
        .unary::<_, Product, _>(
            tonic::Request::new(WrongWireType { product_id: 7 }),
            PathAndQuery::from_static("/catalogue.v1.CatalogueService/GetProduct"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect_err("undecodable request refused");
    // The client's fault: INVALID_ARGUMENT, not INTERNAL.
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    let status = app.get_product("").await.expect_err("still validating");
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn an_unknown_method_is_unimplemented() {
    let app = TestApp::builder().spawn().await;
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    grpc.ready().await.expect("channel ready");

    let status = grpc
        .unary::<_, Product, _>(
            tonic::Request::new(GetProductRequest::default()),
            PathAndQuery::from_static("/catalogue.v1.CatalogueService/DeleteEverything"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect_err("no such method");
    assert_eq!(status.code(), Code::Unimplemented);
}

#[tokio::test]
async fn an_unknown_service_is_unimplemented_even_one_named_like_the_catalogue() {
    let app = TestApp::builder().spawn().await;
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());

    for path in [
        "/catalogue.v1.CatalogueServiceX/GetProduct",
        "/catalogue.v2.CatalogueService/GetProduct",
        "/no.such.Service/GetProduct",
    ] {
        grpc.ready().await.expect("channel ready");
        let status = grpc
            .unary::<_, Product, _>(
                tonic::Request::new(GetProductRequest::default()),
                PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .expect_err("no such service");
        assert_eq!(status.code(), Code::Unimplemented, "{path}");
    }
}

#[tokio::test]
async fn headers_over_16_kib_are_resource_exhausted_naming_the_size_and_the_limit() {
    let app = TestApp::builder().spawn().await;
    let mut client = app.client.clone();

    let mut request = tonic::Request::new(GetProductRequest {
        product_id: "prod-0000001".into(),
    });
    let big = "x".repeat(20 * 1024);
    request
        .metadata_mut()
        .insert("x-big", big.parse().expect("ASCII metadata"));
    let status = client
        .get_product(request)
        .await
        .expect_err("headers over the limit refused");

    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("16384 bytes"),
        "names the limit: {status:?}"
    );

    let mut request = tonic::Request::new(GetProductRequest {
        product_id: "prod-0000001".into(),
    });
    request
        .metadata_mut()
        .insert("x-small", "x".repeat(1024).parse().expect("ASCII metadata"));
    client
        .get_product(request)
        .await
        .expect("headers under the limit served");
}
