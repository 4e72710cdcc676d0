//! Runtime fault injection: make the service misbehave on purpose and watch
//! each tool catch it. Off unless `--enable-faults`: a fault can stop the
//! service (`blocking_ms` puts all workers but one to sleep), so an instance that
//! did not ask for them has none. Every fault is off by default; `PUT /faults` merges a
//! JSON object, `DELETE /faults` resets everything (and frees what `leak`
//! retained). Each change is logged and exported as
//! `catalogue_fault_active{fault}`.
//!
//! `FaultLayer` applies them: it wraps the catalogue service, so every call
//! of every `Method` passes through it and none can skip its faults.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use bytes::{Buf, Bytes};
use futures::future::{BoxFuture, Either};
use http_body::{Body, Frame, SizeHint};
use metrics::Gauge;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tonic::{Code, Status, server::NamedService};
use tower::{Layer, Service};

use crate::{
    error::Error,
    method::Method,
    metrics::{Metrics, names},
    values::Ratio,
};

/// Faults switched on at start; `PUT /faults` on the admin port changes them
/// at run time. All off by default, and none at all without
/// `--enable-faults`.
#[derive(Debug, Clone, clap::Args)]
pub struct FaultsConfig {
    /// Allow fault injection (`/faults` on the admin port and the --fault-*
    /// flags); without it `/faults` answers 403. For experiments, never in
    /// production.
    #[arg(long, env = "CATALOGUE_ENABLE_FAULTS", value_parser = clap::builder::BoolishValueParser::new())]
    pub enable_faults: bool,
    /// Most bytes the leak fault retains in total; calls beyond it retain
    /// nothing more until a reset.
    #[arg(long, env = "CATALOGUE_FAULT_LEAK_MAX_BYTES", default_value_t = DEFAULT_LEAK_MAX_BYTES)]
    pub fault_leak_max_bytes: u64,
    /// Added delay per call, in milliseconds.
    #[arg(long, env = "CATALOGUE_FAULT_LATENCY_MS", requires = "enable_faults",
          value_parser = clap::value_parser!(u64).range(0..=MAX_DELAY_MS))]
    pub fault_latency_ms: Option<u64>,
    /// Fraction of calls (0..1) failed with --fault-error-code.
    #[arg(long, env = "CATALOGUE_FAULT_ERROR_RATE", requires = "enable_faults")]
    pub fault_error_rate: Option<Ratio>,
    /// gRPC code name of injected errors (default UNAVAILABLE).
    #[arg(long, env = "CATALOGUE_FAULT_ERROR_CODE", requires = "enable_faults", value_parser = ErrorCode::parse)]
    pub fault_error_code: Option<ErrorCode>,
    /// Synchronous sleep inside the async handler, in milliseconds: the
    /// classic Tokio mistake.
    #[arg(long, env = "CATALOGUE_FAULT_BLOCKING_MS", requires = "enable_faults",
          value_parser = clap::value_parser!(u64).range(0..=MAX_DELAY_MS))]
    pub fault_blocking_ms: Option<u64>,
    /// Busy loop per call, in milliseconds.
    #[arg(long, env = "CATALOGUE_FAULT_CPU_BURN_MS", requires = "enable_faults",
          value_parser = clap::value_parser!(u64).range(0..=MAX_DELAY_MS))]
    pub fault_cpu_burn_ms: Option<u64>,
    /// Bytes retained per call until the faults are reset.
    #[arg(long, env = "CATALOGUE_FAULT_LEAK_BYTES_PER_CALL", requires = "enable_faults",
          value_parser = clap::value_parser!(u64).range(0..=MAX_LEAK_BYTES_PER_CALL))]
    pub fault_leak_bytes_per_call: Option<u64>,
    /// Pause between streamed messages, in milliseconds.
    #[arg(long, env = "CATALOGUE_FAULT_SLOW_STREAM_MS", requires = "enable_faults",
          value_parser = clap::value_parser!(u64).range(0..=MAX_DELAY_MS))]
    pub fault_slow_stream_ms: Option<u64>,
    /// Limit the faults to these methods (comma separated, e.g. GetProduct;
    /// each at most once).
    #[arg(
        long,
        env = "CATALOGUE_FAULT_METHODS",
        requires = "enable_faults",
        value_parser = Methods::parse
    )]
    pub fault_methods: Option<Methods>,
}

