//! The Tokio runtime builder with its poll-time histogram on, and the sampler
//! that turns the runtime's, the RPC tasks' and the process's numbers into
//! metrics, and runs the scrape hooks the app hands it (the database pool,
//! the upstream's breaker).
//!
//! The sampler runs on every scrape of `/metrics`, as Prometheus clients
//! collect: values are as fresh as the scrape and cost nothing between
//! scrapes. Tokio keeps cumulative counters; the sampler copies them into
//! Prometheus counters with `absolute`, so `rate()` in PromQL gives
//! per-second values and nothing is lost between samples.

use std::time::Duration;

use metrics::{Counter, Gauge, counter, gauge};
use tokio::runtime::{Handle, HistogramConfiguration, LogHistogram};
use tokio_metrics::TaskMonitor;

use super::{Metrics, names};

/// Run on every scrape, before rendering: sets the gauges of something
/// telemetry does not know (it registers them when built, inside
/// `Metrics::scope`).
pub type ScrapeHook = Box<dyn Fn() + Send + Sync>;

/// A multi-threaded runtime that records how long each poll takes, in a
/// log-scaled histogram from 10 µs to 1 s (±25 %).
pub fn runtime_builder() -> tokio::runtime::Builder {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    builder
        .enable_metrics_poll_time_histogram()
        .metrics_poll_time_histogram_configuration(HistogramConfiguration::log(
            LogHistogram::builder()
                .min_value(Duration::from_micros(10))
                .max_value(Duration::from_secs(1))
                .max_error(0.25),
        ));
    builder
}

/// What the sampler reads.
pub struct Sampler {
    runtime: Handle,
    metrics: Metrics,
    hooks: Vec<ScrapeHook>,
    task_monitors: Vec<TaskHandles>,
    runtime_handles: Option<RuntimeHandles>,
    process: metrics_process::Collector,
}

impl Sampler {
    /// `runtime_metrics` false samples only the hooks (and folds the
    /// histograms).
    pub fn new(
        runtime: Handle,
        metrics: Metrics,
        hooks: Vec<ScrapeHook>,
        task_monitors: Vec<(&'static str, &'static str, TaskMonitor)>,
        runtime_metrics: bool,
    ) -> Self {
        let process = metrics_process::Collector::default();
        metrics.scope(|| {
            process.describe();
            Self {
                runtime_handles: runtime_metrics.then(|| RuntimeHandles::new(&runtime)),
                task_monitors: if runtime_metrics {
                    task_monitors.into_iter().map(TaskHandles::new).collect()
                } else {
                    Vec::new()
                },
                runtime,
                hooks,
                process,
                metrics: metrics.clone(),
            }
        })
    }

    /// Takes one sample of everything.
    pub fn sample(&self) {
        if let Some(runtime) = &self.runtime_handles {
            runtime.sample(&self.runtime);
            for task in &self.task_monitors {
                task.sample();
            }
            // It looks its handles up on every collection.
            self.metrics.scope(|| self.process.collect());
        }
        for hook in &self.hooks {
            hook();
        }
        self.metrics.run_upkeep();
    }

    /// Samples, then renders the Prometheus text exposition.
    pub fn render(&self) -> String {
        self.sample();
        self.metrics.render()
    }
}

struct TaskHandles {
    monitor: TaskMonitor,
    instrumented: Counter,
    first_poll_delay: Counter,
    scheduled: Counter,
    scheduled_micros: Counter,
    long_delays: Counter,
    polls: Counter,
    poll_micros: Counter,
    slow_polls: Counter,
    idle_micros: Counter,
}

impl TaskHandles {
    fn new((service, method, monitor): (&'static str, &'static str, TaskMonitor)) -> Self {
        let labels = [("grpc_service", service), ("grpc_method", method)];
        Self {
            monitor,
            instrumented: counter!(names::TASK_INSTRUMENTED, &labels),
            first_poll_delay: counter!(names::TASK_FIRST_POLL_DELAY_MICROS, &labels),
            scheduled: counter!(names::TASK_SCHEDULED, &labels),
            scheduled_micros: counter!(names::TASK_SCHEDULED_MICROS, &labels),
            long_delays: counter!(names::TASK_LONG_DELAYS, &labels),
            polls: counter!(names::TASK_POLLS, &labels),
            poll_micros: counter!(names::TASK_POLL_MICROS, &labels),
            slow_polls: counter!(names::TASK_SLOW_POLLS, &labels),
            idle_micros: counter!(names::TASK_IDLE_MICROS, &labels),
        }
    }

