//! Profiles on demand, after Go's `net/http/pprof`.
//!
//! Routes (behind `--admin-token` when one is set):
//! - `GET /debug/pprof/`: an index of what follows;
//! - `GET /debug/pprof/profile?seconds=30&frequency=99`: a CPU profile
//!   sampled for `seconds` (1–300) at `frequency` Hz (1–1000), as gzipped
//!   pprof protobuf; `&format=flamegraph` answers an SVG flame graph; the
//!   `x-profile-coverage` header is the share of the process's CPU time
//!   over the window its samples account for; each sample taken in a call
//!   is labelled `rpc_service`, `rpc_method` and, for a traced call,
//!   `trace_id` and `span_id` (`profiling::labels`);
//!   `&rpc_method=SearchProducts` keeps only that method's samples;
//! - `GET /debug/pprof/heap`: live allocations sampled by jemalloc, as gzipped
//!   pprof protobuf (every mapping flagged symbolised, so `go tool pprof`
//!   keeps its names) or (`&format=flamegraph`) SVG; 501 when jemalloc
//!   profiling is off;
//! - `GET /debug/pprof/tasks`: every live Tokio task of the runtime, with
//!   its name (if it has one), spawn location and age, as text; 501 when
//!   the runtime does not list its tasks (see `runtime::tasks`).
//!
//! Only one CPU profile runs at a time (the sampler is process-wide); a second
//! request gets 409. Sampling only awaits a timer, and symbolisation, which is
//! CPU-heavy, runs on the blocking pool, so profiling never stalls the
//! runtime's workers; the parsed debug info is dropped after each profile.

use std::{
    collections::HashMap,
    io::{Read, Write},
    ops::RangeInclusive,
    sync::Arc,
    time::Duration,
};

