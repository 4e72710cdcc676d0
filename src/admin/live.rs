//! `/debug/live`: the runtime and the calls drawn live in a browser, by the
//! process itself (Go's statsviz, for Tokio): nothing else to run.
//!
//! - `GET /debug/live`: the page, embedded in the binary: plain HTML and
//!   JavaScript (`live/live.js`) drawing with uPlot, vendored beside it
//!   with its licence and version (`live/README.md`). Open like `/metrics`:
//!   it holds no data, and a browser cannot send a token when it opens a
//!   page.
//! - `GET /debug/live/feed`: server-sent events: one `hello` (every metric
//!   family's definition, so the page draws only names the table has), then
//!   a `sample` a second (the `/metrics` exposition's samples, taken then,
//!   and the bytes jemalloc has allocated) and a `marker` for each change
//!   made through the admin port while it is open (a fault, the console,
//!   the log filter, a profile). Guarded like every `/debug` route: the page
//!   sends the token as a header, reading the stream with `fetch` (an
//!   `EventSource` cannot send one).
//!
//! Nothing is sampled while no page reads the feed: the samples are taken
//! by the feed's own stream, which ends when its viewer goes, and markers
//! are not even formatted. At most [`MAX_VIEWERS`] read at once; the next is
//! a 503 saying so. The last minutes are kept by the page, not here.

use std::{
    convert::Infallible,
    sync::{Arc, LazyLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Extension, Router,
    body::Body,
    extract::{Query, Request, State},
    http::{Method, StatusCode, header},
    middleware::Next,
    response::{
        Html, IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::get,
};
use futures::{Stream, StreamExt as _};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};

use super::{AdminState, NoQuery};
use crate::{metrics::names, profiling::allocator};

/// How many pages may read the feed at once: each costs one exposition a
/// second.
pub const MAX_VIEWERS: usize = 4;

/// How often a viewer gets a sample.
const INTERVAL: Duration = Duration::from_secs(1);

/// The most of a request's body a marker quotes.
const MARKER_BODY_BYTES: usize = 256;

/// The largest body a marked request may have while a page watches (its
/// body is read to be quoted): far over any fault or filter.
const MARKED_BODY_LIMIT: usize = 64 * 1024;

/// The page, its script and uPlot, put together once.
static PAGE: LazyLock<String> = LazyLock::new(|| {
    include_str!("live/index.html")
        .replace("/*uPlot.min.css*/", include_str!("live/uPlot.min.css"))
        .replace(
            "/*uPlot.iife.min.js*/",
            include_str!("live/uPlot.iife.min.js"),
        )
        .replace("/*live.js*/", include_str!("live/live.js"))
});

/// The viewers' seats and the markers they are sent; clones share them.
#[derive(Clone)]
pub(crate) struct Live {
    viewers: Arc<Semaphore>,
    markers: broadcast::Sender<Marker>,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            viewers: Arc::new(Semaphore::new(MAX_VIEWERS)),
            markers: broadcast::channel(64).0,
        }
    }
}

/// A change made through the admin port, as the charts mark it.
#[derive(Debug, Clone, Serialize)]
struct Marker {
    /// When the request came, in Unix milliseconds.
    start_ms: u64,
    /// When it was answered: a CPU profile spans its seconds.
    end_ms: u64,
    /// The request: `PUT /faults {"latency_ms":200}`.
    label: String,
}

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/debug/live", get(page))
        .route("/debug/live/feed", get(feed))
}

async fn page(_: Query<NoQuery>) -> Html<&'static str> {
    Html(PAGE.as_str())
}

