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
//!
//! Log volume is bounded: each call site writes at most
//! `WARNINGS_PER_SECOND` WARN and ERROR lines a second (`RateLimit`, a
//! filter of the log layer),
//! and the lines it held back are counted, the count written as one line
//! ("suppressed K similar events") before the next line the layer writes.
//! Keyed by call site, so one noisy error cannot hide another.

use std::{
    collections::HashMap,
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use opentelemetry::trace::{SpanId, TraceId};
use parking_lot::Mutex;
use tracing::{Event, Level, Metadata, Subscriber, callsite::Identifier};
use tracing_subscriber::{
    Layer, Registry,
    filter::{FilterExt as _, LevelFilter, filter_fn},
    fmt::{
        FmtContext, FormatEvent, FormatFields,
        format::{Format, Writer},
        time::{FormatTime as _, SystemTime},
    },
    layer::{Context, Filter},
    registry::LookupSpan,
    reload,
};

use super::{LogConfig, LogFilter, LogFormat, LogSink};

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
        self.current.lock().clone()
    }

    /// Filters log lines by `filter` from now on; returns the directives it
    /// replaced. Spans and their sampling are not affected.
    pub fn set(&self, filter: LogFilter) -> Result<LogFilter, reload::Error> {
        // Built before the lock: only the swap happens under it.
        let layer_filter = filter.layer_filter();
        let mut current = self.current.lock();
        self.handle.reload(layer_filter)?;
        Ok(std::mem::replace(&mut *current, filter))
    }
}

