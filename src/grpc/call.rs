//! One call in flight.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::Request;
use opentelemetry_sdk::trace::Span as SdkSpan;
use tonic::Code;
use tracing::Dispatch;

use super::{framing::FrameCounter, handles::RpcMetrics};
use crate::{
    profiling::labels::{PollLabel, TraceIds},
    traces::calls::{CallTraces, Outcome, Recording},
};

/// One call in flight: records its outcome exactly once, when it finishes
/// or, if it never does (the client went away), when dropped.
pub(super) struct Call {
    pub(super) method: Arc<RpcMetrics>,
    pub(super) started_at: Instant,
    /// The SERVER span of a call the head sampler traces. Boxed: a call is
    /// moved with the futures that hold it (into the task hyper spawns for
    /// each stream, then into the response body), and the span's hundreds
    /// of bytes are there only for the few calls that have one.
    span: Option<Box<SdkSpan>>,
    pub(super) messages_sent: u64,
    pub(super) frames: FrameCounter,
    pub(super) first_message_at: Option<Instant>,
    pub(super) blocked: Duration,
    pub(super) finished: bool,
    /// The app's subscriber, for the response body's polls; `None` when it
    /// is the process's default.
    pub(super) dispatch: Option<Dispatch>,
    /// What the call keeps for its spans and passes on of its trace, when
    /// traces are exported.
    pub(super) recording: Option<Arc<Recording>>,
    /// What the samples of a CPU profile taken in its polls are labelled.
    pub(super) label: PollLabel,
}

impl Call {
    pub(super) fn start<B>(
        method: Arc<RpcMetrics>,
        request: &Request<B>,
        traces: Option<&CallTraces>,
        dispatch: Option<Dispatch>,
    ) -> Self {
        method.started.increment(1);
        method.in_flight.increment(1.0);
        if let Some(streams) = &method.streams {
            streams.active.increment(1.0);
        }
        let started_at = Instant::now();
        let (span, recording) = match traces {
            Some(traces) if method.rpc.traced => {
                let (span, recording) =
                    traces.start(&method.rpc, &method.full_name, request, started_at);
                (span.map(Box::new), Some(recording))
            }
            _ => (None, None),
        };
        Self {
            label: PollLabel::new(method.label),
            method,
            started_at,
            span,
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
            // The time to the first message is a stream's metric.
            if self.method.streams.is_some() {
                self.first_message_at.get_or_insert_with(Instant::now);
            }
        }
    }

    pub(super) fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let took = self.started_at.elapsed();
        let elapsed = took.as_secs_f64();
        let method = &self.method;
        // The spans end with the call, before the client can see the end.
        let exported = self.recording.take().and_then(|recording| {
            let outcome = Outcome {
                code,
                elapsed: took,
                messages_sent: method.streams.as_ref().map(|_| self.messages_sent),
            };
            recording.finish(
                &method.rpc,
                &method.full_name,
                self.span.take().map(|span| *span),
                &outcome,
            )
        });
        method
            .outcome(code)
            .record(elapsed, exported.filter(|ids| ids.is_valid()));
        method.in_flight.decrement(1.0);
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
            if code == Code::Cancelled {
                streams.cancelled.increment(1);
            }
        }
    }
}

/// Runs `poll` with `dispatch` as the thread's default, if there is one to
/// switch to.
pub(super) fn scoped<T>(dispatch: Option<&Dispatch>, poll: impl FnOnce() -> T) -> T {
    match dispatch {
        Some(dispatch) => tracing::dispatcher::with_default(dispatch, poll),
        None => poll(),
    }
}

/// The ids of a traced call's span, for the labels of a CPU profile; `None`
/// for a call that is not traced or has ended.
pub(super) fn trace_ids(recording: &Option<Arc<Recording>>) -> Option<TraceIds> {
    let ids = recording.as_ref()?.ids.as_ref()?;
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
