//! Calls the head sampler did not trace, kept when they end badly: at any
//! sampling ratio, a call that ends with an error code or takes longer than
//! `--trace-slow-threshold` is exported, with its store calls as children.
//!
//! The decision is made when the call ends, in the process, so no span is
//! built for the calls that are then dropped (building spans for all calls
//! and dropping most is what made traces at 100 % cost a third of the
//! throughput). While an untraced call runs it keeps only when it started
//! and, for each store call it makes, the call's name and two instants
//! (`record_store_call`, through a task-local). If it is kept, its spans
//! are made then, with those timestamps, straight through the OpenTelemetry
//! SDK (a tracing span cannot be given a start in the past), and go out
//! through the same bounded batch queue as every other span, at most
//! `--trace-keep-per-second` calls a second. The collector's
//! `tail_sampling` processor could decide the same across replicas, but only
//! if every replica exported every span.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use opentelemetry::{
    Context, KeyValue,
    trace::{
        Span as _, SpanBuilder, SpanContext, SpanKind, Status, TraceContextExt as _, TraceFlags,
        Tracer as _,
    },
};
use opentelemetry_sdk::trace::SdkTracer;
use tonic::Code;

use super::{codes::OTEL_CODE_NAMES, handles::RpcMetrics};

/// What keeps untraced calls that end badly; `None` in the app when traces
/// are not exported or keeping is off.
#[derive(Clone)]
pub struct KeptCalls(Arc<Keeping>);

struct Keeping {
    tracer: SdkTracer,
    /// A call at least this long is kept.
    slow: Duration,
    /// At most this many calls kept a second: under a flood every refused
    /// call is an error, and building their spans must not add to it.
    per_second: u32,
    since: Instant,
    /// The second (since `since`) `kept` counts for.
    second: AtomicU64,
    kept: AtomicU32,
}

impl KeptCalls {
    pub fn new(tracer: SdkTracer, slow: Duration, per_second: u32) -> Self {
        Self(Arc::new(Keeping {
            tracer,
            slow,
            per_second,
            since: Instant::now(),
            second: AtomicU64::new(0),
            kept: AtomicU32::new(0),
        }))
    }

    /// Whether one more call may be kept this second. Approximate under
    /// contention (two threads may both start a new second), never
    /// unbounded.
    fn admit(&self) -> bool {
        let keeping = &self.0;
        let second = keeping.since.elapsed().as_secs();
        if keeping.second.swap(second, Ordering::Relaxed) != second {
            keeping.kept.store(0, Ordering::Relaxed);
        }
        keeping.kept.fetch_add(1, Ordering::Relaxed) < keeping.per_second
    }
}

/// A store call made while an untraced call was being recorded.
pub struct StoreCall {
    /// The span name (`SELECT products`, or the operation).
    pub name: &'static str,
    pub system: &'static str,
    pub operation: &'static str,
    pub statement: Option<&'static str>,
    pub started: Instant,
    pub ended: Instant,
    pub failed: bool,
}

tokio::task_local! {
    /// The untraced call being polled, if it is recorded.
    static RECORDING: Option<Arc<Recording>>;
}

/// Notes a store call of the untraced call being polled, if it is being
/// recorded; nothing otherwise (a traced call's store calls have spans).
pub fn record_store_call(call: impl FnOnce() -> StoreCall) {
    let _ = RECORDING.try_with(|recording| {
        if let Some(recording) = recording {
            recording
                .store_calls
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(call());
        }
    });
}

/// Runs `poll` with `recording` as the call being polled.
pub(super) fn polling<T>(recording: &Arc<Recording>, poll: impl FnOnce() -> T) -> T {
    RECORDING.sync_scope(Some(recording.clone()), poll)
}

/// What an untraced call keeps while it runs, to be made spans if it is kept.
pub(super) struct Recording {
    kept: KeptCalls,
    started: SystemTime,
    started_at: Instant,
    /// The caller's span, if it sent one.
    parent: SpanContext,
    peer: Option<SocketAddr>,
    store_calls: Mutex<Vec<StoreCall>>,
}

