//! Profiles: where the process spends its CPU and holds its memory, and
//! which call each CPU sample was taken in. The HTTP routes that ask for
//! them are `admin::pprof`'s.
//!
//! - `labels`: the call's label on the worker thread while a profile runs
//!   (without the `profiling` feature, the same types doing nothing);
//! - `cpu`: a CPU profile, its samples named by call, and its coverage;
//! - `heap`: jemalloc's sampled live allocations as a profile;
//! - `process`: the process's CPU time, from `/proc`;
//! - `allocator`: jemalloc as the global allocator, and its options;
//! - `memory`: what a profile's symbolisation leaves behind, given back.
//!
//! Everything but `labels` and `allocator` exists only with the
//! `profiling` feature (on by default).

pub mod allocator;
#[cfg(feature = "profiling")]
pub mod cpu;
#[cfg(feature = "profiling")]
pub mod heap;
#[cfg(feature = "profiling")]
pub mod labels;
#[cfg(feature = "profiling")]
mod memory;
#[cfg(feature = "profiling")]
mod process;

/// The call layer's label types, doing nothing: a build without CPU
/// profiles has no label to set.
#[cfg(not(feature = "profiling"))]
#[path = "noop.rs"]
pub mod labels;

#[cfg(feature = "profiling")]
pub use self::encode::{ProfileError, ProfileFormat};

#[cfg(feature = "profiling")]
mod encode {
    use std::io::Write;

    use flate2::{Compression, write::GzEncoder};
    use tokio::task::JoinError;

    /// Why a profile could not be taken.
    #[derive(Debug, thiserror::Error)]
    pub enum ProfileError {
        #[error("a CPU profile is already being taken; try again when it finishes")]
        Busy,
        #[error(
            "heap profiling is off: jemalloc must be the global allocator with \
             prof:true,prof_active:true (the catalogue binary's default; check MALLOC_CONF)"
        )]
        HeapProfilingOff,
        #[error("cpu profiler failed: {0}")]
        Cpu(#[from] pprof::Error),
        #[error("heap profile failed: {0}")]
        Heap(anyhow::Error),
        #[error("could not encode the profile: {0}")]
        Encode(String),
        #[error("profiling task failed: {0}")]
        Task(#[from] JoinError),
    }

    /// How a profile is encoded.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum ProfileFormat {
        /// Gzipped pprof protobuf, for `go tool pprof`.
        Pprof,
        /// An SVG flame graph, for a browser.
        Flamegraph,
    }

    pub(super) fn gzip(bytes: &[u8]) -> Result<Vec<u8>, ProfileError> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder
            .write_all(bytes)
            .and_then(|()| encoder.finish())
            .map_err(|error| ProfileError::Encode(error.to_string()))
    }

    /// An SVG that says why there is no flame graph: inferno refuses to
    /// draw an empty profile, and an idle process is no server error.
    pub(super) fn nothing_sampled(reason: &str) -> Vec<u8> {
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"800\" height=\"60\">\
             <text x=\"10\" y=\"35\" font-family=\"Verdana\" font-size=\"14\">{reason}</text></svg>\n"
        )
        .into_bytes()
    }
}
