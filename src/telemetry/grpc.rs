//! The gRPC telemetry layer: one tower layer around the whole tonic router
//! that turns every call into
//! - a SERVER span (OpenTelemetry RPC conventions, parent taken from the
//!   caller's W3C `traceparent`), covering the call until its last byte;
//! - go-grpc-prometheus counters and handling-time histograms, and the
//!   OpenTelemetry `rpc.server.call.duration` histogram;
//! - stream metrics (messages, time to first message, time blocked on a slow
//!   reader, cancellations) for streaming methods;
//! - tokio-metrics `TaskMonitor` data per method.
//!
//! It works at the HTTP/2 level, so it sees every service (catalogue, health,
//! reflection) the same way and counts messages from the gRPC framing
//! itself. Metric handles are made once per method (and per status code on
//! first use), so the hot path allocates nothing for metrics.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use bytes::{Buf, Bytes};
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use opentelemetry::{propagation::Extractor, trace::TraceContextExt};
use pin_project_lite::pin_project;
use tokio_metrics::TaskMonitor;
use tonic::{Code, transport::server::TcpConnectInfo};
use tower::{Layer, Service};
use tracing::{Dispatch, Instrument, Span, field::Empty, instrument::WithSubscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::method::Kind;

use super::{
    Metrics, names,
    sampling::{HeadSampler, UnsampledTrace},
};

/// A method the server serves, as this layer records it. The app hands the
/// layer its table; calls to any other path are counted under `unknown`, so
/// that random paths cannot create unbounded series.
#[derive(Debug, Clone, Copy)]
pub struct Rpc {
    pub service: &'static str,
    pub name: &'static str,
    pub kind: Kind,
    /// Whether sampled calls get a span: false for probes and tooling, which
    /// would drown real traffic.
    pub traced: bool,
}

/// gRPC status code names as go-grpc-prometheus writes them (`grpc_code`),
/// indexed by code.
const GO_CODE_NAMES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// The same codes as the OpenTelemetry conventions write them
/// (`rpc.response.status_code`).
const OTEL_CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// A status code's name as the OpenTelemetry conventions write it
/// (`NOT_FOUND`).
pub fn code_name(code: Code) -> &'static str {
    OTEL_CODE_NAMES[(code as usize).min(16)]
}

/// Everything recorded about one method, made once.
struct RpcMetrics {
    service: &'static str,
    name: &'static str,
    /// `service/method`: the span name.
    full_name: String,
    kind: Kind,
    traced: bool,
    started: Counter,
    received: Counter,
    sent: Counter,
    in_flight: Gauge,
    outcomes: [OnceLock<Outcome>; 17],
    /// Where an outcome's handles are registered on its first call.
    metrics: Metrics,
    streams: Option<StreamMetrics>,
    monitor: TaskMonitor,
}

/// The handles of one (method, status code) pair.
struct Outcome {
    handled: Counter,
    handling_seconds: Histogram,
    rpc_duration: Histogram,
}

struct StreamMetrics {
    active: Gauge,
    messages: Histogram,
    first_message: Histogram,
    blocked: Histogram,
    cancelled: Counter,
    duration: Histogram,
}

impl RpcMetrics {
    /// Registers the method's handles: call inside `metrics.scope`.
    fn new(rpc: Rpc, metrics: Metrics) -> Self {
        let Rpc {
            service,
            name,
            kind,
            traced,
        } = rpc;
        let labels = [
            ("grpc_type", kind.label()),
            ("grpc_service", service),
            ("grpc_method", name),
        ];
        let stream_labels = [("grpc_service", service), ("grpc_method", name)];
        let streams = kind.streams_responses().then(|| StreamMetrics {
            active: gauge!(names::STREAMS_ACTIVE, &stream_labels),
            messages: histogram!(names::STREAM_MESSAGES, &stream_labels),
            first_message: histogram!(names::STREAM_FIRST_MESSAGE_SECONDS, &stream_labels),
            blocked: histogram!(names::STREAM_BLOCKED_SECONDS, &stream_labels),
            cancelled: counter!(names::STREAM_CANCELLED, &stream_labels),
            duration: histogram!(names::STREAM_DURATION_SECONDS, &stream_labels),
        });
        Self {
            service,
            name,
            full_name: format!("{service}/{name}"),
            kind,
            traced,
            started: counter!(names::GRPC_STARTED, &labels),
            received: counter!(names::GRPC_MSG_RECEIVED, &labels),
            sent: counter!(names::GRPC_MSG_SENT, &labels),
            in_flight: gauge!(names::GRPC_IN_FLIGHT, &stream_labels),
            outcomes: std::array::from_fn(|_| OnceLock::new()),
            metrics,
            streams,
            monitor: TaskMonitor::new(),
        }
    }

