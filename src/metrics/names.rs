//! Every metric name, with its help text, in one place. Dashboards and alert
//! rules depend on these names: change one and the dashboard tests fail.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

// gRPC server, go-grpc-prometheus names (labels: grpc_type, grpc_service,
// grpc_method, and grpc_code on the handled ones).
pub const GRPC_STARTED: &str = "grpc_server_started_total";
pub const GRPC_HANDLED: &str = "grpc_server_handled_total";
pub const GRPC_MSG_RECEIVED: &str = "grpc_server_msg_received_total";
pub const GRPC_MSG_SENT: &str = "grpc_server_msg_sent_total";
pub const GRPC_HANDLING_SECONDS: &str = "grpc_server_handling_seconds";
pub const GRPC_IN_FLIGHT: &str = "grpc_server_in_flight_requests";
// The OpenTelemetry name of the same histogram (labels: rpc_system,
// rpc_service, rpc_method, rpc_grpc_status_code).
pub const RPC_SERVER_DURATION: &str = "rpc_server_call_duration_seconds";

// Server streams (labels: grpc_service, grpc_method).
pub const STREAMS_ACTIVE: &str = "grpc_server_streams_active";
pub const STREAM_MESSAGES: &str = "grpc_server_stream_messages";
pub const STREAM_FIRST_MESSAGE_SECONDS: &str = "grpc_server_stream_first_message_seconds";
pub const STREAM_BLOCKED_SECONDS: &str = "grpc_server_stream_blocked_seconds";
pub const STREAM_CANCELLED: &str = "grpc_server_stream_cancelled_total";
pub const STREAM_DURATION_SECONDS: &str = "grpc_server_stream_duration_seconds";

// Per-RPC task metrics from tokio-metrics' TaskMonitor (labels: grpc_service,
// grpc_method). Their durations are `Sampled` families below: the metrics
// crate's counters are integers, and these are seconds.
pub const TASK_INSTRUMENTED: &str = "tokio_task_instrumented_total";
pub const TASK_SCHEDULED: &str = "tokio_task_scheduled_total";
pub const TASK_LONG_DELAYS: &str = "tokio_task_long_delays_total";
pub const TASK_POLLS: &str = "tokio_task_polls_total";
pub const TASK_SLOW_POLLS: &str = "tokio_task_slow_polls_total";

// Tokio runtime (per worker: label `worker`).
pub const RT_WORKERS: &str = "tokio_workers";
pub const RT_ALIVE_TASKS: &str = "tokio_alive_tasks";
pub const RT_SPAWNED_TASKS: &str = "tokio_spawned_tasks_total";
pub const RT_GLOBAL_QUEUE_DEPTH: &str = "tokio_global_queue_depth";
pub const RT_REMOTE_SCHEDULES: &str = "tokio_remote_schedules_total";
pub const RT_BUDGET_FORCED_YIELDS: &str = "tokio_budget_forced_yields_total";
pub const RT_BLOCKING_THREADS: &str = "tokio_blocking_threads";
pub const RT_IDLE_BLOCKING_THREADS: &str = "tokio_idle_blocking_threads";
pub const RT_BLOCKING_QUEUE_DEPTH: &str = "tokio_blocking_queue_depth";
pub const RT_IO_READY_EVENTS: &str = "tokio_io_driver_ready_events_total";
pub const RT_IO_FD_REGISTERED: &str = "tokio_io_driver_fd_registered_total";
pub const RT_IO_FD_DEREGISTERED: &str = "tokio_io_driver_fd_deregistered_total";
pub const RT_WORKER_PARKS: &str = "tokio_worker_parks_total";
pub const RT_WORKER_PARK_UNPARKS: &str = "tokio_worker_park_unparks_total";
pub const RT_WORKER_POLLS: &str = "tokio_worker_polls_total";
pub const RT_WORKER_NOOPS: &str = "tokio_worker_noops_total";
pub const RT_WORKER_STEALS: &str = "tokio_worker_steals_total";
pub const RT_WORKER_STEAL_OPERATIONS: &str = "tokio_worker_steal_operations_total";
pub const RT_WORKER_OVERFLOWS: &str = "tokio_worker_overflows_total";
pub const RT_WORKER_LOCAL_SCHEDULES: &str = "tokio_worker_local_schedules_total";
pub const RT_WORKER_LOCAL_QUEUE_DEPTH: &str = "tokio_worker_local_queue_depth";
pub const RT_WORKER_MEAN_POLL_SECONDS: &str = "tokio_worker_mean_poll_seconds";

