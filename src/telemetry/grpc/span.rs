//! The call's SERVER span.

use http::{HeaderMap, Request};
use opentelemetry::{
    propagation::Extractor,
    trace::{SpanContext, TraceContextExt},
};
use tonic::transport::server::TcpConnectInfo;
use tracing::{Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::handles::RpcMetrics;
use crate::telemetry::sampling::{HeadSampler, UnsampledTrace};

/// The call's SERVER span, continuing the caller's trace when the request
/// carries W3C trace context, if `sampler` says the call is traced. If not,
/// no span: the request carries an `UnsampledTrace` instead, for the calls
/// the handler makes. Also the caller's span context (invalid if it sent
/// none).
pub(super) fn traced_span<B>(
    method: &RpcMetrics,
    request: &mut Request<B>,
    sampler: HeadSampler,
) -> (Span, SpanContext) {
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    let remote = parent.span().span_context().clone();
    if !sampler.sample(&remote) {
        request
            .extensions_mut()
            .insert(UnsampledTrace::continuing(&remote));
        return (Span::none(), remote);
    }
    let span = server_span(method);
    // Fails only when no OpenTelemetry layer is installed: then there is no
    // trace to continue.
    let _ = span.set_parent(parent);
    record_attributes(&span, method, request);
    (span, remote)
}

/// A SERVER span with its attributes declared and empty.
fn server_span(method: &RpcMetrics) -> Span {
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = %method.full_name,
        otel.kind = "server",
        otel.status_code = Empty,
        otel.status_message = Empty,
        rpc.system = Empty,
        rpc.system.name = Empty,
        rpc.service = Empty,
        rpc.method = Empty,
        rpc.grpc.status_code = Empty,
        rpc.response.status_code = Empty,
        rpc.server.messages_sent = Empty,
        rpc.server.cancelled = Empty,
        server.address = Empty,
        server.port = Empty,
        network.peer.address = Empty,
        network.peer.port = Empty,
        net.sock.peer.addr = Empty,
    );
    span
}

/// The attributes of a sampled call's span.
fn record_attributes<B>(span: &Span, method: &RpcMetrics, request: &Request<B>) {
    span.record("rpc.system", "grpc");
    span.record("rpc.system.name", "grpc");
    span.record("rpc.service", method.service);
    span.record("rpc.method", method.name);
    let connection = request.extensions().get::<TcpConnectInfo>();
    if let Some(local) = connection.and_then(TcpConnectInfo::local_addr) {
        span.record("server.address", tracing::field::display(local.ip()));
        span.record("server.port", local.port());
    }
    if let Some(peer) = connection.and_then(TcpConnectInfo::remote_addr) {
        span.record("network.peer.address", tracing::field::display(peer.ip()));
        span.record("network.peer.port", peer.port());
        span.record("net.sock.peer.addr", tracing::field::display(peer.ip()));
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|key| key.as_str()).collect()
    }
}