    fn sample(&self) {
        let task = self.monitor.cumulative();
        self.instrumented.absolute(task.instrumented_count);
        self.first_poll_delay
            .absolute(micros(task.total_first_poll_delay));
        self.scheduled.absolute(task.total_scheduled_count);
        self.scheduled_micros
            .absolute(micros(task.total_scheduled_duration));
        self.long_delays.absolute(task.total_long_delay_count);
        self.polls.absolute(task.total_poll_count);
        self.poll_micros.absolute(micros(task.total_poll_duration));
        self.slow_polls.absolute(task.total_slow_poll_count);
        self.idle_micros.absolute(micros(task.total_idle_duration));
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
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
    busy_micros: Counter,
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
    /// One counter per histogram bucket, labelled with its upper bound.
    poll_time_buckets: Vec<Counter>,
}

impl RuntimeHandles {
    fn new(runtime: &Handle) -> Self {
        let metrics = runtime.metrics();
        let per_worker = (0..metrics.num_workers())
            .map(|worker| {
                let labels = [("worker", worker.to_string())];
                WorkerHandles {
                    busy_micros: counter!(names::RT_WORKER_BUSY_MICROS, &labels),
                    parks: counter!(names::RT_WORKER_PARKS, &labels),
                    park_unparks: counter!(names::RT_WORKER_PARK_UNPARKS, &labels),
                    #[cfg(tokio_unstable)]
                    unstable: UnstableWorkerHandles::new(&labels),
                }
            })
            .collect();
        Self {
            workers: gauge!(names::RT_WORKERS),
            alive_tasks: gauge!(names::RT_ALIVE_TASKS),
            global_queue_depth: gauge!(names::RT_GLOBAL_QUEUE_DEPTH),
            per_worker,
            #[cfg(tokio_unstable)]
            unstable: UnstableHandles::new(runtime),
        }
    }

    fn sample(&self, runtime: &Handle) {
        let metrics = runtime.metrics();
        self.workers.set(metrics.num_workers() as f64);
        self.alive_tasks.set(metrics.num_alive_tasks() as f64);
        self.global_queue_depth
            .set(metrics.global_queue_depth() as f64);
        for (worker, handles) in self.per_worker.iter().enumerate() {
            handles
                .busy_micros
                .absolute(micros(metrics.worker_total_busy_duration(worker)));
            handles.parks.absolute(metrics.worker_park_count(worker));
            handles
                .park_unparks
                .absolute(metrics.worker_park_unpark_count(worker));
            #[cfg(tokio_unstable)]
            handles.unstable.sample(&metrics, worker);
        }
        #[cfg(tokio_unstable)]
        self.unstable.sample(&metrics, self.per_worker.len());
    }
}

#[cfg(tokio_unstable)]
impl UnstableWorkerHandles {
    fn new(labels: &[(&'static str, String)]) -> Self {
        Self {
            polls: counter!(names::RT_WORKER_POLLS, labels),
            noops: counter!(names::RT_WORKER_NOOPS, labels),
            steals: counter!(names::RT_WORKER_STEALS, labels),
            steal_operations: counter!(names::RT_WORKER_STEAL_OPERATIONS, labels),
            overflows: counter!(names::RT_WORKER_OVERFLOWS, labels),
            local_schedules: counter!(names::RT_WORKER_LOCAL_SCHEDULES, labels),
            local_queue_depth: gauge!(names::RT_WORKER_LOCAL_QUEUE_DEPTH, labels),
            mean_poll_seconds: gauge!(names::RT_WORKER_MEAN_POLL_SECONDS, labels),
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
    fn new(runtime: &Handle) -> Self {
        let metrics = runtime.metrics();
        let poll_time_buckets = if metrics.poll_time_histogram_enabled() {
            (0..metrics.poll_time_histogram_num_buckets())
                .map(|bucket| {
                    let upper = metrics.poll_time_histogram_bucket_range(bucket).end;
                    let le = if upper == Duration::MAX
                        || bucket + 1 == metrics.poll_time_histogram_num_buckets()
                    {
                        "+Inf".to_owned()
                    } else {
                        format!("{}", upper.as_secs_f64())
                    };
                    counter!(names::RT_POLL_TIME_BUCKET, "le" => le)
                })
                .collect()
        } else {
            Vec::new()
        };
        Self {
            spawned_tasks: counter!(names::RT_SPAWNED_TASKS),
            remote_schedules: counter!(names::RT_REMOTE_SCHEDULES),
            budget_forced_yields: counter!(names::RT_BUDGET_FORCED_YIELDS),
            blocking_threads: gauge!(names::RT_BLOCKING_THREADS),
            idle_blocking_threads: gauge!(names::RT_IDLE_BLOCKING_THREADS),
            blocking_queue_depth: gauge!(names::RT_BLOCKING_QUEUE_DEPTH),
            io_ready_events: counter!(names::RT_IO_READY_EVENTS),
            io_fd_registered: counter!(names::RT_IO_FD_REGISTERED),
            io_fd_deregistered: counter!(names::RT_IO_FD_DEREGISTERED),
            poll_time_buckets,
        }
    }

    fn sample(&self, metrics: &tokio::runtime::RuntimeMetrics, workers: usize) {
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
        let mut cumulative = 0;
        for (bucket, counter) in self.poll_time_buckets.iter().enumerate() {
            cumulative += (0..workers)
                .map(|worker| metrics.poll_time_histogram_bucket_count(worker, bucket))
                .sum::<u64>();
            counter.absolute(cumulative);
        }
    }
}
