//! Telemetry, one per app: `Telemetry::init` builds the app's
//! tracing-subscriber registry (logs, OpenTelemetry traces, tokio-console)
//! as a `Dispatch` and its own Prometheus recorder (`prometheus::Metrics`).
//! Neither is installed process-wide: the app runs its tasks and calls with
//! its dispatch and hands its recorder to every part that makes metrics, so
//! two apps in one process (the integration tests) never share a counter or
//! a log sink. Clones share it all; dropping the last flushes the trace
//! exporter.
//!
//! - `logs`: log lines, which see events only and carry trace ids;
//! - `settings`: the flags of logs and traces.

mod logs;
mod settings;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use opentelemetry::{
    KeyValue, global, propagation::TextMapCompositePropagator, trace::TracerProvider as _,
};
use opentelemetry_sdk::{
    Resource,
    propagation::{BaggagePropagator, TraceContextPropagator},
    trace::{Sampler, SdkTracerProvider},
};
use tracing::Dispatch;
use tracing_subscriber::{Registry, layer::SubscriberExt};

pub use self::{
    logs::LogLevel,
    settings::{LogConfig, LogFilter, LogFormat, LogSink, TelemetryConfig},
};
use crate::{
    metrics::{Metrics, names},
    runtime::{Console, tasks},
    traces::{
        CallTraces, Keep,
        export::{Collector, CollectorError, OtlpExporter},
        sampling,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(#[from] CollectorError),
    #[error("cannot build the Prometheus recorder: {0}")]
    Metrics(#[from] metrics_exporter_prometheus::BuildError),
}

/// One app's telemetry. Clones share it; dropping the last flushes and
/// shuts down the trace exporter.
#[derive(Clone)]
pub struct Telemetry {
    metrics: Metrics,
    /// The app's subscriber: logs, traces and the console layer.
    dispatch: Dispatch,
    /// The log filter, changeable at run time.
    log_level: LogLevel,
    /// tokio-console's switch: `None` for `logs_only`, whose subscriber has
    /// no console layer, and in a build without `tokio_unstable`.
    console: Option<Console>,
    tracer_provider: Option<Arc<Exporter>>,
    /// Which calls are exported, and their spans; `None` without an
    /// exporter: then no call makes a span.
    call_traces: Option<CallTraces>,
    /// The runtime's live tasks, when its builder reports them here.
    tasks: tasks::TaskList,
    /// Whether `dispatch` is the process's default too; shared, so a clone
    /// taken before `set_global_default` knows.
    global: Arc<AtomicBool>,
}

/// The trace exporter's provider, shut down (flushing what it holds) when
/// the last clone of the app's telemetry goes.
struct Exporter(SdkTracerProvider);

impl Telemetry {
    /// Builds the app's subscriber and recorder; installs neither. Must
    /// run inside a Tokio runtime (the OTLP exporter's channel lives there).
    pub fn init(
        config: &TelemetryConfig,
        log_sink: impl Into<LogSink>,
    ) -> Result<Self, TelemetryError> {
        let metrics = Metrics::new()?;
        // Read once: the host name comes from /proc.
        let instance_id = config.instance_id();
        metrics
            .gauge(
                &names::BUILD_INFO,
                &[
                    ("version", env!("CARGO_PKG_VERSION")),
                    ("rustc", env!("CATALOGUE_RUSTC_VERSION")),
                    ("git_sha", env!("CATALOGUE_GIT_SHA")),
                    ("instance_id", &instance_id),
                ],
            )
            .set(1.0);

        // W3C trace context and baggage: stateless, the same for every app.
        global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ]));
        let tracer_provider = config
            .collector()
            .map(|collector| tracer_provider(&collector, &config.service_name, instance_id))
            .transpose()?;

        // Always there, dormant until woken; outermost, after the log layer
        // (see `console`). Every layer has its own filter: mixing filtered
        // and unfiltered layers in one registry trips tracing-subscriber's
        // per-layer filter bookkeeping.
        // tokio instruments its tasks only when built with `--cfg
        // tokio_unstable` (.cargo/config.toml): without it there is nothing
        // for a console to see, and console-subscriber refuses to start.
        let console_addr = cfg!(tokio_unstable).then_some(config.console_addr);
        let (dispatch, log_level, console) = dispatch(&config.logs, log_sink.into(), console_addr);

        let call_traces = tracer_provider.as_ref().map(|provider| {
            CallTraces::new(
                provider.tracer("catalogue"),
                sampling::HeadSampler::new(config.trace_sampler, config.trace_sampler_arg),
                (!config.no_trace_keep)
                    .then(|| Keep::new(config.trace_slow_threshold, config.trace_keep_per_second)),
                config.semconv_stability_opt_in,
            )
        });
        Ok(Self {
            metrics,
            dispatch,
            log_level,
            console,
            tracer_provider: tracer_provider.map(|provider| Arc::new(Exporter(provider))),
            call_traces,
            tasks: tasks::TaskList::default(),
            global: Arc::default(),
        })
    }

    /// Logs only: no traces, no console, and a recorder nobody scrapes. For
    /// the subcommands that are clients or stand-ins (`load`, `upstream`).
    pub fn logs_only(
        config: &LogConfig,
        log_sink: impl Into<LogSink>,
    ) -> Result<Self, TelemetryError> {
        let (dispatch, log_level, _) = dispatch(config, log_sink.into(), None);
        Ok(Self {
            metrics: Metrics::new()?,
            dispatch,
            log_level,
            console: None,
            tracer_provider: None,
            call_traces: None,
            tasks: tasks::TaskList::default(),
            global: Arc::default(),
        })
    }

    /// Makes the app's subscriber the process's default as well, for the
    /// threads the app does not run itself (the trace exporter's, the
    /// console's, the blocking pool's). A process that runs one app (the
    /// binary) calls it, tests do not; once it has, the app's calls no
    /// longer switch to its dispatch on every poll (`call_dispatch`).
    pub fn set_global_default(&self) -> Result<(), tracing::dispatcher::SetGlobalDefaultError> {
        tracing::dispatcher::set_global_default(self.dispatch.clone())?;
        self.global.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The dispatch each call's polls must switch to: `None` once the app's
    /// subscriber is the process's default, where switching to it on every
    /// poll would change nothing (and cost a thread-local swap each time).
    pub(crate) fn call_dispatch(&self) -> Option<Dispatch> {
        (!self.global.load(Ordering::Relaxed)).then(|| self.dispatch.clone())
    }

    /// Which calls are exported, and what makes their spans; `None` when
    /// traces are not exported.
    pub(crate) fn call_traces(&self) -> Option<CallTraces> {
        self.call_traces.clone()
    }

    /// Lists the tasks of the runtime `tasks` records (`TaskList::record`
    /// on its builder) in the app's task dump. Without it the dump answers
    /// that the runtime lists no tasks.
    #[must_use]
    pub fn with_tasks(mut self, tasks: tasks::TaskList) -> Self {
        self.tasks = tasks;
        self
    }

    /// The runtime's live tasks (an empty, unrecorded list without
    /// [`Telemetry::with_tasks`]).
    pub fn tasks(&self) -> tasks::TaskList {
        self.tasks.clone()
    }

    /// The app's recorder.
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// The log filter, changed by `PUT /log-level`.
    pub fn log_level(&self) -> LogLevel {
        self.log_level.clone()
    }

    /// The app's subscriber: what its tasks and calls run with.
    pub fn dispatch(&self) -> Dispatch {
        self.dispatch.clone()
    }

    /// Exports every finished span now, instead of at the next batch.
    pub fn flush_traces(&self) {
        if let Some(Exporter(provider)) = self.tracer_provider.as_deref()
            && let Err(error) = provider.force_flush()
        {
            tracing::warn!(%error, "flushing traces failed");
        }
    }

    /// tokio-console's switch (dormant until woken); `None` for
    /// [`Telemetry::logs_only`] and without `tokio_unstable`.
    pub fn console(&self) -> Option<Console> {
        self.console.clone()
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Err(error) = self.0.shutdown() {
            eprintln!("flushing traces failed: {error}");
        }
    }
}

/// The app's subscriber (`subscriber`) as a dispatch, with the handle of
/// the log layer's filter and, given an address, the console's switch.
fn dispatch(
    logs: &LogConfig,
    sink: LogSink,
    console_addr: Option<SocketAddr>,
) -> (Dispatch, LogLevel, Option<Console>) {
    let (subscriber, log_level, console) = subscriber(logs, sink, console_addr);
    (Dispatch::new(subscriber), log_level, console)
}

/// The registry with the log layer and, outermost, the console's. Spans are
/// not exported through it: every exported span is made by `traces`.
fn subscriber(
    logs: &LogConfig,
    sink: LogSink,
    console_addr: Option<SocketAddr>,
) -> (
    impl tracing::Subscriber + Send + Sync,
    LogLevel,
    Option<Console>,
) {
    let (log_layer, log_level) = logs::layer(logs, sink);
    let (console, console_layer) = console_addr.map(Console::new).unzip();
    let subscriber = Registry::default().with(log_layer).with(console_layer);
    (subscriber, log_level, console)
}

/// Batch export over OTLP/gRPC. The batch processor runs on its own thread
/// with a bounded queue: a slow or absent collector costs dropped spans,
/// never a blocked request.
fn tracer_provider(
    collector: &Collector,
    service_name: &str,
    instance_id: String,
) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = OtlpExporter::new(collector)?;
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .with_attribute(KeyValue::new(
            opentelemetry_semantic_conventions::resource::SERVICE_INSTANCE_ID,
            instance_id,
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        // The decision is made before a call's span exists (`sampling`):
        // the SDK keeps what it is given, and children follow their parent.
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

#[cfg(test)]
mod tests {
    use tracing::{Subscriber as _, level_filters::LevelFilter};

    use super::*;

    fn log_config(filter: &str) -> LogConfig {
        LogConfig {
            log_filter: LogFilter::parse(filter).expect("a valid filter"),
            log_format: LogFormat::Text,
        }
    }

    /// The subscriber's maximum level is what tracing checks before anything
    /// else: too low and the app's spans and log lines are cut off, absent
    /// and every TRACE macro in the process gets past it.
    #[test]
    fn the_maximum_level_is_the_log_filters_while_the_console_sleeps() {
        let sink = || {
            LogSink::from(tracing_subscriber::fmt::writer::BoxMakeWriter::new(
                std::io::sink,
            ))
        };
        let addr = Some("127.0.0.1:0".parse().unwrap());
        for (filter, level) in [
            ("info", LevelFilter::INFO),
            ("warn,catalogue=debug", LevelFilter::DEBUG),
        ] {
            let (with, _, console) = subscriber(&log_config(filter), sink(), addr);
            assert!(console.is_some());
            assert_eq!(with.max_level_hint(), Some(level), "{filter}");
            let (without, _, _) = subscriber(&log_config(filter), sink(), None);
            assert_eq!(
                without.max_level_hint(),
                Some(level),
                "{filter}, no console layer"
            );
        }
    }
}
