//! A started app: its server tasks, the switches that stop it, and the
//! steps of its life once serving (register, serve until the shutdown,
//! deregister, stop being ready, drain).

use std::{future::Future, time::Duration};

use tokio::{sync::watch, task::JoinHandle};
use tokio_util::task::AbortOnDropHandle;

use super::StartupError;
use crate::{discovery::consul::Registrar, health::HealthLane, server::HealthStatus};

/// The shutdown's two switches: `stop` turns health and readiness off;
/// `drain`, the drain delay later, closes the listeners and lets in-flight
/// calls finish.
pub(crate) struct Switches {
    stop: watch::Sender<bool>,
    drain: watch::Sender<bool>,
}

impl Switches {
    pub fn new() -> Self {
        Self {
            stop: watch::Sender::new(false),
            drain: watch::Sender::new(false),
        }
    }

    /// What readiness watches: `true` once the app stops being ready.
    pub(crate) fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Resolves once draining has begun: a server's shutdown future.
    pub fn drained(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut draining = self.drain.subscribe();
        async move {
            // An error means the sender is gone, which also means stop.
            let _ = draining.wait_for(|draining| *draining).await;
        }
    }
}

/// A started app: its server tasks and the switches that stop it.
pub(crate) struct Running {
    pub grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    pub admin: JoinHandle<std::io::Result<()>>,
    pub health: HealthStatus,
    /// Answers probes from its own thread; stopped last, so that it says
    /// NOT_SERVING through the drain.
    pub health_lane: Option<HealthLane>,
    pub switches: Switches,
    pub consul: Option<Registrar>,
    /// How long calls are still served once health and readiness fail.
    pub drain_delay: Duration,
    /// How long in-flight calls may take to finish once the listeners close.
    pub shutdown_grace: Duration,
    /// The metrics' upkeep, aborted when the app is dropped.
    pub _upkeep: AbortOnDropHandle<()>,
    /// Sets the catalogue's health from the store's; stopped before the
    /// drain turns it NOT_SERVING for good.
    pub store_health: AbortOnDropHandle<()>,
}

impl Running {
    /// Registers with Consul, if configured; a failure stops start-up.
    pub async fn register(&mut self) -> Result<(), StartupError> {
        if let Some(consul) = &self.consul
            && let Err(error) = consul.register().await
        {
            self.grpc.abort();
            self.admin.abort();
            return Err(error.into());
        }
        Ok(())
    }

    /// Serves until `shutdown` resolves (`None`), or a server fails.
    pub(crate) async fn serve_until(
        &mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Option<Result<(), StartupError>> {
        tokio::select! {
            () = shutdown => None,
            result = &mut self.grpc => Some(result.map_err(StartupError::from).and_then(|served| Ok(served?))),
            result = &mut self.admin => Some(result.map_err(StartupError::from).and_then(|served| Ok(served?))),
        }
    }

    /// First, so that clients resolving through Consul stop picking this
    /// instance while it still answers.
    pub async fn deregister(&self) {
        if let Some(consul) = &self.consul
            && let Err(error) = consul.deregister().await
        {
            tracing::warn!(%error, "could not deregister from consul: its health check fails from now on");
        }
    }

    /// Health turns NOT_SERVING and readiness fails; calls are still served
    /// for the drain delay, so that balancers watching health stop sending.
    pub(crate) async fn stop_being_ready(&mut self) {
        tracing::info!(grace = ?self.shutdown_grace, "shutting down: draining in-flight calls");
        self.store_health.abort();
        self.health.stop().await;
        self.switches.stop.send_replace(true);
        tokio::time::sleep(self.drain_delay).await;
    }

    /// Closes the listeners and lets in-flight calls finish, for at most the
    /// grace period.
    pub async fn drain(mut self) -> Result<(), StartupError> {
        self.health.clear().await;
        self.switches.drain.send_replace(true);
        let both = async {
            let grpc_result = (&mut self.grpc).await;
            let admin_result = (&mut self.admin).await;
            (grpc_result, admin_result)
        };
        match tokio::time::timeout(self.shutdown_grace, both).await {
            Ok((grpc_result, admin_result)) => {
                grpc_result??;
                admin_result??;
                tracing::info!("drained; bye");
            }
            Err(_) => {
                tracing::warn!("grace period elapsed: abandoning the calls still in flight");
                self.grpc.abort();
                self.admin.abort();
            }
        }
        if let Some(lane) = self.health_lane {
            lane.stop().await;
        }
        Ok(())
    }
}
