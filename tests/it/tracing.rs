//! Spans exported over real OTLP/gRPC to a receiver inside the test.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use catalogue::{
    api::proto::GetProductRequest,
    upstream::proto::{
        GetStockRequest, GetStockResponse,
        inventory_service_server::{InventoryService, InventoryServiceServer},
    },
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, any_value::Value},
    resource::v1::Resource,
    trace::v1::{Span, span::SpanKind, status::StatusCode},
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{
    Request, Response, Status,
    codec::CompressionEncoding,
    metadata::MetadataValue,
    transport::{Server, server::Router},
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::helpers::{Backend, Logs, TestApp, seed_products};

/// Serves `router` on a loopback port until the test ends; returns its url.
async fn serve_on_loopback(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    format!("http://{addr}")
}

/// The headers and the resource of one export.
type Export = (tonic::metadata::MetadataMap, Option<Resource>);

/// An OTLP trace receiver that keeps every span it is sent, and the
/// headers and resource of every export it takes.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    exports: Arc<Mutex<Vec<Export>>>,
    /// How many exports to answer UNAVAILABLE first.
    refusals: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let refuse = |left: usize| left.checked_sub(1);
        if self
            .refusals
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, refuse)
            .is_ok()
        {
            return Err(Status::unavailable("not yet"));
        }
        let (metadata, _, request) = request.into_parts();
        let resource = request
            .resource_spans
            .first()
            .and_then(|spans| spans.resource.clone());
        self.exports.lock().unwrap().push((metadata, resource));
        let spans = request
            .resource_spans
            .into_iter()
            .flat_map(|resource| resource.scope_spans)
            .flat_map(|scope| scope.spans);
        self.spans.lock().unwrap().extend(spans);
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    /// Starts the receiver; returns its endpoint url.
    async fn start(&self) -> String {
        let service =
            TraceServiceServer::new(self.clone()).accept_compressed(CompressionEncoding::Gzip);
        serve_on_loopback(Server::builder().add_service(service)).await
    }

    /// Flushes `app`'s traces until a span of each of `names` has arrived
    /// (a name twice: two spans of it; at most 30 s), and returns every span received. A server span ends
    /// just after the call's last frame is written, so the client can hold
    /// its answer a moment before the span exists to be flushed.
    async fn spans_ended(&self, app: &TestApp, names: &[&str]) -> Vec<Span> {
        for _ in 0..1500 {
            app.flush_traces();
            let spans = self.spans.lock().unwrap().clone();
            let arrived = |name: &&str| {
                let wanted = names.iter().filter(|n| *n == name).count();
                spans.iter().filter(|span| span.name == *name).count() >= wanted
            };
            if names.iter().all(arrived) {
                return spans;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("no span of each of {names:?} ever arrived");
    }
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|AnyValue { value }| value.as_ref())
}

fn string(value: &str) -> Value {
    Value::StringValue(value.into())
}

async fn traced_app(logs: &Logs) -> (TestApp, Receiver) {
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let app = TestApp::builder()
        .backend(Backend::Sqlite)
        .args(&["--otlp-endpoint", &endpoint, "--log-format", "json"])
        .logs(logs)
        .spawn()
        .await;
    (app, receiver)
}

/// A SQLite app exporting to a fresh receiver, with `extra` flags.
async fn traced_app_with(extra: &[&str]) -> (TestApp, Receiver) {
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let flags: Vec<&str> = ["--otlp-endpoint", &endpoint]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let app = TestApp::builder()
        .backend(Backend::Sqlite)
        .args(&flags)
        .spawn()
        .await;
    (app, receiver)
}

/// An inventory upstream with 7 of everything in stock.
struct FixedStock;

#[tonic::async_trait]
impl InventoryService for FixedStock {
    async fn get_stock(
        &self,
        _: Request<GetStockRequest>,
    ) -> Result<Response<GetStockResponse>, Status> {
        Ok(Response::new(GetStockResponse { stock_qty: 7 }))
    }
}