/// The log layer for `format`, writing to `sink`, and the handle that
/// changes its filter.
pub fn layer(
    config: &LogConfig,
    sink: LogSink,
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
    let rate_limit = RateLimit::new(WARNINGS_PER_SECOND);
    let events_only = filter
        .and(filter_fn(|metadata| metadata.is_event()).with_max_level_hint(LevelFilter::TRACE))
        .and(rate_limit.clone());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(sink.writer)
        .with_ansi(sink.ansi);
    let layer = match config.log_format {
        LogFormat::Text => layer
            .event_format(WithTraceIds {
                inner: Format::default(),
                json: false,
                rate_limit,
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
                rate_limit,
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
    /// Whose held-back counts are written before the next line.
    rate_limit: RateLimit,
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
        for held_back in self.rate_limit.take_held_back(Instant::now()) {
            self.write_held_back(&mut writer, &held_back)?;
        }
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
    /// The line saying how many lines of one call site were held back.
    fn write_held_back(&self, writer: &mut Writer<'_>, held_back: &HeldBack) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let metadata = held_back.metadata;
        let callsite = format!(
            "{}:{}",
            metadata.file().unwrap_or("?"),
            metadata.line().unwrap_or(0)
        );
        let per_second = self.rate_limit.per_second;
        if self.json {
            let line = serde_json::json!({
                "timestamp": timestamp,
                "level": "WARN",
                "fields": {
                    "message": "suppressed similar events",
                    "suppressed": held_back.count,
                    "limit_per_second": per_second,
                    "callsite_level": metadata.level().as_str(),
                    "callsite_target": metadata.target(),
                    "callsite": callsite,
                },
                "target": module_path!(),
            });
            writeln!(writer, "{line}")
        } else {
            writeln!(
                writer,
                "{timestamp}  WARN {}: suppressed {} similar events (over {per_second} a second) \
                 callsite_level={} callsite_target={} callsite={callsite}",
                module_path!(),
                held_back.count,
                metadata.level(),
                metadata.target(),
            )
        }
    }

    /// The trace and span ids of the exported span the event is written
    /// in (an upstream call's CLIENT span, else its call's SERVER span),
    /// from the same task-locals that made them (`traces`).
    fn current_trace_ids(&self) -> Option<(TraceId, SpanId)> {
        let span_context = crate::traces::calls::current_span()?;
        span_context
            .is_valid()
            .then(|| (span_context.trace_id(), span_context.span_id()))
    }
}

/// The WARN and ERROR lines one call site writes a second, at most: enough
/// to see what is wrong, and a storm of a million failing calls a second
/// writes ten lines a second per call site.
pub(crate) const WARNINGS_PER_SECOND: u32 = 10;

/// Caps the WARN and ERROR lines each call site writes: at most
/// `per_second` in a one-second window, the rest counted. The count of a
/// window that held lines back is written as one line of its own before the
/// next line the layer writes (`SuppressedLines`), so a storm costs a
/// bounded number of lines and is still accounted for. Keyed by call site,
/// not by message text: a call site's events are alike, and a table of call
/// sites is bounded by the program, where one of texts would grow with input.
#[derive(Clone)]
pub(crate) struct RateLimit {
    /// 0: no limit.
    per_second: u32,
    state: Arc<Mutex<RateState>>,
}

#[derive(Default)]
struct RateState {
    windows: HashMap<Identifier, Window>,
    /// Windows over whose lines were held back, not yet reported.
    held_back: Vec<HeldBack>,
}

struct Window {
    started: Instant,
    written: u32,
    held_back: u64,
    metadata: &'static Metadata<'static>,
}

/// Lines one call site held back in one window.
struct HeldBack {
    count: u64,
    metadata: &'static Metadata<'static>,
}

const RATE_WINDOW: Duration = Duration::from_secs(1);

impl RateLimit {
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            state: Arc::default(),
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, RateState> {
        self.state.lock()
    }

    /// Whether a line of `metadata`'s call site may be written now.
    fn admit(&self, metadata: &'static Metadata<'static>, now: Instant) -> bool {
        if self.per_second == 0 || *metadata.level() > Level::WARN {
            return true;
        }
        let mut state = self.lock();
        let state = &mut *state;
        let window = state
            .windows
            .entry(metadata.callsite())
            .or_insert_with(|| Window {
                started: now,
                written: 0,
                held_back: 0,
                metadata,
            });
        if now.duration_since(window.started) >= RATE_WINDOW {
            if window.held_back > 0 {
                state.held_back.push(HeldBack {
                    count: window.held_back,
                    metadata,
                });
            }
            *window = Window {
                started: now,
                written: 0,
                held_back: 0,
                metadata,
            };
        }
        if window.written < self.per_second {
            window.written += 1;
            true
        } else {
            window.held_back += 1;
            false
        }
    }

    /// The counts to write now: of windows that ended with lines held back.
    fn take_held_back(&self, now: Instant) -> Vec<HeldBack> {
        if self.per_second == 0 {
            return Vec::new();
        }
        let mut state = self.lock();
        let state = &mut *state;
        for window in state.windows.values_mut() {
            if window.held_back > 0 && now.duration_since(window.started) >= RATE_WINDOW {
                state.held_back.push(HeldBack {
                    count: std::mem::take(&mut window.held_back),
                    metadata: window.metadata,
                });
            }
        }
        std::mem::take(&mut state.held_back)
    }
}

impl<S> Filter<S> for RateLimit {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _: &Context<'_, S>) -> bool {
        self.admit(event.metadata(), Instant::now())
    }

    /// No limit of its own on levels (see `layer`).
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::TRACE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Site;
    impl tracing::callsite::Callsite for Site {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &Metadata<'_> {
            &SITE_METADATA
        }
    }
    static SITE: Site = Site;
    static SITE_METADATA: Metadata<'static> = Metadata::new(
        "event",
        "catalogue::test",
        Level::ERROR,
        None,
        None,
        None,
        tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&SITE)),
        tracing::metadata::Kind::EVENT,
    );

    #[test]
    fn a_call_site_writes_its_share_a_second_and_the_rest_is_counted_once() {
        let limit = RateLimit::new(3);
        let start = Instant::now();

        let admitted = (0..10)
            .filter(|_| limit.admit(&SITE_METADATA, start))
            .count();
        let held_now = limit.take_held_back(start).len();
        let later = start + RATE_WINDOW;
        let reported: Vec<u64> = limit
            .take_held_back(later)
            .iter()
            .map(|held| held.count)
            .collect();

        assert_eq!(admitted, 3);
        assert_eq!(held_now, 0, "the window is not over");
        assert_eq!(reported, [7]);
        assert!(limit.take_held_back(later).is_empty(), "reported once");
        assert!(limit.admit(&SITE_METADATA, later), "a new window");
    }
}
