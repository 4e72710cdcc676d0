//! One call in flight.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::Request;
use opentelemetry::trace::TraceContextExt as _;
use tonic::Code;
use tracing::{Dispatch, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::{
    codes::OTEL_CODE_NAMES,
    framing::FrameCounter,
    handles::RpcMetrics,
    kept::{KeptCalls, Recording},
    labels::{PollLabel, TraceIds},
    span::traced_span,
};
use crate::telemetry::sampling::HeadSampler;

/// One call in flight: records its outcome exactly once, when it finishes
/// or, if it never does (the client went away), when dropped.
pub(super) struct Call {
    pub(super) method: Arc<RpcMetrics>,
    pub(super) started_at: Instant,
    pub(super) span: Span,
    /// Whether the span will be exported: attributes are recorded only then.
    pub(super) sampled: bool,
    pub(super) messages_sent: u64,
    pub(super) frames: FrameCounter,
    pub(super) first_message_at: Option<Instant>,
    pub(super) blocked: Duration,
    pub(super) finished: bool,
    /// The app's subscriber, for the response body's polls.
    pub(super) dispatch: Dispatch,
    /// An untraced call's record, kept if it ends badly.
    pub(super) recording: Option<Arc<Recording>>,
    /// What the samples of a CPU profile taken in its polls are labelled.
    pub(super) label: PollLabel,
}

impl Call {
    pub(super) fn start<B>(
        method: Arc<RpcMetrics>,
        request: &mut Request<B>,
        sampler: Option<HeadSampler>,
        kept: Option<&KeptCalls>,
        dispatch: Dispatch,
    ) -> Self {
        method.started.increment(1);
        method.in_flight.increment(1.0);
        if let Some(streams) = &method.streams {
            streams.active.increment(1.0);
        }
        let (span, recording) = match sampler {
            Some(sampler) if method.traced => {
                let (span, parent) = traced_span(&method, request, sampler);
                let recording = match kept {
                    Some(kept) if span.is_none() => {
                        let peer = request
                            .extensions()
                            .get::<tonic::transport::server::TcpConnectInfo>()
                            .and_then(|connection| connection.remote_addr());
                        Some(Recording::start(kept, parent, peer))
                    }
                    _ => None,
                };
                (span, recording)
            }
            _ => (Span::none(), None),
        };
        let sampled = !span.is_none();
        Self {
            label: PollLabel::new(method.label),
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
            recording,
        }
    }

    pub(super) fn on_data(&mut self, data: &Bytes) {
        let messages = self.frames.count(data);
        if messages > 0 {
            self.messages_sent += messages;
            self.method.sent.increment(messages);
            self.first_message_at.get_or_insert_with(Instant::now);
        }
    }

    pub(super) fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let took = self.started_at.elapsed();
        let elapsed = took.as_secs_f64();
        let method = &self.method;
        let exported = if self.sampled {
            Some(self.span.context().span().span_context().clone())
        } else {
            // Kept (an error or slow) or dropped, now that it has ended.
            self.recording
                .take()
                .and_then(|recording| recording.finish(method, code, took))
        };
        method
            .outcome(code)
            .record(elapsed, exported.filter(|ids| ids.is_valid()));
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

/// The ids of a traced call's span, for the labels of a CPU profile; `None`
/// for a call that is not traced or has ended.
pub(super) fn trace_ids(span: &Span, sampled: bool) -> Option<TraceIds> {
    if !sampled {
        return None;
    }
    let context = span.context();
    let ids = context.span().span_context().clone();
    ids.is_valid().then(|| TraceIds {
        trace_id: ids.trace_id(),
        span_id: ids.span_id(),
    })
}

impl Drop for Call {
    fn drop(&mut self) {
        // Dropped unfinished: the response was abandoned mid-way.
        self.finish(Code::Cancelled);
    }
}
