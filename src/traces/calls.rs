//! The spans of the calls that are exported, all made the same way: straight
//! through the OpenTelemetry SDK, not through tracing spans.
//!
//! A call the head sampler traces gets its SERVER span as it arrives (its
//! ids are needed at once: log lines and the upstream call carry them) and
//! everything else when it ends. A call it does not trace is exported
//! anyway when it ends with an error code or takes longer than
//! `--trace-slow-threshold`: at any sampling ratio, the calls an operator
//! wants to open are there. That decision is made when the call ends, in
//! the process, so no span is built for the calls that are then dropped.
//!
//! While a call runs it keeps only when it started and, for each store call
//! it makes, the call's name and two instants (`record_store_call`, through
//! a task-local). Its store spans are made from those when it ends, with
//! those timestamps (a tracing span cannot be given a start in the past),
//! and go out through the same bounded batch queue as every other span; kept
//! calls at most `--trace-keep-per-second` a second. A tracing span per call
//! cost more than the export itself: its fields are recorded through the
//! subscriber's layers one at a time, then turned into the SDK's span when
//! it closes. The collector's `tail_sampling` processor could make the keep
//! decision across replicas, but only if every replica exported every span.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use http::{HeaderMap, HeaderName, Request};
use opentelemetry::{
    Context, KeyValue,
    propagation::Extractor,
    trace::{
        Span as _, SpanBuilder, SpanContext, SpanKind, Status, TraceContextExt as _, TraceFlags,
        Tracer as _,
    },
};
use opentelemetry_sdk::trace::{SdkTracer, Span as SdkSpan};
use parking_lot::Mutex;
use smallvec::SmallVec;
use tonic::{Code, transport::server::TcpConnectInfo};

use super::{
    SemconvOptIn,
    sampling::{HeadSampler, unsampled_continuation},
};
use crate::{
    method::Rpc,
    status::{OTEL_CODE_NAMES, code_index},
    values::has_any_header,
};

/// What decides which calls are exported and makes their spans; `None` in
/// the app when traces are not exported.
#[derive(Clone)]
pub struct CallTraces(Arc<Tracing>);

struct Tracing {
    tracer: SdkTracer,
    sampler: HeadSampler,
    /// `None`: an untraced call is never exported (`--no-trace-keep`).
    keep: Option<Keep>,
    /// Whether the older attribute names are sent too.
    names: SemconvOptIn,
}

/// Which untraced calls are kept: those that end with an error code or
/// slowly, at most so many a second.
pub struct Keep {
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

impl Keep {
    pub fn new(slow: Duration, per_second: u32) -> Self {
        Self {
            slow,
            per_second,
            since: Instant::now(),
            second: AtomicU64::new(0),
            kept: AtomicU32::new(0),
        }
    }

    /// Whether one more call may be kept this second. Approximate under
    /// contention (two threads may both start a new second), never
    /// unbounded.
    fn admit(&self) -> bool {
        let second = self.since.elapsed().as_secs();
        if self.second.swap(second, Ordering::Relaxed) != second {
            self.kept.store(0, Ordering::Relaxed);
        }
        self.kept.fetch_add(1, Ordering::Relaxed) < self.per_second
    }
}

impl CallTraces {
    pub fn new(
        tracer: SdkTracer,
        sampler: HeadSampler,
        keep: Option<Keep>,
        names: SemconvOptIn,
    ) -> Self {
        Self(Arc::new(Tracing {
            tracer,
            sampler,
            keep,
            names,
        }))
    }

    /// Starts recording a call: its SERVER span if the head sampler traces
    /// it, and what it needs to be kept if it may be, and to pass its trace
    /// on to the calls its handler makes.
    pub(crate) fn start<B>(
        &self,
        method: &Rpc,
        span_name: &str,
        request: &Request<B>,
        started_at: Instant,
    ) -> (Option<SdkSpan>, Arc<Recording>) {
        let caller = caller_context(request.headers());
        let sampled = self.0.sampler.sample(caller.span().span_context());
        let connection = request.extensions().get::<TcpConnectInfo>();
        let local = connection.and_then(TcpConnectInfo::local_addr);
        let peer = connection.and_then(TcpConnectInfo::remote_addr);
        let span = sampled.then(|| {
            let attributes = server_attributes(method, local, peer, self.0.names);
            self.builder(span_name.to_owned().into(), SpanKind::Server, attributes)
                .start_with_context(&self.0.tracer, &parent_context(&caller))
        });
        let recording = Arc::new(Recording {
            traces: self.clone(),
            started_at,
            caller,
            ids: span.as_ref().map(|span| span.span_context().clone()),
            local,
            peer,
            store_calls: Mutex::new(SmallVec::new()),
        });
        (span, recording)
    }