/// The methods faults apply to, each named once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Methods(pub Vec<Method>);

impl Methods {
    /// A comma-separated list of method names, none twice.
    pub fn parse(list: &str) -> Result<Self, FaultError> {
        let methods = list
            .split(',')
            .map(|name| name.trim().parse::<Method>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| FaultError::Method(error.to_string()))?;
        distinct(&methods)?;
        Ok(Self(methods))
    }
}

/// Refuses a list that names a method twice.
fn distinct(methods: &[Method]) -> Result<(), FaultError> {
    for (index, method) in methods.iter().enumerate() {
        if methods[..index].contains(method) {
            return Err(FaultError::DuplicateMethod(*method));
        }
    }
    Ok(())
}

/// A gRPC error code (never OK), parsed once from its name
/// (`NOT_FOUND`, case-insensitively) and written back the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(Code);

impl ErrorCode {
    pub fn parse(name: &str) -> Result<Self, FaultError> {
        match code_from_name(name) {
            Some(code) if code != Code::Ok => Ok(Self(code)),
            _ => Err(FaultError::ErrorCode(name.to_owned())),
        }
    }

    pub fn code(self) -> Code {
        self.0
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(crate::status::code_name(self.0))
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Self::parse(&name).map_err(serde::de::Error::custom)
    }
}

/// Upper bounds that keep a fault an experiment rather than an outage.
const MAX_DELAY_MS: u64 = 60_000;
const MAX_LEAK_BYTES_PER_CALL: u64 = 16 * 1024 * 1024;
const DEFAULT_LEAK_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// `GET /faults`: the active faults and what the leak fault holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultsReport {
    #[serde(flatten)]
    pub faults: Faults,
    /// `--fault-leak-max-bytes`: the leak fault retains no more than this.
    pub leak_max_bytes: u64,
    /// What the leak fault retains now.
    pub leaked_bytes: u64,
}

/// The active faults, as `GET /faults` shows them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Faults {
    pub latency_ms: u64,
    pub error_rate: Ratio,
    pub error_code: ErrorCode,
    pub blocking_ms: u64,
    pub cpu_burn_ms: u64,
    pub leak_bytes_per_call: u64,
    pub slow_stream_ms: u64,
    /// `None`: every method.
    pub methods: Option<Vec<Method>>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            error_rate: Ratio::ZERO,
            error_code: ErrorCode(Code::Unavailable),
            blocking_ms: 0,
            cpu_burn_ms: 0,
            leak_bytes_per_call: 0,
            slow_stream_ms: 0,
            methods: None,
        }
    }
}

/// A `PUT /faults` body: the fields to change. Unknown fields are refused.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultPatch {
    pub latency_ms: Option<u64>,
    pub error_rate: Option<Ratio>,
    pub error_code: Option<ErrorCode>,
    pub blocking_ms: Option<u64>,
    pub cpu_burn_ms: Option<u64>,
    pub leak_bytes_per_call: Option<u64>,
    pub slow_stream_ms: Option<u64>,
    /// An empty list means every method again.
    pub methods: Option<Vec<Method>>,
}

