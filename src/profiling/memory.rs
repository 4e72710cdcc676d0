//! What symbolising a profile leaves behind, given back.
//!
//! Building a report resolves every sampled address through the `backtrace`
//! crate, which parses and keeps the binary's DWARF (the debug info,
//! inflated): most of a profile's memory, cached process-wide. Dropping
//! that cache frees it to jemalloc, which keeps the freed pages dirty and
//! returns them to the kernel only after its decay time (10 s by default),
//! and only when something ticks its decay clock: an allocation in that
//! arena, or a background thread. An idle process after a profile ticks
//! nothing, and keeps the pages. So after each profile the cache is dropped
//! and jemalloc's background threads are turned on, which return dirty
//! pages on the decay schedule whether the process allocates or not. (An
//! immediate `arena.<all>.purge` takes a raw, unsafe mallctl call; the
//! library forbids `unsafe`.)

use tokio::task::JoinError;

/// Runs `work`, which resolves symbols, on the blocking pool: parsing debug
/// info is CPU-heavy and must not hold up a runtime worker. Then gives back
/// the memory symbolising took (see the module's doc).
pub(super) async fn symbolise<T, W>(work: W) -> Result<T, JoinError>
where
    W: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let result = work();
        give_back();
        result
    })
    .await
}

/// Drops the parsed debug info and has jemalloc return the freed pages.
fn give_back() {
    backtrace::clear_symbol_cache();
    // Idempotent; fails only when jemalloc is not the global allocator (a
    // test binary without it), where there is nothing to return.
    if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::debug!(%error, "starting jemalloc's background purging failed");
    }
}
