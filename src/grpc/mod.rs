//! The gRPC telemetry layer: one tower layer around the whole tonic router
//! that turns every call into
//! - a SERVER span (OpenTelemetry RPC conventions, parent taken from the
//!   caller's W3C `traceparent`), covering the call until its last byte, for
//!   the calls the head sampler traces and the untraced ones kept for
//!   ending badly;
//! - go-grpc-prometheus counters and handling-time histograms, and the
//!   OpenTelemetry `rpc.server.call.duration` histogram;
//! - stream metrics (messages, time to first message, time blocked on a slow
//!   reader, cancellations) for streaming methods;
//! - tokio-metrics `TaskMonitor` data per method, when the runtime's
//!   metrics are on (the collector reads them; a call's monitor reads the
//!   clock and updates shared counters at each poll).
//!
//! It works at the HTTP/2 level, so it sees every service (catalogue, health,
//! reflection) the same way and counts messages from the gRPC framing
//! itself. Metric handles are made once per method (and per status code on
//! first use), so the hot path allocates nothing for metrics.
//!
//! # Layout
//! - this file: the layer, its service and response future;
//! - `handles`: the metric handles of one method, registered once;
//! - `call`: one call in flight, which records its outcome exactly once;
//! - `body`: the request and response bodies, counting gRPC messages;
//! - `framing`: gRPC's length-prefixed messages counted in bytes cut anywhere;
//!
//! Beside it: `traces` makes the spans, `metrics` the recorder,
//! `profiling` the CPU-profile labels, `status` the code names.

mod body;
mod call;
mod framing;
mod handles;

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use futures::future::Either;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio_metrics::TaskMonitor;
use tonic::Code;
use tower::{Layer, Service};
use tracing::Dispatch;

pub use self::body::TelemetryBody;
use self::{body::count_received, call::Call, handles::RpcMetrics};
pub use crate::method::Rpc;
use crate::{
    method::Kind, metrics::Metrics, profiling::labels::LabelTable, status::grpc_status,
    traces::CallTraces,
};

/// Shared by every clone of the layer and its services.
struct Methods {
    /// A handful of paths: comparing them costs less than hashing one.
    by_path: Vec<(String, Arc<RpcMetrics>)>,
    unknown: Arc<RpcMetrics>,
    /// The same methods as CPU profile labels name them.
    labels: LabelTable,
    /// Whether calls are instrumented with their method's task monitor.
    monitored: bool,
}

impl Methods {
    fn lookup(&self, path: &str) -> &Arc<RpcMetrics> {
        self.by_path
            .iter()
            .find(|(known, _)| known == path)
            .map_or(&self.unknown, |(_, method)| method)
    }
}

/// The tower layer; see the module docs.
#[derive(Clone)]
pub struct GrpcTelemetryLayer {
    methods: Arc<Methods>,
    /// `None`: traces are not exported, no call makes a span.
    traces: Option<CallTraces>,
    /// The app's subscriber: a call's events (and its upstream call's span)
    /// go to it, whichever task hyper polls the call on. `None` when it is
    /// the process's default already.
    dispatch: Option<Dispatch>,
}

impl GrpcTelemetryLayer {
    /// Records the calls of `rpcs`; `traces` decides which are exported
    /// and makes their spans (none without it); metrics go to `metrics`,
    /// the events of the calls to `dispatch` (`None`: the process's default
    /// dispatch is the app's; see `Telemetry::call_dispatch`); with
    /// `monitored`, each call's polls go to its method's task monitor.
    pub fn new(
        rpcs: &[Rpc],
        traces: Option<CallTraces>,
        metrics: &Metrics,
        dispatch: Option<Dispatch>,
        monitored: bool,
    ) -> Self {
        let unknown = Rpc {
            service: "unknown",
            name: "unknown",
            kind: Kind::Unary,
            traced: true,
        };
        let labels = LabelTable::new(
            rpcs.iter()
                .chain([&unknown])
                .map(|rpc| (rpc.service, rpc.name))
                .collect(),
        );
        let recorded = |index, rpc| {
            let label = labels.method(index);
            Arc::new(RpcMetrics::new(rpc, label, metrics.clone()))
        };
        let by_path = rpcs
            .iter()
            .enumerate()
            .map(|(index, &rpc)| {
                let path = format!("/{}/{}", rpc.service, rpc.name);
                (path, recorded(index, rpc))
            })
            .collect();
        let unknown = recorded(rpcs.len(), unknown);
        Self {
            methods: Arc::new(Methods {
                by_path,
                unknown,
                labels,
                monitored,
            }),
            traces,
            dispatch,
        }
    }

    /// The methods as the labels of CPU profile samples name them, to
    /// resolve a profile's labels.
    pub fn labels(&self) -> LabelTable {
        self.methods.labels.clone()
    }

    /// The task monitor of every known method, for the runtime's metrics collector.
    pub(crate) fn task_monitors(&self) -> Vec<(&'static str, &'static str, TaskMonitor)> {
        self.methods
            .by_path
            .iter()
            .map(|(_, method)| (method.rpc.service, method.rpc.name, method.monitor.clone()))
            .collect()
    }
}

impl<S> Layer<S> for GrpcTelemetryLayer {
    type Service = GrpcTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcTelemetry {
            inner,
            methods: self.methods.clone(),
            traces: self.traces.clone(),
            dispatch: self.dispatch.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcTelemetry<S> {
    inner: S,
    methods: Arc<Methods>,
    traces: Option<CallTraces>,
    dispatch: Option<Dispatch>,
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

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        call::scoped(self.dispatch.as_ref(), || {
            let method = self.methods.lookup(request.uri().path()).clone();
            let call = Call::start(
                method.clone(),
                &request,
                self.traces.as_ref(),
                self.dispatch.clone(),
            );
            let request = request.map(|body| count_received(body, method.received.clone()));
            let inner = self.inner.call(request);
            let inner = if self.methods.monitored {
                Either::Left(TaskMonitor::instrument(&method.monitor, inner))
            } else {
                Either::Right(inner)
            };
            ResponseFuture {
                inner,
                call: Some(call),
            }
        })
    }
}

pin_project! {
    pub struct ResponseFuture<F> {
        #[pin]
        // With its method's task monitor, or without.
        inner: Either<tokio_metrics::Instrumented<F>, F>,
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
        let inner = this.inner;
        let Call {
            label,
            recording,
            dispatch,
            ..
        } = this.call.as_mut().expect("polled after completion");
        let recording = &*recording;
        let result = ready!(label.polling(
            || call::trace_ids(recording),
            || call::scoped(dispatch.as_ref(), || match recording {
                Some(recording) => crate::traces::calls::polling(recording, || inner.poll(cx)),
                None => inner.poll(cx),
            })
        ));
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
                Ok(Response::from_parts(parts, TelemetryBody::new(body, call)))
            }
            Err(error) => {
                call.finish(Code::Unknown);
                Err(error)
            }
        })
    }
}
