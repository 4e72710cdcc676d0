//! Traces: which calls are exported, and their spans. Every span the
//! service exports (a call's SERVER span, its store calls, its upstream
//! call) is made here, straight through the OpenTelemetry SDK.
//!
//! - `sampling`: the head-sampling decision, made before any span exists;
//! - `calls`: the spans of one call, the keep decision for untraced calls
//!   that end badly or slowly, and the W3C context a call sends on;
//! - `export` and `otlp`: the batches of finished spans, written as OTLP
//!   bytes and sent to the collector.

pub mod calls;
pub mod export;
mod otlp;
pub(crate) mod sampling;

pub use self::calls::{CallTraces, Keep, Outgoing, StoreCall, outgoing_context, record_store_call};

/// Which span attributes are also sent under their older semantic-convention
/// names (`OTEL_SEMCONV_STABILITY_OPT_IN`'s `/dup` entries). Each attribute
/// costs its conversion, encoding and export on every exported span, so
/// the old names are sent only to a backend that still asks for them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SemconvOptIn {
    pub rpc_dup: bool,
    pub database_dup: bool,
}

impl SemconvOptIn {
    /// A comma-separated list; never an error, since the variable is shared
    /// with every other instrumentation in the process.
    pub fn parse(list: &str) -> Result<Self, String> {
        let entries = || list.split(',').map(str::trim);
        Ok(Self {
            rpc_dup: entries().any(|entry| entry == "rpc/dup"),
            database_dup: entries().any(|entry| entry == "database/dup"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_names_are_sent_only_for_the_dup_entries() {
        let parsed = |list| SemconvOptIn::parse(list).expect("never an error");
        assert_eq!(parsed(""), SemconvOptIn::default());
        assert_eq!(parsed("rpc,database,http/dup"), SemconvOptIn::default());
        assert_eq!(
            parsed("http, rpc/dup"),
            SemconvOptIn {
                rpc_dup: true,
                database_dup: false
            }
        );
        assert_eq!(
            parsed("database/dup,rpc/dup"),
            SemconvOptIn {
                rpc_dup: true,
                database_dup: true
            }
        );
    }
}