    fn outcome(&self, code: Code) -> &Outcome {
        let index = (code as usize).min(16);
        self.outcomes[index].get_or_init(|| self.metrics.scope(|| self.new_outcome(index)))
    }

    fn new_outcome(&self, index: usize) -> Outcome {
        {
            let code_name = GO_CODE_NAMES[index];
            let labels = [
                ("grpc_type", self.kind.label()),
                ("grpc_service", self.service),
                ("grpc_method", self.name),
                ("grpc_code", code_name),
            ];
            let otel_labels = [
                ("rpc_system", "grpc".to_owned()),
                ("rpc_service", self.service.to_owned()),
                ("rpc_method", self.name.to_owned()),
                ("rpc_grpc_status_code", index.to_string()),
            ];
            Outcome {
                handled: counter!(names::GRPC_HANDLED, &labels),
                handling_seconds: histogram!(names::GRPC_HANDLING_SECONDS, &labels),
                rpc_duration: histogram!(names::RPC_SERVER_DURATION, &otel_labels),
            }
        }
    }
}

/// Shared by every clone of the layer and its services.
struct Methods {
    by_path: HashMap<String, Arc<RpcMetrics>>,
    unknown: Arc<RpcMetrics>,
}

impl Methods {
    fn lookup(&self, path: &str) -> &Arc<RpcMetrics> {
        self.by_path.get(path).unwrap_or(&self.unknown)
    }
}

/// The tower layer; see the module docs.
#[derive(Clone)]
pub struct GrpcTelemetryLayer {
    methods: Arc<Methods>,
    /// `None`: traces are not exported, no call makes a span.
    sampler: Option<HeadSampler>,
    /// The app's subscriber: a call's spans and events go to it, whichever
    /// task hyper polls the call on.
    dispatch: Dispatch,
}

impl GrpcTelemetryLayer {
    /// `trace_health_checks` also traces health and reflection calls;
    /// Records the calls of `rpcs`; `sampler` decides which calls are
    /// traced (none without one); metrics go to `metrics`, spans and events
    /// to `dispatch`.
    pub fn new(
        rpcs: &[Rpc],
        sampler: Option<HeadSampler>,
        metrics: &Metrics,
        dispatch: Dispatch,
    ) -> Self {
        let recorded = |rpc| Arc::new(metrics.scope(|| RpcMetrics::new(rpc, metrics.clone())));
        let by_path = rpcs
            .iter()
            .map(|&rpc| (format!("/{}/{}", rpc.service, rpc.name), recorded(rpc)))
            .collect();
        let unknown = recorded(Rpc {
            service: "unknown",
            name: "unknown",
            kind: Kind::Unary,
            traced: true,
        });
        Self {
            methods: Arc::new(Methods { by_path, unknown }),
            sampler,
            dispatch,
        }
    }

    /// The task monitor of every known method, for the metrics sampler.
    pub fn task_monitors(&self) -> Vec<(&'static str, &'static str, TaskMonitor)> {
        self.methods
            .by_path
            .values()
            .map(|method| (method.service, method.name, method.monitor.clone()))
            .collect()
    }
}

impl<S> Layer<S> for GrpcTelemetryLayer {
    type Service = GrpcTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcTelemetry {
            inner,
            methods: self.methods.clone(),
            sampler: self.sampler,
            dispatch: self.dispatch.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcTelemetry<S> {
    inner: S,
    methods: Arc<Methods>,
    sampler: Option<HeadSampler>,
    dispatch: Dispatch,
}

impl<S, ResBody> Service<Request<tonic::body::Body>> for GrpcTelemetry<S>
where
    S: Service<Request<tonic::body::Body>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
{
    type Response = Response<TelemetryBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<tonic::body::Body>) -> Self::Future {
        let dispatch = self.dispatch.clone();
        tracing::dispatcher::with_default(&dispatch, || {
            let method = self.methods.lookup(request.uri().path()).clone();
            let call = Call::start(method.clone(), &mut request, self.sampler, dispatch.clone());
            let span = call.span.clone();
            let request = request.map(|body| {
                tonic::body::Body::new(MessageCountingBody {
                    inner: body,
                    frames: FrameCounter::default(),
                    received: method.received.clone(),
                })
            });
            let inner = span.in_scope(|| self.inner.call(request));
            ResponseFuture {
                inner: TaskMonitor::instrument(&method.monitor, inner)
                    .instrument(span)
                    .with_subscriber(dispatch.clone()),
                call: Some(call),
            }
        })
    }
}

pin_project! {
    pub struct ResponseFuture<F> {
        #[pin]
        inner: tracing::instrument::WithDispatch<
            tracing::instrument::Instrumented<tokio_metrics::Instrumented<F>>,
        >,
        call: Option<Call>,
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<TelemetryBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let mut call = this.call.take().expect("polled after completion");
        Poll::Ready(match result {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                // A trailers-only response (an error before any message)
                // carries its status in the headers.
                let call = match grpc_status(&parts.headers) {
                    Some(code) => {
                        call.finish(code);
                        None
                    }
                    None => Some(call),
                };
                let span = call
                    .as_ref()
                    .map(|call| call.span.clone())
                    .unwrap_or_else(Span::none);
                Ok(Response::from_parts(
                    parts,
                    TelemetryBody {
                        inner: body,
                        call,
                        span,
                        last_sent_at: None,
                    },
                ))
            }
            Err(error) => {
                call.finish(Code::Unknown);
                Err(error)
            }
        })
    }
}

