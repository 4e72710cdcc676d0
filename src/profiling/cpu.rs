//! A CPU profile: which code the process ran over a window, each sample
//! named by the call it was taken in, and how much of the process's CPU
//! time the samples account for.
//!
//! Only one CPU profile runs at a time (the sampler, SIGPROF and one global
//! collector, is process-wide); a second gets [`ProfileError::Busy`].
//! Sampling only awaits a timer, and symbolisation, which is CPU-heavy,
//! runs on the blocking pool, so profiling never stalls the runtime's
//! workers; the parsed debug info is dropped after each profile
//! (`profiling::memory`).

use std::{collections::HashMap, time::Duration};

use pprof::protos::Message;
use tokio::sync::Semaphore;

use super::{
    ProfileError, ProfileFormat,
    encode::{gzip, nothing_sampled},
    labels::{CallLabel, LabelTable, Labelled, Labelling},
    memory::symbolise,
    process::ProcessCpu,
};

/// The CPU sampler exists once per process, so the gate is process-wide
/// too, not per app.
static CPU_PROFILER: Semaphore = Semaphore::const_new(1);

/// The pprof label keys of a sample taken in a call.
pub(crate) const RPC_SERVICE_LABEL: &str = "rpc_service";
pub(crate) const RPC_METHOD_LABEL: &str = "rpc_method";
pub(crate) const TRACE_ID_LABEL: &str = "trace_id";
pub(crate) const SPAN_ID_LABEL: &str = "span_id";

/// What to profile, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuProfileRequest {
    pub duration: Duration,
    /// Samples per second of CPU time.
    pub frequency: i32,
    pub format: ProfileFormat,
    /// Only the samples of this method's calls (`None`: every sample).
    pub rpc_method: Option<&'static str>,
}

/// A profile, encoded, and its coverage.
#[derive(Debug)]
pub struct CpuProfile {
    pub body: Vec<u8>,
    pub coverage: Coverage,
}

/// Samples the process for `request.duration`, then builds the report on
/// the blocking pool. `labels`: the app whose calls the samples are named
/// by. If the future is dropped (the client went away), sampling stops.
pub async fn profile(
    request: CpuProfileRequest,
    labels: LabelTable,
) -> Result<CpuProfile, ProfileError> {
    let permit = CPU_PROFILER.try_acquire().map_err(|_| ProfileError::Busy)?;
    // Building resolves a backtrace first (loading the debug info, most of
    // a second of CPU), then starts the timer: the window starts here.
    let profiler = pprof::ProfilerGuardBuilder::default()
        .frequency(request.frequency)
        .build()?;
    let labelling = Labelling::start();
    let used_before = ProcessCpu::read();
    // SIGPROF samples whichever thread is on the CPU; this task only waits.
    tokio::time::sleep(request.duration).await;
    let profile = symbolise(move || {
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
                    .map_err(|error| ProfileError::Encode(error.to_string()))?;
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
        Ok(CpuProfile { body, coverage })
    })
    .await?;
    // Held until the memory symbolising took is given back too, so a
    // second profile's sample table never stacks on the first one's debug
    // info.
    drop(permit);
    profile
}

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

/// The CPU time the samples of a profile stand for, against the time the
/// process used (`utime + stime` of `/proc/self/stat`) over the same window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coverage {
    pub sampled_seconds: f64,
    /// `None` when the process's CPU time could not be read.
    pub used_seconds: Option<f64>,
}

impl Coverage {
    /// Counts the samples taken so far: each stands for `1 / frequency`
    /// seconds of the process's CPU time (`ITIMER_PROF`).
    fn measure(
        profiler: &pprof::ProfilerGuard<'_>,
        frequency: i32,
        used_before: Option<ProcessCpu>,
    ) -> Result<Self, ProfileError> {
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

    /// The share of the used time the samples account for; `None` when
    /// the used time is unknown or zero.
    pub fn ratio(&self) -> Option<f64> {
        self.used_seconds
            .filter(|used| *used > 0.0)
            .map(|used| self.sampled_seconds / used)
    }
}
