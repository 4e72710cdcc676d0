//! Wiring: `App::build` opens the store and binds the listeners (so port 0
//! works and the real addresses can be read back); `run_until_stopped`
//! serves gRPC, admin HTTP and tokio-console until the shutdown future
//! resolves, then drains (`running`: a started app and the steps of its
//! shutdown). `parts`: what the servers are built from, and how each is
//! spawned (gRPC, admin, the health lane). `error`: `StartupError`, why it
//! did not start.

mod error;
mod parts;
mod running;

use std::{future::Future, net::SocketAddr, sync::Arc};

use futures::future::OptionFuture;
use tokio::net::TcpListener;
use tokio_util::task::AbortOnDropHandle;
use tracing::instrument::WithSubscriber as _;

pub use self::error::StartupError;
use self::{
    parts::Parts,
    running::{Running, Switches},
};
use crate::{
    api::proto::catalogue_service_server::SERVICE_NAME,
    config::ServeConfig,
    discovery::consul::Registrar,
    faults::FaultInjector,
    protection::fit_to_fd_limit,
    ready::{self, Addresses},
    runtime::console,
    server::HealthStatus,
    store::{self, InstrumentedStore, Store},
    telemetry::Telemetry,
    upstream::Upstream,
};

/// A built, bound and not yet serving instance of the service.
pub struct App {
    parts: Parts,
    grpc_listener: TcpListener,
    admin_listener: TcpListener,
    /// The health lane's, unless `--no-health-lane`.
    health_listener: Option<TcpListener>,
    /// The listeners' real addresses, and tokio-console's when `--console`
    /// woke it at start.
    addresses: Addresses,
    consul: Option<Registrar>,
}

impl App {
    /// Opens the store the configuration names, then binds.
    pub async fn build(config: ServeConfig, telemetry: &Telemetry) -> Result<Self, StartupError> {
        let store = store::open(&config.store_options())
            .with_subscriber(telemetry.dispatch())
            .await?;
        Self::build_with_store(config, store, telemetry).await
    }

    /// Binds the listeners around a store that is already open.
    pub async fn build_with_store(
        config: ServeConfig,
        store: Arc<dyn Store>,
        telemetry: &Telemetry,
    ) -> Result<Self, StartupError> {
        config.admin.check()?;
        let limits = tracing::dispatcher::with_default(&telemetry.dispatch(), || {
            fit_to_fd_limit(config.protection.limits())
        });
        let metrics = telemetry.metrics();
        let store: Arc<dyn Store> = Arc::new(InstrumentedStore::new(store, &metrics));
        let faults = Arc::new(FaultInjector::from_config(&config.faults, &metrics)?);
        let upstream = Upstream::from_config(&config.upstream, limits.upstream_guarded, &metrics);
        let (grpc_listener, grpc_addr) = bind(config.grpc_addr).await?;
        let (admin_listener, admin_addr) = bind(config.admin.admin_addr).await?;
        let lane = (!config.no_health_lane).then(|| bind(config.health_addr));
        let (health_listener, health_addr) = OptionFuture::from(lane).await.transpose()?.unzip();
        let consul = Registrar::from_config(&config.consul, grpc_addr, SERVICE_NAME)?;
        let console_addr = console::wake_at_start(telemetry.console(), config.telemetry.console)
            .with_subscriber(telemetry.dispatch())
            .await?;
        Ok(Self {
            parts: Parts {
                config,
                limits,
                store,
                faults,
                upstream,
                telemetry: telemetry.clone(),
            },
            grpc_listener,
            admin_listener,
            health_listener,
            addresses: Addresses {
                grpc: grpc_addr,
                admin: admin_addr,
                health: health_addr,
                console: console_addr,
            },
            consul,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.addresses.grpc
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.addresses.admin
    }

    /// The health lane's address; `None` with `--no-health-lane`.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.addresses.health
    }

    /// Where tokio-console attaches when `--console` woke it at start;
    /// `None` without (`PUT /debug/console` answers the address).
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.addresses.console
    }

    /// Serves (registered with Consul, if configured) until `shutdown`
    /// resolves, then: the Consul registration goes, health turns NOT_SERVING
    /// and readiness fails, listeners stop accepting, in-flight calls and
    /// streams drain for at most the configured grace period.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), StartupError> {
        let dispatch = self.parts.telemetry.dispatch();
        self.serve(shutdown).with_subscriber(dispatch).await
    }

    /// The life of the app, in steps.
    async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), StartupError> {
        let addresses = self.addresses;
        let has_console = self.parts.telemetry.console().is_some();
        let ready_file = self.parts.config.ready_file.clone();
        let mut running = self.start().await?;
        running.register().await?;
        if let Some(path) = ready_file {
            ready::write(&path, &addresses)?;
        }
        ready::announce(&addresses, has_console);
        if let Some(failed) = running.serve_until(shutdown).await {
            return failed;
        }
        running.deregister().await;
        running.stop_being_ready().await;
        running.drain().await
    }

    /// Spawns the servers (gRPC, admin, the health lane) and what runs
    /// beside them.
    async fn start(self) -> Result<Running, StartupError> {
        let Self {
            parts,
            grpc_listener,
            admin_listener,
            health_listener,
            addresses,
            consul,
        } = self;
        let (health, health_service) = HealthStatus::serving().await;
        let switches = Switches::new();
        let (grpc_layer, scrape) = parts.grpc_telemetry();
        let labels = grpc_layer.labels();
        let grpc = parts.serve_grpc(grpc_listener, grpc_layer, health_service, &switches)?;
        let admin =
            parts.serve_admin(admin_listener, addresses.admin, scrape, labels, &switches)?;
        let health_lane =
            health_listener.map(|listener| parts.serve_health_lane(listener, &health, &switches));
        let health_lane = health_lane.transpose()?;
        let upkeep = parts.spawn("metrics-upkeep", parts.telemetry.metrics().upkeep())?;
        let interval = parts.config.store_health_interval;
        let store_health = health.clone().follow_store(parts.store.clone(), interval);
        let store_health = parts.spawn("store-health", store_health)?;
        Ok(Running {
            grpc,
            admin,
            health,
            health_lane,
            switches,
            consul,
            drain_delay: parts.config.drain_delay,
            shutdown_grace: parts.config.shutdown_grace,
            _upkeep: AbortOnDropHandle::new(upkeep),
            store_health: AbortOnDropHandle::new(store_health),
        })
    }
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartupError> {
    let bind_error = |source| StartupError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local_addr))
}
