//! The inventory upstream behind deadline propagation, a bulkhead and a
//! circuit breaker, and the server's own overload protection.

use std::time::Duration;

use catalogue::api::{
    STOCK_SOURCE_HEADER,
    proto::{
        GetProductRequest, ListProductsRequest, catalogue_service_client::CatalogueServiceClient,
    },
};
use tonic::{
    Code, Request,
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::{TestApp, seed_products, simulator, upstream, value};

fn get_request(deadline: Option<Duration>) -> Request<GetProductRequest> {
    let mut request = Request::new(GetProductRequest {
        product_id: seed_products()[0].id.clone(),
    });
    if let Some(deadline) = deadline {
        request.set_timeout(deadline);
    }
    request
}

/// A client of `app` on a connection of its own whose streams' flow-control
/// window is `bytes`: the server can send no more of an answer until the
/// client reads it.
async fn client_with_window(app: &TestApp, bytes: u32) -> CatalogueServiceClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .initial_stream_window_size(bytes)
        .connect()
        .await
        .unwrap();
    CatalogueServiceClient::new(channel)
}

fn stock_source(response: &tonic::Response<catalogue::api::proto::Product>) -> &str {
    response
        .metadata()
        .get(STOCK_SOURCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A memory app started with `extra` flags, whose stock comes from a
/// simulator answering after `latency_ms` and failing at `error_rate`.
async fn behind_upstream(latency_ms: u64, error_rate: f64, extra: &[&str]) -> TestApp {
    let url = upstream(latency_ms, error_rate).await;
    let flags = [&["--upstream-url", url.as_str()], extra].concat();
    TestApp::builder().args(&flags).spawn().await
}

/// `catalogue_upstream_requests_total` of `outcome`.
fn upstream_requests(scrape: &prometheus_parse::Scrape, outcome: &str) -> Option<f64> {
    value(
        scrape,
        "catalogue_upstream_requests_total",
        &[("outcome", outcome)],
    )
}

#[tokio::test]
async fn a_healthy_upstream_supplies_live_stock() {
    let mut app = behind_upstream(0, 0.0, &[]).await;

    let response = app
        .client
        .get_product(get_request(None))
        .await
        .expect("served");

    assert_eq!(stock_source(&response), "live");
    let scrape = app.scrape().await;
    assert_eq!(upstream_requests(&scrape, "ok"), Some(1.0));
}

#[tokio::test]
async fn a_ten_second_upstream_degrades_to_stored_stock_within_the_callers_deadline() {
    // The margin kept from the caller's second is what answering takes: in
    // a debug build on a busy machine, more than the default 20 ms.
    let mut app = behind_upstream(10_000, 0.0, &["--upstream-deadline-margin", "200ms"]).await;

    let response = app
        .client
        .get_product(get_request(Some(Duration::from_secs(1))))
        .await
        .expect("answered, not DEADLINE_EXCEEDED");

    assert_eq!(stock_source(&response), "stale");
    assert_eq!(
        response.get_ref().stock_qty,
        seed_products()[0].stock_qty,
        "the stored stock"
    );
    let scrape = app.scrape().await;
    assert_eq!(upstream_requests(&scrape, "timeout"), Some(1.0));
}

#[tokio::test]
async fn a_failing_upstream_opens_the_breaker_and_calls_stop_reaching_it() {
    let mut app = behind_upstream(
        0,
        1.0,
        &[
            "--breaker-min-requests",
            "5",
            "--breaker-open-timeout",
            "60s",
        ],
    )
    .await;

    for _ in 0..10 {
        let response = app
            .client
            .get_product(get_request(None))
            .await
            .expect("degraded, not failed");
        assert_eq!(stock_source(&response), "stale");
    }

    let scrape = app.scrape().await;
    assert_eq!(
        value(&scrape, "catalogue_upstream_circuit_state", &[]),
        Some(2.0),
        "open"
    );
    assert_eq!(upstream_requests(&scrape, "error"), Some(5.0));
    assert_eq!(upstream_requests(&scrape, "breaker_open"), Some(5.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_limit_are_shed_at_once_but_health_checks_are_not() {
    let app = behind_upstream(
        10_000,
        0.0,
        &[
            "--max-concurrent-calls",
            "2",
            "--max-calls-per-connection",
            "2",
            "--upstream-timeout",
            "5s",
        ],
    )
    .await;
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let mut client = app.client.clone();
            tokio::spawn(async move { client.get_product(get_request(None)).await })
        })
        .collect();
    app.wait_for_in_flight(2.0).await;

    let shed = app
        .client
        .clone()
        .get_product(get_request(None))
        .await
        .expect_err("shed");
    let health = HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .expect("health is never shed");

    assert_eq!(shed.code(), Code::Unavailable);
    assert_eq!(
        shed.metadata()
            .get("grpc-retry-pushback-ms")
            .map(|v| v.to_str().unwrap()),
        Some("100")
    );
    assert_eq!(health.into_inner().status(), ServingStatus::Serving);
    let scrape = app.scrape().await;
    assert_eq!(
        crate::helpers::shed(&scrape, "concurrency_limit"),
        Some(1.0)
    );
    for call in slow {
        call.abort();
    }
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed() {
    let app = TestApp::builder()
        .args(&["--max-connections", "1"])
        .spawn()
        .await;
    // The test app's own channel holds the one slot.
    app.client
        .clone()
        .get_product(get_request(None))
        .await
        .expect("first connection served");

    let second = tonic::transport::Channel::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .connect()
        .await;
    let refused = match second {
        Err(_) => true,
        Ok(channel) => {
            catalogue::api::proto::catalogue_service_client::CatalogueServiceClient::new(channel)
                .get_product(get_request(None))
                .await
                .is_err()
        }
    };

    assert!(refused, "a second connection is not served");
    let scrape = app.scrape().await;
    let refused = &[("reason", "max_connections")];
    assert!(value(&scrape, "catalogue_connections_refused_total", refused).unwrap() >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_probe_does_not_leave_the_breaker_half_open_forever() {
    let (url, admin) = simulator(0, 1.0, 0.0).await;
    let app = TestApp::builder()
        .args(&[
            "--upstream-url",
            &url,
            "--upstream-timeout",
            "30s",
            "--breaker-min-requests",
            "2",
            "--breaker-open-timeout",
            "1ms",
            "--breaker-probes",
            "1",
        ])
        .spawn()
        .await;
    let mut client = app.client.clone();
    for _ in 0..2 {
        client
            .get_product(get_request(None))
            .await
            .expect("degraded");
    }
    // The upstream now hangs: the next call is the half-open probe, and its
    // caller gives up while the probe is in flight.
    let change = |body: &'static str| {
        let admin = admin.clone();
        async move {
            let response = reqwest::Client::new()
                .put(format!("{admin}/faults"))
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    };
    change(r#"{"error_rate": 0.0, "hang_rate": 1.0}"#).await;
    let probe = {
        let mut client = app.client.clone();
        tokio::spawn(async move { client.get_product(get_request(None)).await })
    };
    for _ in 0..1000 {
        let scrape = app.scrape().await;
        if value(&scrape, "catalogue_upstream_in_flight_requests", &[]) == Some(1.0) {
            break;
        }
        tokio::task::yield_now().await;
    }
    probe.abort();
    let _ = probe.await;

    // Healed: the abandoned probe counted as a failure, so the breaker opens,
    // turns half-open again and a new probe closes it.
    change(r#"{"hang_rate": 0.0}"#).await;
    for _ in 0..1000 {
        let response = client
            .get_product(get_request(Some(Duration::from_secs(5))))
            .await
            .expect("served");
        if stock_source(&response) == "live" {
            let scrape = app.scrape().await;
            assert_eq!(
                value(&scrape, "catalogue_upstream_in_flight_requests", &[]),
                Some(0.0)
            );
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the breaker never let a call through again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_gives_its_slot_back_and_loses_its_connection_after_the_idle_timeout()
 {
    let app = TestApp::builder()
        .args(&["--max-concurrent-calls", "1", "--stream-idle-timeout", "2s"])
        .spawn()
        .await;
    // A window far smaller than a page: the server stalls after 1 KiB.
    let mut stalled = client_with_window(&app, 1024)
        .await
        .list_products(ListProductsRequest {
            page_size: 200,
            ..Default::default()
        })
        .await
        .expect("the stream opens")
        .into_inner();

    let while_stalled = app
        .client
        .clone()
        .get_product(get_request(None))
        .await
        .expect_err("the stalled stream holds the only slot");
    app.wait_for_value("catalogue_idle_calls_expired_total", &[], 1.0)
        .await;
    let after = app.client.clone().get_product(get_request(None)).await;
    let mut received = 0;
    let ended = loop {
        match stalled.message().await {
            Ok(Some(_)) => received += 1,
            Ok(None) => panic!("the idle stream ended OK after {received} products"),
            Err(status) => break status,
        }
    };

    assert_eq!(while_stalled.code(), Code::Unavailable);
    assert!(after.is_ok(), "slot not given back: {after:?}");
    // What arrived before still arrives; then the stream ends with its
    // connection, which the server closed to release the stream's body
    // (tonic reports a connection gone mid-stream as UNKNOWN).
    assert_eq!(ended.code(), Code::Unknown, "{ended:?}");
    let scrape = app.scrape().await;
    let closed = &[("reason", "stalled_call")];
    assert_eq!(
        value(&scrape, "catalogue_connections_refused_total", closed),
        Some(1.0)
    );
}

/// A unary answer is one small frame, but a client can still refuse it:
/// with a window of 0 the server cannot send a byte of it, and hyper never
/// asks the call's body for its frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_answer_its_client_never_reads_gives_its_slot_back_and_loses_its_connection_after_the_idle_timeout()
 {
    let app = TestApp::builder()
        .args(&["--max-concurrent-calls", "1", "--stream-idle-timeout", "1s"])
        .spawn()
        .await;
    let mut shut = client_with_window(&app, 0).await;
    // Answered trailers-only (no DATA: no window needed). Until the server
    // has read the client's SETTINGS it may send as if the window were the
    // default's, and the client would close the connection for it; once
    // this is answered, the window of 0 is the server's too.
    let refused = shut
        .get_product(GetProductRequest {
            product_id: String::new(),
        })
        .await
        .expect_err("an empty id is refused");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let stalled = tokio::spawn(async move { shut.get_product(get_request(None)).await });
    // It holds the only slot (no other call runs to take it first).
    let get_product = [
        ("grpc_service", "catalogue.v1.CatalogueService"),
        ("grpc_method", "GetProduct"),
    ];
    app.wait_for_value("grpc_server_in_flight_requests", &get_product, 1.0)
        .await;
    let while_stalled = app
        .client
        .clone()
        .get_product(get_request(None))
        .await
        .expect_err("the stalled call holds the only slot");
    app.wait_for_value("catalogue_idle_calls_expired_total", &[], 1.0)
        .await;
    let after = app.client.clone().get_product(get_request(None)).await;
    let stalled = stalled.await.expect("the stalled call's task");

    assert_eq!(while_stalled.code(), Code::Unavailable, "{while_stalled:?}");
    assert!(after.is_ok(), "slot not given back: {after:?}");
    assert!(stalled.is_err(), "the unread answer arrived: {stalled:?}");
    let scrape = app.scrape().await;
    let closed = &[("reason", "stalled_call")];
    assert_eq!(
        value(&scrape, "catalogue_connections_refused_total", closed),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_stream_the_server_is_slow_to_produce_is_not_idle() {
    let app = TestApp::builder()
        .args(&[
            "--stream-idle-timeout",
            "300ms",
            "--enable-faults",
            "--fault-slow-stream-ms",
            "100",
            "--fault-methods",
            "ListProducts",
        ])
        .spawn()
        .await;

    let mut stream = app
        .client
        .clone()
        .list_products(ListProductsRequest {
            page_size: 6,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut received = 0;
    while stream.message().await.expect("no idle timeout").is_some() {
        received += 1;
    }

    assert_eq!(received, 6);
    let scrape = app.scrape().await;
    assert_eq!(
        value(&scrape, "catalogue_idle_calls_expired_total", &[]),
        Some(0.0)
    );
}
