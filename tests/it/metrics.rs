//! `/metrics` after real traffic, parsed as Prometheus text.

use std::collections::HashMap;

use catalogue::api::proto::catalogue_service_client::CatalogueServiceClient;
use catalogue::{
    api::proto::{ListProductsRequest, Product, SearchRequest},
    runtime::runtime_builder,
};
use prometheus_parse::{Scrape, Value};
use tonic::{Streaming, transport::Channel};

use crate::helpers::{Backend, TestApp, seed_products, value};

/// The value of the one sample of `name` for the catalogue's `method`
/// whose labels include `extra`.
fn method_value(scrape: &Scrape, name: &str, method: &str, extra: &[(&str, &str)]) -> Option<f64> {
    let method = [
        ("grpc_service", "catalogue.v1.CatalogueService"),
        ("grpc_method", method),
    ];
    value(scrape, name, &[&method[..], extra].concat())
}

/// Seven GetProduct calls that find their product and three NotFound, a
/// whole ListProducts stream of 25 and a SearchProducts. Returns the number
/// of products streamed.
pub(crate) async fn call_each_rpc(app: &mut TestApp) -> usize {
    let products = seed_products();
    for product in &products[..7] {
        app.get_product(&product.id).await.unwrap();
    }
    for _ in 0..3 {
        app.get_product("prod-missing").await.unwrap_err();
    }
    let streamed = app.list_to_end(25).await;
    app.client
        .search_products(SearchRequest {
            query: "oak".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    streamed
}

#[test]
fn handled_counts_and_histograms_match_the_calls_made() {
    runtime_builder()
        .worker_threads(2)
        .build()
        .unwrap()
        .block_on(async {
            let mut app = TestApp::builder().spawn().await;
            let streamed = call_each_rpc(&mut app).await;

            let scrape = app.scrape().await;

            let handled = |method: &str, code: &str| {
                method_value(
                    &scrape,
                    "grpc_server_handled_total",
                    method,
                    &[("grpc_code", code)],
                )
            };
            assert_eq!(handled("GetProduct", "OK"), Some(7.0));
            assert_eq!(handled("GetProduct", "NotFound"), Some(3.0));
            assert_eq!(
                method_value(
                    &scrape,
                    "grpc_server_handling_seconds",
                    "GetProduct",
                    &[("grpc_code", "OK")]
                ),
                Some(7.0),
                "histogram count"
            );
            assert_eq!(
                value(
                    &scrape,
                    "rpc_server_call_duration_seconds",
                    &[("rpc_method", "GetProduct"), ("rpc_grpc_status_code", "5")]
                ),
                Some(3.0)
            );
            assert_eq!(streamed, 25);
            assert_eq!(handled("ListProducts", "OK"), Some(1.0));
            assert_eq!(handled("SearchProducts", "OK"), Some(1.0));
            for (name, method, expected) in [
                ("grpc_server_started_total", "GetProduct", 10.0),
                ("grpc_server_msg_received_total", "GetProduct", 10.0),
                ("grpc_server_msg_sent_total", "GetProduct", 7.0),
                ("grpc_server_in_flight_requests", "GetProduct", 0.0),
                ("grpc_server_msg_sent_total", "ListProducts", 25.0),
                ("grpc_server_stream_messages", "ListProducts", 1.0),
                ("grpc_server_streams_active", "ListProducts", 0.0),
            ] {
                assert_eq!(
                    method_value(&scrape, name, method, &[]),
                    Some(expected),
                    "{name} of {method}"
                );
            }

            let store_calls = |operation: &str| {
                value(
                    &scrape,
                    "catalogue_store_query_duration_seconds",
                    &[("operation", operation), ("outcome", "ok")],
                )
            };
            assert_eq!(store_calls("get_product"), Some(10.0));
            assert_eq!(store_calls("search_products"), Some(1.0));

            assert_eq!(value(&scrape, "tokio_workers", &[]), Some(2.0));
            assert!(value(&scrape, "tokio_worker_polls_total", &[("worker", "0")]).unwrap() > 0.0);
            // Tokio's histograms are histograms, CPU seconds a counter: what
            // `promtool check metrics` asks of them.
            for histogram in ["tokio_poll_time_seconds", "tokio_schedule_latency_seconds"] {
                let family = scrape.samples.iter().find(|s| s.metric == histogram);
                assert!(
                    matches!(family.map(|s| &s.value), Some(prometheus_parse::Value::Histogram(buckets)) if buckets.last().is_some_and(|b| b.count > 0.0)),
                    "{histogram} is a histogram with polls in it"
                );
            }
            let cpu = scrape.samples.iter().find(|s| s.metric == "process_cpu_seconds_total");
            assert!(
                matches!(cpu.map(|s| &s.value), Some(prometheus_parse::Value::Counter(seconds)) if *seconds > 0.0),
                "process_cpu_seconds_total is a counter"
            );
            assert!(
                method_value(&scrape, "tokio_task_poll_seconds_total", "GetProduct", &[]).unwrap() > 0.0
            );
            assert!(
                method_value(&scrape, "tokio_task_instrumented_total", "GetProduct", &[]).unwrap()
                    >= 10.0
            );
            assert!(value(&scrape, "process_resident_memory_bytes", &[]).unwrap() > 0.0);
            assert!(value(&scrape, "process_open_fds", &[]).unwrap() > 0.0);
            assert_eq!(
                value(
                    &scrape,
                    "catalogue_build_info",
                    &[("version", env!("CARGO_PKG_VERSION"))]
                ),
                Some(1.0)
            );
        });
}

#[tokio::test]
async fn every_metric_has_help_text_and_pool_metrics_appear_for_sql_stores() {
    let app = TestApp::builder().backend(Backend::Sqlite).spawn().await;

    let scrape = app.scrape().await;

    let names: HashMap<_, _> = scrape
        .samples
        .iter()
        .map(|s| (s.metric.clone(), ()))
        .collect();
    for name in names.keys() {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| scrape.docs.contains_key(*base))
            })
            .unwrap_or(name);
        assert!(scrape.docs.contains_key(family), "{name} has no HELP");
    }
    assert_eq!(
        value(
            &scrape,
            "catalogue_store_pool_max_connections",
            &[("db_system", "sqlite")]
        ),
        Some(8.0)
    );
}

