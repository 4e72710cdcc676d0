//! The Tokio runtime builder with its poll-time histogram on, and the collector
//! that turns the runtime's, the RPC tasks' and the process's numbers into
//! metrics, and runs the scrape hooks the app hands it (the database pool,
//! the upstream's breaker).
//!
//! The collector runs on every scrape of `/metrics`, as Prometheus clients
//! collect: values are as fresh as the scrape and cost nothing between
//! scrapes. Tokio keeps cumulative counters; the collector copies them into
//! Prometheus counters with `absolute`, so `rate()` in PromQL gives
//! per-second values and nothing is lost between samples. What the metrics
//! crate cannot type (durations in seconds, Tokio's histograms, the
//! process's CPU seconds) it writes after the recorder's text, through
//! `exposition`.

use std::time::Duration;

use metrics::{Counter, Gauge};
use tokio::runtime::{Handle, HistogramConfiguration, LogHistogram, RuntimeMetrics};
use tokio_metrics::TaskMonitor;

use crate::metrics::{
    Metrics,
    exposition::Exposition,
    names::{self, Definition},
};

/// Run on every scrape, before rendering: sets the gauges of something
/// the collector does not know (registered with the app's `Metrics` when
/// that part was built).
pub type ScrapeHook = Box<dyn Fn() + Send + Sync>;

/// A multi-threaded runtime that records how long each poll takes and how
/// long each woken task waits to be polled, in log-scaled histograms from
/// 10 µs to 1 s.
///
/// Two buckets to a doubling (±50 %, bounds 1.5× and 1.33× apart), not
/// four: a worker copies every bucket of both histograms to the shared ones
/// each time it parks, which at a steady 10,000 calls/s is about every
/// other call. With 70 buckets each, that copy cost about 600 instructions
/// a call (callgrind); with 36, half. Still finer than the handling-time
/// histograms' buckets (2 to 2.5× apart).
pub fn runtime_builder() -> tokio::runtime::Builder {
    let histogram = || {
        HistogramConfiguration::log(
            LogHistogram::builder()
                .min_value(Duration::from_micros(10))
                .max_value(Duration::from_secs(1))
                .precision_exact(1),
        )
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    builder
        .enable_metrics_poll_time_histogram()
        .metrics_poll_time_histogram_configuration(histogram());
    #[cfg(tokio_unstable)]
    builder
        .enable_metrics_schedule_latency_histogram()
        .metrics_schedule_latency_histogram_configuration(histogram());
    builder
}

/// What the collector reads.
pub struct Collector {
    runtime: Handle,
    metrics: Metrics,
    hooks: Vec<ScrapeHook>,
    task_monitors: Vec<TaskHandles>,
    runtime_handles: Option<RuntimeHandles>,
}

impl Collector {
    /// `runtime_metrics` false samples only the hooks (and folds the
    /// histograms).
    pub fn new(
        runtime: Handle,
        metrics: Metrics,
        hooks: Vec<ScrapeHook>,
        task_monitors: Vec<(&'static str, &'static str, TaskMonitor)>,
        runtime_metrics: bool,
    ) -> Self {
        Self {
            runtime_handles: runtime_metrics.then(|| RuntimeHandles::new(&runtime, &metrics)),
            task_monitors: if runtime_metrics {
                task_monitors
                    .into_iter()
                    .map(|task| TaskHandles::new(task, &metrics))
                    .collect()
            } else {
                Vec::new()
            },
            runtime,
            hooks,
            metrics,
        }
    }

    /// Takes one sample of everything.
    pub fn sample(&self) {
        if let Some(runtime) = &self.runtime_handles {
            runtime.sample(&self.runtime);
            for task in &self.task_monitors {
                task.sample();
            }
        }
        for hook in &self.hooks {
            hook();
        }
        self.metrics.run_upkeep();
    }

    /// Samples, then renders the Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        self.sample();
        let mut text = self.metrics.render();
        if self.runtime_handles.is_some() {
            self.write_sampled(&mut Exposition::new(&mut text));
        }
        text
    }

    /// Samples, then renders OpenMetrics text with exemplars.
    pub(crate) fn render_openmetrics(&self) -> String {
        self.metrics.exemplars().openmetrics(&self.render())
    }

    /// The families the recorder cannot hold, read now.
    fn write_sampled(&self, exposition: &mut Exposition<'_>) {
        let tasks: Vec<_> = self
            .task_monitors
            .iter()
            .map(|task| (task.labels, task.monitor.cumulative()))
            .collect();
        let durations: [(&Definition, TaskDuration); 4] = [
            (&names::TASK_FIRST_POLL_DELAY_SECONDS, |task| {
                task.total_first_poll_delay
            }),
            (&names::TASK_SCHEDULED_SECONDS, |task| {
                task.total_scheduled_duration
            }),
            (&names::TASK_POLL_SECONDS, |task| task.total_poll_duration),
            (&names::TASK_IDLE_SECONDS, |task| task.total_idle_duration),
        ];
        for (family, duration) in durations {
            let mut family = exposition.counter(family);
            for (labels, task) in &tasks {
                family.sample(labels, duration(task).as_secs_f64());
            }
        }

        let metrics = self.runtime.metrics();
        let mut busy = exposition.counter(&names::RT_WORKER_BUSY_SECONDS);
        for worker in 0..metrics.num_workers() {
            let index = worker.to_string();
            busy.sample(
                &[("worker", &index)],
                metrics.worker_total_busy_duration(worker).as_secs_f64(),
            );
        }
        #[cfg(tokio_unstable)]
        write_histograms(&metrics, exposition);
        write_process(exposition);
    }
}

