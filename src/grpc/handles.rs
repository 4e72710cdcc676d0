//! The metric handles of one method, registered once: per method when the
//! layer is built, per (method, status code) on the code's first call.

use std::sync::{Arc, OnceLock};

use metrics::{Counter, Gauge, Histogram};
use opentelemetry::trace::SpanContext;
use tokio_metrics::TaskMonitor;
use tonic::Code;

use super::Rpc;
use crate::{
    metrics::{Metrics, names, openmetrics::SeriesExemplars},
    profiling::labels::MethodLabel,
    status::GO_CODE_NAMES,
};

/// Everything recorded about one method, made once.
pub(super) struct RpcMetrics {
    pub(super) rpc: Rpc,
    /// `service/method`: the span name.
    pub(super) full_name: String,
    pub(super) started: Counter,
    pub(super) received: Counter,
    pub(super) sent: Counter,
    pub(super) in_flight: Gauge,
    pub(super) outcomes: [OnceLock<Outcome>; 17],
    /// Where an outcome's handles are registered on its first call.
    pub(super) metrics: Metrics,
    pub(super) streams: Option<StreamMetrics>,
    pub(super) monitor: TaskMonitor,
    /// Its calls' part of a CPU profile's label word.
    pub(super) label: MethodLabel,
}

/// The handles of one (method, status code) pair.
pub(super) struct Outcome {
    handled: Counter,
    handling_seconds: Histogram,
    rpc_duration: Histogram,
    /// The latest traced call of each bucket of the two histograms.
    handling_exemplars: Arc<SeriesExemplars>,
    rpc_exemplars: Arc<SeriesExemplars>,
}

pub(super) struct StreamMetrics {
    pub(super) active: Gauge,
    pub(super) messages: Histogram,
    pub(super) first_message: Histogram,
    pub(super) blocked: Histogram,
    pub(super) cancelled: Counter,
    pub(super) duration: Histogram,
}

impl Outcome {
    /// One call that ended with this outcome after `elapsed` seconds;
    /// `exported`: the ids of its span, if its trace is exported, for the
    /// exemplars.
    pub(super) fn record(&self, elapsed: f64, exported: Option<SpanContext>) {
        self.handled.increment(1);
        self.handling_seconds.record(elapsed);
        self.rpc_duration.record(elapsed);
        if let Some(ids) = exported {
            for exemplars in [&self.handling_exemplars, &self.rpc_exemplars] {
                exemplars.record(elapsed, ids.trace_id(), ids.span_id());
            }
        }
    }
}

impl RpcMetrics {
    /// Registers the method's handles with `metrics`.
    pub(super) fn new(rpc: Rpc, label: MethodLabel, metrics: Metrics) -> Self {
        let Rpc {
            service,
            name,
            kind,
            ..
        } = rpc;
        let labels = [
            ("grpc_type", kind.label()),
            ("grpc_service", service),
            ("grpc_method", name),
        ];
        let stream_labels = [("grpc_service", service), ("grpc_method", name)];
        let streams = kind.streams_responses().then(|| StreamMetrics {
            active: metrics.gauge(&names::STREAMS_ACTIVE, &stream_labels),
            messages: metrics.histogram(&names::STREAM_MESSAGES, &stream_labels),
            first_message: metrics.histogram(&names::STREAM_FIRST_MESSAGE_SECONDS, &stream_labels),
            blocked: metrics.histogram(&names::STREAM_BLOCKED_SECONDS, &stream_labels),
            cancelled: metrics.counter(&names::STREAM_CANCELLED, &stream_labels),
            duration: metrics.histogram(&names::STREAM_DURATION_SECONDS, &stream_labels),
        });
        Self {
            rpc,
            full_name: format!("{service}/{name}"),
            started: metrics.counter(&names::GRPC_STARTED, &labels),
            received: metrics.counter(&names::GRPC_MSG_RECEIVED, &labels),
            sent: metrics.counter(&names::GRPC_MSG_SENT, &labels),
            in_flight: metrics.gauge(&names::GRPC_IN_FLIGHT, &stream_labels),
            outcomes: std::array::from_fn(|_| OnceLock::new()),
            metrics,
            streams,
            monitor: TaskMonitor::new(),
            label,
        }
    }

    pub(super) fn outcome(&self, code: Code) -> &Outcome {
        let index = (code as usize).min(16);
        self.outcomes[index].get_or_init(|| self.new_outcome(index))
    }

    fn new_outcome(&self, index: usize) -> Outcome {
        {
            let code_name = GO_CODE_NAMES[index];
            let labels = [
                ("grpc_type", self.rpc.kind.label()),
                ("grpc_service", self.rpc.service),
                ("grpc_method", self.rpc.name),
                ("grpc_code", code_name),
            ];
            let code = index.to_string();
            let otel_labels = [
                ("rpc_system", "grpc"),
                ("rpc_service", self.rpc.service),
                ("rpc_method", self.rpc.name),
                ("rpc_grpc_status_code", code.as_str()),
            ];
            let exemplars = self.metrics.exemplars();
            Outcome {
                handled: self.metrics.counter(&names::GRPC_HANDLED, &labels),
                handling_seconds: self
                    .metrics
                    .histogram(&names::GRPC_HANDLING_SECONDS, &labels),
                rpc_duration: self
                    .metrics
                    .histogram(&names::RPC_SERVER_DURATION, &otel_labels),
                handling_exemplars: exemplars.series(
                    names::GRPC_HANDLING_SECONDS.name,
                    &labels,
                    names::LATENCY_BUCKETS,
                ),
                rpc_exemplars: exemplars.series(
                    names::RPC_SERVER_DURATION.name,
                    &otel_labels,
                    names::LATENCY_BUCKETS,
                ),
            }
        }
    }
}