use axum::{
    Router,
    extract::{Query, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::get,
};
use flate2::{Compression, read::GzDecoder, write::GzEncoder};
use pprof::protos::Message;
use serde::Deserialize;
use tokio::{sync::Semaphore, task::JoinError};

use super::AdminState;
use crate::{
    profiling::labels::{CallLabel, LabelTable, Labelled, Labelling},
    runtime::tasks::LiveTask,
};

/// jemalloc's options when it is the global allocator: profiling on and
/// active from the start, one sample per 2^21 bytes (2 MiB) allocated on
/// average. Each sample unwinds the stack through DWARF tables (libgcc's
/// unwinder): at jemalloc's default of 512 KiB, sampling cost 3,600
/// instructions per GetProduct on average, 5 % of the call
/// (docs/cost-ladder.md); at 2 MiB it is a quarter of that, and a heap
/// profile still finds whatever holds megabytes. The `MALLOC_CONF` variable
/// overrides them at run time (`lg_prof_sample:19` samples finer,
/// `prof:false` turns heap profiles off).
pub const MALLOC_CONF: &[u8] = b"prof:true,prof_active:true,lg_prof_sample:21\0";

#[doc(hidden)]
pub use tikv_jemallocator::Jemalloc;

/// Makes jemalloc the global allocator, with heap profiling on
/// ([`MALLOC_CONF`]). Invoke once, at the root of a binary (the service's
/// `main.rs`, the integration tests' `main.rs`): the library itself forbids
/// `unsafe`, and exporting the `malloc_conf` symbol jemalloc reads at start
/// is an unsafe attribute.
#[macro_export]
macro_rules! jemalloc_global_allocator {
    () => {
        #[global_allocator]
        static GLOBAL: $crate::admin::pprof::Jemalloc = $crate::admin::pprof::Jemalloc;

        /// Read by jemalloc when it initialises, before `main`.
        #[unsafe(export_name = "malloc_conf")]
        pub static MALLOC_CONF: &[u8] = $crate::admin::pprof::MALLOC_CONF;
    };
}

const SECONDS: Bounded = Bounded {
    name: "seconds",
    default: 30,
    range: 1..=300,
};
const FREQUENCY: Bounded = Bounded {
    name: "frequency",
    default: 99,
    range: 1..=1000,
};

/// The CPU sampler (SIGPROF and one global collector) exists once per
/// process, so the gate is process-wide too, not per `App`.
static CPU_PROFILER: Semaphore = Semaphore::const_new(1);

/// The `/debug/pprof` routes.
pub fn routes() -> Router<AdminState> {
    Router::new()
        .route(
            "/debug/pprof",
            get(|| async { Redirect::permanent("/debug/pprof/") }),
        )
        .route("/debug/pprof/", get(|| async { Html(INDEX) }))
        .route("/debug/pprof/profile", get(cpu_profile))
        .route("/debug/pprof/heap", get(heap_profile))
        .route("/debug/pprof/tasks", get(task_dump))
}

const INDEX: &str = r#"<!DOCTYPE html>
<html><head><title>/debug/pprof/</title></head><body>
<h1>/debug/pprof/</h1>
<table>
<tr><td><a href="profile?seconds=30">profile</a></td><td>CPU profile: <code>?seconds=</code> (1&ndash;300, default 30), <code>&amp;frequency=</code> Hz (1&ndash;1000, default 99), <code>&amp;format=flamegraph</code> for SVG. One at a time.</td></tr>
<tr><td><a href="profile?seconds=10&amp;format=flamegraph">profile flame graph</a></td><td>10 s of CPU as an SVG flame graph; <code>&amp;rpc_method=SearchProducts</code> for one method's calls only.</td></tr>
<tr><td><a href="heap">heap</a></td><td>live allocations sampled by jemalloc (<code>&amp;format=flamegraph</code> for SVG).</td></tr>
<tr><td><a href="heap?format=flamegraph">heap flame graph</a></td><td>the same as an SVG flame graph.</td></tr>
<tr><td><a href="tasks">tasks</a></td><td>every live Tokio task with its name, spawn location and age, as text.</td></tr>
</table>
<p>Profiles are gzipped pprof protobuf: <code>go tool pprof -http=: URL</code>. Samples taken in a call carry the labels <code>rpc_method</code>, <code>rpc_service</code> and, for a traced call, <code>trace_id</code> and <code>span_id</code>: <code>go tool pprof -tags</code>, <code>-tagfocus rpc_method=SearchProducts</code>.</p>
</body></html>
"#;

/// Why a profile was not served; each maps to one status.
#[derive(Debug, thiserror::Error)]
pub enum PprofError {
    #[error("{0}")]
    BadRequest(String),
    #[error("a CPU profile is already being taken; try again when it finishes")]
    Busy,
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("cpu profiler failed: {0}")]
    Cpu(#[from] pprof::Error),
    #[error("heap profile failed: {0}")]
    Heap(anyhow::Error),
    #[error("could not encode the profile: {0}")]
    Encode(String),
    #[error("profiling task failed: {0}")]
    Task(#[from] JoinError),
}

impl IntoResponse for PprofError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Busy => StatusCode::CONFLICT,
            Self::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            Self::Cpu(_) | Self::Heap(_) | Self::Encode(_) | Self::Task(_) => {
                tracing::error!(error = %self, "profile failed");
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "could not take the profile; the cause is in the service log\n",
                )
                    .into_response();
            }
        };
        (status, format!("{self}\n")).into_response()
    }
}

/// The query string of the CPU profile route, before parsing. A parameter
/// it does not name (`?secs=2`) is a 400 naming it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileQuery {
    seconds: Option<String>,
    frequency: Option<String>,
    format: Option<String>,
    rpc_method: Option<String>,
}

/// How a profile is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileFormat {
    /// Gzipped pprof protobuf, for `go tool pprof`.
    Pprof,
    /// An SVG flame graph, for a browser.
    Flamegraph,
}

impl ProfileFormat {
    fn parse(format: Option<&str>) -> Result<Self, PprofError> {
        match format {
            None | Some("pprof" | "proto") => Ok(Self::Pprof),
            Some("flamegraph" | "svg") => Ok(Self::Flamegraph),
            Some(other) => Err(PprofError::BadRequest(format!(
                "format must be pprof or flamegraph, got {other:?}"
            ))),
        }
    }

    /// The response: an attachment named `{name}.pb.gz`, or an SVG.
    fn respond(self, name: &str, body: Vec<u8>) -> Response {
        match self {
            Self::Pprof => (
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{name}.pb.gz\""),
                    ),
                ],
                body,
            )
                .into_response(),
            Self::Flamegraph => ([(header::CONTENT_TYPE, "image/svg+xml")], body).into_response(),
        }
    }
}

