//! A call the server cuts off at its deadline ends DEADLINE_EXCEEDED, gRPC's
//! code for a deadline, and is counted so: not CANCELLED, which the metrics
//! table keeps for a client that went away. (A client's own shorter
//! `grpc-timeout` bounds the call the same way, `protection`'s unit tests
//! show; over the wire tonic's client times out at the same instant and
//! resets the stream, which the server rightly counts as Canceled.)

use catalogue::api::proto::GetProductRequest;
use tonic::Code;

use crate::helpers::{TestApp, seed_products, value};

async fn slow_get_product(request_timeout: &str) -> tonic::Status {
    let mut app = TestApp::builder()
        .args(&["--enable-faults", "--request-timeout", request_timeout])
        .spawn()
        .await;
    let (status, body) = app.put_faults(r#"{"latency_ms": 2000}"#).await;
    assert_eq!(status, 200, "{body}");
    let request = tonic::Request::new(GetProductRequest {
        product_id: seed_products()[0].id.clone(),
    });

    let ended = app.client.get_product(request).await.expect_err("cut off");

    let scrape = app.scrape().await;
    let counted = |code| {
        value(
            &scrape,
            "grpc_server_handled_total",
            &[("grpc_method", "GetProduct"), ("grpc_code", code)],
        )
    };
    assert_eq!(counted("DeadlineExceeded"), Some(1.0), "{ended:?}");
    assert_eq!(counted("Canceled"), None, "{ended:?}");
    ended
}

#[tokio::test]
async fn the_request_timeout_ends_a_call_deadline_exceeded() {
    let ended = slow_get_product("200ms").await;

    assert_eq!(ended.code(), Code::DeadlineExceeded, "{ended:?}");
    assert!(ended.message().contains("--request-timeout"), "{ended:?}");
}