    fn builder(
        &self,
        name: std::borrow::Cow<'static, str>,
        kind: SpanKind,
        attributes: Vec<KeyValue>,
    ) -> SpanBuilder {
        self.0
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
    }
}

/// A store call made while a call was being recorded.
pub struct StoreCall {
    /// The span name (`SELECT products`, or the operation).
    pub name: &'static str,
    pub system: &'static str,
    /// `db.collection.name`: the table or collection it reads.
    pub collection: &'static str,
    pub operation: &'static str,
    pub statement: Option<&'static str>,
    pub started: Instant,
    pub ended: Instant,
    pub failed: bool,
}

tokio::task_local! {
    /// The call being polled, if it is recorded.
    static RECORDING: Option<Arc<Recording>>;
    /// The CLIENT span of the request being sent on, while it is.
    static CLIENT: SpanContext;
}

/// Notes a store call of the call being polled, if it is being recorded;
/// nothing otherwise.
pub fn record_store_call(call: impl FnOnce() -> StoreCall) {
    let _ = RECORDING.try_with(|recording| {
        if let Some(recording) = recording
            .as_ref()
            .filter(|recording| recording.exportable())
        {
            recording.store_calls.lock().push(call());
        }
    });
}

/// The exported span the code being polled runs in, if any: the CLIENT
/// span of a request being sent on, else the traced call's SERVER span.
/// The ids its log lines carry.
pub(crate) fn current_span() -> Option<SpanContext> {
    CLIENT.try_with(SpanContext::clone).ok().or_else(|| {
        RECORDING
            .try_with(|recording| {
                recording
                    .as_ref()
                    .and_then(|recording| recording.ids.clone())
            })
            .ok()
            .flatten()
    })
}

/// What a call passes on to the services it calls, with the caller's
/// baggage (see [`outgoing_context`]).
pub enum Outgoing {
    /// A traced call: its SERVER span's context, the parent of the CLIENT
    /// span `Outgoing::send` makes.
    Traced { parent: Context, traces: CallTraces },
    /// An untraced call's trace: the caller's trace id (or a new one) and a
    /// span id of its own with the sampled flag off, so that the services
    /// it calls agree. Sent as it is.
    Untraced(Context),
}

impl Outgoing {
    /// The context to send on (W3C headers) and, for a traced call, the
    /// CLIENT span `name` of the request, with `attributes`, started now.
    pub fn send(
        self,
        name: &'static str,
        attributes: Vec<KeyValue>,
    ) -> (Context, Option<ClientSpan>) {
        match self {
            Self::Untraced(context) => (context, None),
            Self::Traced { parent, traces } => {
                let span = traces
                    .builder(name.into(), SpanKind::Client, attributes)
                    .start_with_context(&traces.0.tracer, &parent);
                let context = parent.with_remote_span_context(span.span_context().clone());
                (context, Some(ClientSpan { span }))
            }
        }
    }
}

/// The CLIENT span of a request a traced call sends on (the upstream's),
/// made like every other span here: straight through the SDK. Ends when
/// dropped.
pub struct ClientSpan {
    span: SdkSpan,
}

impl ClientSpan {
    /// Marks the request failed.
    pub fn fail(&mut self) {
        self.span.set_status(Status::error(""));
    }