/// The events of one viewer, while it reads them.
async fn feed(
    State(state): State<AdminState>,
    Extension(live): Extension<Live>,
    _: Query<NoQuery>,
) -> Response {
    let Ok(seat) = live.viewers.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "10")],
            format!(
                "/debug/live has {MAX_VIEWERS} viewers already, the most it serves at once; \
                 close one and reload\n"
            ),
        )
            .into_response();
    };
    let hello = Event::default().event("hello").data(hello());
    let events = futures::stream::once(async { Ok(hello) }).chain(samples(
        state,
        live.markers.subscribe(),
        seat,
    ));
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// What the page needs before the first sample: the families it may draw.
fn hello() -> String {
    #[derive(Serialize)]
    struct Family {
        name: &'static str,
        help: &'static str,
    }
    #[derive(Serialize)]
    struct Hello {
        interval_ms: u128,
        families: Vec<Family>,
    }
    let families = names::ALL
        .iter()
        .map(|family| Family {
            name: family.name,
            help: family.help,
        })
        .collect();
    serde_json::to_string(&Hello {
        interval_ms: INTERVAL.as_millis(),
        families,
    })
    .expect("plain values serialise")
}

/// A sample a second and every marker, until the viewer goes (dropping the
/// stream, and `seat` with it) or the service begins to drain.
fn samples(
    state: AdminState,
    markers: broadcast::Receiver<Marker>,
    seat: OwnedSemaphorePermit,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let mut ticks = tokio::time::interval(INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stopping = state.stopping.clone();
    futures::stream::unfold(
        (state, markers, ticks, seat, stopping),
        |(state, mut markers, mut ticks, seat, mut stopping)| async move {
            let event = tokio::select! {
                // A drain ends the feed (the page reconnects elsewhere)
                // rather than holding the admin server's shutdown.
                _ = stopping.wait_for(|stopping| *stopping) => return None,
                _ = ticks.tick() => sample(&state),
                marker = markers.recv() => match marker {
                    Ok(marker) => Event::default()
                        .event("marker")
                        .data(serde_json::to_string(&marker).expect("plain values serialise")),
                    // Over 64 markers behind, or the admin server is going.
                    Err(_) => Event::default().comment("markers lost"),
                },
            };
            Some((Ok(event), (state, markers, ticks, seat, stopping)))
        },
    )
}

/// One `sample` event: a JSON line (the time, jemalloc's allocated bytes),
/// then the exposition's sample lines, as `/metrics` would answer now.
fn sample(state: &AdminState) -> Event {
    #[derive(Serialize)]
    struct Head {
        t_ms: u64,
        allocated_bytes: Option<u64>,
    }
    let head = Head {
        t_ms: unix_ms(),
        allocated_bytes: allocator::allocated_bytes(),
    };
    let mut data = serde_json::to_string(&head).expect("plain values serialise");
    for line in state.metrics.render().lines() {
        if !line.is_empty() && !line.starts_with('#') {
            data.push('\n');
            data.push_str(line);
        }
    }
    Event::default().event("sample").data(data)
}

/// Marks every admin request that changes something (any method but `GET`
/// and `HEAD`), and each profile, once it has succeeded, for the pages
/// watching. With no page open it does nothing but ask whether one is.
pub(super) async fn mark_changes(
    Extension(live): Extension<Live>,
    request: Request,
    next: Next,
) -> Response {
    let (method, path) = (request.method(), request.uri().path());
    let profile = path == "/debug/pprof/profile" || path == "/debug/pprof/heap";
    let changes = !matches!(*method, Method::GET | Method::HEAD);
    if live.markers.receiver_count() == 0 || !(changes || profile) {
        return next.run(request).await;
    }
    let start_ms = unix_ms();
    let mut label = format!("{method} {}", request.uri());
    let request = if changes {
        let (parts, body) = request.into_parts();
        let Ok(body) = axum::body::to_bytes(body, MARKED_BODY_LIMIT).await else {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {MARKED_BODY_LIMIT} bytes\n"),
            )
                .into_response();
        };
        let quoted = String::from_utf8_lossy(&body[..body.len().min(MARKER_BODY_BYTES)]);
        if !quoted.trim().is_empty() {
            label.push(' ');
            label.push_str(quoted.trim());
        }
        Request::from_parts(parts, Body::from(body))
    } else {
        request
    };
    let response = next.run(request).await;
    if response.status().is_success() {
        // No receiver left is no error: the page went.
        let _ = live.markers.send(Marker {
            start_ms,
            end_ms: unix_ms(),
            label,
        });
    }
    response
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}