impl From<&FaultsConfig> for FaultPatch {
    fn from(config: &FaultsConfig) -> Self {
        Self {
            latency_ms: config.fault_latency_ms,
            error_rate: config.fault_error_rate,
            error_code: config.fault_error_code,
            blocking_ms: config.fault_blocking_ms,
            cpu_burn_ms: config.fault_cpu_burn_ms,
            leak_bytes_per_call: config.fault_leak_bytes_per_call,
            slow_stream_ms: config.fault_slow_stream_ms,
            methods: config.fault_methods.clone().map(|methods| methods.0),
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultError {
    #[error("{field} must be at most {max}, got {got}")]
    TooLarge {
        field: &'static str,
        max: u64,
        got: u64,
    },
    #[error("error_code {0:?} is not a gRPC error code name (e.g. UNAVAILABLE, INTERNAL)")]
    ErrorCode(String),
    #[error("{0}")]
    Method(String),
    #[error("method {0} is named twice")]
    DuplicateMethod(Method),
    #[error("fault injection is off: start the server with --enable-faults")]
    Disabled,
}

impl Faults {
    /// `self` with `patch` applied, or why the patch is refused (then
    /// nothing changes).
    fn merged(&self, patch: FaultPatch) -> Result<Self, FaultError> {
        let bounded = |field, value: Option<u64>, max, current| match value {
            Some(got) if got > max => Err(FaultError::TooLarge { field, max, got }),
            Some(got) => Ok(got),
            None => Ok(current),
        };
        let error_rate = patch.error_rate.unwrap_or(self.error_rate);
        let error_code = patch.error_code.unwrap_or(self.error_code);
        let methods = match patch.methods {
            Some(methods) if methods.is_empty() => None,
            Some(methods) => {
                distinct(&methods)?;
                Some(methods)
            }
            None => self.methods.clone(),
        };
        Ok(Self {
            latency_ms: bounded(
                "latency_ms",
                patch.latency_ms,
                MAX_DELAY_MS,
                self.latency_ms,
            )?,
            error_rate,
            error_code,
            blocking_ms: bounded(
                "blocking_ms",
                patch.blocking_ms,
                MAX_DELAY_MS,
                self.blocking_ms,
            )?,
            cpu_burn_ms: bounded(
                "cpu_burn_ms",
                patch.cpu_burn_ms,
                MAX_DELAY_MS,
                self.cpu_burn_ms,
            )?,
            leak_bytes_per_call: bounded(
                "leak_bytes_per_call",
                patch.leak_bytes_per_call,
                MAX_LEAK_BYTES_PER_CALL,
                self.leak_bytes_per_call,
            )?,
            slow_stream_ms: bounded(
                "slow_stream_ms",
                patch.slow_stream_ms,
                MAX_DELAY_MS,
                self.slow_stream_ms,
            )?,
            methods,
        })
    }

    fn any_active(&self) -> bool {
        self.latency_ms > 0
            || self.error_rate > Ratio::ZERO
            || self.blocking_ms > 0
            || self.cpu_burn_ms > 0
            || self.leak_bytes_per_call > 0
            || self.slow_stream_ms > 0
    }

    fn applies_to(&self, method: Method) -> bool {
        self.methods
            .as_ref()
            .is_none_or(|methods| methods.contains(&method))
    }
}

/// A gRPC code from its name, as the OpenTelemetry conventions write it
/// (`NOT_FOUND`), case-insensitively.
pub(crate) fn code_from_name(name: &str) -> Option<Code> {
    (0..=16)
        .map(Code::from_i32)
        .find(|&code| crate::status::code_name(code).eq_ignore_ascii_case(name))
}

/// The faults in force, shared by the handlers and the admin API.
pub struct FaultInjector {
    faults: RwLock<Faults>,
    /// Checked first on every call: with no fault active the hot path takes
    /// no lock.
    active: AtomicBool,
    /// Whether `--enable-faults` allowed any fault at all.
    enabled: bool,
    /// What `leak_bytes_per_call` retained, freed by a reset.
    leaked: Mutex<Leaked>,
    /// `--fault-leak-max-bytes`.
    leak_max_bytes: u64,
    leaked_bytes: Gauge,
    /// Calls asleep in the blocking fault now (see `block`).
    blocking: AtomicUsize,
    gauges: [(&'static str, Gauge); 6],
}

impl FaultInjector {
    /// An injector with no fault and faults allowed; its gauges are
    /// `metrics`'.
    pub fn new(metrics: &Metrics) -> Self {
        let gauges = [
            "latency_ms",
            "error_rate",
            "blocking_ms",
            "cpu_burn_ms",
            "leak_bytes_per_call",
            "slow_stream_ms",
        ]
        .map(|fault| {
            (
                fault,
                metrics.gauge(&names::FAULT_ACTIVE, &[("fault", fault)]),
            )
        });
        Self {
            faults: RwLock::new(Faults::default()),
            active: AtomicBool::new(false),
            enabled: true,
            leaked: Mutex::new(Leaked::default()),
            leak_max_bytes: DEFAULT_LEAK_MAX_BYTES,
            leaked_bytes: metrics.gauge(&names::FAULT_LEAKED_BYTES, &[]),
            blocking: AtomicUsize::new(0),
            gauges,
        }
    }
}

/// The leak fault's chunks and their total size.
#[derive(Default)]
struct Leaked {
    chunks: Vec<Box<[u8]>>,
    bytes: u64,
}

/// What a call must do before it runs.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Proceed,
    Fail(Code),
}

impl FaultInjector {
    /// An injector with the start flags' faults; one that injects nothing
    /// without `--enable-faults`.
    pub fn from_config(config: &FaultsConfig, metrics: &Metrics) -> Result<Self, FaultError> {
        let injector = Self {
            enabled: config.enable_faults,
            leak_max_bytes: config.fault_leak_max_bytes,
            ..Self::new(metrics)
        };
        if injector.enabled {
            injector.merge(FaultPatch::from(config))?;
        }
        Ok(injector)
    }

    /// Whether faults may be injected at all (`--enable-faults`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn current(&self) -> FaultsReport {
        FaultsReport {
            faults: self.read().clone(),
            leak_max_bytes: self.leak_max_bytes,
            leaked_bytes: self.lock_leaked().bytes,
        }
    }

    fn lock_leaked(&self) -> parking_lot::MutexGuard<'_, Leaked> {
        self.leaked.lock()
    }

    /// Retains `bytes` more, unless that would pass `--fault-leak-max-bytes`.
    fn leak(&self, bytes: u64) {
        let mut leaked = self.lock_leaked();
        if leaked.bytes.saturating_add(bytes) > self.leak_max_bytes {
            return;
        }
        let len = usize::try_from(bytes).unwrap_or(usize::MAX);
        leaked.chunks.push(vec![0xA5_u8; len].into_boxed_slice());
        leaked.bytes += bytes;
        self.leaked_bytes.set(leaked.bytes as f64);
    }

    /// Applies `patch`, or changes nothing and says why.
    pub(crate) fn merge(&self, patch: FaultPatch) -> Result<Faults, FaultError> {
        if !self.enabled {
            return Err(FaultError::Disabled);
        }
        let mut faults = self.faults.write();
        let merged = faults.merged(patch)?;
        if merged != *faults {
            tracing::warn!(faults = ?merged, "faults changed");
        }
        *faults = merged.clone();
        self.publish(&merged);
        Ok(merged)
    }

    /// Turns every fault off and frees what `leak` retained.
    pub fn reset(&self) -> Faults {
        let mut faults = self.faults.write();
        *faults = Faults::default();
        let freed = std::mem::take(&mut *self.lock_leaked()).bytes;
        self.leaked_bytes.set(0.0);
        tracing::warn!(freed_bytes = freed, "faults reset");
        self.publish(&faults);
        faults.clone()
    }

    fn publish(&self, faults: &Faults) {
        self.active.store(faults.any_active(), Ordering::Release);
        let values = [
            faults.latency_ms > 0,
            faults.error_rate > Ratio::ZERO,
            faults.blocking_ms > 0,
            faults.cpu_burn_ms > 0,
            faults.leak_bytes_per_call > 0,
            faults.slow_stream_ms > 0,
        ];
        for ((_, gauge), on) in self.gauges.iter().zip(values) {
            gauge.set(f64::from(u8::from(on)));
        }
    }

    fn read(&self) -> parking_lot::RwLockReadGuard<'_, Faults> {
        self.faults.read()
    }

    /// Runs the faults that act before a call of `method`: leak, CPU burn,
    /// blocking sleep (all on the worker thread, on purpose), added latency,
    /// then maybe an injected error.
    pub async fn before_call(&self, method: Method) -> Verdict {
        if !self.active.load(Ordering::Acquire) {
            return Verdict::Proceed;
        }
        let faults = self.read().clone();
        if !faults.applies_to(method) {
            return Verdict::Proceed;
        }
        if faults.leak_bytes_per_call > 0 {
            self.leak(faults.leak_bytes_per_call);
        }
        if faults.cpu_burn_ms > 0 {
            burn_cpu(Duration::from_millis(faults.cpu_burn_ms));
        }
        if faults.blocking_ms > 0 {
            self.block(Duration::from_millis(faults.blocking_ms));
        }
        if faults.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
        }
        if faults.error_rate > Ratio::ZERO && rand::random::<f64>() < faults.error_rate.get() {
            return Verdict::Fail(faults.error_code.code());
        }
        Verdict::Proceed
    }

