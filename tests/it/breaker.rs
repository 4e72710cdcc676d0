//! The upstream's breaker judges the upstream, not its callers: a call
//! whose own short deadline ran out says nothing about the upstream.

use std::time::Duration;

use catalogue::api::proto::GetProductRequest;
use tonic::Request;

use crate::helpers::{TestApp, seed_products, upstream, value};

#[tokio::test]
async fn calls_with_tiny_deadlines_do_not_open_the_breaker_for_everyone() {
    let url = upstream(2000, 0.0).await;
    let mut app = TestApp::builder()
        .args(&[
            "--upstream-url",
            &url,
            "--breaker-min-requests",
            "5",
            "--breaker-open-timeout",
            "60s",
            "--upstream-deadline-margin",
            "300ms",
            "--upstream-timeout",
            "5s",
        ])
        .spawn()
        .await;

    for _ in 0..10 {
        let mut request = Request::new(GetProductRequest {
            product_id: seed_products()[0].id.clone(),
        });
        // 300 ms for the upstream once the margin is kept: far less than
        // it takes. (Whether the answer, stale stock, beats the caller's
        // own deadline does not matter here: a call its caller abandons
        // says nothing about the upstream either.)
        request.set_timeout(Duration::from_millis(600));
        let _ = app.client.get_product(request).await;
    }

    let scrape = app.scrape().await;
    assert_eq!(
        value(&scrape, "catalogue_upstream_circuit_state", &[]),
        Some(0.0),
        "closed"
    );
    let response = app
        .client
        .get_product(Request::new(GetProductRequest {
            product_id: seed_products()[0].id.clone(),
        }))
        .await
        .unwrap();
    assert_eq!(
        response.metadata().get("x-stock-source").unwrap(),
        "live",
        "a caller with time to wait still gets live stock"
    );
}
