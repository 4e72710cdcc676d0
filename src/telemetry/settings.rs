//! The telemetry's own flags: `config` flattens them into each
//! subcommand; nothing in `telemetry` reads a flag or variable itself.

use std::{io::IsTerminal as _, net::SocketAddr};

use clap::{
    Args, ValueEnum,
    builder::{BoolishValueParser, TypedValueParser},
    error::ErrorKind,
};
use tracing_subscriber::{
    EnvFilter, Registry,
    filter::{LevelFilter, Targets},
    fmt::writer::BoxMakeWriter,
    layer::Filter,
};

use crate::traces::{
    SemconvOptIn,
    export::{self, Collector, Compression, OtlpHeaders},
    sampling::SamplerKind,
};
use crate::values::{Ratio, http_uri};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// How every subcommand logs.
#[derive(Debug, Clone, Args)]
pub struct LogConfig {
    /// Log line format.
    #[arg(long, env = "CATALOGUE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Which log lines are written and which spans exported: tracing's
    /// directives, e.g. `warn,catalogue=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info", value_parser = LogFilter::parse)]
    pub log_filter: LogFilter,
}

/// `RUST_LOG`-style directives, checked when parsed: at most
/// `LogFilter::MAX_BYTES`, field values matched as literal text (never compiled
/// as regular expressions, whose build time a filter's author controls),
/// and never silencing the service's own errors unless the whole filter is
/// `off`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilter(String);

impl std::fmt::Display for LogFilter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// The target of the service's own events, whose ERROR lines a filter must
/// let through (unless it is `off`).
const OWN_TARGET: &str = env!("CARGO_CRATE_NAME");

impl LogFilter {
    /// The longest filter accepted: a few dozen directives.
    pub(crate) const MAX_BYTES: usize = 1024;

    pub fn parse(directives: &str) -> Result<Self, String> {
        let directives = match directives.trim() {
            "" => "info",
            directives => directives,
        };
        if directives.len() > Self::MAX_BYTES {
            return Err(format!(
                "a log filter of {} bytes is longer than {}",
                directives.len(),
                Self::MAX_BYTES
            ));
        }
        env_filter(directives)
            .map_err(|error| format!("{directives:?} is not a log filter: {error}"))?;
        if !directives.eq_ignore_ascii_case("off") && !writes_own_errors(directives) {
            return Err(format!(
                "{directives:?} would silence every line of the service, its errors \
                 included: add a level for it (e.g. `info,{directives}`), or send `off` \
                 to silence everything on purpose"
            ));
        }
        Ok(Self(directives.to_owned()))
    }

    /// A per-layer filter. A plain list of `target=level` directives
    /// becomes a `Targets` filter, which decides from a span's metadata
    /// alone; richer directives (span or field matches) need an
    /// `EnvFilter`, whose per-span bookkeeping on every enter and exit
    /// costs measurably at tens of thousands of calls a second.
    pub(super) fn layer_filter(&self) -> Box<dyn Filter<Registry> + Send + Sync> {
        if !self.0.contains('[')
            && let Ok(targets) = self.0.parse::<Targets>()
        {
            return Box::new(targets);
        }
        match env_filter(&self.0) {
            Ok(filter) => Box::new(filter),
            // Checked when parsed.
            Err(_) => Box::new(Targets::new().with_default(LevelFilter::INFO)),
        }
    }
}

/// `directives` as an `EnvFilter` whose field values are literal text.
fn env_filter(directives: &str) -> Result<EnvFilter, tracing_subscriber::filter::ParseError> {
    EnvFilter::builder().with_regex(false).parse(directives)
}

/// Whether an ERROR event of the service, outside any span, gets through
/// `directives`: only directives without a span or field match apply there.
fn writes_own_errors(directives: &str) -> bool {
    let unscoped: Vec<&str> = directives
        .split(',')
        .map(str::trim)
        .filter(|directive| !directive.is_empty() && !directive.contains('['))
        .collect();
    // (An empty list would parse as one directive enabling everything.)
    !unscoped.is_empty()
        && unscoped
            .join(",")
            .parse::<Targets>()
            .is_ok_and(|targets| targets.would_enable(OWN_TARGET, &tracing::Level::ERROR))
}

/// Where log lines go, and whether they may carry ANSI colours.
pub struct LogSink {
    pub(super) writer: BoxMakeWriter,
    pub(super) ansi: bool,
}

