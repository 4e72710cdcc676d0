//! The HTTP admin server, on its own port (`--admin-addr`).
//!
//! Routes:
//! - `GET /metrics`: Prometheus text exposition of every metric;
//! - `GET /faults`, `PUT /faults` (merge a JSON object), `DELETE /faults`
//!   (reset): fault injection, see `crate::faults`;
//! - `GET /healthz`: liveness: 200 while the process serves HTTP at all;
//! - `GET /readyz`: readiness: 200 when the store answers and the service is
//!   not draining, 503 with the reason otherwise;
//! - `GET /debug/pprof/…`: CPU and heap profiles and task dumps (see
//!   [`pprof`]), behind `--admin-token` when one is set.

pub mod pprof;

use std::{fmt, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::sync::watch;

use crate::{
    faults::{FaultInjector, FaultPatch},
    store::Store,
    telemetry::{runtime::Sampler, tasks::TaskList},
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
    pub stopping: watch::Receiver<bool>,
    /// When set, `/debug/*` answers only requests bearing it: profiles and
    /// task dumps reveal internals and cost CPU. Health stays open so probes
    /// need no secret.
    pub admin_token: Option<AdminToken>,
    /// The runtime's live tasks, for the task dump.
    pub tasks: TaskList,
    /// The app's subscriber: axum polls each request on a task of its own.
    pub dispatch: tracing::Dispatch,
}

pub fn router(state: AdminState) -> Router {
    let debug = pprof::routes().route_layer(middleware::from_fn_with_state(
        state.admin_token.clone(),
        require_token,
    ));
    Router::new()
        .route("/metrics", get(metrics))
        .route(
            "/faults",
            get(get_faults).put(put_faults).delete(delete_faults),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .merge(debug)
        .layer(middleware::from_fn_with_state(
            state.dispatch.clone(),
            with_dispatch,
        ))
        .with_state(state)
}

/// Runs the request with the app's subscriber, so its logs go where the
/// app's go.
async fn with_dispatch(
    State(dispatch): State<tracing::Dispatch>,
    request: Request,
    next: Next,
) -> Response {
    use tracing::instrument::WithSubscriber as _;
    next.run(request).with_subscriber(dispatch).await
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

/// The secret `/debug/*` requests must bear as `Authorization: Bearer …`.
/// Its `Debug` output is redacted, so logging the configuration is safe.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// Refuses an empty token, which would protect nothing.
    pub fn parse(token: &str) -> Result<Self, String> {
        if token.is_empty() {
            return Err("the admin token must not be empty".into());
        }
        Ok(Self(token.to_owned()))
    }

    /// Compares in time independent of where the first difference is, so
    /// response times do not reveal the token a prefix at a time.
    fn matches(&self, presented: &str) -> bool {
        let (expected, presented) = (self.0.as_bytes(), presented.as_bytes());
        expected.len() == presented.len()
            && expected
                .iter()
                .zip(presented)
                .fold(0u8, |difference, (a, b)| difference | (a ^ b))
                == 0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("AdminToken(<redacted>)")
    }
}

/// Lets a request through when no token is configured or it bears the token.
async fn require_token(
    State(token): State<Option<AdminToken>>,
    request: Request,
    next: Next,
) -> Response {
    match token {
        Some(token)
            if !bearer(request.headers()).is_some_and(|presented| token.matches(presented)) =>
        {
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "missing or wrong bearer token: send Authorization: Bearer <--admin-token>\n",
            )
                .into_response()
        }
        _ => next.run(request).await,
    }
}

/// The credentials of an `Authorization: Bearer …` header (the scheme is
/// case-insensitive, RFC 9110).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_matches_only_itself() {
        let token = AdminToken::parse("secret").unwrap();
        assert!(token.matches("secret"));
        assert!(!token.matches("secreT"));
        assert!(!token.matches("secret2"));
        assert!(!token.matches(""));
        assert!(AdminToken::parse("").is_err());
        assert_eq!(format!("{token:?}"), "AdminToken(<redacted>)");
    }

    #[test]
    fn bearer_credentials_are_read_case_insensitively() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }
}
