//! Log lines, filtered by `RUST_LOG`, as text or one JSON object per line.
//!
//! The log layer sees events only, never spans. A fmt layer that sees a
//! span formats its fields when it opens and again on every `record`, for
//! a log line that is almost never written: at `info`, with a span per
//! call, that cost a quarter of unary throughput in text and two-fifths in
//! JSON (`scripts/bench.sh`, README). What a log line needs from the call
//! it belongs to is the link to its trace, so a line written inside a
//! traced call carries `trace_id` and `span_id` (of the upstream call's
//! span inside one, else of the call's SERVER span), read when (and only
//! when) a line is written; the span's attributes are in the trace.

use std::{
    fmt,
    sync::{Arc, Mutex, OnceLock, PoisonError},
};

use opentelemetry::trace::{SpanId, TraceContextExt as _, TraceId};
use tracing::{Event, Subscriber, dispatcher::WeakDispatch};
use tracing_subscriber::{
    Layer, Registry,
    filter::{FilterExt as _, LevelFilter, filter_fn},
    fmt::{
        FmtContext, FormatEvent, FormatFields,
        format::{Format, Writer},
    },
    layer::Filter,
    registry::LookupSpan,
    reload,
};

use super::{LogConfig, LogFilter, LogFormat, LogSink};

/// The dispatch the log layer is part of, set once it is built: a line's
/// trace ids are read through it. (While an event is being written the
/// thread's default dispatch is not available: tracing-core answers a
/// nested lookup with none.)
pub type OwnDispatch = Arc<OnceLock<WeakDispatch>>;

type ReloadableFilter = reload::Layer<Box<dyn Filter<Registry> + Send + Sync>, Registry>;

/// The log layer's filter, changed while the app runs (`PUT /log-level`).
/// Clones share it.
#[derive(Clone)]
pub struct LogLevel {
    handle: reload::Handle<Box<dyn Filter<Registry> + Send + Sync>, Registry>,
    /// The directives in force, as they were given.
    current: Arc<Mutex<LogFilter>>,
}

impl LogLevel {
    /// The directives in force.
    pub fn current(&self) -> LogFilter {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Filters log lines by `filter` from now on; returns the directives it
    /// replaced. Spans and their sampling are not affected.
    pub fn set(&self, filter: LogFilter) -> Result<LogFilter, reload::Error> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        self.handle.reload(filter.layer_filter())?;
        Ok(std::mem::replace(&mut *current, filter))
    }
}

/// The log layer for `format`, writing to `sink`, and the handle that
/// changes its filter.
pub fn layer(
    config: &LogConfig,
    sink: LogSink,
    dispatch: OwnDispatch,
) -> (Box<dyn Layer<Registry> + Send + Sync>, LogLevel) {
    let (filter, handle): (ReloadableFilter, _) =
        reload::Layer::new(config.log_filter.layer_filter());
    let level = LogLevel {
        handle,
        current: Arc::new(Mutex::new(config.log_filter.clone())),
    };
    // The hint says "no limit of its own", so the pair's hint is the log
    // filter's: without one the subscriber would have no maximum level, and
    // every TRACE macro in the process would get past its first check.
    let events_only = filter
        .and(filter_fn(|metadata| metadata.is_event()).with_max_level_hint(LevelFilter::TRACE));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(sink.writer)
        .with_ansi(sink.ansi);
    let layer = match config.log_format {
        LogFormat::Text => layer
            .event_format(WithTraceIds {
                inner: Format::default(),
                json: false,
                dispatch,
            })
            .with_filter(events_only)
            .boxed(),
        LogFormat::Json => layer
            .json()
            .event_format(WithTraceIds {
                inner: Format::default()
                    .json()
                    .with_current_span(false)
                    .with_span_list(false),
                json: true,
                dispatch,
            })
            .with_filter(events_only)
            .boxed(),
    };
    (layer, level)
}

/// An event format that adds the current trace's ids to the line `inner`
/// writes: as the first members of the JSON object, or as `key=value`
/// pairs at the end of a text line.
struct WithTraceIds<F> {
    inner: F,
    json: bool,
    dispatch: OwnDispatch,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some((trace_id, span_id)) = self.current_trace_ids() else {
            return self.inner.format_event(context, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(context, Writer::new(&mut line), event)?;
        let body = line.strip_suffix('\n').unwrap_or(&line);
        if self.json
            && let Some(members) = body.strip_prefix('{')
        {
            writeln!(
                writer,
                r#"{{"trace_id":"{trace_id}","span_id":"{span_id}",{members}"#
            )
        } else {
            writeln!(writer, "{body} trace_id={trace_id} span_id={span_id}")
        }
    }
}

impl<F> WithTraceIds<F> {
    /// The trace and span ids of the span the event is in, if it belongs to
    /// a trace. (Not the format context's current span: that is the nearest
    /// one this layer's filter lets through, and it lets none through.)
    fn current_trace_ids(&self) -> Option<(TraceId, SpanId)> {
        let span_context = self
            .current_span_context()
            .or_else(super::grpc::traced::traced_call)?;
        span_context
            .is_valid()
            .then(|| (span_context.trace_id(), span_context.span_id()))
    }

    /// The context of the current tracing span (an upstream call's), if it
    /// is exported. A call's SERVER span is no tracing span.
    fn current_span_context(&self) -> Option<opentelemetry::trace::SpanContext> {
        let dispatch = self.dispatch.get()?.upgrade()?;
        let current = dispatch.current_span();
        let otel = tracing_opentelemetry::get_otel_context(current.id()?, &dispatch)?;
        Some(otel.span().span_context().clone())
    }
}
