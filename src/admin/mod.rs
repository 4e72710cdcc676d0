//! The HTTP admin server, on its own port (`--admin-addr`).
//!
//! Routes:
//! - `GET /metrics`: Prometheus text exposition of every metric;
//! - `GET /faults`, `PUT /faults` (merge a JSON object), `DELETE /faults`
//!   (reset): fault injection, see `crate::faults`;
//! - `GET /healthz`: liveness: 200 while the process serves HTTP at all;
//! - `GET /readyz`: readiness: 200 when the store answers and the service is
//!   not draining, 503 with the reason otherwise.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::sync::watch;

use crate::{
    faults::{FaultInjector, FaultPatch},
    store::Store,
    telemetry::runtime::Sampler,
};

/// What the admin routes look at.
#[derive(Clone)]
pub struct AdminState {
    pub store: Arc<dyn Store>,
    /// Samples runtime, process and pool metrics, then renders them all.
    pub metrics: Arc<Sampler>,
    pub faults: Arc<FaultInjector>,
    /// Turns true when shutdown begins: from then on the instance is not
    /// ready, so load balancers stop sending it new calls.
    pub draining: watch::Receiver<bool>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route(
            "/faults",
            get(get_faults).put(put_faults).delete(delete_faults),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(state)
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn get_faults(State(state): State<AdminState>) -> Response {
    Json(state.faults.current()).into_response()
}

/// Merges the fields of a JSON object into the active faults. Unknown
/// fields, wrong types and out-of-range values are a 400 and change nothing.
async fn put_faults(State(state): State<AdminState>, body: Bytes) -> Response {
    let patch: FaultPatch = match serde_json::from_slice(&body) {
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

async fn ready(State(state): State<AdminState>) -> (StatusCode, String) {
    if *state.draining.borrow() {
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
