//! Telemetry: structured logs through one tracing-subscriber registry.

use tracing::Subscriber;
use tracing_subscriber::{EnvFilter, fmt::MakeWriter, layer::SubscriberExt};

use crate::config::LogFormat;

/// Filter used when `RUST_LOG` is unset.
const DEFAULT_FILTER: &str = "info";

/// A subscriber writing `format` lines to `sink`, filtered by `RUST_LOG`.
/// Separate from [`init`] so tests can choose the sink.
pub fn subscriber<W>(format: LogFormat, sink: W) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => {
            Box::new(registry.with(tracing_subscriber::fmt::layer().with_writer(sink)))
        }
        LogFormat::Json => Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(sink),
            ),
        ),
    }
}

/// Installs `subscriber` as the process-wide default. Call once, from main.
pub fn init(subscriber: Box<dyn Subscriber + Send + Sync>) {
    if let Err(error) = tracing::subscriber::set_global_default(subscriber) {
        eprintln!("telemetry was already initialised: {error}");
    }
}