/// One call in flight: records its outcome exactly once, when it finishes
/// or, if it never does (the client went away), when dropped.
struct Call {
    method: Arc<RpcMetrics>,
    started_at: Instant,
    span: Span,
    /// Whether the span will be exported: attributes are recorded only then.
    sampled: bool,
    messages_sent: u64,
    frames: FrameCounter,
    first_message_at: Option<Instant>,
    blocked: Duration,
    finished: bool,
    /// The app's subscriber, for the response body's polls.
    dispatch: Dispatch,
}

impl Call {
    fn start<B>(
        method: Arc<RpcMetrics>,
        request: &mut Request<B>,
        sampler: Option<HeadSampler>,
        dispatch: Dispatch,
    ) -> Self {
        method.started.increment(1);
        method.in_flight.increment(1.0);
        if let Some(streams) = &method.streams {
            streams.active.increment(1.0);
        }
        let span = match sampler {
            Some(sampler) if method.traced => traced_span(&method, request, sampler),
            _ => Span::none(),
        };
        let sampled = !span.is_none();
        Self {
            method,
            started_at: Instant::now(),
            span,
            sampled,
            messages_sent: 0,
            frames: FrameCounter::default(),
            first_message_at: None,
            blocked: Duration::ZERO,
            finished: false,
            dispatch,
        }
    }

    fn on_data(&mut self, data: &Bytes) {
        let messages = self.frames.count(data);
        if messages > 0 {
            self.messages_sent += messages;
            self.method.sent.increment(messages);
            self.first_message_at.get_or_insert_with(Instant::now);
        }
    }

    fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let elapsed = self.started_at.elapsed().as_secs_f64();
        let method = &self.method;
        let outcome = method.outcome(code);
        outcome.handled.increment(1);
        outcome.handling_seconds.record(elapsed);
        outcome.rpc_duration.record(elapsed);
        method.in_flight.decrement(1.0);
        let cancelled = code == Code::Cancelled;
        if let Some(streams) = &method.streams {
            streams.active.decrement(1.0);
            streams.messages.record(self.messages_sent as f64);
            streams.duration.record(elapsed);
            streams.blocked.record(self.blocked.as_secs_f64());
            if let Some(first) = self.first_message_at {
                streams
                    .first_message
                    .record(first.duration_since(self.started_at).as_secs_f64());
            }
            if cancelled {
                streams.cancelled.increment(1);
            }
        }
        if self.sampled {
            self.record_outcome(code);
        }
        // The span ends with the call, before the client can see the end.
        self.span = Span::none();
    }

    fn record_outcome(&self, code: Code) {
        if self.method.streams.is_some() {
            self.span
                .record("rpc.server.messages_sent", self.messages_sent as i64);
            self.span
                .record("rpc.server.cancelled", code == Code::Cancelled);
        }
        let index = (code as usize).min(16);
        self.span.record("rpc.grpc.status_code", index as i64);
        self.span
            .record("rpc.response.status_code", OTEL_CODE_NAMES[index]);
        if code != Code::Ok {
            self.span.record("otel.status_code", "ERROR");
            self.span
                .record("otel.status_message", OTEL_CODE_NAMES[index]);
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // Dropped unfinished: the response was abandoned mid-way.
        self.finish(Code::Cancelled);
    }
}

