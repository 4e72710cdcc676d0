//! The process's allocator: which one, and with what options.
//!
//! jemalloc in every build (its throughput under many threads, not only
//! its profiles); with the `profiling` feature it samples allocations for
//! heap profiles from the start ([`MALLOC_CONF`]). The library forbids
//! `unsafe`, so the allocator is installed by the binary, at its root, with
//! [`jemalloc_global_allocator!`](crate::jemalloc_global_allocator).

#[doc(hidden)]
pub use tikv_jemallocator::Jemalloc;

/// The bytes the process has allocated and not freed, by jemalloc's count;
/// `None` in a build without the `profiling` feature (the statistics come
/// with it).
pub fn allocated_bytes() -> Option<u64> {
    #[cfg(feature = "profiling")]
    {
        tikv_jemalloc_ctl::epoch::advance().ok()?;
        tikv_jemalloc_ctl::stats::allocated::read()
            .ok()
            .map(|bytes| bytes as u64)
    }
    #[cfg(not(feature = "profiling"))]
    None
}

/// jemalloc's options when it is the global allocator.
///
/// With the `profiling` feature: profiling on and active from the start,
/// one sample per 2^21 bytes (2 MiB) allocated on average. Each sample
/// unwinds the stack through DWARF tables (libgcc's unwinder): at jemalloc's
/// default of 512 KiB, sampling cost 3,600 instructions per GetProduct on
/// average, 5 % of the call (docs/cost-ladder.md); at 2 MiB it is a quarter
/// of that, and a heap profile still finds whatever holds megabytes.
///
/// In every build: a thread's cache is swept every 1 MiB allocated, not
/// every 64 KiB (`tcache_gc_incr_bytes`). A fully observed GetProduct
/// allocates about 18 KiB, so at the default every fourth call handed
/// cached blocks back to the arena, under its locks, to fetch them again
/// soon after: 1,600 instructions a call at 10,000 calls/s (callgrind),
/// 670 at 1 MiB. How much a cache may hold is unchanged.
///
/// The `MALLOC_CONF` variable overrides them at run time
/// (`lg_prof_sample:19` samples finer, `prof:false` turns heap profiles off).
#[cfg(feature = "profiling")]
pub const MALLOC_CONF: &[u8] =
    b"prof:true,prof_active:true,lg_prof_sample:21,tcache_gc_incr_bytes:1048576\0";
#[cfg(not(feature = "profiling"))]
pub const MALLOC_CONF: &[u8] = b"tcache_gc_incr_bytes:1048576\0";

/// Makes jemalloc the global allocator, with its options
/// ([`MALLOC_CONF`]). Invoke once, at the root of a binary (the service's
/// `main.rs`, the integration tests' `main.rs`): the library itself forbids
/// `unsafe`, and exporting the `malloc_conf` symbol jemalloc reads at start
/// is an unsafe attribute.
#[macro_export]
macro_rules! jemalloc_global_allocator {
    () => {
        #[global_allocator]
        static GLOBAL: $crate::profiling::allocator::Jemalloc =
            $crate::profiling::allocator::Jemalloc;

        /// Read by jemalloc when it initialises, before `main`.
        #[unsafe(export_name = "malloc_conf")]
        pub static MALLOC_CONF: &[u8] = $crate::profiling::allocator::MALLOC_CONF;
    };
}