    /// Deliberately wrong: sleeps on this worker thread, stalling every
    /// task queued behind it; but on at most all workers but one, so that
    /// the admin port still answers (`DELETE /faults` ends the experiment).
    /// A call finding that many asleep is not put to sleep (`false`).
    fn block(&self, duration: Duration) -> bool {
        let workers = tokio::runtime::Handle::try_current()
            .map_or(1, |runtime| runtime.metrics().num_workers());
        let most = workers.saturating_sub(1).max(1);
        let taken = self
            .blocking
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |asleep| {
                (asleep < most).then_some(asleep + 1)
            });
        if taken.is_ok() {
            std::thread::sleep(duration);
            self.blocking.fetch_sub(1, Ordering::AcqRel);
        }
        taken.is_ok()
    }

    /// The pause before each streamed message of `method`, if any.
    pub(crate) fn stream_delay(&self, method: Method) -> Option<Duration> {
        if !self.active.load(Ordering::Acquire) {
            return None;
        }
        let faults = self.read();
        (faults.slow_stream_ms > 0 && faults.applies_to(method))
            .then(|| Duration::from_millis(faults.slow_stream_ms))
    }
}

/// Spins for `duration`: shows up as a wide tower in a CPU flame graph.
#[inline(never)]
fn burn_cpu(duration: Duration) {
    let started = Instant::now();
    let mut x: u64 = 0x9E37_79B9;
    while started.elapsed() < duration {
        for _ in 0..1000 {
            x = std::hint::black_box(x.rotate_left(5) ^ 0x5DEE_CE66);
        }
    }
}

