//! The Tokio runtime, seen from inside: its builder, the sampler that turns
//! the runtime's, the RPC tasks' and the process's numbers into metrics, the
//! list of its live tasks, and tokio-console on demand.
//!
//! - `sampler`: the runtime builder and the scrape-time sampler;
//! - `tasks`: the live tasks, from the runtime's spawn and terminate hooks;
//! - `console`: tokio-console's layer, dormant until woken, and its endpoint;
//! - `signal`: the shutdown signal, Ctrl-C or SIGTERM.

pub mod console;
pub mod sampler;
pub mod signal;
pub mod tasks;

pub use self::{
    console::Console,
    sampler::{Sampler, ScrapeHook, runtime_builder},
    signal::shutdown_signal,
    tasks::TaskList,
};