    /// Runs `request` inside the span: the log lines it writes carry the
    /// span's ids.
    pub async fn around<F: Future>(&self, request: F) -> F::Output {
        CLIENT
            .scope(self.span.span_context().clone(), request)
            .await
    }
}

impl Drop for ClientSpan {
    fn drop(&mut self) {
        self.span.end();
    }
}

/// What the call being polled passes on to the services it calls; `None`
/// outside a call, or when traces are not exported.
pub fn outgoing_context() -> Option<Outgoing> {
    RECORDING
        .try_with(|recording| {
            recording.as_ref().map(|recording| match &recording.ids {
                Some(server) => Outgoing::Traced {
                    parent: recording.caller.with_remote_span_context(server.clone()),
                    traces: recording.traces.clone(),
                },
                None => {
                    let untraced = unsampled_continuation(recording.caller.span().span_context());
                    Outgoing::Untraced(recording.caller.with_remote_span_context(untraced))
                }
            })
        })
        .ok()
        .flatten()
}

/// Runs `poll` with `recording` as the call being polled.
pub(crate) fn polling<T>(recording: &Arc<Recording>, poll: impl FnOnce() -> T) -> T {
    RECORDING.sync_scope(Some(recording.clone()), poll)
}

/// How a call ended, for its span.
pub(crate) struct Outcome {
    pub(crate) code: Code,
    pub(crate) elapsed: Duration,
    /// For a streaming call: the messages it sent.
    pub(crate) messages_sent: Option<u64>,
}

/// What a recorded call keeps while it runs, to be made spans when it ends.
pub(crate) struct Recording {
    traces: CallTraces,
    /// When the call started; its wall-clock time is read only if it is
    /// exported.
    started_at: Instant,
    /// What the caller sent: its span (invalid if it sent none) and
    /// baggage.
    caller: Context,
    /// The call's SERVER span, if the head sampler traces it.
    pub(crate) ids: Option<SpanContext>,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    /// A GetProduct makes one: kept in place, not in an allocation of
    /// its own for every call.
    store_calls: Mutex<SmallVec<[StoreCall; 1]>>,
}

impl Recording {
    /// Whether it may be exported: traced, or kept if it ends badly. If not,
    /// it only passes the caller's trace on, and notes no store calls.
    fn exportable(&self) -> bool {
        self.ids.is_some() || self.traces.0.keep.is_some()
    }

    /// Ends the call's spans: `span`, the traced call's, always; for an
    /// untraced call, new ones if it ended with an error code or was slow.
    /// Returns the ids of the exported SERVER span.
    pub(crate) fn finish(
        &self,
        method: &Rpc,
        span_name: &str,
        span: Option<SdkSpan>,
        outcome: &Outcome,
    ) -> Option<SpanContext> {
        // Decided first: an untraced call that is not kept (most calls)
        // reads no clock and builds nothing.
        let kept = match span {
            Some(_) => None,
            None => Some(self.kept(outcome)?),
        };
        let started = SystemTime::now() - outcome.elapsed;
        let names = self.traces.0.names;
        let mut attributes = outcome_attributes(outcome, names);
        let mut span = match span {
            Some(mut span) => {
                span.set_attributes(attributes);
                span
            }
            None => {
                attributes.extend(server_attributes(method, self.local, self.peer, names));
                if let Some(reason) = kept {
                    attributes.push(KeyValue::new("catalogue.trace.kept", reason));
                }
                self.traces
                    .builder(span_name.to_owned().into(), SpanKind::Server, attributes)
                    .with_start_time(started)
                    .start_with_context(&self.traces.0.tracer, &parent_context(&self.caller))
            }
        };
        if outcome.code != Code::Ok {
            span.set_status(Status::error(OTEL_CODE_NAMES[code_index(outcome.code)]));
        }
        let ids = span.span_context().clone();
        self.store_spans(&ids, started);
        span.end_with_timestamp(started + outcome.elapsed);
        Some(ids)
    }

    /// Why an untraced call is exported after all (`error` or `slow`);
    /// `None` if it is not, or the keep's budget for this second is spent.
    fn kept(&self, outcome: &Outcome) -> Option<&'static str> {
        let keep = self.traces.0.keep.as_ref()?;
        let reason = if outcome.code != Code::Ok {
            "error"
        } else if outcome.elapsed >= keep.slow {
            "slow"
        } else {
            return None;
        };
        keep.admit().then_some(reason)
    }

    /// The spans of the store calls made, children of `server`; the call
    /// started at `started`.
    fn store_spans(&self, server: &SpanContext, started: SystemTime) {
        let parent = Context::new().with_remote_span_context(server.clone());
        let old_names = self.traces.0.names.database_dup;
        for call in self.store_calls.lock().iter() {
            let mut attributes = Vec::with_capacity(if old_names { 7 } else { 4 });
            attributes.push(KeyValue::new("db.collection.name", call.collection));
            // Each value under its current name, and its older one with
            // `database/dup`.
            for (name, old_name, value) in [
                ("db.system.name", "db.system", Some(call.system)),
                ("db.operation.name", "db.operation", Some(call.operation)),
                ("db.query.text", "db.statement", call.statement),
            ] {
                let Some(value) = value else { continue };
                attributes.push(KeyValue::new(name, value));
                if old_names {
                    attributes.push(KeyValue::new(old_name, value));
                }
            }
            let mut child = self
                .traces
                .builder(call.name.into(), SpanKind::Client, attributes)
                .with_start_time(self.at(started, call.started))
                .start_with_context(&self.traces.0.tracer, &parent);
            if call.failed {
                child.set_status(Status::error("store call failed"));
            }
            child.end_with_timestamp(self.at(started, call.ended));
        }
    }

