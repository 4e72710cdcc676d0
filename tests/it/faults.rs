//! Each fault changes the signal it claims to, measured through the
//! service's own metrics, and a reset restores it.

use catalogue::{
    api::proto::{GetProductRequest, ListProductsRequest, SearchRequest},
    method::Method,
};
use tonic::Code;

use crate::helpers::{TestApp, bucket, seed_products, value};

/// An app with fault injection allowed (`--enable-faults`).
async fn faulty_app() -> TestApp {
    TestApp::builder().args(&["--enable-faults"]).spawn().await
}

const GET: &[(&str, &str)] = &[("grpc_method", "GetProduct")];

async fn get_product(app: &mut TestApp) -> Result<(), tonic::Status> {
    let product_id = seed_products()[0].id.clone();
    app.client
        .get_product(GetProductRequest { product_id })
        .await
        .map(drop)
}

async fn reset(app: &TestApp) -> serde_json::Value {
    let response = reqwest::Client::new()
        .delete(app.admin_url("/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    serde_json::from_str(&response.text().await.unwrap()).unwrap()
}

/// GetProduct calls answered OK within 50 ms, and `catalogue_fault_active`
/// of the latency fault.
async fn latency_signals(app: &TestApp) -> (f64, Option<f64>) {
    let ok = [GET, &[("grpc_code", "OK")]].concat();
    let scrape = app.scrape().await;
    let fast_calls = bucket(&scrape, "grpc_server_handling_seconds", &ok, 0.05);
    let active = value(
        &scrape,
        "catalogue_fault_active",
        &[("fault", "latency_ms")],
    );
    (fast_calls, active)
}

#[tokio::test]
async fn latency_shows_in_the_handling_time_histogram_until_reset() {
    let mut app = faulty_app().await;
    let (status, body) = app.put_faults(r#"{"latency_ms": 60}"#).await;
    assert_eq!(status, 200, "{body}");

    get_product(&mut app).await.unwrap();
    let (fast_calls, latency_active) = latency_signals(&app).await;
    assert_eq!(fast_calls, 0.0, "slower than 50 ms");
    assert_eq!(latency_active, Some(1.0));

    reset(&app).await;
    get_product(&mut app).await.unwrap();
    let (fast_calls, latency_active) = latency_signals(&app).await;
    assert_eq!(fast_calls, 1.0, "fast again");
    assert_eq!(latency_active, Some(0.0));
}

#[tokio::test]
async fn injected_errors_carry_the_chosen_code_only_on_chosen_methods() {
    let mut app = faulty_app().await;
    let (status, body) = app
        .put_faults(
            r#"{"error_rate": 1.0, "error_code": "RESOURCE_EXHAUSTED", "methods": ["GetProduct"]}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let failed = get_product(&mut app).await.expect_err("injected");
    assert_eq!(failed.code(), Code::ResourceExhausted);
    let listed = app
        .client
        .list_products(ListProductsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await;
    assert!(listed.is_ok(), "ListProducts is not in `methods`");

    reset(&app).await;
    get_product(&mut app).await.expect("healthy again");
    let scrape = app.scrape().await;
    let handled = |code| {
        value(
            &scrape,
            "grpc_server_handled_total",
            &[GET, &[("grpc_code", code)]].concat(),
        )
    };
    assert_eq!(handled("ResourceExhausted"), Some(1.0));
    assert_eq!(handled("OK"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_and_cpu_burn_show_as_long_polls_of_the_rpc_task() {
    let mut app = faulty_app().await;
    let poll_seconds = |scrape: &prometheus_parse::Scrape| {
        value(scrape, "tokio_task_poll_seconds_total", GET).unwrap()
    };
    let before = poll_seconds(&app.scrape().await);

    app.put_faults(r#"{"blocking_ms": 30}"#).await;
    get_product(&mut app).await.unwrap();
    app.put_faults(r#"{"blocking_ms": 0, "cpu_burn_ms": 30}"#)
        .await;
    get_product(&mut app).await.unwrap();
    let scrape = app.scrape().await;

    // Both faults run inside a poll of the call's future: 60 ms at least.
    assert!(
        poll_seconds(&scrape) - before >= 0.060,
        "{} s",
        poll_seconds(&scrape) - before
    );
    assert!(value(&scrape, "tokio_task_slow_polls_total", GET).unwrap() >= 2.0);
    reset(&app).await;
}

#[tokio::test]
async fn a_leak_is_retained_until_reset() {
    let mut app = faulty_app().await;
    app.put_faults(r#"{"leak_bytes_per_call": 1048576}"#).await;
    for _ in 0..4 {
        get_product(&mut app).await.unwrap();
    }
    let scrape = app.scrape().await;
    assert_eq!(
        value(&scrape, "catalogue_fault_leaked_bytes", &[]),
        Some(4.0 * 1048576.0)
    );

    reset(&app).await;
    let scrape = app.scrape().await;
    assert_eq!(
        value(&scrape, "catalogue_fault_leaked_bytes", &[]),
        Some(0.0)
    );
}

#[tokio::test]
async fn slow_streams_show_in_stream_duration() {
    let mut app = faulty_app().await;
    app.put_faults(r#"{"slow_stream_ms": 15}"#).await;

    app.list_to_end(10).await;

    let scrape = app.scrape().await;
    let list = [("grpc_method", "ListProducts")];
    assert_eq!(
        bucket(&scrape, "grpc_server_stream_duration_seconds", &list, 0.1),
        0.0,
        "10 × 15 ms > 100 ms"
    );
    assert_eq!(
        value(&scrape, "grpc_server_stream_duration_seconds", &list),
        Some(1.0)
    );
    reset(&app).await;
}

#[tokio::test]
async fn bad_payloads_are_refused_and_change_nothing() {
    let app = faulty_app().await;
    app.put_faults(r#"{"latency_ms": 1}"#).await;

    // Each body, and what its message names.
    for (body, names) in [
        (r#"{"latncy_ms": 5}"#, "latncy_ms"),
        (r#"{"latency_ms": "five"}"#, "latency_ms: "),
        (r#"{"latency_ms": -5}"#, "latency_ms: "),
        (r#"{"error_rate": 2}"#, r#"error_rate: "2" is not a ratio"#),
        (r#"{"error_code": "TEAPOT"}"#, "error_code: "),
        (r#"{"methods": ["DropTables"]}"#, "methods[0]: "),
        (r#"{"latency_ms": 5, "blocking_ms": 999999}"#, "blocking_ms"),
        ("not json", "expected"),
    ] {
        let (status, message) = app.put_faults(body).await;
        assert_eq!(status, 400, "{body}");
        assert!(message.starts_with("invalid faults: "), "{message}");
        assert!(message.contains(names), "{body}: {message}");
    }

    let faults: serde_json::Value = serde_json::from_str(
        &reqwest::get(app.admin_url("/faults"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(faults["latency_ms"], 1, "unchanged: {faults}");
    let after_reset = reset(&app).await;
    assert_eq!(after_reset["latency_ms"], 0);
}

/// Calls `method` once (a ListProducts stream of three, read to its end).
async fn call(app: &mut TestApp, method: Method) -> Result<(), tonic::Status> {
    match method {
        Method::GetProduct => get_product(app).await,
        Method::ListProducts => {
            let request = ListProductsRequest {
                page_size: 3,
                ..Default::default()
            };
            let mut stream = app.client.list_products(request).await?.into_inner();
            while stream.message().await?.is_some() {}
            Ok(())
        }
        Method::SearchProducts => {
            let query = seed_products()[0].name.clone();
            let request = SearchRequest {
                query,
                ..Default::default()
            };
            app.client.search_products(request).await.map(drop)
        }
    }
}

/// Every fault that acts before a call slows or fails each method, and
/// only the methods it names; the leak retains per call of each method.
async fn every_fault_applies_to(method: Method) {
    let labels = |code| [("grpc_method", method.name()), ("grpc_code", code)];
    let other = Method::ALL.into_iter().find(|&m| m != method).unwrap();
    for fault in [
        r#""latency_ms": 60"#,
        r#""blocking_ms": 60"#,
        r#""cpu_burn_ms": 60"#,
    ] {
        let mut app = faulty_app().await;
        let body = format!(r#"{{{fault}, "methods": ["{method}"]}}"#);
        let (status, message) = app.put_faults(&body).await;
        assert_eq!(status, 200, "{message}");

        call(&mut app, method).await.expect("slowed, not failed");
        call(&mut app, other).await.expect("another method");

        let scrape = app.scrape().await;
        let ok = labels("OK");
        assert_eq!(
            bucket(&scrape, "grpc_server_handling_seconds", &ok, 0.05),
            0.0,
            "{fault}: {method} took over 50 ms"
        );
        let other_ok = [("grpc_method", other.name()), ("grpc_code", "OK")];
        assert_eq!(
            bucket(&scrape, "grpc_server_handling_seconds", &other_ok, 0.05),
            1.0,
            "{fault}: {other} is not slowed"
        );
    }

    let mut app = faulty_app().await;
    let body = format!(r#"{{"error_rate": 1, "error_code": "ABORTED", "methods": ["{method}"]}}"#);
    app.put_faults(&body).await;
    let failed = call(&mut app, method).await.expect_err("injected error");
    assert_eq!(failed.code(), Code::Aborted, "{method}: {failed:?}");
    call(&mut app, other).await.expect("another method");
    let scrape = app.scrape().await;
    assert_eq!(
        value(&scrape, "grpc_server_handled_total", &labels("Aborted")),
        Some(1.0)
    );

    let mut app = faulty_app().await;
    let body = format!(r#"{{"leak_bytes_per_call": 4096, "methods": ["{method}"]}}"#);
    app.put_faults(&body).await;
    call(&mut app, method).await.unwrap();
    call(&mut app, other).await.unwrap();
    let scrape = app.scrape().await;
    assert_eq!(
        value(&scrape, "catalogue_fault_leaked_bytes", &[]),
        Some(4096.0),
        "{method}: one call retained, the other method's none"
    );
}

#[tokio::test]
async fn every_fault_applies_to_get_product() {
    every_fault_applies_to(Method::GetProduct).await;
}

#[tokio::test]
async fn every_fault_applies_to_list_products() {
    every_fault_applies_to(Method::ListProducts).await;
}

#[tokio::test]
async fn every_fault_applies_to_search_products() {
    every_fault_applies_to(Method::SearchProducts).await;
}