/// A client whose HTTP/2 window holds about 16 KiB: the server can run at
/// most that far ahead of what the client has read.
async fn small_window_client(app: &TestApp) -> CatalogueServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .initial_stream_window_size(Some(16 * 1024))
        .connect()
        .await
        .unwrap();
    CatalogueServiceClient::new(channel)
}

/// A ListProducts stream of 500 on a small-window client.
async fn small_window_stream(app: &TestApp) -> Streaming<Product> {
    let mut client = small_window_client(app).await;
    client
        .list_products(ListProductsRequest {
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// Starts a ListProducts stream of 500 on a small-window client, reads one
/// product and drops the stream; returns the first scrape in which the
/// server has counted the cancellation.
pub(crate) async fn cancel_a_stream(app: &TestApp) -> Scrape {
    let mut stream = small_window_stream(app).await;
    stream.message().await.unwrap().expect("a first product");
    drop(stream);

    for _ in 0..1000 {
        let scrape = app.scrape().await;
        if method_value(
            &scrape,
            "grpc_server_stream_cancelled_total",
            "ListProducts",
            &[],
        ) == Some(1.0)
        {
            return scrape;
        }
        tokio::task::yield_now().await;
    }
    panic!("the cancellation was never counted");
}

#[tokio::test]
async fn a_cancelled_stream_is_counted() {
    let app = TestApp::builder().spawn().await;

    let scrape = cancel_a_stream(&app).await;

    assert_eq!(
        method_value(&scrape, "grpc_server_streams_active", "ListProducts", &[]),
        Some(0.0)
    );
    assert_eq!(
        method_value(
            &scrape,
            "grpc_server_handled_total",
            "ListProducts",
            &[("grpc_code", "Canceled")]
        ),
        Some(1.0)
    );
    let sent = method_value(&scrape, "grpc_server_msg_sent_total", "ListProducts", &[]).unwrap();
    assert!(sent < 500.0, "the server stopped early: {sent} of 500 sent");
}

#[tokio::test]
async fn a_slow_reader_shows_as_time_blocked() {
    let app = TestApp::builder().spawn().await;
    let mut stream = small_window_stream(&app).await;
    let mut received = 0;
    while stream.message().await.unwrap().is_some() {
        received += 1;
        if received % 50 == 0 {
            // A slow reader: the server waits on flow control meanwhile.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    let scrape = app.scrape().await;
    let blocked = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "grpc_server_stream_blocked_seconds_sum"
                && s.labels.get("grpc_method") == Some("ListProducts")
        })
        .map(|s| match s.value {
            Value::Untyped(v) | Value::Gauge(v) | Value::Counter(v) => v,
            _ => 0.0,
        });
    assert_eq!(received, 500);
    assert_eq!(
        method_value(&scrape, "grpc_server_stream_messages", "ListProducts", &[]),
        Some(1.0)
    );
    // The reader slept 9 times for 20 ms with the window full: the server
    // waited at least one of those sleeps.
    assert!(
        blocked.unwrap_or(0.0) >= 0.02,
        "blocked time recorded: {blocked:?}"
    );
}

/// `--no-runtime-metrics` turns off the runtime's and the tasks' numbers,
/// not the calls': no call is left uncounted because its task is not
/// monitored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_runtime_metrics_calls_are_counted_and_no_task_or_runtime_series_is_exported() {
    let mut app = TestApp::builder()
        .args(&["--no-runtime-metrics"])
        .spawn()
        .await;
    call_each_rpc(&mut app).await;

    let scrape = app.scrape().await;

    let handled = method_value(
        &scrape,
        "grpc_server_handled_total",
        "GetProduct",
        &[("grpc_code", "OK")],
    );
    assert_eq!(handled, Some(7.0));
    let runtime_series: Vec<&str> = scrape
        .samples
        .iter()
        .map(|sample| sample.metric.as_str())
        .filter(|name| name.starts_with("tokio_"))
        .collect();
    assert!(runtime_series.is_empty(), "{runtime_series:?}");
}