impl LogSink {
    /// Standard output, coloured only when it is a terminal.
    pub fn stdout() -> Self {
        Self {
            writer: BoxMakeWriter::new(std::io::stdout),
            ansi: std::io::stdout().is_terminal(),
        }
    }

    /// Standard error, coloured only when it is a terminal.
    pub fn stderr() -> Self {
        Self {
            writer: BoxMakeWriter::new(std::io::stderr),
            ansi: std::io::stderr().is_terminal(),
        }
    }
}

/// Any other writer: never coloured.
impl From<BoxMakeWriter> for LogSink {
    fn from(writer: BoxMakeWriter) -> Self {
        Self {
            writer,
            ansi: false,
        }
    }
}

/// Which signals to produce, and where to send them. Each can be turned off
/// so that its cost can be measured.
#[derive(Debug, Clone, Args)]
pub struct TelemetryConfig {
    #[command(flatten)]
    pub logs: LogConfig,

    /// OTLP/gRPC collector to export traces to, e.g. http://127.0.0.1:4317.
    /// Unset: no traces are exported (and no call makes a span). The other
    /// standard OTEL_* variables (OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_*, ...)
    /// are read by the OpenTelemetry SDK.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_parser = http_uri)]
    pub otlp_endpoint: Option<http::Uri>,

    /// Headers sent with every export: `name=value,...`, values
    /// percent-decoded (a hosted collector's key, say).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_HEADERS", default_value = "",
          hide_default_value = true, hide_env_values = true, value_parser = SecretHeaders)]
    pub otlp_headers: OtlpHeaders,

    /// How long one export may take, its retries included, in milliseconds.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TIMEOUT", default_value = "10000",
          value_name = "MS", value_parser = export::parse_timeout)]
    pub otlp_timeout: std::time::Duration,

    /// How batches of spans are compressed on the wire.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_COMPRESSION", value_enum,
          default_value_t = Compression::None)]
    pub otlp_compression: Compression,

    /// Which calls are traced, decided as each arrives (OpenTelemetry's
    /// sampler names): parentbased_* follow the caller's sampled flag when
    /// it sent a traceparent.
    #[arg(long, env = "OTEL_TRACES_SAMPLER", value_enum,
          default_value_t = SamplerKind::ParentBasedAlwaysOn)]
    pub trace_sampler: SamplerKind,

    /// The ratio samplers' share of new traces, 0..1.
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", default_value_t = Ratio::ONE)]
    pub trace_sampler_arg: Ratio,

    /// This replica's name: the `instance_id` label of
    /// `catalogue_build_info` and the traces' `service.instance.id`.
    /// Default: HOST/PID.
    #[arg(long, env = "CATALOGUE_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// `service.name` of exported traces.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "catalogue")]
    pub service_name: String,

    /// A call the head sampler did not trace is exported anyway when it
    /// takes at least this long (and always when it ends with an error).
    #[arg(long, env = "CATALOGUE_TRACE_SLOW_THRESHOLD", default_value = "250ms", value_parser = humantime::parse_duration)]
    pub trace_slow_threshold: std::time::Duration,

    /// At most this many untraced calls (errors, slow calls) exported a
    /// second: under a flood every refused call is an error.
    #[arg(long, env = "CATALOGUE_TRACE_KEEP_PER_SECOND", default_value_t = 100)]
    pub trace_keep_per_second: u32,

    /// Export only the calls the head sampler traces: no error or slow call
    /// beyond the ratio.
    #[arg(long, env = "CATALOGUE_NO_TRACE_KEEP", value_parser = BoolishValueParser::new())]
    pub no_trace_keep: bool,

    /// Which semantic-convention names spans carry, as OpenTelemetry's
    /// instrumentations read it: the current names by default;
    /// `rpc/dup` adds the RPC spans' older names (`rpc.system`,
    /// `rpc.grpc.status_code`, `net.sock.peer.addr`), `database/dup` the
    /// store spans' (`db.system`, `db.operation`, `db.statement`). Other
    /// entries are other instrumentations' and are ignored.
    #[arg(long, env = "OTEL_SEMCONV_STABILITY_OPT_IN", default_value = "",
          value_parser = SemconvOptIn::parse)]
    pub semconv_stability_opt_in: SemconvOptIn,

    /// Trace health checks and reflection calls too (off: they would drown
    /// real traffic).
    #[arg(long, env = "CATALOGUE_TRACE_HEALTH_CHECKS", value_parser = BoolishValueParser::new())]
    pub trace_health_checks: bool,

    /// Address tokio-console attaches to, open while the console is awake.
    #[arg(long, env = "CATALOGUE_CONSOLE_ADDR", default_value = "127.0.0.1:6669")]
    pub console_addr: SocketAddr,

    /// Wake tokio-console at start. Without it the console's layer is
    /// dormant (costs nothing measurable) until `PUT /debug/console` on the
    /// admin port; awake, its instrumentation halves throughput under load.
    #[arg(long, env = "CATALOGUE_CONSOLE", value_parser = BoolishValueParser::new())]
    pub console: bool,

    /// Do not export Tokio runtime, task and process metrics (sampled on
    /// each scrape of /metrics).
    #[arg(long, env = "CATALOGUE_NO_RUNTIME_METRICS", value_parser = BoolishValueParser::new())]
    pub no_runtime_metrics: bool,
}