/// Applies the faults to every call of the service it wraps: the faults
/// that act before a call (an injected error is answered in place of the
/// handler's), and the pause before each message of a stream.
#[derive(Clone)]
pub struct FaultLayer {
    faults: Arc<FaultInjector>,
}

impl FaultLayer {
    pub fn new(faults: Arc<FaultInjector>) -> Self {
        Self { faults }
    }
}

impl<S> Layer<S> for FaultLayer {
    type Service = Faulty<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Faulty {
            inner,
            faults: self.faults.clone(),
        }
    }
}

/// A service with faults; see `FaultLayer`.
#[derive(Clone)]
pub struct Faulty<S> {
    inner: S,
    faults: Arc<FaultInjector>,
}

impl<S: NamedService> NamedService for Faulty<S> {
    const NAME: &'static str = S::NAME;
}

type HttpRequest = http::Request<tonic::body::Body>;
type HttpResponse = http::Response<tonic::body::Body>;

impl<S> Service<HttpRequest> for Faulty<S>
where
    S: Service<HttpRequest, Response = HttpResponse, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<FaultBody>;
    type Error = Infallible;
    type Future = Either<
        futures::future::MapOk<S::Future, fn(HttpResponse) -> Self::Response>,
        BoxFuture<'static, Result<Self::Response, Infallible>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        use futures::TryFutureExt as _;
        // With no fault active a call pays the atomic load and nothing else.
        let method = self
            .faults
            .active
            .load(Ordering::Acquire)
            .then(|| Method::from_path(request.uri().path()))
            .flatten();
        let Some(method) = method else {
            let plain: fn(HttpResponse) -> Self::Response =
                |response| response.map(FaultBody::plain);
            return Either::Left(self.inner.call(request).map_ok(plain));
        };
        // The clone that was made ready serves this call.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let faults = self.faults.clone();
        Either::Right(Box::pin(async move {
            if let Verdict::Fail(code) = faults.before_call(method).await {
                let status = Status::from(Error::Injected(code));
                return Ok(status
                    .into_http::<tonic::body::Body>()
                    .map(FaultBody::plain));
            }
            let response = inner.call(request).await?;
            let delay = faults.stream_delay(method);
            Ok(response.map(|body| FaultBody::new(body, delay)))
        }))
    }
}

