//! Every metric, defined once: its name, kind, unit, help text and label
//! names. The constants the code records with and the descriptions the
//! recorder renders both come from the one table below (`families!`), so a
//! name is never written twice. Dashboards and alert rules depend on these
//! names: change one and the dashboard tests fail.

use metrics::Unit;

/// How a family is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    /// Written straight into the exposition at scrape time (`exposition`),
    /// never through the recorder.
    Sampled,
}

/// One metric family.
#[derive(Debug)]
pub struct Definition {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<Unit>,
    pub help: &'static str,
    /// The names of its labels, in the order its handles give them.
    pub labels: &'static [&'static str],
}

/// `CONST = Kind "name" ["label", …] [in Unit]: "help";` for each family,
/// and `ALL`, every one of them.
macro_rules! families {
    ($(
        $(#[$doc:meta])*
        $konst:ident = $kind:ident $name:literal [$($label:literal),*] $(in $unit:ident)?: $help:literal;
    )*) => {
        $(
            $(#[$doc])*
            pub const $konst: Definition = Definition {
                name: $name,
                kind: Kind::$kind,
                unit: families!(@unit $($unit)?),
                help: $help,
                labels: &[$($label),*],
            };
        )*
        /// Every family, in the order above.
        pub const ALL: &[&Definition] = &[$(&$konst),*];
    };
    (@unit) => { None };
    (@unit $unit:ident) => { Some(Unit::$unit) };
}

families! {
    // gRPC server, go-grpc-prometheus names (labels: grpc_type, grpc_service,
    // grpc_method, and grpc_code on the handled ones).
    GRPC_STARTED = Counter "grpc_server_started_total" ["grpc_type", "grpc_service", "grpc_method"]:
        "RPCs started on the server";
    GRPC_HANDLED = Counter "grpc_server_handled_total" ["grpc_type", "grpc_service", "grpc_method", "grpc_code"]:
        "RPCs completed on the server, by status code";
    GRPC_MSG_RECEIVED = Counter "grpc_server_msg_received_total" ["grpc_type", "grpc_service", "grpc_method"]:
        "gRPC messages received from clients";
    GRPC_MSG_SENT = Counter "grpc_server_msg_sent_total" ["grpc_type", "grpc_service", "grpc_method"]:
        "gRPC messages sent to clients";
    GRPC_HANDLING_SECONDS = Histogram "grpc_server_handling_seconds" ["grpc_type", "grpc_service", "grpc_method", "grpc_code"] in Seconds:
        "time from the request's arrival to the end of the response";
    GRPC_IN_FLIGHT = Gauge "grpc_server_in_flight_requests" ["grpc_service", "grpc_method"]:
        "RPCs being handled now";
    // The OpenTelemetry name of the same histogram (labels: rpc_system,
    // rpc_service, rpc_method, rpc_grpc_status_code).
    RPC_SERVER_DURATION = Histogram "rpc_server_call_duration_seconds" ["rpc_system", "rpc_service", "rpc_method", "rpc_grpc_status_code"] in Seconds:
        "rpc.server.call.duration: duration of inbound RPCs (OpenTelemetry semantic conventions)";
    // Server streams (labels: grpc_service, grpc_method).
    STREAMS_ACTIVE = Gauge "grpc_server_streams_active" ["grpc_service", "grpc_method"]:
        "server streams open now";
    STREAM_MESSAGES = Histogram "grpc_server_stream_messages" ["grpc_service", "grpc_method"]:
        "messages sent per server stream";
    STREAM_FIRST_MESSAGE_SECONDS = Histogram "grpc_server_stream_first_message_seconds" ["grpc_service", "grpc_method"] in Seconds:
        "time from a stream's request to its first message";
    STREAM_BLOCKED_SECONDS = Histogram "grpc_server_stream_blocked_seconds" ["grpc_service", "grpc_method"] in Seconds:
        "time each server stream waited for its reader (HTTP/2 flow control)";
    STREAM_CANCELLED = Counter "grpc_server_stream_cancelled_total" ["grpc_service", "grpc_method"]:
        "server streams the client cancelled or abandoned before the end";
    STREAM_DURATION_SECONDS = Histogram "grpc_server_stream_duration_seconds" ["grpc_service", "grpc_method"] in Seconds:
        "server stream lifetime";
    // Per-RPC task metrics from tokio-metrics' TaskMonitor (labels: grpc_service,
    // grpc_method). Their durations are `Sampled` families below: the metrics
    // crate's counters are integers, and these are seconds.
    TASK_INSTRUMENTED = Counter "tokio_task_instrumented_total" ["grpc_service", "grpc_method"]:
        "RPC futures instrumented by the task monitor";
    TASK_SCHEDULED = Counter "tokio_task_scheduled_total" ["grpc_service", "grpc_method"]:
        "times an RPC future was woken and waited for a worker";
    TASK_LONG_DELAYS = Counter "tokio_task_long_delays_total" ["grpc_service", "grpc_method"]:
        "scheduling delays longer than the long-delay threshold";
    TASK_POLLS = Counter "tokio_task_polls_total" ["grpc_service", "grpc_method"]:
        "polls of RPC futures";
    TASK_SLOW_POLLS = Counter "tokio_task_slow_polls_total" ["grpc_service", "grpc_method"]:
        "polls of RPC futures longer than the slow-poll threshold";
    // Tokio runtime (per worker: label `worker`).
    RT_WORKERS = Gauge "tokio_workers" []:
        "Tokio worker threads";
    RT_ALIVE_TASKS = Gauge "tokio_alive_tasks" []:
        "Tokio tasks alive now";
    RT_SPAWNED_TASKS = Counter "tokio_spawned_tasks_total" []:
        "Tokio tasks spawned";
    RT_GLOBAL_QUEUE_DEPTH = Gauge "tokio_global_queue_depth" []:
        "tasks in the global (injection) queue";
    RT_REMOTE_SCHEDULES = Counter "tokio_remote_schedules_total" []:
        "tasks scheduled from outside the runtime's workers";
    RT_BUDGET_FORCED_YIELDS = Counter "tokio_budget_forced_yields_total" []:
        "tasks forced to yield after exhausting their cooperative budget";
    RT_BLOCKING_THREADS = Gauge "tokio_blocking_threads" []:
        "threads in the blocking pool";
    RT_IDLE_BLOCKING_THREADS = Gauge "tokio_idle_blocking_threads" []:
        "idle threads in the blocking pool";
    RT_BLOCKING_QUEUE_DEPTH = Gauge "tokio_blocking_queue_depth" []:
        "tasks waiting for a blocking-pool thread";
    RT_IO_READY_EVENTS = Counter "tokio_io_driver_ready_events_total" []:
        "I/O readiness events the I/O driver processed";
    RT_IO_FD_REGISTERED = Counter "tokio_io_driver_fd_registered_total" []:
        "file descriptors registered with the I/O driver";
    RT_IO_FD_DEREGISTERED = Counter "tokio_io_driver_fd_deregistered_total" []:
        "file descriptors deregistered from the I/O driver";
    RT_WORKER_PARKS = Counter "tokio_worker_parks_total" ["worker"]:
        "times each worker parked (found no work)";
    RT_WORKER_PARK_UNPARKS = Counter "tokio_worker_park_unparks_total" ["worker"]:
        "park and unpark transitions of each worker";
    RT_WORKER_POLLS = Counter "tokio_worker_polls_total" ["worker"]:
        "tasks polled by each worker";
    RT_WORKER_NOOPS = Counter "tokio_worker_noops_total" ["worker"]:
        "times each worker unparked and found no work";
    RT_WORKER_STEALS = Counter "tokio_worker_steals_total" ["worker"]:
        "tasks each worker stole from other workers";
    RT_WORKER_STEAL_OPERATIONS = Counter "tokio_worker_steal_operations_total" ["worker"]:
        "steal operations by each worker";
    RT_WORKER_OVERFLOWS = Counter "tokio_worker_overflows_total" ["worker"]:
        "times each worker's local queue overflowed into the global queue";
    RT_WORKER_LOCAL_SCHEDULES = Counter "tokio_worker_local_schedules_total" ["worker"]:
        "tasks each worker scheduled onto its own local queue";
    RT_WORKER_LOCAL_QUEUE_DEPTH = Gauge "tokio_worker_local_queue_depth" ["worker"]:
        "tasks in each worker's local run queue";
    RT_WORKER_MEAN_POLL_SECONDS = Gauge "tokio_worker_mean_poll_seconds" ["worker"] in Seconds:
        "each worker's moving average of task poll time";
    // Store (labels: db_system, operation, outcome; pool: db_system, state).
    STORE_QUERY_SECONDS = Histogram "catalogue_store_query_duration_seconds" ["db_system", "operation", "outcome"] in Seconds:
        "store call duration by operation";
    STORE_POOL_CONNECTIONS = Gauge "catalogue_store_pool_connections" ["db_system", "state"]:
        "database pool connections by state (idle, in_use)";
    STORE_POOL_MAX = Gauge "catalogue_store_pool_max_connections" ["db_system"]:
        "database pool size limit";
    // Inventory upstream and overload protection.
    /// Upstream stock lookups by outcome (ok, or the reason it degraded:
    /// breaker_open, bulkhead_full, no_time_left, timeout, error).
    UPSTREAM_CALLS = Counter "catalogue_upstream_requests_total" ["outcome"]:
        "inventory upstream lookups by outcome: ok or why stock was served stale";
    /// Upstream call latency (label: outcome ok/failed).
    UPSTREAM_SECONDS = Histogram "catalogue_upstream_request_duration_seconds" ["outcome"] in Seconds:
        "inventory upstream call duration";
    UPSTREAM_IN_FLIGHT = Gauge "catalogue_upstream_in_flight_requests" []:
        "inventory upstream calls in flight (bounded by the bulkhead)";
    /// 0 closed, 1 half-open, 2 open.
    UPSTREAM_CIRCUIT_STATE = Gauge "catalogue_upstream_circuit_state" []:
        "upstream circuit breaker state: 0 closed, 1 half-open, 2 open";
    /// `--max-concurrent-calls`, as the shed layer was built with it.
    MAX_CONCURRENT_CALLS = Gauge "catalogue_max_concurrent_calls" []:
        "the most calls served at once (--max-concurrent-calls); more are refused";
    /// Calls refused at once by the server (label: reason).
    SHED = Counter "catalogue_shed_total" ["reason"]:
        "calls refused at once with UNAVAILABLE because the server was at its limit";
    /// Calls whose client read nothing for `--stream-idle-timeout`: their slot
    /// was given back and they ended with DEADLINE_EXCEEDED.
    IDLE_CALLS_EXPIRED = Counter "catalogue_idle_calls_expired_total" []:
        "calls ended with DEADLINE_EXCEEDED because the client read nothing for the idle timeout";
    /// Connections closed by the server before serving them (label: reason:
    /// `max_connections`, `max_connections_per_peer`, `handshake_timeout`), and
    /// failed accepts (`accept_error`).
    CONNECTIONS_REFUSED = Counter "catalogue_connections_refused_total" ["reason"]:
        "connections closed before they were served, by reason: max_connections, max_connections_per_peer, handshake_timeout; and failed accepts (accept_error)";
    CONNECTIONS_OPEN = Gauge "catalogue_connections_open" []:
        "client connections open now";
    /// Admin connections closed at once (label: reason).
    ADMIN_CONNECTIONS_REFUSED = Counter "catalogue_admin_connections_refused_total" ["reason"]:
        "admin connections closed at once because --admin-max-connections were open";
    BUILD_INFO = Gauge "catalogue_build_info" ["version", "rustc", "git_sha", "instance_id"]:
        "build information: always 1";
    /// 1 while a fault is injected (label: fault).
    FAULT_ACTIVE = Gauge "catalogue_fault_active" ["fault"]:
        "1 while the fault is injected (PUT /faults on the admin port)";
    /// Bytes the `leak_bytes_per_call` fault holds.
    FAULT_LEAKED_BYTES = Gauge "catalogue_fault_leaked_bytes" [] in Bytes:
        "bytes retained by the leak fault until DELETE /faults";

    // Written straight into the exposition by the runtime sampler
    // (`exposition`): the metrics crate cannot type them (a counter of
    // seconds, or a histogram whose buckets Tokio keeps).
    TASK_FIRST_POLL_DELAY_SECONDS = Sampled "tokio_task_first_poll_delay_seconds_total" ["grpc_service", "grpc_method"]:
        "time from an RPC future's creation to its first poll";
    TASK_SCHEDULED_SECONDS = Sampled "tokio_task_scheduled_seconds_total" ["grpc_service", "grpc_method"]:
        "time RPC futures spent woken but waiting for a worker (scheduling delay)";
    TASK_POLL_SECONDS = Sampled "tokio_task_poll_seconds_total" ["grpc_service", "grpc_method"]:
        "time spent polling RPC futures";
    TASK_IDLE_SECONDS = Sampled "tokio_task_idle_seconds_total" ["grpc_service", "grpc_method"]:
        "time RPC futures spent idle, waiting to be woken";
    RT_WORKER_BUSY_SECONDS = Sampled "tokio_worker_busy_seconds_total" ["worker"]:
        "time each worker spent busy; rate() is its busy ratio";
    /// Tokio's own histogram, summed over workers.
    RT_POLL_TIME = Sampled "tokio_poll_time_seconds" []:
        "duration of task polls, all workers (Tokio's poll-time histogram)";
    /// Tokio's own histogram, summed over workers: Go's `/sched/latencies`.
    RT_SCHEDULE_LATENCY = Sampled "tokio_schedule_latency_seconds" []:
        "time from a task's wake-up to its poll, all workers (Tokio's schedule-latency histogram)";
    PROCESS_CPU_SECONDS = Sampled "process_cpu_seconds_total" []:
        "user and system CPU time the process used";
    PROCESS_OPEN_FDS = Sampled "process_open_fds" []:
        "open file descriptors";
    PROCESS_MAX_FDS = Sampled "process_max_fds" []:
        "the limit on open file descriptors";
    PROCESS_VIRTUAL_MEMORY = Sampled "process_virtual_memory_bytes" []:
        "virtual memory size";
    PROCESS_VIRTUAL_MEMORY_MAX = Sampled "process_virtual_memory_max_bytes" []:
        "the limit on virtual memory (0: none)";
    PROCESS_RESIDENT_MEMORY = Sampled "process_resident_memory_bytes" []:
        "resident memory size";
    PROCESS_START_TIME = Sampled "process_start_time_seconds" []:
        "when the process started, in seconds since the Unix epoch";
    PROCESS_THREADS = Sampled "process_threads" []:
        "OS threads of the process";
}

/// Handling-time buckets, in seconds: from 50 µs (a GetProduct from the
/// memory store is well under 100 µs) to 10 s (a call waiting on a slow
/// upstream), roughly ×2–2.5 per step.
pub(crate) const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Messages per stream.
pub(crate) const MESSAGE_COUNT_BUCKETS: &[f64] =
    &[0.0, 1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_family_is_named_once_with_prometheus_names() {
        let mut seen = HashSet::new();
        for family in ALL {
            assert!(seen.insert(family.name), "{} defined twice", family.name);
            let valid = |text: &str| {
                text.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            };
            assert!(valid(family.name), "{}", family.name);
            assert!(
                family.labels.iter().all(|label| valid(label)),
                "{}",
                family.name
            );
            assert!(!family.help.is_empty(), "{} has no help", family.name);
            if family.kind == Kind::Counter {
                assert!(family.name.ends_with("_total"), "{}", family.name);
            }
            if family.unit == Some(Unit::Seconds) {
                assert!(family.name.contains("seconds"), "{}", family.name);
            }
        }
    }
}