/// A whole-number query parameter with a default and inclusive bounds.
struct Bounded {
    name: &'static str,
    default: u32,
    range: RangeInclusive<u32>,
}

impl Bounded {
    fn parse(&self, value: Option<&str>) -> Result<u32, PprofError> {
        let Some(value) = value else {
            return Ok(self.default);
        };
        value
            .parse()
            .ok()
            .filter(|number| self.range.contains(number))
            .ok_or_else(|| {
                PprofError::BadRequest(format!(
                    "{} must be a whole number from {} to {}, got {value:?}",
                    self.name,
                    self.range.start(),
                    self.range.end()
                ))
            })
    }
}

/// A validated CPU profile request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuProfileRequest {
    duration: Duration,
    frequency: i32,
    format: ProfileFormat,
    /// Only the samples of this method's calls (`None`: every sample).
    rpc_method: Option<&'static str>,
}

impl CpuProfileRequest {
    /// `methods`: the names `rpc_method` may take.
    fn parse(query: &ProfileQuery, methods: &[&'static str]) -> Result<Self, PprofError> {
        let seconds = SECONDS.parse(query.seconds.as_deref())?;
        let frequency = FREQUENCY.parse(query.frequency.as_deref())?;
        let rpc_method = query
            .rpc_method
            .as_deref()
            .map(|wanted| {
                methods
                    .iter()
                    .find(|name| **name == wanted)
                    .copied()
                    .ok_or_else(|| {
                        PprofError::BadRequest(format!(
                            "rpc_method must be one of {}, got {wanted:?}",
                            methods.join(", ")
                        ))
                    })
            })
            .transpose()?;
        Ok(Self {
            duration: Duration::from_secs(seconds.into()),
            frequency: i32::try_from(frequency).expect("bounded by FREQUENCY"),
            format: ProfileFormat::parse(query.format.as_deref())?,
            rpc_method,
        })
    }
}

async fn cpu_profile(
    State(state): State<AdminState>,
    Query(query): Query<ProfileQuery>,
) -> Result<Response, PprofError> {
    let labels = state.labels;
    let request = CpuProfileRequest::parse(&query, &labels.method_names())?;
    let permit = CPU_PROFILER.try_acquire().map_err(|_| PprofError::Busy)?;
    // Building resolves a backtrace first (loading the debug info, most of
    // a second of CPU), then starts the timer: the window starts here.
    let profiler = pprof::ProfilerGuardBuilder::default()
        .frequency(request.frequency)
        .build()?;
    let labelling = Labelling::start();
    let used_before = ProcessCpu::read();
    // SIGPROF samples whichever thread is on the CPU; this task only waits.
    // If the client goes away the future is dropped and sampling stops.
    tokio::time::sleep(request.duration).await;
    let (body, coverage) = symbolise(move || {
        // Both live until the report is built: no second sampler meanwhile.
        let _permit = permit;
        // Counted before symbolising, whose own CPU is not the window's.
        let coverage = Coverage::measure(&profiler, request.frequency, used_before)?;
        let labelled = labelling.finish();
        let mut report = profiler
            .report()
            .frames_post_processor(strip_sampler_frames)
            .build()?;
        if let Some(method) = request.rpc_method {
            report.data.retain(|frames, _| {
                labels
                    .resolve(&labelled, frames.label)
                    .is_some_and(|label| label.method == method)
            });
        }
        let body = match request.format {
            ProfileFormat::Pprof => {
                let mut profile = report.pprof()?;
                name_labels(&mut profile, &labels, &labelled);
                let profile = profile
                    .write_to_bytes()
                    .map_err(|error| PprofError::Encode(error.to_string()))?;
                gzip(&profile)?
            }
            ProfileFormat::Flamegraph if report.data.is_empty() => {
                nothing_sampled(&match request.rpc_method {
                    Some(method) => format!("no CPU samples in calls of {method}"),
                    None => "no CPU samples: the process was idle for the whole profile".into(),
                })
            }
            ProfileFormat::Flamegraph => {
                let mut svg = Vec::new();
                report.flamegraph(&mut svg)?;
                svg
            }
        };
        Ok::<_, PprofError>((body, coverage))
    })
    .await??;
    let mut response = request.format.respond("profile", body);
    coverage.annotate(response.headers_mut());
    Ok(response)
}

/// The pprof label keys of a sample taken in a call.
pub const RPC_SERVICE_LABEL: &str = "rpc_service";
pub const RPC_METHOD_LABEL: &str = "rpc_method";
pub const TRACE_ID_LABEL: &str = "trace_id";
pub const SPAN_ID_LABEL: &str = "span_id";

/// Replaces the label word pprof gives each sample taken in a call (the
/// numeric label `pprof::LABEL_KEY`) with string labels naming the call:
/// `rpc_service`, `rpc_method` and, if it was traced, `trace_id` and
/// `span_id`. A word of another app's call is dropped.
fn name_labels(profile: &mut pprof::protos::Profile, labels: &LabelTable, labelled: &Labelled) {
    let mut strings: HashMap<String, i64> = profile
        .string_table
        .iter()
        .enumerate()
        .map(|(index, string)| (string.clone(), index as i64))
        .collect();
    let Some(&word_key) = strings.get(pprof::LABEL_KEY) else {
        return;
    };
    let mut string = |value: String| -> i64 {
        let next = strings.len() as i64;
        *strings.entry(value.clone()).or_insert_with(|| {
            profile.string_table.push(value);
            next
        })
    };
    for sample in &mut profile.sample {
        let words: Vec<u64> = sample
            .label
            .iter()
            .filter(|label| label.key == word_key)
            .map(|label| label.num as u64)
            .collect();
        sample.label.retain(|label| label.key != word_key);
        for CallLabel {
            service,
            method,
            trace,
        } in words
            .into_iter()
            .filter_map(|word| labels.resolve(labelled, word))
        {
            let mut pairs = vec![
                (RPC_SERVICE_LABEL, service.to_owned()),
                (RPC_METHOD_LABEL, method.to_owned()),
            ];
            if let Some(ids) = trace {
                pairs.push((TRACE_ID_LABEL, ids.trace_id.to_string()));
                pairs.push((SPAN_ID_LABEL, ids.span_id.to_string()));
            }
            for (key, value) in pairs {
                let key = string(key.to_owned());
                let value = string(value);
                sample.label.push(pprof::protos::Label {
                    key,
                    str: value,
                    ..Default::default()
                });
            }
        }
    }
}

/// Drops the sampler's own frames from the leaf end of a sample, where
/// they are not inlined into its signal handler (pprof-rs drops the handler
/// and the signal trampoline itself), so the leaf is the code interrupted.
fn strip_sampler_frames(frames: &mut pprof::Frames) {
    let sampler = frames
        .frames
        .iter()
        .take_while(|symbols| {
            symbols.iter().all(|symbol| {
                let name = symbol.name();
                name.starts_with("backtrace::backtrace::")
                    || name.starts_with("<pprof::backtrace::")
            })
        })
        .count();
    frames.frames.drain(..sampler);
}

/// The header saying which share of the process's CPU time over the
/// profile's window its samples account for (`0.973`); absent when the
/// process's CPU time could not be read or was zero.
pub const COVERAGE_HEADER: &str = "x-profile-coverage";
/// The header with both numbers: `sampled=9.71s used=9.98s`.
pub const CPU_SECONDS_HEADER: &str = "x-profile-cpu-seconds";

/// The CPU time the samples of a profile stand for, against the time the
/// process used (`utime + stime` of `/proc/self/stat`) over the same window.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Coverage {
    sampled_seconds: f64,
    used_seconds: Option<f64>,
}