// Store (labels: db_system, operation, outcome; pool: db_system, state).
pub const STORE_QUERY_SECONDS: &str = "catalogue_store_query_duration_seconds";
pub const STORE_POOL_CONNECTIONS: &str = "catalogue_store_pool_connections";
pub const STORE_POOL_MAX: &str = "catalogue_store_pool_max_connections";

// Inventory upstream and overload protection.
/// Upstream stock lookups by outcome (ok, or the reason it degraded:
/// breaker_open, bulkhead_full, no_time_left, timeout, error).
pub const UPSTREAM_CALLS: &str = "catalogue_upstream_requests_total";
/// Upstream call latency (label: outcome ok/failed).
pub const UPSTREAM_SECONDS: &str = "catalogue_upstream_request_duration_seconds";
pub const UPSTREAM_IN_FLIGHT: &str = "catalogue_upstream_in_flight_requests";
/// 0 closed, 1 half-open, 2 open.
pub const UPSTREAM_CIRCUIT_STATE: &str = "catalogue_upstream_circuit_state";
/// Calls refused at once by the server (label: reason).
pub const SHED: &str = "catalogue_shed_total";
/// Calls whose client read nothing for `--stream-idle-timeout`: their slot
/// was given back and they ended with DEADLINE_EXCEEDED.
pub const IDLE_CALLS_EXPIRED: &str = "catalogue_idle_calls_expired_total";
/// Connections closed by the server before serving them (label: reason:
/// `max_connections`, `max_connections_per_peer`, `handshake_timeout`), and
/// failed accepts (`accept_error`).
pub const CONNECTIONS_REFUSED: &str = "catalogue_connections_refused_total";
pub const CONNECTIONS_OPEN: &str = "catalogue_connections_open";
/// Admin connections closed at once (label: reason).
pub const ADMIN_CONNECTIONS_REFUSED: &str = "catalogue_admin_connections_refused_total";

pub const BUILD_INFO: &str = "catalogue_build_info";
/// 1 while a fault is injected (label: fault).
pub const FAULT_ACTIVE: &str = "catalogue_fault_active";
/// Bytes the `leak_bytes_per_call` fault holds.
pub const FAULT_LEAKED_BYTES: &str = "catalogue_fault_leaked_bytes";

/// A family the sampler writes straight into the exposition (see
/// `exposition`), because the metrics crate cannot type it: a counter of
/// seconds, or a histogram whose buckets Tokio keeps.
pub struct Sampled {
    pub name: &'static str,
    pub help: &'static str,
}

pub const TASK_FIRST_POLL_DELAY_SECONDS: Sampled = Sampled {
    name: "tokio_task_first_poll_delay_seconds_total",
    help: "time from an RPC future's creation to its first poll",
};
pub const TASK_SCHEDULED_SECONDS: Sampled = Sampled {
    name: "tokio_task_scheduled_seconds_total",
    help: "time RPC futures spent woken but waiting for a worker (scheduling delay)",
};
pub const TASK_POLL_SECONDS: Sampled = Sampled {
    name: "tokio_task_poll_seconds_total",
    help: "time spent polling RPC futures",
};
pub const TASK_IDLE_SECONDS: Sampled = Sampled {
    name: "tokio_task_idle_seconds_total",
    help: "time RPC futures spent idle, waiting to be woken",
};
pub const RT_WORKER_BUSY_SECONDS: Sampled = Sampled {
    name: "tokio_worker_busy_seconds_total",
    help: "time each worker spent busy; rate() is its busy ratio",
};
/// Tokio's own histogram, summed over workers.
pub const RT_POLL_TIME: Sampled = Sampled {
    name: "tokio_poll_time_seconds",
    help: "duration of task polls, all workers (Tokio's poll-time histogram)",
};
/// Tokio's own histogram, summed over workers: Go's `/sched/latencies`.
pub const RT_SCHEDULE_LATENCY: Sampled = Sampled {
    name: "tokio_schedule_latency_seconds",
    help: "time from a task's wake-up to its poll, all workers (Tokio's schedule-latency histogram)",
};
pub const PROCESS_CPU_SECONDS: Sampled = Sampled {
    name: "process_cpu_seconds_total",
    help: "user and system CPU time the process used",
};
pub const PROCESS_OPEN_FDS: Sampled = Sampled {
    name: "process_open_fds",
    help: "open file descriptors",
};
pub const PROCESS_MAX_FDS: Sampled = Sampled {
    name: "process_max_fds",
    help: "the limit on open file descriptors",
};
pub const PROCESS_VIRTUAL_MEMORY: Sampled = Sampled {
    name: "process_virtual_memory_bytes",
    help: "virtual memory size",
};
pub const PROCESS_VIRTUAL_MEMORY_MAX: Sampled = Sampled {
    name: "process_virtual_memory_max_bytes",
    help: "the limit on virtual memory (0: none)",
};
pub const PROCESS_RESIDENT_MEMORY: Sampled = Sampled {
    name: "process_resident_memory_bytes",
    help: "resident memory size",
};
pub const PROCESS_START_TIME: Sampled = Sampled {
    name: "process_start_time_seconds",
    help: "when the process started, in seconds since the Unix epoch",
};
pub const PROCESS_THREADS: Sampled = Sampled {
    name: "process_threads",
    help: "OS threads of the process",
};