/// Which of a task monitor's totals a family holds.
type TaskDuration = fn(&tokio_metrics::TaskMetrics) -> Duration;

/// One of Tokio's per-worker histograms: its family and the runtime's
/// accessors for it.
#[cfg(tokio_unstable)]
struct WorkerHistogram {
    family: &'static Definition,
    enabled: fn(&RuntimeMetrics) -> bool,
    buckets: fn(&RuntimeMetrics) -> usize,
    upper: fn(&RuntimeMetrics, usize) -> Duration,
    count: fn(&RuntimeMetrics, usize, usize) -> u64,
}

/// Tokio's poll-time and schedule-latency histograms.
#[cfg(tokio_unstable)]
const WORKER_HISTOGRAMS: [WorkerHistogram; 2] = [
    WorkerHistogram {
        family: &names::RT_POLL_TIME,
        enabled: RuntimeMetrics::poll_time_histogram_enabled,
        buckets: RuntimeMetrics::poll_time_histogram_num_buckets,
        upper: |metrics, bucket| metrics.poll_time_histogram_bucket_range(bucket).end,
        count: RuntimeMetrics::poll_time_histogram_bucket_count,
    },
    WorkerHistogram {
        family: &names::RT_SCHEDULE_LATENCY,
        enabled: RuntimeMetrics::schedule_latency_histogram_enabled,
        buckets: RuntimeMetrics::schedule_latency_histogram_num_buckets,
        upper: |metrics, bucket| metrics.schedule_latency_histogram_bucket_range(bucket).end,
        count: RuntimeMetrics::schedule_latency_histogram_bucket_count,
    },
];

/// Each enabled worker histogram as one series: each bucket's count summed
/// over workers, the last bucket (which Tokio leaves open) `+Inf`.
#[cfg(tokio_unstable)]
fn write_histograms(metrics: &RuntimeMetrics, exposition: &mut Exposition<'_>) {
    for histogram in WORKER_HISTOGRAMS.iter().filter(|h| (h.enabled)(metrics)) {
        let buckets = (histogram.buckets)(metrics);
        exposition.histogram(
            histogram.family,
            (0..buckets).map(|bucket| {
                let end = (histogram.upper)(metrics, bucket);
                let open = bucket + 1 == buckets || end == Duration::MAX;
                let total = (0..metrics.num_workers())
                    .map(|worker| (histogram.count)(metrics, worker, bucket))
                    .sum();
                ((!open).then_some(end.as_secs_f64()), total)
            }),
        );
    }
}

/// The standard process metrics, from `/proc`.
fn write_process(exposition: &mut Exposition<'_>) {
    let process = metrics_process::collector::collect();
    if let Some(cpu) = process.cpu_seconds_total {
        exposition
            .counter(&names::PROCESS_CPU_SECONDS)
            .sample(&[], cpu);
    }
    let gauges = [
        (&names::PROCESS_OPEN_FDS, process.open_fds),
        (&names::PROCESS_MAX_FDS, process.max_fds),
        (&names::PROCESS_VIRTUAL_MEMORY, process.virtual_memory_bytes),
        (
            &names::PROCESS_VIRTUAL_MEMORY_MAX,
            process.virtual_memory_max_bytes,
        ),
        (
            &names::PROCESS_RESIDENT_MEMORY,
            process.resident_memory_bytes,
        ),
        (&names::PROCESS_START_TIME, process.start_time_seconds),
        (&names::PROCESS_THREADS, process.threads),
    ];
    for (family, value) in gauges {
        if let Some(value) = value {
            exposition.gauge(family).sample(&[], value as f64);
        }
    }
}