impl Coverage {
    /// Counts the samples taken so far: each stands for `1 / frequency`
    /// seconds of the process's CPU time (`ITIMER_PROF`).
    fn measure(
        profiler: &pprof::ProfilerGuard<'_>,
        frequency: i32,
        used_before: Option<ProcessCpu>,
    ) -> Result<Self, PprofError> {
        let used_after = ProcessCpu::read();
        let samples: isize = profiler.report().build_unresolved()?.data.values().sum();
        let used_seconds = used_before
            .zip(used_after)
            .map(|(before, after)| after.seconds_since(before));
        Ok(Self {
            sampled_seconds: samples as f64 / f64::from(frequency),
            used_seconds,
        })
    }

    fn ratio(&self) -> Option<f64> {
        self.used_seconds
            .filter(|used| *used > 0.0)
            .map(|used| self.sampled_seconds / used)
    }

    fn annotate(&self, headers: &mut axum::http::HeaderMap) {
        let used = self
            .used_seconds
            .map_or_else(|| "unknown".to_owned(), |used| format!("{used:.2}s"));
        let both = format!("sampled={:.2}s used={used}", self.sampled_seconds);
        if let Ok(value) = header::HeaderValue::from_str(&both) {
            headers.insert(CPU_SECONDS_HEADER, value);
        }
        if let Some(ratio) = self.ratio()
            && let Ok(value) = header::HeaderValue::from_str(&format!("{ratio:.3}"))
        {
            headers.insert(COVERAGE_HEADER, value);
        }
    }
}