/// Starts an inventory upstream that keeps the `traceparent` and `baggage`
/// of every call in `contexts` (empty when there is none); returns its url.
async fn start_inventory(contexts: Arc<Mutex<Vec<(String, String)>>>) -> String {
    let keep = move |request: Request<()>| {
        let header = |name| {
            request
                .metadata()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let context = (header("traceparent"), header("baggage"));
        contexts.lock().unwrap().push(context);
        Ok(request)
    };
    let inventory = InventoryServiceServer::with_interceptor(FixedStock, keep);
    serve_on_loopback(Server::builder().add_service(inventory)).await
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn get_request_with(traceparent: &str) -> Request<GetProductRequest> {
    let mut request = Request::new(GetProductRequest {
        product_id: seed_products()[0].id.clone(),
    });
    request
        .metadata_mut()
        .insert("traceparent", MetadataValue::try_from(traceparent).unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_sampling_decision_travels_on_to_the_upstream() {
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let traceparents = Arc::new(Mutex::new(Vec::new()));
    let upstream = start_inventory(traceparents.clone()).await;
    let app = TestApp::builder()
        .args(
            // Only the head sampler's decision: no call is kept for being slow.
            &[
                "--otlp-endpoint",
                &endpoint,
                "--upstream-url",
                &upstream,
                "--no-trace-keep",
            ],
        )
        .spawn()
        .await;
    const UNSAMPLED: &str = "0af7651916cd43dd8448eb211c80319c";

    app.client
        .clone()
        .get_product(get_request_with(&format!("00-{UNSAMPLED}-{PARENT_ID}-00")))
        .await
        .expect("found");
    app.client
        .clone()
        .get_product(get_request_with(&format!("00-{TRACE_ID}-{PARENT_ID}-01")))
        .await
        .expect("found");
    let spans = receiver
        .spans_ended(&app, &["inventory.v1.InventoryService/GetStock"])
        .await;
    assert!(
        spans.iter().all(|span| hex(&span.trace_id) != UNSAMPLED),
        "an unsampled call made spans"
    );
    let client = spans
        .iter()
        .find(|span| span.name == "inventory.v1.InventoryService/GetStock")
        .expect("the sampled call's upstream span");
    assert_eq!(hex(&client.trace_id), TRACE_ID);
    let contexts = traceparents.lock().unwrap().clone();
    let [(unsampled, _), (sampled, _)] = contexts.as_slice() else {
        panic!("{contexts:?}");
    };
    let fields: Vec<&str> = unsampled.split('-').collect();
    assert_eq!(fields[1], UNSAMPLED, "the trace id goes on: {unsampled}");
    assert_ne!(fields[2], PARENT_ID, "with a span id of this service's");
    assert_eq!(fields[3], "00", "and not sampled: {unsampled}");
    assert_eq!(
        sampled,
        &format!("00-{TRACE_ID}-{}-01", hex(&client.span_id)),
        "a sampled call's upstream span is the parent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_baggage_travels_on_to_the_upstream_sampled_or_not() {
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let contexts = Arc::new(Mutex::new(Vec::new()));
    let upstream = start_inventory(contexts.clone()).await;
    let app = TestApp::builder()
        .args(&["--otlp-endpoint", &endpoint, "--upstream-url", &upstream])
        .spawn()
        .await;
    for flags in ["00", "01"] {
        let mut request = get_request_with(&format!("00-{TRACE_ID}-{PARENT_ID}-{flags}"));
        request
            .metadata_mut()
            .insert("baggage", MetadataValue::from_static("tenant=acme"));
        app.client
            .clone()
            .get_product(request)
            .await
            .expect("found");
    }
    let contexts = contexts.lock().unwrap().clone();
    assert_eq!(contexts.len(), 2, "{contexts:?}");
    for (traceparent, baggage) in &contexts {
        assert_eq!(baggage, "tenant=acme", "after {traceparent}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_continues_the_callers_trace_with_store_spans_as_children() {
    let logs = Logs::default();
    let (mut app, receiver) = traced_app(&logs).await;
    let mut request = Request::new(GetProductRequest {
        product_id: seed_products()[0].id.clone(),
    });
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    request.metadata_mut().insert(
        "traceparent",
        MetadataValue::try_from(&traceparent).unwrap(),
    );

    app.client.get_product(request).await.expect("found");
    let spans = receiver.spans_ended(&app, &[GET_PRODUCT]).await;
    let rpc = spans
        .iter()
        .find(|span| span.name == GET_PRODUCT)
        .unwrap_or_else(|| {
            panic!(
                "no RPC span among {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(hex(&rpc.trace_id), TRACE_ID, "the caller's trace continues");
    assert_eq!(hex(&rpc.parent_span_id), PARENT_ID);
    assert_eq!(rpc.kind, SpanKind::Server as i32);
    assert_eq!(attribute(rpc, "rpc.system.name"), Some(&string("grpc")));
    assert_eq!(
        attribute(rpc, "rpc.system"),
        None,
        "no old names by default"
    );
    assert_eq!(
        attribute(rpc, "rpc.service"),
        Some(&string("catalogue.v1.CatalogueService"))
    );
    assert_eq!(attribute(rpc, "rpc.method"), Some(&string("GetProduct")));
    assert_eq!(
        attribute(rpc, "rpc.response.status_code"),
        Some(&string("OK"))
    );
    assert_eq!(
        attribute(rpc, "network.peer.address"),
        Some(&string("127.0.0.1"))
    );
    assert_ne!(
        rpc.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );

    let store = spans
        .iter()
        .find(|span| span.parent_span_id == rpc.span_id)
        .expect("a store span under the RPC span");
    assert_eq!(store.kind, SpanKind::Client as i32);
    assert_eq!(attribute(store, "db.system.name"), Some(&string("sqlite")));
    assert_eq!(
        attribute(store, "db.operation.name"),
        Some(&string("get_product"))
    );
    assert_eq!(attribute(store, "db.statement"), None);
    let Some(Value::StringValue(statement)) = attribute(store, "db.query.text") else {
        panic!("no db.query.text");
    };
    assert!(
        statement.contains("?1") && !statement.contains(&seed_products()[0].id),
        "{statement}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dup_opt_in_sends_the_older_attribute_names_too() {
    let (mut app, receiver) =
        traced_app_with(&["--semconv-stability-opt-in", "http,rpc/dup,database/dup"]).await;

    app.client
        .get_product(GetProductRequest {
            product_id: seed_products()[0].id.clone(),
        })
        .await
        .expect("found");
    let spans = receiver.spans_ended(&app, &[GET_PRODUCT]).await;
    let rpc = spans
        .iter()
        .find(|span| span.name == GET_PRODUCT)
        .expect("the RPC span");
    for (old, new, value) in [
        ("rpc.system", "rpc.system.name", string("grpc")),
        (
            "net.sock.peer.addr",
            "network.peer.address",
            string("127.0.0.1"),
        ),
    ] {
        assert_eq!(attribute(rpc, old), Some(&value), "{old}");
        assert_eq!(attribute(rpc, new), Some(&value), "{new}");
    }
    assert_eq!(
        attribute(rpc, "rpc.grpc.status_code"),
        Some(&Value::IntValue(0))
    );
    let store = spans
        .iter()
        .find(|span| span.parent_span_id == rpc.span_id)
        .expect("a store span under the RPC span");
    for (old, new) in [
        ("db.system", "db.system.name"),
        ("db.operation", "db.operation.name"),
        ("db.statement", "db.query.text"),
    ] {
        assert!(attribute(store, old).is_some(), "{old}");
        assert_eq!(attribute(store, old), attribute(store, new), "{old}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_codes_mark_the_span_as_error_and_health_checks_are_not_traced() {
    let logs = Logs::default();
    let (mut app, receiver) = traced_app(&logs).await;

    app.client
        .get_product(GetProductRequest {
            product_id: "prod-missing".into(),
        })
        .await
        .expect_err("not found");
    HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .expect("health answers");
    let spans = receiver.spans_ended(&app, &[GET_PRODUCT]).await;
    let rpc = spans
        .iter()
        .find(|span| span.name == GET_PRODUCT)
        .expect("the RPC span");
    assert_eq!(
        rpc.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    assert_eq!(
        attribute(rpc, "rpc.response.status_code"),
        Some(&string("NOT_FOUND"))
    );
    assert!(
        spans
            .iter()
            .all(|span| !span.name.starts_with("grpc.health")),
        "health checks are not traced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_span_records_its_messages_and_log_lines_carry_the_trace_id() {
    let logs = Logs::default();
    let (mut app, receiver) = traced_app(&logs).await;

    app.list_to_end(30).await;
    // A corrupt row: reading it is an internal error, logged inside the call.
    let database = sqlx::SqlitePool::connect(&format!("sqlite://{}", app.sqlite_path().display()))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO products (id, name, description, price_cents, stock_qty, image_urls, created_at, category_id) \
         VALUES ('prod-corrupt', 'n', 'd', 1, 1, 'not json', 0, 'home')",
    )
    .execute(&database)
    .await
    .unwrap();
    let status = app
        .client
        .get_product(GetProductRequest {
            product_id: "prod-corrupt".into(),
        })
        .await
        .expect_err("corrupt row");
    assert_eq!(status.code(), tonic::Code::Internal);
    assert_eq!(status.message(), "internal error", "the cause is not sent");
    let spans = receiver
        .spans_ended(&app, &[LIST_PRODUCTS, GET_PRODUCT])
        .await;
    let stream_span = spans
        .iter()
        .find(|span| span.name == LIST_PRODUCTS)
        .expect("the stream's span");
    assert_eq!(
        attribute(stream_span, "rpc.server.messages_sent"),
        Some(&Value::IntValue(30))
    );
    assert_eq!(
        attribute(stream_span, "rpc.server.cancelled"),
        Some(&Value::BoolValue(false))
    );
    let store_spans = spans
        .iter()
        .filter(|span| span.parent_span_id == stream_span.span_id)
        .count();
    assert!(
        store_spans >= 1,
        "the stream's store reads are its children"
    );

    let failed = spans
        .iter()
        .rev()
        .find(|span| span.name == GET_PRODUCT)
        .expect("the failed call's span");
    let text = String::from_utf8(logs.bytes()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("every log line is JSON"))
        .collect();
    let error_line = lines
        .iter()
        .find(|line| line["fields"]["message"] == "internal error")
        .unwrap_or_else(|| panic!("no internal error logged in {text}"));
    assert!(
        error_line["fields"]["error"]
            .as_str()
            .unwrap()
            .contains("prod-corrupt"),
        "the cause is logged"
    );
    assert_eq!(error_line["trace_id"], hex(&failed.trace_id));
    assert_eq!(error_line["span_id"], hex(&failed.span_id));
}

const GET_PRODUCT: &str = "catalogue.v1.CatalogueService/GetProduct";
const LIST_PRODUCTS: &str = "catalogue.v1.CatalogueService/ListProducts";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The OTLP settings a hosted collector needs: its headers (values
/// percent-decoded), gzip, and a retry when it is briefly unavailable; the
/// resource names the service and the replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_carry_the_headers_compressed_and_are_retried_while_unavailable() {
    let receiver = Receiver::default();
    receiver.refusals.store(1, Ordering::Relaxed);
    let endpoint = receiver.start().await;
    let app = TestApp::builder()
        .backend(Backend::Sqlite)
        .args(&[
            "--otlp-endpoint",
            &endpoint,
            "--otlp-headers",
            "x-api-key=s%20cret, tenant = blue",
            "--otlp-compression",
            "gzip",
            "--instance-id",
            "replica-7",
        ])
        .spawn()
        .await;
    let name = "catalogue.v1.CatalogueService/GetProduct";
    app.client
        .clone()
        .get_product(get_request_with(&format!("00-{TRACE_ID}-{PARENT_ID}-01")))
        .await
        .expect("found");

    receiver.spans_ended(&app, &[name]).await;
    assert_eq!(receiver.refusals.load(Ordering::Relaxed), 0, "refused once");
    let exports = receiver.exports.lock().unwrap().clone();
    let (metadata, resource) = exports.first().expect("an export taken");
    let header = |name| metadata.get(name).and_then(|value| value.to_str().ok());
    assert_eq!(header("x-api-key"), Some("s cret"));
    assert_eq!(header("tenant"), Some("blue"));
    assert_eq!(header("grpc-encoding"), Some("gzip"));
    let resource = resource.as_ref().expect("a resource");
    let resource_attribute = |key: &str| {
        resource
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.clone())
            .and_then(|AnyValue { value }| value)
    };
    assert_eq!(
        resource_attribute("service.name"),
        Some(string("catalogue"))
    );
    assert_eq!(
        resource_attribute("service.instance.id"),
        Some(string("replica-7"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_does_not_fail_calls() {
    // A port that was just free: nothing listens there.
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let endpoint = format!("http://{unused}");
    let mut app = TestApp::builder()
        .args(&["--otlp-endpoint", &endpoint])
        .spawn()
        .await;

    for product in &seed_products()[..50] {
        app.client
            .get_product(GetProductRequest {
                product_id: product.id.clone(),
            })
            .await
            .expect("served while the collector is down");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_exemplars_name_traces_that_were_exported() {
    let logs = Logs::default();
    let (mut app, receiver) = traced_app(&logs).await;
    for product in &seed_products()[..5] {
        app.get_product(&product.id).await.expect("found");
    }
    let spans = receiver.spans_ended(&app, &[GET_PRODUCT]).await;
    let exported: Vec<String> = spans.iter().map(|span| hex(&span.trace_id)).collect();

    let response = reqwest::Client::new()
        .get(app.admin_url("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    assert!(
        text.ends_with("# EOF\n") && !text.contains("\n\n"),
        "OpenMetrics"
    );
    for histogram in [
        "grpc_server_handling_seconds_bucket",
        "rpc_server_call_duration_seconds_bucket",
    ] {
        let trace_ids: Vec<&str> = text
            .lines()
            .filter(|line| line.starts_with(histogram) && line.contains("GetProduct"))
            .filter_map(|line| line.split_once(" # {trace_id=\"")?.1.split_once('"'))
            .map(|(trace_id, _)| trace_id)
            .collect();
        assert!(!trace_ids.is_empty(), "no exemplar on {histogram}: {text}");
        for trace_id in trace_ids {
            assert!(
                exported.iter().any(|t| t == trace_id),
                "{trace_id} was not exported"
            );
        }
    }

    let plain = reqwest::get(app.admin_url("/metrics")).await.unwrap();
    assert_eq!(
        plain.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(
        !plain.text().await.unwrap().contains(" # {"),
        "no exemplars in Prometheus text"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_slow_calls_are_exported_whatever_the_sampling_ratio() {
    let (mut app, receiver) = traced_app_with(&[
        "--trace-sampler",
        "traceidratio",
        "--trace-sampler-arg",
        "0",
        "--trace-slow-threshold",
        "500ms",
        "--enable-faults",
    ])
    .await;
    let product = seed_products()[0].id.clone();
    for _ in 0..5 {
        app.get_product(&product).await.expect("found");
    }
    app.get_product("prod-missing")
        .await
        .expect_err("not found");
    app.put_faults(r#"{"latency_ms": 600}"#).await;
    app.get_product(&product).await.expect("found, slowly");
    reqwest::Client::new()
        .delete(app.admin_url("/faults"))
        .send()
        .await
        .unwrap();

    let spans = receiver
        .spans_ended(&app, &[GET_PRODUCT, GET_PRODUCT])
        .await;
    let calls: Vec<&Span> = spans
        .iter()
        .filter(|span| span.name == GET_PRODUCT)
        .collect();
    let reason = |span: &Span| match attribute(span, "catalogue.trace.kept") {
        Some(Value::StringValue(reason)) => reason.clone(),
        other => panic!("{other:?}"),
    };
    let mut reasons: Vec<String> = calls.iter().map(|span| reason(span)).collect();
    reasons.sort();
    assert_eq!(
        reasons,
        ["error", "slow"],
        "the fast OK calls are not exported"
    );
    for call in calls {
        assert_eq!(call.kind, SpanKind::Server as i32);
        let error = reason(call) == "error";
        assert_eq!(
            call.status.as_ref().map(|s| s.code) == Some(StatusCode::Error as i32),
            error
        );
        assert_eq!(
            attribute(call, "rpc.response.status_code"),
            Some(&string(if error { "NOT_FOUND" } else { "OK" }))
        );
        assert!(
            call.end_time_unix_nano - call.start_time_unix_nano
                >= if error { 0 } else { 500_000_000 },
            "the span covers the call"
        );
        let store = spans
            .iter()
            .find(|span| span.parent_span_id == call.span_id)
            .expect("the store call is a child");
        assert_eq!(store.trace_id, call.trace_id);
        assert_eq!(
            attribute(store, "db.operation.name"),
            Some(&string("get_product"))
        );
        assert!(store.start_time_unix_nano >= call.start_time_unix_nano);
        assert!(store.end_time_unix_nano <= call.end_time_unix_nano);
    }
}

const SEARCH_PRODUCTS: &str = "catalogue.v1.CatalogueService/SearchProducts";

/// `catalogue load --trace-context`: under a `parentbased_*` sampler whose
/// own ratio is 0, a sampled context traces every call and an unsampled one
/// none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generators_trace_context_decides_under_a_parentbased_sampler() {
    let (app, receiver) = traced_app_with(&[
        "--trace-sampler",
        "parentbased_traceidratio",
        "--trace-sampler-arg",
        "0",
        "--no-trace-keep",
    ])
    .await;
    let target = format!("http://{}", app.grpc_addr);

    let unsampled = searches_sending(&target, "unsampled").await;
    let sampled = searches_sending(&target, "sampled").await;

    let calls = |summary: &catalogue::load::Summary| -> usize {
        let searches = summary.calls.get("SearchProducts").expect("searches");
        searches.values().sum::<u64>() as usize
    };
    assert!(calls(&unsampled) > 0 && calls(&sampled) > 0);
    assert_eq!(
        unsampled.retries + sampled.retries,
        0,
        "one server span per call"
    );
    let wanted = vec![SEARCH_PRODUCTS; calls(&sampled)];
    let spans = receiver.spans_ended(&app, &wanted).await;
    let traced = spans
        .iter()
        .filter(|span| span.name == SEARCH_PRODUCTS)
        .count();
    assert_eq!(
        traced,
        calls(&sampled),
        "every sampled call traced, no unsampled one"
    );
}

/// Half a second of `catalogue load --mix search=1` against `target`, each
/// call carrying `trace_context`.
async fn searches_sending(target: &str, trace_context: &str) -> catalogue::load::Summary {
    let flags = [
        "--mix",
        "search=1",
        "--concurrency",
        "2",
        "--duration",
        "500ms",
        "--trace-context",
        trace_context,
    ];
    let config = crate::helpers::load_config(target, &flags);
    catalogue::load::run(&config).await.expect("load runs")
}