struct TaskHandles {
    monitor: TaskMonitor,
    labels: [(&'static str, &'static str); 2],
    instrumented: Counter,
    scheduled: Counter,
    long_delays: Counter,
    polls: Counter,
    slow_polls: Counter,
}

impl TaskHandles {
    fn new(
        (service, method, monitor): (&'static str, &'static str, TaskMonitor),
        metrics: &Metrics,
    ) -> Self {
        let labels = [("grpc_service", service), ("grpc_method", method)];
        Self {
            monitor,
            labels,
            instrumented: metrics.counter(&names::TASK_INSTRUMENTED, &labels),
            scheduled: metrics.counter(&names::TASK_SCHEDULED, &labels),
            long_delays: metrics.counter(&names::TASK_LONG_DELAYS, &labels),
            polls: metrics.counter(&names::TASK_POLLS, &labels),
            slow_polls: metrics.counter(&names::TASK_SLOW_POLLS, &labels),
        }
    }

    fn sample(&self) {
        let task = self.monitor.cumulative();
        self.instrumented.absolute(task.instrumented_count);
        self.scheduled.absolute(task.total_scheduled_count);
        self.long_delays.absolute(task.total_long_delay_count);
        self.polls.absolute(task.total_poll_count);
        self.slow_polls.absolute(task.total_slow_poll_count);
    }
}

/// Handles for the runtime-wide and per-worker metrics, made once.
struct RuntimeHandles {
    workers: Gauge,
    alive_tasks: Gauge,
    global_queue_depth: Gauge,
    per_worker: Vec<WorkerHandles>,
    #[cfg(tokio_unstable)]
    unstable: UnstableHandles,
}

struct WorkerHandles {
    parks: Counter,
    park_unparks: Counter,
    #[cfg(tokio_unstable)]
    unstable: UnstableWorkerHandles,
}

/// A worker's handles for the metrics only `tokio_unstable` has.
#[cfg(tokio_unstable)]
struct UnstableWorkerHandles {
    polls: Counter,
    noops: Counter,
    steals: Counter,
    steal_operations: Counter,
    overflows: Counter,
    local_schedules: Counter,
    local_queue_depth: Gauge,
    mean_poll_seconds: Gauge,
}

#[cfg(tokio_unstable)]
struct UnstableHandles {
    spawned_tasks: Counter,
    remote_schedules: Counter,
    budget_forced_yields: Counter,
    blocking_threads: Gauge,
    idle_blocking_threads: Gauge,
    blocking_queue_depth: Gauge,
    io_ready_events: Counter,
    io_fd_registered: Counter,
    io_fd_deregistered: Counter,
}

impl RuntimeHandles {
    fn new(runtime: &Handle, metrics: &Metrics) -> Self {
        let per_worker = (0..runtime.metrics().num_workers())
            .map(|worker| {
                let worker = worker.to_string();
                let labels = [("worker", worker.as_str())];
                WorkerHandles {
                    parks: metrics.counter(&names::RT_WORKER_PARKS, &labels),
                    park_unparks: metrics.counter(&names::RT_WORKER_PARK_UNPARKS, &labels),
                    #[cfg(tokio_unstable)]
                    unstable: UnstableWorkerHandles::new(&labels, metrics),
                }
            })
            .collect();
        Self {
            workers: metrics.gauge(&names::RT_WORKERS, &[]),
            alive_tasks: metrics.gauge(&names::RT_ALIVE_TASKS, &[]),
            global_queue_depth: metrics.gauge(&names::RT_GLOBAL_QUEUE_DEPTH, &[]),
            per_worker,
            #[cfg(tokio_unstable)]
            unstable: UnstableHandles::new(metrics),
        }
    }

    fn sample(&self, runtime: &Handle) {
        let metrics = runtime.metrics();
        self.workers.set(metrics.num_workers() as f64);
        self.alive_tasks.set(metrics.num_alive_tasks() as f64);
        self.global_queue_depth
            .set(metrics.global_queue_depth() as f64);
        for (worker, handles) in self.per_worker.iter().enumerate() {
            handles.parks.absolute(metrics.worker_park_count(worker));
            handles
                .park_unparks
                .absolute(metrics.worker_park_unpark_count(worker));
            #[cfg(tokio_unstable)]
            handles.unstable.sample(&metrics, worker);
        }
        #[cfg(tokio_unstable)]
        self.unstable.sample(&metrics);
    }
}