/// The process's CPU time so far, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcessCpu(u64);

impl ProcessCpu {
    /// `/proc`'s clock tick: `USER_HZ`, 100 on every Linux architecture
    /// this builds for (what `sysconf(_SC_CLK_TCK)` answers).
    const TICKS_PER_SECOND: f64 = 100.0;

    /// `None` off Linux or if `/proc` cannot be read.
    fn read() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/self/stat").ok()?)
    }

    /// `utime + stime`, fields 14 and 15 of `stat`: counted after the
    /// command name, which is in parentheses and may hold spaces.
    fn parse(stat: &str) -> Option<Self> {
        let (_, after_name) = stat.rsplit_once(')')?;
        let mut fields = after_name.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        Some(Self(utime + stime))
    }

    fn seconds_since(self, earlier: Self) -> f64 {
        self.0.saturating_sub(earlier.0) as f64 / Self::TICKS_PER_SECOND
    }
}

/// Runs `work`, which resolves symbols, on the blocking pool: parsing debug
/// info is CPU-heavy and must not hold up a runtime worker. Then drops the
/// parsed debug info the `backtrace` crate caches process-wide: about a
/// hundred MB for the release binary, not worth holding between profiles
/// taken minutes apart.
async fn symbolise<T, W>(work: W) -> Result<T, JoinError>
where
    W: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let result = work();
        backtrace::clear_symbol_cache();
        result
    })
    .await
}

/// An SVG that says why there is no flame graph: inferno refuses to draw an
/// empty profile, and an idle process is no server error.
fn nothing_sampled(reason: &str) -> Vec<u8> {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"800\" height=\"60\">\
         <text x=\"10\" y=\"35\" font-family=\"Verdana\" font-size=\"14\">{reason}</text></svg>\n"
    )
    .into_bytes()
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>, PprofError> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder
        .write_all(bytes)
        .and_then(|()| encoder.finish())
        .map_err(|error| PprofError::Encode(error.to_string()))
}

const HEAP_PROFILING_OFF: &str = "heap profiling is off: jemalloc must be the global allocator with \
     prof:true,prof_active:true (the catalogue binary's default; check MALLOC_CONF)";

/// The query string of the heap profile route.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeapQuery {
    format: Option<String>,
}

async fn heap_profile(Query(query): Query<HeapQuery>) -> Result<Response, PprofError> {
    let format = ProfileFormat::parse(query.format.as_deref())?;
    let control = jemalloc_pprof::PROF_CTL
        .as_ref()
        .ok_or(PprofError::Unsupported(HEAP_PROFILING_OFF))?;
    let mut control = Arc::clone(control).lock_owned().await;
    // Dumping while inactive "succeeds" with an empty profile: refuse instead.
    if !control.activated() {
        return Err(PprofError::Unsupported(HEAP_PROFILING_OFF));
    }
    let body = symbolise(move || match format {
        ProfileFormat::Pprof => {
            let gzipped = control.dump_pprof().map_err(PprofError::Heap)?;
            let mut profile = gunzip_profile(&gzipped)?;
            flag_symbolised_objects(&mut profile);
            let bytes = profile
                .write_to_bytes()
                .map_err(|error| PprofError::Encode(error.to_string()))?;
            gzip(&bytes)
        }
        ProfileFormat::Flamegraph => {
            let profile = control.dump_profile().map_err(PprofError::Heap)?;
            if profile.stacks.is_empty() {
                return Ok(nothing_sampled(
                    "no live allocation sampled (jemalloc samples one per 2 MiB allocated, on average)",
                ));
            }
            let mut options = jemalloc_pprof::FlamegraphOptions::default();
            options.title = "inuse_space".into();
            options.count_name = "bytes".into();
            profile.to_flamegraph(&mut options).map_err(PprofError::Heap)
        }
    })
    .await??;
    Ok(format.respond("heap", body))
}