/// Handling-time buckets, in seconds: from 50 µs (a GetProduct from the
/// memory store is well under 100 µs) to 10 s (a call waiting on a slow
/// upstream), roughly ×2–2.5 per step.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Messages per stream.
pub const MESSAGE_COUNT_BUCKETS: &[f64] =
    &[0.0, 1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0];

/// Registers the help text and unit of every metric.
pub fn describe() {
    describe_counter!(GRPC_STARTED, "RPCs started on the server");
    describe_counter!(GRPC_HANDLED, "RPCs completed on the server, by status code");
    describe_counter!(GRPC_MSG_RECEIVED, "gRPC messages received from clients");
    describe_counter!(GRPC_MSG_SENT, "gRPC messages sent to clients");
    describe_histogram!(
        GRPC_HANDLING_SECONDS,
        Unit::Seconds,
        "time from the request's arrival to the end of the response"
    );
    describe_gauge!(GRPC_IN_FLIGHT, "RPCs being handled now");
    describe_histogram!(
        RPC_SERVER_DURATION,
        Unit::Seconds,
        "rpc.server.call.duration: duration of inbound RPCs (OpenTelemetry semantic conventions)"
    );

    describe_gauge!(STREAMS_ACTIVE, "server streams open now");
    describe_histogram!(STREAM_MESSAGES, "messages sent per server stream");
    describe_histogram!(
        STREAM_FIRST_MESSAGE_SECONDS,
        Unit::Seconds,
        "time from a stream's request to its first message"
    );
    describe_histogram!(
        STREAM_BLOCKED_SECONDS,
        Unit::Seconds,
        "time each server stream waited for its reader (HTTP/2 flow control)"
    );
    describe_counter!(
        STREAM_CANCELLED,
        "server streams the client cancelled or abandoned before the end"
    );
    describe_histogram!(
        STREAM_DURATION_SECONDS,
        Unit::Seconds,
        "server stream lifetime"
    );

    describe_counter!(
        TASK_INSTRUMENTED,
        "RPC futures instrumented by the task monitor"
    );
    describe_counter!(
        TASK_SCHEDULED,
        "times an RPC future was woken and waited for a worker"
    );
    describe_counter!(
        TASK_LONG_DELAYS,
        "scheduling delays longer than the long-delay threshold"
    );
    describe_counter!(TASK_POLLS, "polls of RPC futures");
    describe_counter!(
        TASK_SLOW_POLLS,
        "polls of RPC futures longer than the slow-poll threshold"
    );

    describe_gauge!(RT_WORKERS, "Tokio worker threads");
    describe_gauge!(RT_ALIVE_TASKS, "Tokio tasks alive now");
    describe_counter!(RT_SPAWNED_TASKS, "Tokio tasks spawned");
    describe_gauge!(
        RT_GLOBAL_QUEUE_DEPTH,
        "tasks in the global (injection) queue"
    );
    describe_counter!(
        RT_REMOTE_SCHEDULES,
        "tasks scheduled from outside the runtime's workers"
    );
    describe_counter!(
        RT_BUDGET_FORCED_YIELDS,
        "tasks forced to yield after exhausting their cooperative budget"
    );
    describe_gauge!(RT_BLOCKING_THREADS, "threads in the blocking pool");
    describe_gauge!(
        RT_IDLE_BLOCKING_THREADS,
        "idle threads in the blocking pool"
    );
    describe_gauge!(
        RT_BLOCKING_QUEUE_DEPTH,
        "tasks waiting for a blocking-pool thread"
    );
    describe_counter!(
        RT_IO_READY_EVENTS,
        "I/O readiness events the I/O driver processed"
    );
    describe_counter!(
        RT_IO_FD_REGISTERED,
        "file descriptors registered with the I/O driver"
    );
    describe_counter!(
        RT_IO_FD_DEREGISTERED,
        "file descriptors deregistered from the I/O driver"
    );
    describe_counter!(RT_WORKER_PARKS, "times each worker parked (found no work)");
    describe_counter!(
        RT_WORKER_PARK_UNPARKS,
        "park and unpark transitions of each worker"
    );
    describe_counter!(RT_WORKER_POLLS, "tasks polled by each worker");
    describe_counter!(
        RT_WORKER_NOOPS,
        "times each worker unparked and found no work"
    );
    describe_counter!(
        RT_WORKER_STEALS,
        "tasks each worker stole from other workers"
    );
    describe_counter!(
        RT_WORKER_STEAL_OPERATIONS,
        "steal operations by each worker"
    );
    describe_counter!(
        RT_WORKER_OVERFLOWS,
        "times each worker's local queue overflowed into the global queue"
    );
    describe_counter!(
        RT_WORKER_LOCAL_SCHEDULES,
        "tasks each worker scheduled onto its own local queue"
    );
    describe_gauge!(
        RT_WORKER_LOCAL_QUEUE_DEPTH,
        "tasks in each worker's local run queue"
    );
    describe_gauge!(
        RT_WORKER_MEAN_POLL_SECONDS,
        Unit::Seconds,
        "each worker's moving average of task poll time"
    );

    describe_histogram!(
        STORE_QUERY_SECONDS,
        Unit::Seconds,
        "store call duration by operation"
    );
    describe_gauge!(
        STORE_POOL_CONNECTIONS,
        "database pool connections by state (idle, in_use)"
    );
    describe_gauge!(STORE_POOL_MAX, "database pool size limit");

    describe_counter!(
        UPSTREAM_CALLS,
        "inventory upstream lookups by outcome: ok or why stock was served stale"
    );
    describe_histogram!(
        UPSTREAM_SECONDS,
        Unit::Seconds,
        "inventory upstream call duration"
    );
    describe_gauge!(
        UPSTREAM_IN_FLIGHT,
        "inventory upstream calls in flight (bounded by the bulkhead)"
    );
    describe_gauge!(
        UPSTREAM_CIRCUIT_STATE,
        "upstream circuit breaker state: 0 closed, 1 half-open, 2 open"
    );
    describe_counter!(
        SHED,
        "calls refused at once with UNAVAILABLE because the server was at its limit"
    );
    describe_counter!(
        IDLE_CALLS_EXPIRED,
        "calls ended with DEADLINE_EXCEEDED because the client read nothing for the idle timeout"
    );
    describe_counter!(
        CONNECTIONS_REFUSED,
        "connections closed before they were served, by reason: max_connections, max_connections_per_peer, handshake_timeout; and failed accepts (accept_error)"
    );
    describe_gauge!(CONNECTIONS_OPEN, "client connections open now");
    describe_counter!(
        ADMIN_CONNECTIONS_REFUSED,
        "admin connections closed at once because --admin-max-connections were open"
    );

    describe_gauge!(BUILD_INFO, "build information: always 1");
    describe_gauge!(
        FAULT_ACTIVE,
        "1 while the fault is injected (PUT /faults on the admin port)"
    );
    describe_gauge!(
        FAULT_LEAKED_BYTES,
        Unit::Bytes,
        "bytes retained by the leak fault until DELETE /faults"
    );
}
