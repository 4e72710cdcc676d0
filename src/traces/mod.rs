//! Traces: which calls are exported, and their spans. Every span the
//! service exports (a call's SERVER span, its store calls, its upstream
//! call) is made here, straight through the OpenTelemetry SDK.
//!
//! - `sampling`: the head-sampling decision, made before any span exists;
//! - `calls`: the spans of one call, the keep decision for untraced calls
//!   that end badly or slowly, and the W3C context a call sends on.

pub mod calls;
pub mod sampling;

pub use self::calls::{CallTraces, Keep, Outgoing, StoreCall, outgoing_context, record_store_call};
