//! The HTTP admin server, on its own port (`--admin-addr`).
//!
//! Routes:
//! - `GET /metrics`: Prometheus text exposition of every metric, or
//!   OpenMetrics with exemplars when asked for (`Accept`);
//! - `GET /faults`, `PUT /faults` (merge a JSON object), `DELETE /faults`
//!   (reset): fault injection, see `crate::faults`;
//! - `GET /healthz`: liveness: 200 while the process serves HTTP at all;
//! - `GET /readyz`: readiness: 200 when the store answers and the service is
//!   not draining, 503 with the reason otherwise;
//! - `GET /debug/pprof/…`: CPU and heap profiles and task dumps (see
//!   [`pprof`]);
//! - `GET`, `PUT`, `DELETE /debug/console`: tokio-console's state, woken,
//!   put to sleep (see [`console`]);
//! - `GET /debug/live`: the runtime and the calls, live in a browser, and
//!   `GET /debug/live/feed`, the samples it draws (see [`live`]);
//! - `GET /log-level`, `PUT /log-level` (a `RUST_LOG`-style filter as the
//!   body): the log filter in force, changed without a restart; a bad
//!   filter is a 400 and changes nothing, one over 1 KiB a 413, and one
//!   that would silence the service's own errors a 400 unless it is `off`.
//!
//! A query parameter a `/debug` route does not take is a 400 naming it.
//! Every route but those in [`guard::OPEN_ROUTES`] needs `--admin-token`
//! when one is set; without one, only requests for `localhost` or the
//! server's own IP are answered; with a token or without, a browser's
//! request for another site's page is refused (see [`guard`]).

pub mod console;
pub mod guard;
pub mod live;
pub mod pprof;
pub mod server;
pub(crate) mod settings;

use std::sync::Arc;

use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{MethodRouter, any, get},
};
use tokio::sync::watch;

use crate::{
    faults::{FaultInjector, FaultPatch},
    metrics::openmetrics,
    profiling::labels::LabelTable,
    runtime::{Collector, Console, TaskList},
    store::Store,
    telemetry::{LogFilter, LogLevel},
    values,
};

pub use guard::{AdminGuard, AdminToken};

/// The query string of a route that takes no parameters: with any, the
/// route answers 400 naming it, rather than ignoring what the caller meant.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoQuery {}
pub use settings::AdminConfig;

/// What the admin routes look at.
#[derive(Clone)]
pub struct AdminState {
    pub store: Arc<dyn Store>,
    /// Samples runtime, process and pool metrics, then renders them all.
    pub metrics: Arc<Collector>,
    pub faults: Arc<FaultInjector>,
    /// Turns true when shutdown begins: from then on the instance is not
    /// ready, so load balancers stop sending it new calls.
    pub stopping: watch::Receiver<bool>,
    /// Who may call which route (see [`guard`]).
    pub guard: Arc<AdminGuard>,
    /// The runtime's live tasks, for the task dump.
    pub tasks: TaskList,
    /// The log filter, changed by `PUT /log-level`.
    pub log_level: LogLevel,
    /// tokio-console's switch, for `/debug/console`; `None` without a
    /// console layer.
    pub console: Option<Console>,
    /// The app's subscriber: axum polls each request on a task of its own.
    pub dispatch: tracing::Dispatch,
    /// The app's methods as CPU profile labels name them.
    pub labels: LabelTable,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/faults", faults_routes(&state.faults))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/log-level", get(get_log_level).put(put_log_level))
        .merge(pprof::routes())
        .merge(console::routes())
        .merge(live::routes())
        // Changes made here are marked on the live view's charts.
        .layer(middleware::from_fn(live::mark_changes))
        // Every route above, and the 404 of any other path, passes the guard.
        .layer(middleware::from_fn_with_state(
            state.guard.clone(),
            guard::guard,
        ))
        .layer(middleware::from_fn_with_state(
            state.dispatch.clone(),
            with_dispatch,
        ))
        .layer(Extension(live::Live::default()))
        .with_state(state)
}

/// Runs the request with the app's subscriber, so its logs go where the
/// app's go, and logs it at DEBUG (`catalogue::admin=debug`).
async fn with_dispatch(
    State(dispatch): State<tracing::Dispatch>,
    request: Request,
    next: Next,
) -> Response {
    use tracing::instrument::WithSubscriber as _;
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    async move {
        let response = next.run(request).await;
        tracing::debug!(%method, %path, status = response.status().as_u16(), "admin request");
        response
    }
    .with_subscriber(dispatch)
    .await
}