/// Decodes a gzipped pprof protobuf, as jemalloc_pprof writes it.
fn gunzip_profile(gzipped: &[u8]) -> Result<pprof::protos::Profile, PprofError> {
    let mut bytes = Vec::new();
    GzDecoder::new(gzipped)
        .read_to_end(&mut bytes)
        .map_err(|error| PprofError::Heap(error.into()))?;
    pprof::protos::Profile::parse_from_bytes(&bytes).map_err(|error| PprofError::Heap(error.into()))
}

/// Gives every mapping of a binary the symbol flags (`has_functions`,
/// `has_filenames`, `has_line_numbers`, `has_inline_frames`) of any mapping
/// of that binary.
///
/// Why: jemalloc_pprof symbolises every location itself, full names and
/// inlined frames included, but writes one mapping per segment of each
/// binary, all spanning the whole address space with offset 0, and flags
/// only the executable segment's. `go tool pprof` merges a binary's mappings
/// into its first one, the unflagged read-only segment, so it takes the
/// binary for unsymbolised and symbolises it again with Go's own DWARF
/// reader, which names a function by `DW_AT_name` and knows no inlined
/// frames: `{async_block#2}`, `poll`, `call_once`, and no `before_call`.
fn flag_symbolised_objects(profile: &mut pprof::protos::Profile) {
    let mut flags: HashMap<(i64, i64), [bool; 4]> = HashMap::new();
    for mapping in &profile.mapping {
        let binary = flags
            .entry((mapping.filename, mapping.build_id))
            .or_default();
        binary[0] |= mapping.has_functions;
        binary[1] |= mapping.has_filenames;
        binary[2] |= mapping.has_line_numbers;
        binary[3] |= mapping.has_inline_frames;
    }
    for mapping in &mut profile.mapping {
        [
            mapping.has_functions,
            mapping.has_filenames,
            mapping.has_line_numbers,
            mapping.has_inline_frames,
        ] = flags[&(mapping.filename, mapping.build_id)];
    }
}

async fn task_dump(
    State(state): State<AdminState>,
    _: Query<super::NoQuery>,
) -> Result<String, PprofError> {
    let tasks = state.tasks.live().ok_or(PprofError::Unsupported(
        "the runtime was not built to list its tasks (TaskList::record)",
    ))?;
    Ok(render_tasks(&tasks))
}

