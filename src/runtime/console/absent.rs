//! tokio-console in a build without the `console` feature: a switch that
//! is always dormant and refuses to wake, and no layer.

use std::{net::SocketAddr, time::SystemTime};

use tracing_subscriber::layer::Identity;

use super::{ConsoleError, ConsoleState, ConsoleStatus};

/// The console's switch, which never wakes.
#[derive(Clone, Debug)]
pub struct Console {
    since: SystemTime,
}

impl Console {
    /// A console that never wakes, and no layer.
    pub(crate) fn new(_addr: SocketAddr) -> (Self, Identity) {
        let console = Self {
            since: SystemTime::now(),
        };
        (console, Identity::new())
    }

    /// Dormant, since the app's start.
    pub async fn status(&self) -> ConsoleStatus {
        ConsoleStatus {
            state: ConsoleState::Dormant,
            since: self.since,
            addr: None,
        }
    }

    /// Refused: there is no console to wake.
    pub async fn wake(&self) -> Result<ConsoleStatus, ConsoleError> {
        Err(ConsoleError::NotBuilt)
    }

    /// Dormant already.
    pub async fn sleep(&self) -> ConsoleStatus {
        self.status().await
    }
}