#[cfg(tokio_unstable)]
impl UnstableWorkerHandles {
    fn new(labels: &[(&'static str, &str)], metrics: &Metrics) -> Self {
        Self {
            polls: metrics.counter(&names::RT_WORKER_POLLS, labels),
            noops: metrics.counter(&names::RT_WORKER_NOOPS, labels),
            steals: metrics.counter(&names::RT_WORKER_STEALS, labels),
            steal_operations: metrics.counter(&names::RT_WORKER_STEAL_OPERATIONS, labels),
            overflows: metrics.counter(&names::RT_WORKER_OVERFLOWS, labels),
            local_schedules: metrics.counter(&names::RT_WORKER_LOCAL_SCHEDULES, labels),
            local_queue_depth: metrics.gauge(&names::RT_WORKER_LOCAL_QUEUE_DEPTH, labels),
            mean_poll_seconds: metrics.gauge(&names::RT_WORKER_MEAN_POLL_SECONDS, labels),
        }
    }

    fn sample(&self, metrics: &tokio::runtime::RuntimeMetrics, worker: usize) {
        self.polls.absolute(metrics.worker_poll_count(worker));
        self.noops.absolute(metrics.worker_noop_count(worker));
        self.steals.absolute(metrics.worker_steal_count(worker));
        self.steal_operations
            .absolute(metrics.worker_steal_operations(worker));
        self.overflows
            .absolute(metrics.worker_overflow_count(worker));
        self.local_schedules
            .absolute(metrics.worker_local_schedule_count(worker));
        self.local_queue_depth
            .set(metrics.worker_local_queue_depth(worker) as f64);
        self.mean_poll_seconds
            .set(metrics.worker_mean_poll_time(worker).as_secs_f64());
    }
}

#[cfg(tokio_unstable)]
impl UnstableHandles {
    fn new(metrics: &Metrics) -> Self {
        Self {
            spawned_tasks: metrics.counter(&names::RT_SPAWNED_TASKS, &[]),
            remote_schedules: metrics.counter(&names::RT_REMOTE_SCHEDULES, &[]),
            budget_forced_yields: metrics.counter(&names::RT_BUDGET_FORCED_YIELDS, &[]),
            blocking_threads: metrics.gauge(&names::RT_BLOCKING_THREADS, &[]),
            idle_blocking_threads: metrics.gauge(&names::RT_IDLE_BLOCKING_THREADS, &[]),
            blocking_queue_depth: metrics.gauge(&names::RT_BLOCKING_QUEUE_DEPTH, &[]),
            io_ready_events: metrics.counter(&names::RT_IO_READY_EVENTS, &[]),
            io_fd_registered: metrics.counter(&names::RT_IO_FD_REGISTERED, &[]),
            io_fd_deregistered: metrics.counter(&names::RT_IO_FD_DEREGISTERED, &[]),
        }
    }

    fn sample(&self, metrics: &tokio::runtime::RuntimeMetrics) {
        self.spawned_tasks.absolute(metrics.spawned_tasks_count());
        self.remote_schedules
            .absolute(metrics.remote_schedule_count());
        self.budget_forced_yields
            .absolute(metrics.budget_forced_yield_count());
        self.blocking_threads
            .set(metrics.num_blocking_threads() as f64);
        self.idle_blocking_threads
            .set(metrics.num_idle_blocking_threads() as f64);
        self.blocking_queue_depth
            .set(metrics.blocking_queue_depth() as f64);
        self.io_ready_events
            .absolute(metrics.io_driver_ready_count());
        self.io_fd_registered
            .absolute(metrics.io_driver_fd_registered_count());
        self.io_fd_deregistered
            .absolute(metrics.io_driver_fd_deregistered_count());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two buckets to a doubling from 10 µs to 1 s: no two bounds more
    /// than 1.5× apart, and no more buckets than that takes.
    #[test]
    fn the_runtime_histograms_have_two_buckets_to_a_doubling() {
        let runtime = runtime_builder().worker_threads(1).build().unwrap();
        let metrics = runtime.metrics();
        let buckets = metrics.poll_time_histogram_num_buckets();
        let bound = |bucket| metrics.poll_time_histogram_bucket_range(bucket).end;
        assert!(bound(0) <= Duration::from_micros(10));
        assert!(bound(buckets - 2) >= Duration::from_secs(1));
        for bucket in 1..buckets - 1 {
            let ratio = bound(bucket).as_secs_f64() / bound(bucket - 1).as_secs_f64();
            assert!(ratio <= 1.5, "bucket {bucket} is {ratio}× the one before");
        }
        assert_eq!(
            buckets, 36,
            "2 × 17 doublings from 8 µs to 1.07 s, and the two ends"
        );
    }
}
