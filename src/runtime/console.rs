//! tokio-console on demand. The console's layer is always in the app's
//! subscriber, but dormant: its filter refuses tokio's callsites (and gives
//! a level hint of `OFF`, so the maximum level stays the other layers'), so
//! tokio's instrumentation is skipped where it stands, at the macro's level
//! check, and nothing is recorded; every other
//! callsite it lets through and ignores, so that the other layers' interest
//! stays what it would be without it. [`Console::wake`] turns the filter on
//! for tokio's targets, rebuilds tracing's per-callsite interest cache and
//! opens the console's gRPC endpoint; [`Console::sleep`] turns it off again
//! and closes the endpoint, with its connections.
//!
//! Why the layer cannot trip tracing-subscriber's "Span not found"
//! (tokio-rs/tracing#3406): a per-layer filter's decision for a span lives
//! in a thread-local bit set between `enabled` and the layers' `on_new_span`;
//! a layer that makes tracing emit while it handles a span (the console's
//! event channel wakes its aggregator, and tokio instruments wakers)
//! rewrites those bits, so a layer *after* it in the same pass can be handed
//! a span its filter refused, and the formatting and OpenTelemetry layers
//! `expect` to find it. Hence:
//! - the console layer is the outermost layer of the subscriber, so
//!   whatever it emits comes after every other layer has had its turn;
//! - it is handed a new span only if the registry says its own filter
//!   enabled that span (`ConsoleView`), whatever the thread-local says;
//! - a span keeps the filter decision it was created with: spans created
//!   while dormant are never seen by the console, even when they close
//!   after it wakes, and spans created while awake are still entered and
//!   closed in the console's books after it sleeps, so it never holds a
//!   task that ended as alive;
//! - each callsite reaches the console's `register_callsite` once: the
//!   interest cache is rebuilt on every transition (and by `PUT /log-level`,
//!   through `tracing_subscriber::reload`), and the console would otherwise
//!   store the callsite's metadata again each time.

//!
//! Built without the `console` feature, [`Console`] is a switch that never
//! wakes: the subscriber has no console layer, and waking one is refused
//! with [`ConsoleError::NotBuilt`].

use std::{net::SocketAddr, time::SystemTime};

use serde::Serialize;

#[cfg(not(feature = "console"))]
mod absent;
#[cfg(feature = "console")]
mod live;

#[cfg(not(feature = "console"))]
pub use self::absent::Console;
#[cfg(feature = "console")]
pub use self::live::Console;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot open the tokio-console endpoint on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the tokio-console thread: {0}")]
    Thread(std::io::Error),
    /// Built without the `console` feature.
    #[error("this build has no tokio-console: catalogue was built without the `console` feature")]
    NotBuilt,
}

impl ConsoleError {
    /// The address is taken (another process, or a console of another app).
    pub(crate) fn address_in_use(&self) -> bool {
        matches!(self, Self::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse)
    }
}

/// Wakes `console` at start when `--console` (`asked`) says so; where it
/// attaches, if awake. A build without the console's layer (`None`) says so
/// in the log.
pub(crate) async fn wake_at_start(
    console: Option<Console>,
    asked: bool,
) -> Result<Option<SocketAddr>, ConsoleError> {
    match (console, asked) {
        (Some(console), true) => Ok(console.wake().await?.addr),
        (None, true) => {
            tracing::warn!("--console: this build has no tokio-console layer (no tokio_unstable)");
            Ok(None)
        }
        (_, false) => Ok(None),
    }
}

/// Awake or dormant, since when, and where a console attaches.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConsoleStatus {
    pub state: ConsoleState,
    /// When the console last woke or fell asleep (RFC 3339, UTC); the
    /// app's start while it never woke.
    #[serde(serialize_with = "rfc3339")]
    pub since: SystemTime,
    /// The endpoint's address, while awake.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleState {
    Dormant,
    Awake,
}

fn rfc3339<S: serde::Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_seconds(*time))
}
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_status_says_dormant_then_awake_with_the_address() {
        let since = SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000);
        let dormant = ConsoleStatus {
            state: ConsoleState::Dormant,
            since,
            addr: None,
        };
        assert_eq!(
            serde_json::to_value(&dormant).unwrap(),
            serde_json::json!({"state": "dormant", "since": "2026-05-28T20:26:40Z"})
        );
        let awake = ConsoleStatus {
            state: ConsoleState::Awake,
            since,
            addr: Some("127.0.0.1:6669".parse().unwrap()),
        };
        assert_eq!(
            serde_json::to_value(&awake).unwrap()["addr"],
            "127.0.0.1:6669"
        );
    }
}