/// The dump's text: how many tasks, how many were spawned where, then each
/// task, oldest first.
fn render_tasks(tasks: &[LiveTask]) -> String {
    use std::fmt::Write as _;
    let mut by_location: HashMap<String, usize> = HashMap::new();
    for task in tasks {
        *by_location.entry(task.spawned_at.to_string()).or_default() += 1;
    }
    let mut by_location: Vec<_> = by_location.into_iter().collect();
    by_location.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut text = format!(
        "{} tasks (from the runtime's spawn and terminate hooks: where each task waits is not traced)\n\nby spawn location:\n",
        tasks.len()
    );
    for (location, count) in by_location {
        let _ = writeln!(text, "{count:>7}  {location}");
    }
    text.push('\n');
    for task in tasks {
        let name = task
            .name
            .map(|name| format!(" {name:?}"))
            .unwrap_or_default();
        let _ = writeln!(
            text,
            "task {}{name}: spawned at {}, {:.1?} ago",
            task.id, task.spawned_at, task.age
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(seconds: Option<&str>, frequency: Option<&str>, format: Option<&str>) -> ProfileQuery {
        ProfileQuery {
            seconds: seconds.map(Into::into),
            frequency: frequency.map(Into::into),
            format: format.map(Into::into),
            rpc_method: None,
        }
    }

    const METHODS: &[&str] = &["GetProduct", "SearchProducts"];

    #[test]
    fn cpu_profile_defaults_to_30_seconds_at_99_hz_in_pprof() {
        let request = CpuProfileRequest::parse(&ProfileQuery::default(), METHODS).unwrap();
        assert_eq!(
            request,
            CpuProfileRequest {
                duration: Duration::from_secs(30),
                frequency: 99,
                format: ProfileFormat::Pprof,
                rpc_method: None,
            }
        );
    }

    #[test]
    fn cpu_profile_parameters_are_bounded() {
        for (seconds, frequency) in [
            (Some("0"), None),
            (Some("301"), None),
            (Some("abc"), None),
            (Some("-1"), None),
            (None, Some("0")),
            (None, Some("1001")),
        ] {
            let error =
                CpuProfileRequest::parse(&query(seconds, frequency, None), METHODS).unwrap_err();
            assert!(matches!(error, PprofError::BadRequest(_)), "{error}");
        }
        let request = CpuProfileRequest::parse(
            &query(Some("300"), Some("1000"), Some("flamegraph")),
            METHODS,
        )
        .unwrap();
        assert_eq!(request.duration, Duration::from_secs(300));
        assert_eq!(request.frequency, 1000);
        assert_eq!(request.format, ProfileFormat::Flamegraph);
    }

    #[test]
    fn process_cpu_is_utime_plus_stime_after_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (tokio (rt) worker) S 1 4242 4242 0 -1 4194560 2893 0 0 0 \
                    731 269 0 0 20 0 6 0 1234 0 0";

        let cpu = ProcessCpu::parse(stat).unwrap();

        assert_eq!(cpu, ProcessCpu(1000));
        assert_eq!(cpu.seconds_since(ProcessCpu(500)), 5.0);
        assert_eq!(ProcessCpu::parse("4242 (cut"), None);
    }

    #[test]
    fn coverage_is_sampled_over_used_and_absent_without_used_time() {
        let coverage = Coverage {
            sampled_seconds: 9.5,
            used_seconds: Some(10.0),
        };
        let mut headers = axum::http::HeaderMap::new();
        coverage.annotate(&mut headers);
        assert_eq!(headers[COVERAGE_HEADER], "0.950");
        assert_eq!(headers[CPU_SECONDS_HEADER], "sampled=9.50s used=10.00s");

        let idle = Coverage {
            sampled_seconds: 0.0,
            used_seconds: Some(0.0),
        };
        let mut headers = axum::http::HeaderMap::new();
        idle.annotate(&mut headers);
        assert!(headers.get(COVERAGE_HEADER).is_none());
    }

    #[test]
    fn rpc_method_is_one_of_the_served_methods() {
        let wanted = ProfileQuery {
            rpc_method: Some("SearchProducts".into()),
            ..ProfileQuery::default()
        };
        let request = CpuProfileRequest::parse(&wanted, METHODS).unwrap();
        assert_eq!(request.rpc_method, Some("SearchProducts"));

        let unknown = ProfileQuery {
            rpc_method: Some("searchproducts".into()),
            ..ProfileQuery::default()
        };
        let error = CpuProfileRequest::parse(&unknown, METHODS).unwrap_err();
        assert_eq!(
            error.to_string(),
            "rpc_method must be one of GetProduct, SearchProducts, got \"searchproducts\""
        );
    }

    #[test]
    fn every_mapping_of_a_binary_carries_the_flags_of_its_symbolised_segment() {
        let segment = |id, binary, symbolised| pprof::protos::Mapping {
            id,
            filename: binary,
            build_id: binary + 10,
            has_functions: symbolised,
            has_filenames: symbolised,
            has_line_numbers: symbolised,
            has_inline_frames: symbolised,
            ..Default::default()
        };
        let mut profile = pprof::protos::Profile {
            mapping: vec![
                segment(1, 1, false),
                segment(2, 1, true),
                segment(3, 2, false),
            ],
            ..Default::default()
        };

        flag_symbolised_objects(&mut profile);

        let flags: Vec<[bool; 4]> = profile
            .mapping
            .iter()
            .map(|mapping| {
                [
                    mapping.has_functions,
                    mapping.has_filenames,
                    mapping.has_line_numbers,
                    mapping.has_inline_frames,
                ]
            })
            .collect();
        assert_eq!(flags, [[true; 4], [true; 4], [false; 4]]);
    }

    #[test]
    fn unknown_format_is_refused_by_name() {
        let error = ProfileFormat::parse(Some("pdf")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "format must be pprof or flamegraph, got \"pdf\""
        );
    }
}
