//! `Parts`: what the servers are built from, and how each is spawned
//! (gRPC, admin, the health lane) on the app's task list.

use std::{future::Future, net::SocketAddr, sync::Arc};

use tokio::{net::TcpListener, task::JoinHandle};
use tonic_health::pb::health_server::{Health, HealthServer};

use super::{StartupError, running::Switches};
use crate::{
    admin::{self, AdminGuard, AdminState},
    api::CatalogueApi,
    config::ServeConfig,
    faults::FaultInjector,
    grpc::GrpcTelemetryLayer,
    health::HealthLane,
    metrics::Metrics,
    profiling::labels::LabelTable,
    protection::Limits,
    runtime::{Collector, ScrapeHook},
    server::{self, HealthStatus},
    store::{self, Store},
    telemetry::Telemetry,
    upstream::Upstream,
};

/// What the servers are built from.
pub(super) struct Parts {
    pub(super) config: ServeConfig,
    /// The protection's limits, `--max-connections` fitted to the
    /// open-files limit.
    pub(super) limits: Limits,
    pub(super) store: Arc<dyn Store>,
    pub(super) faults: Arc<FaultInjector>,
    pub(super) upstream: Option<Arc<Upstream>>,
    /// The app's recorder (every component's metric handles belong to it)
    /// and subscriber (everything it runs logs and traces through it).
    pub(super) telemetry: Telemetry,
}

impl Parts {
    /// The layer around every gRPC call, and the scrape-time collector that
    /// reads its tasks' numbers with the runtime's.
    pub(super) fn grpc_telemetry(&self) -> (GrpcTelemetryLayer, Collector) {
        let metrics = self.telemetry.metrics();
        let runtime_metrics = !self.config.telemetry.no_runtime_metrics;
        let layer = GrpcTelemetryLayer::new(
            &server::served_rpcs(self.config.telemetry.trace_health_checks),
            self.telemetry.call_traces(),
            &metrics,
            self.telemetry.call_dispatch(),
            runtime_metrics,
        );
        let collector = Collector::new(
            tokio::runtime::Handle::current(),
            metrics.clone(),
            self.scrape_hooks(&metrics),
            layer.task_monitors(),
            runtime_metrics,
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
    pub(super) fn serve_grpc(
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
    pub(super) fn serve_admin(
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

    /// Starts the health lane on its own thread (and its heartbeat on this
    /// runtime), until the app has drained.
    pub(super) fn serve_health_lane(
        &self,
        listener: TcpListener,
        health: &HealthStatus,
        switches: &Switches,
    ) -> Result<HealthLane, StartupError> {
        let stall_limit = self.config.health_stall_limit;
        let lane = HealthLane::spawn(
            listener,
            health.service(),
            stall_limit,
            switches.stopping(),
            &self.limits,
            &self.telemetry,
        );
        lane.map_err(StartupError::Spawn)
    }

    /// Spawns `task` named, so task dumps (and tokio-console) say which
    /// task is which, and where (the caller's line).
    #[track_caller]
    pub(super) fn spawn<T: Future<Output: Send + 'static> + Send + 'static>(
        &self,
        name: &'static str,
        task: T,
    ) -> Result<JoinHandle<T::Output>, StartupError> {
        let spawned = self.telemetry.tasks().spawn(name, task);
        spawned.map_err(StartupError::Spawn)
    }
}
