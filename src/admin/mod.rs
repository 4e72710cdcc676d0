//! The HTTP admin server, on its own port (`--admin-addr`).
//!
//! Routes:
//! - `GET /metrics`: Prometheus text exposition of every metric;
//! - `GET /healthz`: liveness: 200 while the process serves HTTP at all;
//! - `GET /readyz`: readiness: 200 when the store answers and the service is
//!   not draining, 503 with the reason otherwise.

use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tokio::sync::watch;

use crate::{store::Store, telemetry::runtime::Sampler};

/// What the admin routes look at.
#[derive(Clone)]
pub struct AdminState {
    pub store: Arc<dyn Store>,
    /// Samples runtime, process and pool metrics, then renders them all.
    pub metrics: Arc<Sampler>,
    /// Turns true when shutdown begins: from then on the instance is not
    /// ready, so load balancers stop sending it new calls.
    pub draining: watch::Receiver<bool>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
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