/// The call's SERVER span, continuing the caller's trace when the request
/// carries W3C trace context, if `sampler` says the call is traced. If not,
/// no span: the request carries an `UnsampledTrace` instead, for the calls
/// the handler makes.
fn traced_span<B>(method: &RpcMetrics, request: &mut Request<B>, sampler: HeadSampler) -> Span {
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    let remote = parent.span().span_context().clone();
    if !sampler.sample(&remote) {
        request
            .extensions_mut()
            .insert(UnsampledTrace::continuing(&remote));
        return Span::none();
    }
    let span = server_span(method);
    // Fails only when no OpenTelemetry layer is installed: then there is no
    // trace to continue.
    let _ = span.set_parent(parent);
    record_attributes(&span, method, request);
    span
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

fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?;
    let code: i32 = value.to_str().ok()?.parse().ok()?;
    Some(Code::from_i32(code))
}

pin_project! {
    /// The response body: counts messages, measures time blocked on the
    /// reader, and finishes the call at its trailers.
    pub struct TelemetryBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
        span: Span,
        // When the last data frame was handed to hyper: hyper polls again
        // once the client's flow-control window has room, so the gap is time
        // spent blocked on the reader.
        last_sent_at: Option<Instant>,
    }
}

impl<B> Body for TelemetryBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let Some(call) = this.call.as_mut() else {
            return this.inner.poll_frame(cx);
        };
        if let Some(sent_at) = this.last_sent_at.take() {
            call.blocked += sent_at.elapsed();
        }
        let inner = this.inner;
        let span = &*this.span;
        let frame = ready!(tracing::dispatcher::with_default(&call.dispatch, || {
            span.in_scope(|| inner.poll_frame(cx))
        }));
        let code = match &frame {
            Some(Ok(frame)) => match (frame.data_ref(), frame.trailers_ref()) {
                (Some(data), _) => {
                    call.on_data(data);
                    *this.last_sent_at = Some(Instant::now());
                    None
                }
                (None, Some(trailers)) => Some(grpc_status(trailers).unwrap_or(Code::Unknown)),
                (None, None) => None,
            },
            Some(Err(_)) => Some(Code::Internal),
            None => Some(Code::Unknown),
        };
        if let Some(code) = code {
            call.finish(code);
            *this.span = Span::none();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// The request body, counting the messages the client sends.
    struct MessageCountingBody<B> {
        #[pin]
        inner: B,
        frames: FrameCounter,
        received: Counter,
    }
}

impl<B> Body for MessageCountingBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            let messages = this.frames.count(data);
            this.received.increment(messages);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Counts gRPC messages in a byte stream cut anywhere: each message is a
/// 5-byte prefix (compression flag, big-endian length) and its payload.
#[derive(Debug, Default)]
struct FrameCounter {
    /// Prefix bytes seen of the message being started.
    prefix: [u8; 5],
    prefix_len: usize,
    /// Payload bytes still to skip.
    remaining: u64,
}

impl FrameCounter {
    /// Messages started in `data`.
    fn count(&mut self, data: &Bytes) -> u64 {
        let mut data = data.clone();
        let mut messages = 0;
        while data.has_remaining() {
            if self.remaining > 0 {
                let skip = self.remaining.min(data.remaining() as u64);
                data.advance(skip as usize);
                self.remaining -= skip;
                continue;
            }
            let take = (5 - self.prefix_len).min(data.remaining());
            data.copy_to_slice(&mut self.prefix[self.prefix_len..self.prefix_len + take]);
            self.prefix_len += take;
            if self.prefix_len == 5 {
                messages += 1;
                self.remaining = u64::from(u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]));
                self.prefix_len = 0;
            }
        }
        messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend((payload.len() as u32).to_be_bytes());
        bytes.extend(payload);
        bytes
    }

    #[test]
    fn frame_counter_counts_messages_cut_anywhere() {
        let stream: Vec<u8> = [message(b"hello"), message(b""), message(&[7; 300])].concat();
        for cut in 0..stream.len() {
            let mut counter = FrameCounter::default();
            let (a, b) = stream.split_at(cut);
            let total = counter.count(&Bytes::copy_from_slice(a))
                + counter.count(&Bytes::copy_from_slice(b));
            assert_eq!(total, 3, "cut at {cut}");
        }
    }

    #[test]
    fn every_code_has_names() {
        assert_eq!(GO_CODE_NAMES[Code::NotFound as usize], "NotFound");
        assert_eq!(
            OTEL_CODE_NAMES[Code::Unauthenticated as usize],
            "UNAUTHENTICATED"
        );
    }
}