/// Prometheus text, or OpenMetrics with exemplars when the scraper asks for
/// it (Prometheus does).
async fn metrics(State(state): State<AdminState>, headers: HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(openmetrics::accepts_openmetrics);
    if openmetrics {
        (
            [(header::CONTENT_TYPE, openmetrics::CONTENT_TYPE)],
            state.metrics.render_openmetrics(),
        )
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            state.metrics.render(),
        )
    }
}

/// `/faults`, or with fault injection off a 403 saying how to turn it on.
fn faults_routes(faults: &FaultInjector) -> MethodRouter<AdminState> {
    if faults.enabled() {
        return get(get_faults).put(put_faults).delete(delete_faults);
    }
    any(|| async {
        (
            StatusCode::FORBIDDEN,
            "fault injection is off: start the server with --enable-faults to use /faults\n",
        )
    })
}

async fn get_faults(State(state): State<AdminState>) -> Response {
    Json(state.faults.current()).into_response()
}

/// Merges the fields of a JSON object into the active faults. Unknown
/// fields, wrong types and out-of-range values are a 400 and change nothing.
async fn put_faults(State(state): State<AdminState>, body: Bytes) -> Response {
    let patch: FaultPatch = match values::json_body(&body) {
        Ok(patch) => patch,
        Err(error) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("invalid faults: {error}\n"),
            )
                .into_response();
        }
    };
    match state.faults.merge(patch) {
        Ok(faults) => Json(faults).into_response(),
        Err(error) => (
            StatusCode::BAD_REQUEST,
            format!("invalid faults: {error}\n"),
        )
            .into_response(),
    }
}

async fn delete_faults(State(state): State<AdminState>) -> Response {
    Json(state.faults.reset()).into_response()
}

async fn get_log_level(State(state): State<AdminState>) -> String {
    format!("{}\n", state.log_level.current())
}

/// Replaces the log filter with the body's directives (at most
/// `LogFilter::MAX_BYTES`; one that would silence the service's errors is
/// refused unless it is `off`). Parsed and built on the blocking pool, never
/// on a runtime worker. The change is logged at WARN before it takes
/// effect, so that even `off` leaves a line saying who turned the logs off.
async fn put_log_level(State(state): State<AdminState>, body: Bytes) -> Response {
    let bad = |message: String| (StatusCode::BAD_REQUEST, message).into_response();
    if body.len() > LogFilter::MAX_BYTES {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "invalid log filter: {} bytes, over the {} a filter may have\n",
                body.len(),
                LogFilter::MAX_BYTES
            ),
        )
            .into_response();
    }
    let Ok(directives) = String::from_utf8(body.to_vec()) else {
        return bad("invalid log filter: the body is not UTF-8\n".into());
    };
    if directives.trim().is_empty() {
        return bad(
            "invalid log filter: the body is empty; send RUST_LOG-style directives, \
             e.g. info,catalogue=debug\n"
                .into(),
        );
    }
    let filter = match tokio::task::spawn_blocking(move || LogFilter::parse(&directives)).await {
        Ok(Ok(filter)) => filter,
        Ok(Err(error)) => return bad(format!("invalid log filter: {error}\n")),
        Err(error) => return log_level_failed(&error),
    };
    tracing::warn!(from = %state.log_level.current(), to = %filter, "log filter changed");
    let level = state.log_level.clone();
    let changed = filter.clone();
    match tokio::task::spawn_blocking(move || level.set(changed)).await {
        Ok(Ok(_previous)) => format!("{filter}\n").into_response(),
        Ok(Err(error)) => log_level_failed(&error),
        Err(error) => log_level_failed(&error),
    }
}

fn log_level_failed(error: &dyn std::error::Error) -> Response {
    tracing::error!(%error, "changing the log filter failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "the log filter could not be changed\n",
    )
        .into_response()
}

async fn ready(State(state): State<AdminState>) -> (StatusCode, String) {
    if *state.stopping.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n".into());
    }
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(error) => {
            tracing::warn!(%error, "readiness check: store unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "store unavailable\n".into(),
            )
        }
    }
}
