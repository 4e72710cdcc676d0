//! Where a test app's log lines go, and the subscriber each app builds.

use std::sync::Arc;

use catalogue::{config::ServeConfig, telemetry::Telemetry};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// Log lines written by the app, kept for the test to read (see
/// `TestAppBuilder::logs`).
#[derive(Clone, Default)]
pub struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    /// A sink that writes here.
    pub fn sink(&self) -> BoxMakeWriter {
        let logs = self.clone();
        BoxMakeWriter::new(move || logs.clone())
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.bytes()).expect("log lines are UTF-8")
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Logs are silent unless `TEST_LOG` is set.
pub fn test_log_sink() -> BoxMakeWriter {
    if std::env::var_os("TEST_LOG").is_some() {
        BoxMakeWriter::new(std::io::stderr)
    } else {
        BoxMakeWriter::new(std::io::sink)
    }
}

/// An app's telemetry, in a process that never sets a global default
/// dispatch (each test's app has its own).
///
/// While a process has exactly one live `Dispatch`, tracing-core takes a
/// shortcut: a callsite's interest (cached until the next rebuild) and the
/// maximum level are asked of the *calling thread's* default dispatch, not
/// of the registered ones. A test process whose only dispatch is its app's
/// (`cargo nextest`, or one test run alone) would then cache `never` for
/// every callsite first reached outside the app's scope: tokio's task
/// spans first reached by the test's own runtime, say, and tokio-console
/// sees no task. The binary is unaffected (its app's dispatch is the global
/// default, which is what a thread without its own gets). A second,
/// silent dispatch kept for the whole process ends the shortcut: interest
/// is asked of every registered dispatch, as when several tests' apps run
/// in one process.
pub fn telemetry(
    config: &ServeConfig,
    sink: BoxMakeWriter,
) -> Result<Telemetry, catalogue::telemetry::TelemetryError> {
    static WITNESS: std::sync::LazyLock<tracing::Dispatch> =
        std::sync::LazyLock::new(|| tracing::Dispatch::new(Silent));
    std::sync::LazyLock::force(&WITNESS);
    Telemetry::init(&config.telemetry, sink)
}

/// A subscriber that wants nothing and raises no level.
struct Silent;

impl tracing::Subscriber for Silent {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::never()
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        false
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::OFF)
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
