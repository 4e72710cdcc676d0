//! Micro-benchmarks of the pieces every call goes through: request
//! validation and page-token coding, product encoding, and the telemetry
//! layer's recording path. `cargo bench --bench hot_paths` prints numbers;
//! nothing here asserts a speed.

use std::{convert::Infallible, hint::black_box};

use catalogue::{
    api::proto,
    domain::{ListCursor, PageSize, ProductId, SearchText},
    grpc::{GrpcTelemetryLayer, Rpc},
    method::Method,
    metrics::Metrics,
    store::seed,
};
use criterion::{Criterion, criterion_group, criterion_main};
use http_body::Body as _;
use prost::Message;
use tower::{Layer, ServiceExt, service_fn};

fn validation(c: &mut Criterion) {
    let token = ListCursor(ProductId::parse("prod-0004242").unwrap()).encode();
    c.bench_function("ProductId::parse", |b| {
        b.iter(|| ProductId::parse(black_box("prod-0004242")))
    });
    c.bench_function("PageSize::parse", |b| {
        b.iter(|| PageSize::parse(black_box(200), 50, 1000))
    });
    c.bench_function("ListCursor::decode", |b| {
        b.iter(|| ListCursor::decode(black_box(&token)))
    });
    c.bench_function("ListCursor::encode", |b| {
        let cursor = ListCursor(ProductId::parse("prod-0004242").unwrap());
        b.iter(|| black_box(&cursor).encode())
    });
    c.bench_function("SearchText::parse", |b| {
        b.iter(|| SearchText::parse(black_box("Rustic Oak, lamp")))
    });
}

fn encoding(c: &mut Criterion) {
    let product = seed::product(4242);
    c.bench_function("Product -> proto -> bytes", |b| {
        b.iter(|| proto::Product::from(black_box(product.clone())).encode_to_vec())
    });
}

fn telemetry_layer(c: &mut Criterion) {
    // The real recording path: a Prometheus recorder behind the handles,
    // and the call run with the app's dispatch, as the service does.
    let metrics = Metrics::new().expect("recorder builds");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rpcs = Method::ALL.map(|method| Rpc {
        service: Method::SERVICE,
        name: method.name(),
        kind: method.kind(),
        traced: true,
    });
    let layer =
        GrpcTelemetryLayer::new(&rpcs, None, &metrics, Some(tracing::Dispatch::none()), true);
    let ok = || {
        let mut response = http::Response::new(tonic::body::Body::empty());
        response
            .headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("0"));
        response
    };
    let service = layer.layer(service_fn(
        move |_request: http::Request<tonic::body::Body>| async move { Ok::<_, Infallible>(ok()) },
    ));
    c.bench_function("telemetry layer: one unary call", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let request = http::Request::builder()
                    .uri("/catalogue.v1.CatalogueService/GetProduct")
                    .body(tonic::body::Body::empty())
                    .unwrap();
                let response = service.clone().oneshot(request).await.unwrap();
                let mut body = std::pin::pin!(response.into_body());
                while let Some(frame) =
                    std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await
                {
                    black_box(frame.ok());
                }
            })
        })
    });
}

criterion_group!(benches, validation, encoding, telemetry_layer);
criterion_main!(benches);
