//! `/debug/console`: tokio-console on demand (behind `--admin-token` when
//! one is set, like every `/debug` route).
//!
//! - `GET`: `{"state": "dormant" | "awake", "since": RFC 3339, "addr"}`;
//! - `PUT`: wakes the console's layer and opens its endpoint on
//!   `--console-addr`; 200 with the state, awake already or not; 409 when
//!   the address is taken, 500 when the endpoint cannot start, naming the
//!   address and the error;
//! - `DELETE`: puts it back to sleep and closes the endpoint and its
//!   connections; 200 with the state.
//!
//! Any other method is a 405. Built without the `console` feature, `PUT`
//! is a 501 naming it, and the state is always dormant.

use axum::{
    Json, Router,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};

use super::{AdminState, NoQuery};
use crate::runtime::console::ConsoleError;

pub fn routes() -> Router<AdminState> {
    Router::new().route(
        "/debug/console",
        get(get_console).put(put_console).delete(delete_console),
    )
}

async fn get_console(State(state): State<AdminState>, _: Query<NoQuery>) -> Response {
    match state.console {
        Some(console) => Json(console.status().await).into_response(),
        None => no_console(),
    }
}

async fn put_console(State(state): State<AdminState>, _: Query<NoQuery>) -> Response {
    let Some(console) = state.console else {
        return no_console();
    };
    match console.wake().await {
        Ok(status) => Json(status).into_response(),
        Err(error) => {
            tracing::error!(%error, "waking tokio-console failed");
            let status = if error.address_in_use() {
                StatusCode::CONFLICT
            } else if matches!(error, ConsoleError::NotBuilt) {
                StatusCode::NOT_IMPLEMENTED
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            (status, format!("{error}\n")).into_response()
        }
    }
}

async fn delete_console(State(state): State<AdminState>, _: Query<NoQuery>) -> Response {
    match state.console {
        Some(console) => Json(console.sleep().await).into_response(),
        None => no_console(),
    }
}

/// Only the subcommands without a server run without a console layer.
fn no_console() -> Response {
    (
        StatusCode::NOT_FOUND,
        "this process has no tokio-console layer\n",
    )
        .into_response()
}