pin_project_lite::pin_project! {
    /// A response body that, with the slow-stream fault on, pauses before
    /// each gRPC message it passes on.
    pub struct FaultBody {
        #[pin]
        inner: tonic::body::Body,
        delay: Option<Duration>,
        // Messages taken from the inner body, not yet passed on.
        pending: Bytes,
        pause: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl FaultBody {
    fn plain(inner: tonic::body::Body) -> Self {
        Self::new(inner, None)
    }

    fn new(inner: tonic::body::Body, delay: Option<Duration>) -> Self {
        Self {
            inner,
            delay,
            pending: Bytes::new(),
            pause: None,
        }
    }
}

impl Body for FaultBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let mut this = self.project();
        let Some(delay) = *this.delay else {
            return this.inner.poll_frame(cx);
        };
        if this.pending.is_empty() {
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => *this.pending = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return Poll::Ready(other),
            }
        }
        let pause = this
            .pause
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
        ready!(pause.as_mut().poll(cx));
        *this.pause = None;
        let message = next_message_len(this.pending).unwrap_or(this.pending.len());
        Poll::Ready(Some(Ok(Frame::data(this.pending.split_to(message)))))
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The length, prefix included, of the gRPC message `data` starts with, if
/// it holds all of it (tonic's encoder writes whole messages).
fn next_message_len(data: &Bytes) -> Option<usize> {
    let mut prefix = data.get(..5)?;
    prefix.advance(1);
    let len = 5 + usize::try_from(prefix.get_u32()).ok()?;
    (len <= data.len()).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_patch_changes_nothing() {
        let injector = FaultInjector::new(&Metrics::new().expect("a recorder"));
        injector
            .merge(FaultPatch {
                latency_ms: Some(5),
                ..Default::default()
            })
            .unwrap();
        let refused = [
            FaultPatch {
                methods: Some(vec![Method::GetProduct, Method::GetProduct]),
                ..Default::default()
            },
            FaultPatch {
                blocking_ms: Some(MAX_DELAY_MS + 1),
                ..Default::default()
            },
        ];
        for patch in refused {
            assert!(injector.merge(patch.clone()).is_err(), "{patch:?}");
        }
        assert_eq!(injector.current().faults.latency_ms, 5);
    }

    #[test]
    fn error_codes_are_named_case_insensitively() {
        assert_eq!(code_from_name("not_found"), Some(Code::NotFound));
        assert_eq!(code_from_name("UNAVAILABLE"), Some(Code::Unavailable));
        assert_eq!(code_from_name("nope"), None);
    }

    #[test]
    fn an_error_code_is_parsed_once_and_written_back_by_name() {
        let patch: FaultPatch = serde_json::from_str(r#"{"error_code": "not_found"}"#).unwrap();
        assert_eq!(patch.error_code, Some(ErrorCode(Code::NotFound)));
        assert_eq!(
            serde_json::to_string(&ErrorCode(Code::NotFound)).unwrap(),
            r#""NOT_FOUND""#
        );
        for refused in [r#"{"error_code": "OK"}"#, r#"{"error_code": "TEAPOT"}"#] {
            assert!(
                serde_json::from_str::<FaultPatch>(refused).is_err(),
                "{refused}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 3)]
    async fn the_blocking_fault_leaves_one_worker_awake() {
        let injector = FaultInjector::new(&Metrics::new().expect("a recorder"));
        injector.blocking.store(2, Ordering::Release);

        // Two of three workers asleep already: this call is not put to sleep
        // (were it, the test would wait an hour).
        assert!(!injector.block(Duration::from_secs(3600)));
        injector.blocking.store(1, Ordering::Release);
        assert!(injector.block(Duration::from_millis(1)));
    }

    #[test]
    fn a_method_named_twice_is_refused() {
        assert_eq!(
            Methods::parse("GetProduct, SearchProducts").unwrap().0,
            [Method::GetProduct, Method::SearchProducts]
        );
        assert_eq!(
            Methods::parse("GetProduct,SearchProducts,GetProduct"),
            Err(FaultError::DuplicateMethod(Method::GetProduct))
        );
        assert!(Methods::parse("DropTables").is_err());
    }

    #[tokio::test]
    async fn faults_apply_only_to_their_methods_and_reset_restores() {
        let injector = FaultInjector::new(&Metrics::new().expect("a recorder"));
        injector
            .merge(FaultPatch {
                error_rate: Some(Ratio::ONE),
                error_code: Some(ErrorCode(Code::Internal)),
                methods: Some(vec![Method::SearchProducts]),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            injector.before_call(Method::GetProduct).await,
            Verdict::Proceed
        );
        assert_eq!(
            injector.before_call(Method::SearchProducts).await,
            Verdict::Fail(Code::Internal)
        );
        injector.reset();
        assert_eq!(
            injector.before_call(Method::SearchProducts).await,
            Verdict::Proceed
        );
    }
}
