//! Input no store can take is refused at the API edge, the same way on
//! every store: INVALID_ARGUMENT naming the field, and no log line.

use catalogue::api::proto::{
    GetProductRequest, ListProductsRequest, SearchRequest,
    catalogue_service_client::CatalogueServiceClient,
};
use tonic::{Code, codegen::http::uri::PathAndQuery, transport::Channel};

use crate::{
    db::app_on,
    helpers::{Backend, Logs, PgSchema, TestApp},
};

/// Every call the API takes, each with one bad field.
async fn bad_calls(client: &mut CatalogueServiceClient<Channel>) -> Vec<(String, tonic::Status)> {
    let mut refused = Vec::new();
    for id in ["prod\0x", "\0", "prod-1\n", &"x".repeat(129)] {
        let status = client
            .get_product(GetProductRequest {
                product_id: id.to_owned(),
            })
            .await
            .expect_err("a bad id is refused");
        refused.push((format!("GetProduct {id:?}"), status));
    }
    for (query, category) in [("oak\0", ""), ("oak", "home\0"), (&*"oak ".repeat(65), "")] {
        let status = client
            .search_products(SearchRequest {
                query: query.to_owned(),
                category_id: category.to_owned(),
                ..Default::default()
            })
            .await
            .expect_err("a bad search is refused");
        refused.push((format!("SearchProducts {query:?} in {category:?}"), status));
    }
    let status = match client
        .list_products(ListProductsRequest {
            category_id: "home\0".into(),
            ..Default::default()
        })
        .await
    {
        Ok(response) => response
            .into_inner()
            .message()
            .await
            .expect_err("a bad category is refused"),
        Err(status) => status,
    };
    refused.push(("ListProducts in \"home\\0\"".into(), status));
    refused
}

async fn refuses_bad_input(mut app: TestApp, logs: &Logs) {
    let refused = bad_calls(&mut app.client).await;

    for (call, status) in &refused {
        assert_eq!(status.code(), Code::InvalidArgument, "{call}: {status:?}");
    }
    let (_, nul) = &refused[0];
    assert!(
        nul.message().contains("product_id"),
        "the message names the field: {nul:?}"
    );
    let text = logs.text();
    assert!(
        !text.contains("ERROR") && !text.contains("WARN"),
        "refused input is the client's error, not the service's: {text}"
    );
}

#[tokio::test]
async fn a_nul_a_control_character_or_an_overlong_field_is_invalid_argument_on_sqlite() {
    let logs = Logs::default();
    let app = TestApp::builder()
        .backend(Backend::Sqlite)
        .logs(&logs)
        .spawn()
        .await;
    refuses_bad_input(app, &logs).await;
}

#[tokio::test]
async fn a_nul_a_control_character_or_an_overlong_field_is_invalid_argument_in_memory() {
    let logs = Logs::default();
    let app = TestApp::builder().logs(&logs).spawn().await;
    refuses_bad_input(app, &logs).await;
}

#[tokio::test]
#[cfg_attr(
    not(postgres_tests),
    ignore = "needs PostgreSQL: build and run with TEST_DATABASE_URL set"
)]
async fn a_nul_a_control_character_or_an_overlong_field_is_invalid_argument_on_postgres() {
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let (app, logs) = app_on(&schema.url(), &[]).await;
    refuses_bad_input(app, &logs).await;
}

/// `GetProductRequest` and `SearchRequest` alike (field 1 a string): the
/// field as bytes, to send what no string is.
#[derive(Clone, PartialEq, prost::Message)]
struct RawStringField {
    #[prost(bytes = "vec", tag = "1")]
    field: Vec<u8>,
}

#[tokio::test]
async fn invalid_utf8_is_invalid_argument_naming_the_field_before_any_store() {
    let app = TestApp::builder().backend(Backend::Sqlite).spawn().await;
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());

    for (path, field) in [
        ("/catalogue.v1.CatalogueService/GetProduct", "product_id"),
        ("/catalogue.v1.CatalogueService/SearchProducts", "query"),
    ] {
        grpc.ready().await.expect("channel ready");
        // Any reply type: the call ends before one is sent.
        let status = grpc
            .unary::<_, catalogue::api::proto::Product, _>(
                tonic::Request::new(RawStringField {
                    field: b"prod-\xff\xfe".to_vec(),
                }),
                PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .expect_err("invalid UTF-8 refused");

        // The client's fault, not the server's: not INTERNAL.
        assert_eq!(status.code(), Code::InvalidArgument, "{path}: {status:?}");
        assert!(
            status.message().contains("not UTF-8") && status.message().contains(field),
            "{path}: the decoder names the field and what is wrong: {status:?}"
        );
    }
}
