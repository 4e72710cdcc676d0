//! Wiring: `App::build` opens the store and binds the listeners (so port 0
//! works and the real addresses can be read back); `run_until_stopped`
//! serves gRPC, admin HTTP and tokio-console until the shutdown future
//! resolves, then drains (`running`: a started app and the steps of its
//! shutdown). `error`: `StartupError`, why it did not start.

mod error;
mod running;

use std::{future::Future, net::SocketAddr, sync::Arc};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::task::AbortOnDropHandle;
use tonic_health::pb::health_server::{Health, HealthServer};
use tracing::instrument::WithSubscriber as _;

pub use self::error::StartupError;
use self::running::{Running, Switches};
use crate::{
    admin::{self, AdminGuard, AdminState},
    api::{CatalogueApi, proto::catalogue_service_server::SERVICE_NAME},
    config::ServeConfig,
    discovery::consul::Registrar,
    faults::FaultInjector,
    grpc::GrpcTelemetryLayer,
    metrics::Metrics,
    profiling::labels::LabelTable,
    protection::{Limits, fit_to_fd_limit},
    ready::{self, Addresses},
    runtime::{Collector, ScrapeHook, console},
    server::{self, HealthStatus},
    store::{self, InstrumentedStore, Store},
    telemetry::Telemetry,
    upstream::Upstream,
};

/// A built, bound and not yet serving instance of the service.
pub struct App {
    parts: Parts,
    grpc_listener: TcpListener,
    admin_listener: TcpListener,
    /// The listeners' real addresses, and tokio-console's when `--console`
    /// woke it at start.
    addresses: Addresses,
    consul: Option<Registrar>,
}

/// What the servers are built from.
struct Parts {
    config: ServeConfig,
    /// The protection's limits, `--max-connections` fitted to the
    /// open-files limit.
    limits: Limits,
    store: Arc<dyn Store>,
    faults: Arc<FaultInjector>,
    upstream: Option<Arc<Upstream>>,
    /// The app's recorder (every component's metric handles belong to it)
    /// and subscriber (everything it runs logs and traces through it).
    telemetry: Telemetry,
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
            addresses: Addresses {
                grpc: grpc_addr,
                admin: admin_addr,
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

    /// Spawns the servers (gRPC, admin) and what runs beside them.
    async fn start(self) -> Result<Running, StartupError> {
        let Self {
            parts,
            grpc_listener,
            admin_listener,
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
        let upkeep = parts.spawn("metrics-upkeep", parts.telemetry.metrics().upkeep())?;
        let interval = parts.config.store_health_interval;
        let store_health = health.clone().follow_store(parts.store.clone(), interval);
        let store_health = parts.spawn("store-health", store_health)?;
        Ok(Running {
            grpc,
            admin,
            health,
            switches,
            consul,
            drain_delay: parts.config.drain_delay,
            shutdown_grace: parts.config.shutdown_grace,
            _upkeep: AbortOnDropHandle::new(upkeep),
            store_health: AbortOnDropHandle::new(store_health),
        })
    }
}

impl Parts {
    /// The layer around every gRPC call, and the scrape-time collector that
    /// reads its tasks' numbers with the runtime's.
    fn grpc_telemetry(&self) -> (GrpcTelemetryLayer, Collector) {
        let metrics = self.telemetry.metrics();
        let layer = GrpcTelemetryLayer::new(
            &server::served_rpcs(self.config.telemetry.trace_health_checks),
            self.telemetry.call_traces(),
            &metrics,
            self.telemetry.call_dispatch(),
        );
        let collector = Collector::new(
            tokio::runtime::Handle::current(),
            metrics.clone(),
            self.scrape_hooks(&metrics),
            layer.task_monitors(),
            !self.config.telemetry.no_runtime_metrics,
        );
        (layer, collector)
    }

    /// What the metrics collector runs on each scrape besides the runtime's
    /// numbers: the database pool's gauges and the upstream's breaker.
    fn scrape_hooks(&self, metrics: &Metrics) -> Vec<ScrapeHook> {
        let pool = store::pool_gauges(self.store.clone(), metrics);
        let breaker = self.upstream.as_ref().map(Upstream::scrape_hook);
        let pool = pool.map(|pool| Box::new(pool) as ScrapeHook);
        pool.into_iter()
            .chain(breaker.map(|breaker| Box::new(breaker) as ScrapeHook))
            .collect()
    }

    /// Spawns the gRPC server: the catalogue and health behind `layer`,
    /// until the drain.
    fn serve_grpc(
        &self,
        listener: TcpListener,
        layer: GrpcTelemetryLayer,
        health: HealthServer<impl Health>,
        switches: &Switches,
    ) -> Result<JoinHandle<Result<(), tonic::transport::Error>>, StartupError> {
        let api = CatalogueApi::new(self.store.clone(), self.upstream.clone());
        let services = server::Services {
            catalogue: server::catalogue(api, self.faults.clone(), self.config.max_message_bytes),
            health,
        };
        let grpc_server = server::serve(
            services,
            listener,
            layer,
            &self.limits,
            &self.telemetry.metrics(),
            self.config.max_concurrent_streams,
            switches.drained(),
        )?;
        self.spawn("grpc-server", grpc_server)
    }

    /// Spawns the admin HTTP server, until the drain: its routes read the
    /// app's parts, its telemetry's handles and `collector`.
    fn serve_admin(
        &self,
        listener: TcpListener,
        addr: SocketAddr,
        collector: Collector,
        labels: LabelTable,
        switches: &Switches,
    ) -> Result<JoinHandle<std::io::Result<()>>, StartupError> {
        let router = admin::router(AdminState {
            store: self.store.clone(),
            metrics: Arc::new(collector),
            faults: self.faults.clone(),
            stopping: switches.stopping(),
            guard: AdminGuard::new(self.config.admin.admin_token.clone(), addr),
            tasks: self.telemetry.tasks(),
            log_level: self.telemetry.log_level(),
            console: self.telemetry.console(),
            dispatch: self.telemetry.dispatch(),
            labels,
        });
        let admin_server = admin::server::serve(
            listener,
            router,
            self.config.admin.limits(),
            self.telemetry.tasks(),
            self.telemetry.metrics(),
            switches.drained(),
        );
        self.spawn("admin-server", admin_server)
    }

    /// Spawns `task` named, so task dumps (and tokio-console) say which
    /// task is which, and where (the caller's line).
    #[track_caller]
    fn spawn<T: Future<Output: Send + 'static> + Send + 'static>(
        &self,
        name: &'static str,
        task: T,
    ) -> Result<JoinHandle<T::Output>, StartupError> {
        let spawned = self.telemetry.tasks().spawn(name, task);
        spawned.map_err(StartupError::Spawn)
    }
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartupError> {
    let bind_error = |source| StartupError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local_addr))
}
