//! The HTTP admin server, on its own port (`--admin-addr`).
//!
//! Routes:
//! - `GET /healthz`: liveness: 200 while the process serves HTTP at all;
//! - `GET /readyz`: readiness: 200 when the store answers and the service is
//!   not draining, 503 with the reason otherwise.

use std::sync::Arc;

use axum::{Router, extract::State, http::StatusCode, routing::get};
use tokio::sync::watch;

use crate::store::Store;

/// What the admin routes look at.
#[derive(Clone)]
pub struct AdminState {
    pub store: Arc<dyn Store>,
    /// Turns true when shutdown begins: from then on the instance is not
    /// ready, so load balancers stop sending it new calls.
    pub draining: watch::Receiver<bool>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(state)
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