    /// The wall-clock time of `instant`, from the call's, `started`.
    fn at(&self, started: SystemTime, instant: Instant) -> SystemTime {
        started + instant.saturating_duration_since(self.started_at)
    }
}

/// The attributes a SERVER span has from the start (OpenTelemetry's RPC
/// conventions; the older names too with `rpc/dup`).
fn server_attributes(
    method: &Rpc,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    names: SemconvOptIn,
) -> Vec<KeyValue> {
    // Room for all of them and the outcome's, added when the call ends.
    let mut attributes = Vec::with_capacity(if names.rpc_dup { 13 } else { 10 });
    attributes.extend([
        KeyValue::new("rpc.system.name", "grpc"),
        KeyValue::new("rpc.service", method.service),
        KeyValue::new("rpc.method", method.name),
    ]);
    if let Some(local) = local {
        attributes.push(KeyValue::new("server.address", ip_text(local.ip())));
        attributes.push(KeyValue::new("server.port", i64::from(local.port())));
    }
    if let Some(peer) = peer {
        let address = ip_text(peer.ip());
        if names.rpc_dup {
            attributes.push(KeyValue::new("net.sock.peer.addr", address.clone()));
        }
        attributes.push(KeyValue::new("network.peer.address", address));
        attributes.push(KeyValue::new("network.peer.port", i64::from(peer.port())));
    }
    if names.rpc_dup {
        attributes.push(KeyValue::new("rpc.system", "grpc"));
    }
    attributes
}

/// An IP address as text. An IPv4 address, the common case, is written
/// digit by digit: `to_string` goes through the formatting machinery, which
/// cost more than the rest of a span's attributes together.
fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (index, octet) in v4.octets().into_iter().enumerate() {
        if index > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

/// The attributes of how a call ended.
fn outcome_attributes(outcome: &Outcome, names: SemconvOptIn) -> Vec<KeyValue> {
    let index = code_index(outcome.code);
    let mut attributes = vec![KeyValue::new(
        "rpc.response.status_code",
        OTEL_CODE_NAMES[index],
    )];
    if names.rpc_dup {
        attributes.push(KeyValue::new("rpc.grpc.status_code", index as i64));
    }
    if let Some(messages) = outcome.messages_sent {
        attributes.push(KeyValue::new(
            "rpc.server.messages_sent",
            i64::try_from(messages).unwrap_or(i64::MAX),
        ));
        attributes.push(KeyValue::new(
            "rpc.server.cancelled",
            outcome.code == Code::Cancelled,
        ));
    }
    attributes
}

/// The parent of a SERVER span: the caller's span, marked sampled so that
/// the SDK's parent-based sampler keeps what this process decided to export.
fn parent_context(caller: &Context) -> Context {
    let span = caller.span();
    let remote = span.span_context();
    if remote.is_valid() {
        caller.with_remote_span_context(SpanContext::new(
            remote.trace_id(),
            remote.span_id(),
            remote.trace_flags() | TraceFlags::SAMPLED,
            true,
            remote.trace_state().clone(),
        ))
    } else {
        Context::new()
    }
}

// Header names made once: a name given as a string is parsed on every
// lookup.
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static BAGGAGE: HeaderName = HeaderName::from_static("baggage");

/// What the caller sent of W3C trace context and baggage, through the
/// app's propagator; most calls send neither, and then it is not asked.
fn caller_context(headers: &HeaderMap) -> Context {
    if !has_any_header(headers, &[&TRACEPARENT, &BAGGAGE]) {
        return Context::new();
    }
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ip_address_is_written_as_std_writes_it() {
        let addresses = (0..=255u8)
            .map(|octet| IpAddr::from([octet, 255 - octet, octet / 3, 10]))
            .chain([
                IpAddr::from([0, 0, 0, 0]),
                IpAddr::from([100, 10, 1, 109]),
                "::1".parse().expect("an IPv6 address"),
                "::ffff:10.0.0.1".parse().expect("an IPv4-mapped address"),
            ]);
        for address in addresses {
            assert_eq!(ip_text(address), address.to_string());
        }
    }

    #[test]
    fn no_more_calls_are_kept_in_a_second_than_the_limit() {
        let keep = Keep::new(Duration::from_millis(250), 3);
        let admitted = (0..10).filter(|_| keep.admit()).count();
        // All ten asked within the same second (unless it turned over:
        // then at most twice the limit).
        assert!((3..=6).contains(&admitted), "{admitted}");
    }
}