/// Parses `--otlp-headers` like any value, except that an error names the
/// flag and what is wrong but, unlike clap's own, does not repeat the
/// text: it holds a collector's key.
#[derive(Clone)]
struct SecretHeaders;

impl TypedValueParser for SecretHeaders {
    type Value = OtlpHeaders;

    fn parse_ref(
        &self,
        _: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<OtlpHeaders, clap::Error> {
        let flag = arg.map_or_else(|| "--otlp-headers".to_owned(), ToString::to_string);
        value
            .to_str()
            .ok_or_else(|| "it is not UTF-8".to_owned())
            .and_then(OtlpHeaders::parse)
            .map_err(|error| {
                let message = format!("invalid value for '{flag}': {error}\n");
                clap::Error::raw(ErrorKind::ValueValidation, message)
            })
    }
}

impl TelemetryConfig {
    /// Where traces go, if they are exported.
    pub fn collector(&self) -> Option<Collector> {
        self.otlp_endpoint.clone().map(|endpoint| Collector {
            endpoint,
            headers: self.otlp_headers.clone(),
            timeout: self.otlp_timeout,
            compression: self.otlp_compression,
        })
    }

    /// `--instance-id`, or HOST/PID: unique among the replicas on one host,
    /// and among pods (whose host name is the pod's name).
    pub fn instance_id(&self) -> String {
        self.instance_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|name| name.trim().to_owned())
                .unwrap_or_else(|_| "localhost".to_owned());
            format!("{host}/{}", std::process::id())
        })
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::filter::LevelFilter;

    use super::*;

    fn most_verbose(directives: &str) -> Option<LevelFilter> {
        LogFilter::parse(directives)
            .unwrap()
            .layer_filter()
            .max_level_hint()
    }

    #[test]
    fn the_log_filter_sets_the_level_and_span_directives_still_work() {
        assert_eq!(most_verbose("info"), Some(LevelFilter::INFO));
        assert_eq!(most_verbose("  "), Some(LevelFilter::INFO));
        assert_eq!(
            most_verbose("warn,catalogue=debug"),
            Some(LevelFilter::DEBUG)
        );
        assert_eq!(
            most_verbose("warn,[grpc.server]=trace"),
            Some(LevelFilter::TRACE),
            "a span directive needs EnvFilter"
        );
    }

    #[test]
    fn a_bad_log_filter_is_refused_by_name() {
        let error = LogFilter::parse("catalogue=loud").unwrap_err();
        assert!(error.contains("catalogue=loud"), "{error}");
    }

    #[test]
    fn a_filter_silencing_the_service_is_refused_unless_it_is_off() {
        for silent in [
            "[[[",
            "[grpc.server]=info",
            "catalogue=off,info",
            "h2=trace",
        ] {
            assert!(LogFilter::parse(silent).is_err(), "{silent:?}");
        }
        for writes in [
            "off",
            "OFF",
            "error",
            "warn,[grpc.server]=trace",
            "catalogue=error",
        ] {
            assert!(LogFilter::parse(writes).is_ok(), "{writes:?}");
        }
        let long = "catalogue=info,".repeat(80);
        assert!(LogFilter::parse(&long).unwrap_err().contains("1024"));
    }
}
