//! Wiring: `App::build` opens the store and binds the listeners (so port 0
//! works and the real addresses can be read back); `run_until_stopped`
//! serves gRPC, admin HTTP and tokio-console until the shutdown future
//! resolves, then drains.

use std::{future::Future, net::SocketAddr, sync::Arc};

use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tokio_util::task::AbortOnDropHandle;
use tonic_health::ServingStatus;
use tracing::{Dispatch, instrument::WithSubscriber as _};

use crate::{
    admin::{self, AdminGuard, AdminState, server::AdminLimits, settings::InsecureAdmin},
    api::{
        CatalogueApi,
        proto::catalogue_service_server::{CatalogueServiceServer, SERVICE_NAME},
    },
    config::ServeConfig,
    discovery::consul::{ConsulError, Registrar},
    faults::{FaultError, FaultInjector},
    grpc::GrpcTelemetryLayer,
    metrics::Metrics,
    protection::{Limits, fit_to_fd_limit},
    ready::{self, Addresses, ReadyFileError},
    runtime::{Console, Sampler, ScrapeHook, TaskList, console::ConsoleError},
    server,
    store::{self, InstrumentedStore, Store, StoreError},
    telemetry::{LogLevel, Telemetry},
    traces::CallTraces,
    upstream::Upstream,
};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("could not open the store: {0}")]
    Store(#[from] StoreError),
    #[error("could not bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("could not build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("invalid --fault-* flag: {0}")]
    Faults(#[from] FaultError),
    #[error("could not spawn a server task: {0}")]
    Spawn(std::io::Error),
    #[error("consul registration: {0}")]
    Consul(#[from] ConsulError),
    #[error("{0}")]
    InsecureAdmin(#[from] InsecureAdmin),
    #[error("--console: {0}")]
    Console(#[from] ConsoleError),
    #[error("{0}")]
    ReadyFile(#[from] ReadyFileError),
}

/// A built, bound and not yet serving instance of the service.
pub struct App {
    config: ServeConfig,
    /// The protection's limits, `--max-connections` fitted to the
    /// open-files limit.
    limits: Limits,
    store: Arc<dyn Store>,
    faults: Arc<FaultInjector>,
    upstream: Option<Arc<Upstream>>,
    /// The app's recorder: every component's metric handles belong to it.
    metrics: Metrics,
    /// The app's subscriber: everything it runs logs and traces through it.
    dispatch: Dispatch,
    /// What each call's polls switch to: `None` when the app's subscriber is
    /// the process's default already.
    call_dispatch: Option<Dispatch>,
    /// The log filter, changed by `PUT /log-level`.
    log_level: LogLevel,
    grpc_listener: TcpListener,
    grpc_addr: SocketAddr,
    admin_listener: TcpListener,
    admin_addr: SocketAddr,
    /// tokio-console's switch, for `/debug/console`.
    console: Option<Console>,
    /// Where tokio-console attaches when `--console` woke it at start.
    console_addr: Option<SocketAddr>,
    /// Which calls are exported, and their spans; `None` when traces are
    /// not exported.
    call_traces: Option<CallTraces>,
    consul: Option<Registrar>,
    /// The runtime's live tasks, for the task dump.
    tasks: TaskList,
}

impl App {
    /// Opens the store the configuration names, then binds.
    pub async fn build(
        config: ServeConfig,
        telemetry: &mut Telemetry,
    ) -> Result<Self, StartupError> {
        let store = store::open(&config.store_options())
            .with_subscriber(telemetry.dispatch())
            .await?;
        Self::build_with_store(config, store, telemetry).await
    }

    /// Binds the listeners around a store that is already open.
    pub async fn build_with_store(
        config: ServeConfig,
        store: Arc<dyn Store>,
        telemetry: &mut Telemetry,
    ) -> Result<Self, StartupError> {
        config.admin.check()?;
        let limits = tracing::dispatcher::with_default(&telemetry.dispatch(), || {
            fit_to_fd_limit(config.protection.limits())
        });
        let metrics = telemetry.metrics();
        let store: Arc<dyn Store> = Arc::new(InstrumentedStore::new(store, &metrics));
        let faults = Arc::new(FaultInjector::from_config(&config.faults, &metrics)?);
        let protected = limits.upstream_guarded;
        let upstream = config
            .upstream
            .upstream_url
            .clone()
            .map(|url| Arc::new(Upstream::new(url, &config.upstream, protected, &metrics)));
        let (grpc_listener, grpc_addr) = bind(config.grpc_addr).await?;
        let (admin_listener, admin_addr) = bind(config.admin.admin_addr).await?;
        let consul = Registrar::from_config(&config.consul, grpc_addr, SERVICE_NAME)?;
        let console = telemetry.console();
        let console_addr = match (&console, config.telemetry.console) {
            // `--console`: awake from the start.
            (Some(console), true) => {
                console
                    .wake()
                    .with_subscriber(telemetry.dispatch())
                    .await?
                    .addr
            }
            (None, true) => {
                tracing::warn!(
                    "--console: this build has no tokio-console layer (no tokio_unstable)"
                );
                None
            }
            (_, false) => None,
        };
        Ok(Self {
            config,
            limits,
            store,
            faults,
            upstream,
            metrics,
            dispatch: telemetry.dispatch(),
            call_dispatch: telemetry.call_dispatch(),
            log_level: telemetry.log_level(),
            call_traces: telemetry.call_traces(),
            grpc_listener,
            grpc_addr,
            admin_listener,
            admin_addr,
            console,
            console_addr,
            consul,
            tasks: telemetry.tasks(),
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Where tokio-console attaches when `--console` woke it at start;
    /// `None` without (`PUT /debug/console` answers the address).
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console_addr
    }

    /// Serves (registered with Consul, if configured) until `shutdown`
    /// resolves, then: the Consul registration goes, health turns NOT_SERVING
    /// and readiness fails, listeners stop accepting, in-flight calls and
    /// streams drain for at most the configured grace period.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), StartupError> {
        let dispatch = self.dispatch.clone();
        self.serve(shutdown).with_subscriber(dispatch).await
    }

    /// The life of the app, in steps.
    async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), StartupError> {
        let addresses = Addresses {
            grpc: self.grpc_addr,
            admin: self.admin_addr,
            console: self.console_addr,
        };
        let has_console = self.console.is_some();
        let ready_file = self.config.ready_file.clone();
        let mut running = self.start().await?;
        running.register().await?;
        if let Some(path) = ready_file {
            ready::write(&path, &addresses)?;
        }
        announce(&addresses, has_console);
        if let Some(failed) = running.serve_until(shutdown).await {
            return failed;
        }
        running.deregister().await;
        running.stop_being_ready().await;
        running.drain().await
    }

    /// Spawns the servers (gRPC, admin) and the metrics upkeep.
    async fn start(self) -> Result<Running, StartupError> {
        let Self {
            config,
            limits,
            store,
            faults,
            upstream,
            metrics,
            dispatch,
            call_dispatch,
            log_level,
            call_traces,
            grpc_listener,
            admin_listener,
            admin_addr,
            console,
            consul,
            tasks,
            ..
        } = self;
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<CatalogueServiceServer<CatalogueApi>>()
            .await;
        // `stopping`: health and readiness fail; `draining`, `drain_delay`
        // later: the listeners close and in-flight calls finish.
        let (stop, stopping) = watch::channel(false);
        let (drain, draining) = watch::channel(false);

        let telemetry_layer = GrpcTelemetryLayer::new(
            &server::served_rpcs(config.telemetry.trace_health_checks),
            call_traces,
            &metrics,
            call_dispatch,
        );
        let sampler = Sampler::new(
            tokio::runtime::Handle::current(),
            metrics.clone(),
            scrape_hooks(&metrics, &store, upstream.as_ref()),
            telemetry_layer.task_monitors(),
            !config.telemetry.no_runtime_metrics,
        );
        let labels = telemetry_layer.labels();
        let services = server::Services {
            catalogue: server::catalogue(
                CatalogueApi::new(store.clone(), upstream),
                faults.clone(),
                config.max_message_bytes,
            ),
            health: health_service,
        };
        let grpc_server = server::serve(
            services,
            grpc_listener,
            telemetry_layer,
            &limits,
            &metrics,
            config.max_concurrent_streams,
            drained(draining.clone()),
        )?;
        // Named, so task dumps (and tokio-console) say which task is which.
        let grpc = tasks
            .spawn("grpc-server", grpc_server)
            .map_err(StartupError::Spawn)?;
        let store_for_health = store.clone();
        let admin_router = admin::router(AdminState {
            store,
            metrics: Arc::new(sampler),
            faults,
            stopping,
            guard: AdminGuard::new(config.admin.admin_token.clone(), admin_addr),
            tasks: tasks.clone(),
            log_level,
            console,
            dispatch,
            labels,
        });
        let admin_limits = AdminLimits {
            max_connections: config.admin.admin_max_connections as usize,
            header_timeout: config.admin.admin_header_timeout,
        };
        let admin_server = admin::server::serve(
            admin_listener,
            admin_router,
            admin_limits,
            tasks.clone(),
            metrics.clone(),
            drained(draining),
        );
        let admin = tasks
            .spawn("admin-server", admin_server)
            .map_err(StartupError::Spawn)?;
        let upkeep = tasks
            .spawn("metrics-upkeep", metrics.upkeep())
            .map_err(StartupError::Spawn)?;
        let store_health = tasks
            .spawn(
                "store-health",
                server::follow_store_health(
                    store_for_health,
                    health.clone(),
                    config.store_health_interval,
                ),
            )
            .map_err(StartupError::Spawn)?;
        Ok(Running {
            grpc,
            admin,
            health,
            stop,
            drain,
            consul,
            drain_delay: config.drain_delay,
            shutdown_grace: config.shutdown_grace,
            _upkeep: AbortOnDropHandle::new(upkeep),
            store_health: AbortOnDropHandle::new(store_health),
        })
    }
}

/// A started app: its server tasks and the switches that stop it.
struct Running {
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    admin: JoinHandle<std::io::Result<()>>,
    health: tonic_health::server::HealthReporter,
    /// Turns health and readiness off.
    stop: watch::Sender<bool>,
    /// Closes the listeners.
    drain: watch::Sender<bool>,
    consul: Option<Registrar>,
    drain_delay: std::time::Duration,
    shutdown_grace: std::time::Duration,
    _upkeep: AbortOnDropHandle<()>,
    /// Sets the catalogue's health from the store's; stopped before the
    /// drain turns it NOT_SERVING for good.
    store_health: AbortOnDropHandle<()>,
}

impl Running {
    /// Registers with Consul, if configured; a failure stops start-up.
    async fn register(&mut self) -> Result<(), StartupError> {
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
    async fn serve_until(
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
    async fn deregister(&self) {
        if let Some(consul) = &self.consul
            && let Err(error) = consul.deregister().await
        {
            tracing::warn!(%error, "could not deregister from consul: its health check fails from now on");
        }
    }

    /// Health turns NOT_SERVING and readiness fails; calls are still served
    /// for the drain delay, so that balancers watching health stop sending.
    async fn stop_being_ready(&mut self) {
        tracing::info!(grace = ?self.shutdown_grace, "shutting down: draining in-flight calls");
        self.store_health.abort();
        self.health
            .set_not_serving::<CatalogueServiceServer<CatalogueApi>>()
            .await;
        self.health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        self.stop.send_replace(true);
        tokio::time::sleep(self.drain_delay).await;
    }

    /// Closes the listeners and lets in-flight calls finish, for at most the
    /// grace period.
    async fn drain(mut self) -> Result<(), StartupError> {
        // Health Watch streams never end by themselves, and the drain would
        // wait for them: clearing the statuses ends them (later checks get
        // NOT_FOUND), so watchers' connections go.
        self.health.clear_service_status(SERVICE_NAME).await;
        self.health.clear_service_status("").await;
        self.drain.send_replace(true);
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
        Ok(())
    }
}

/// Says where everything is, once serving: the addresses as fields (for
/// log searches), and a line each for the pages and the first call.
fn announce(addresses: &Addresses, has_console: bool) {
    let Addresses {
        grpc,
        admin,
        console,
    } = addresses;
    let console = match (console, has_console) {
        (Some(awake), _) => format!("awake at {awake}"),
        (None, true) => format!("dormant (curl -X PUT http://{admin}/debug/console wakes it)"),
        (None, false) => "not in this build".to_owned(),
    };
    tracing::info!(%grpc, %admin, %console, "catalogue is serving");
    tracing::info!("metrics:  http://{admin}/metrics");
    tracing::info!("profiles: http://{admin}/debug/pprof/");
    tracing::info!(
        "first call: bash scripts/python-client.sh {grpc}  (or grpcurl -plaintext {grpc} list)"
    );
}

/// What the metrics sampler runs on each scrape besides the runtime's
/// numbers: the database pool's gauges and the upstream's breaker, which
/// turns half-open by the clock (a scrape moves it on, so its state gauge
/// is never staler than the scrape).
fn scrape_hooks(
    metrics: &Metrics,
    store: &Arc<dyn Store>,
    upstream: Option<&Arc<Upstream>>,
) -> Vec<ScrapeHook> {
    let mut hooks: Vec<ScrapeHook> = Vec::new();
    if let Some(pool) = store::pool_gauges(store.clone(), metrics) {
        hooks.push(Box::new(pool));
    }
    if let Some(upstream) = upstream.cloned() {
        hooks.push(Box::new(move || {
            upstream.circuit_state();
        }));
    }
    hooks
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartupError> {
    let bind_error = |source| StartupError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local_addr))
}

/// Resolves once draining has begun.
async fn drained(mut draining: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = draining.wait_for(|draining| *draining).await;
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled: a SIGTERM that arrives while
/// the app is still starting drains it instead of killing it. Call it inside
/// the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        [SignalKind::interrupt(), SignalKind::terminate()].map(signal)
    };
    async move {
        #[cfg(unix)]
        match signals {
            [Ok(mut interrupt), Ok(mut terminate)] => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            }
            [Err(error), _] | [_, Err(error)] => {
                tracing::error!(%error, "cannot listen for Ctrl-C and SIGTERM");
                std::future::pending::<()>().await;
            }
        }
        #[cfg(not(unix))]
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    }
}
