//! The Tokio runtime, seen from inside: its builder, the collector that turns
//! the runtime's, the RPC tasks' and the process's numbers into metrics, the
//! list of its live tasks, and tokio-console on demand.
//!
//! - `collector`: the runtime builder and the scrape-time collector;
//! - `tasks`: the live tasks, from the runtime's spawn and terminate hooks;
//! - `console`: tokio-console's layer, dormant until woken, and its endpoint;
//! - `signal`: the shutdown signal, Ctrl-C or SIGTERM.

pub mod collector;
pub mod console;
pub mod signal;
pub mod tasks;

pub use self::{
    collector::{Collector, ScrapeHook, runtime_builder},
    console::Console,
    signal::shutdown_signal,
    tasks::TaskList,
};