impl Recording {
    pub(super) fn start(
        kept: &KeptCalls,
        parent: SpanContext,
        peer: Option<SocketAddr>,
    ) -> Arc<Self> {
        Arc::new(Self {
            kept: kept.clone(),
            started: SystemTime::now(),
            started_at: Instant::now(),
            parent,
            peer,
            store_calls: Mutex::new(Vec::new()),
        })
    }

    /// Exports the call's spans if it ended with an error code or was slow;
    /// returns the ids of its span then.
    pub(super) fn finish(
        &self,
        method: &RpcMetrics,
        code: Code,
        elapsed: Duration,
    ) -> Option<SpanContext> {
        let reason = if code != Code::Ok {
            "error"
        } else if elapsed >= self.kept.0.slow {
            "slow"
        } else {
            return None;
        };
        if !self.kept.admit() {
            return None;
        }
        let index = (code as usize).min(16);
        let mut attributes = vec![
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("rpc.system.name", "grpc"),
            KeyValue::new("rpc.service", method.service),
            KeyValue::new("rpc.method", method.name),
            KeyValue::new("rpc.grpc.status_code", index as i64),
            KeyValue::new("rpc.response.status_code", OTEL_CODE_NAMES[index]),
            KeyValue::new("catalogue.trace.kept", reason),
        ];
        if let Some(peer) = self.peer {
            attributes.push(KeyValue::new("network.peer.address", peer.ip().to_string()));
            attributes.push(KeyValue::new("network.peer.port", i64::from(peer.port())));
        }
        // The caller's span as the parent, marked sampled so that the SDK's
        // parent-based sampler keeps what this call decided to keep.
        let parent = if self.parent.is_valid() {
            Context::new().with_remote_span_context(sampled(&self.parent, true))
        } else {
            Context::new()
        };
        let mut span = self
            .builder(
                method.full_name.clone().into(),
                SpanKind::Server,
                self.started,
                attributes,
            )
            .start_with_context(&self.kept.0.tracer, &parent);
        if code != Code::Ok {
            span.set_status(Status::error(OTEL_CODE_NAMES[index]));
        }
        let ids = span.span_context().clone();
        let parent = Context::new().with_remote_span_context(sampled(&ids, false));
        for call in self
            .store_calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let mut attributes = vec![
                KeyValue::new("db.system", call.system),
                KeyValue::new("db.system.name", call.system),
                KeyValue::new("db.operation", call.operation),
                KeyValue::new("db.operation.name", call.operation),
                KeyValue::new("db.collection.name", "products"),
            ];
            if let Some(statement) = call.statement {
                attributes.push(KeyValue::new("db.statement", statement));
                attributes.push(KeyValue::new("db.query.text", statement));
            }
            let mut child = self
                .builder(
                    call.name.into(),
                    SpanKind::Client,
                    self.at(call.started),
                    attributes,
                )
                .start_with_context(&self.kept.0.tracer, &parent);
            if call.failed {
                child.set_status(Status::error("store call failed"));
            }
            child.end_with_timestamp(self.at(call.ended));
        }
        span.end_with_timestamp(self.started + elapsed);
        Some(ids)
    }

    fn builder(
        &self,
        name: std::borrow::Cow<'static, str>,
        kind: SpanKind,
        start: SystemTime,
        attributes: Vec<KeyValue>,
    ) -> SpanBuilder {
        self.kept
            .0
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_start_time(start)
            .with_attributes(attributes)
    }

    /// The wall-clock time of `instant`, from the call's start.
    fn at(&self, instant: Instant) -> SystemTime {
        self.started + instant.saturating_duration_since(self.started_at)
    }
}

/// `context` with the sampled flag set.
fn sampled(context: &SpanContext, remote: bool) -> SpanContext {
    SpanContext::new(
        context.trace_id(),
        context.span_id(),
        context.trace_flags() | TraceFlags::SAMPLED,
        remote,
        context.trace_state().clone(),
    )
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::*;

    #[test]
    fn no_more_calls_are_kept_in_a_second_than_the_limit() {
        let tracer = SdkTracerProvider::builder().build().tracer("test");
        let kept = KeptCalls::new(tracer, Duration::from_millis(250), 3);
        let admitted = (0..10).filter(|_| kept.admit()).count();
        // All ten asked within the same second (unless it turned over:
        // then at most twice the limit).
        assert!((3..=6).contains(&admitted), "{admitted}");
    }
}
