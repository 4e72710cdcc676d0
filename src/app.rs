//! Wiring: `App::build` opens the store and binds the listeners (so port 0
//! works and the real addresses can be read back); `run_until_stopped`
//! serves gRPC and admin HTTP until the shutdown future resolves, then
//! drains.

use std::{any::Any, future::Future, net::SocketAddr, sync::Arc};

use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tonic::{Status, transport::Server, transport::server::TcpIncoming};
use tonic_health::{
    ServingStatus,
    pb::health_server::{Health, HealthServer},
};
use tower_http::catch_panic::CatchPanicLayer;

use crate::{
    admin::{self, AdminState, TaskNames},
    api::{CatalogueApi, proto, proto::catalogue_service_server::CatalogueServiceServer},
    config::ServeConfig,
    store::{self, Store, StoreError},
};

/// h2's guard against streams reset by protocol errors (the "rapid reset"
/// family): tonic passes `None` to hyper by default, which turns it off.
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

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
    #[error("admin server failed: {0}")]
    Admin(std::io::Error),
    #[error("server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("could not spawn a server task: {0}")]
    Spawn(std::io::Error),
}

/// A built, bound and not yet serving instance of the service.
pub struct App {
    config: ServeConfig,
    store: Arc<dyn Store>,
    grpc_listener: TcpListener,
    grpc_addr: SocketAddr,
    admin_listener: TcpListener,
    admin_addr: SocketAddr,
}

impl App {
    /// Opens the store the configuration names, then binds.
    pub async fn build(config: ServeConfig) -> Result<Self, StartupError> {
        let store = store::open(&config.store_options()).await?;
        Self::build_with_store(config, store).await
    }

    /// Binds the listeners around a store that is already open.
    pub async fn build_with_store(
        config: ServeConfig,
        store: Arc<dyn Store>,
    ) -> Result<Self, StartupError> {
        let (grpc_listener, grpc_addr) = bind(config.grpc_addr).await?;
        let (admin_listener, admin_addr) = bind(config.admin_addr).await?;
        Ok(Self {
            config,
            store,
            grpc_listener,
            grpc_addr,
            admin_listener,
            admin_addr,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Serves until `shutdown` resolves, then: health turns NOT_SERVING and
    /// readiness fails, listeners stop accepting, in-flight calls and streams
    /// drain for at most the configured grace period.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), StartupError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<CatalogueServiceServer<CatalogueApi>>()
            .await;
        let (drain, draining) = watch::channel(false);
        let Self {
            config,
            store,
            grpc_listener,
            admin_listener,
            ..
        } = self;

        let grpc_server = grpc_server(
            &config,
            store.clone(),
            grpc_listener,
            health_service,
            draining.clone(),
        )?;
        // Named, so task dumps (and tokio-console) say which task is which.
        let task_names = TaskNames::default();
        let mut grpc = task_names
            .spawn("grpc-server", grpc_server)
            .map_err(StartupError::Spawn)?;
        let admin_router = admin::router(AdminState {
            store,
            draining: draining.clone(),
            admin_token: config.admin_token.clone(),
            task_names: task_names.clone(),
        });
        let admin_server = axum::serve(admin_listener, admin_router)
            .with_graceful_shutdown(drained(draining.clone()));
        let mut admin: JoinHandle<std::io::Result<()>> = task_names
            .spawn("admin-server", async move { admin_server.await })
            .map_err(StartupError::Spawn)?;

        tokio::select! {
            () = shutdown => {}
            result = &mut grpc => return result?.map_err(StartupError::from),
            result = &mut admin => return result?.map_err(StartupError::Admin),
        }

        tracing::info!(grace = ?config.shutdown_grace, "shutting down: draining in-flight calls");
        health
            .set_not_serving::<CatalogueServiceServer<CatalogueApi>>()
            .await;
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        drain.send_replace(true);

        let both = async {
            let grpc_result = (&mut grpc).await;
            let admin_result = (&mut admin).await;
            (grpc_result, admin_result)
        };
        match tokio::time::timeout(config.shutdown_grace, both).await {
            Ok((grpc_result, admin_result)) => {
                grpc_result??;
                admin_result?.map_err(StartupError::Admin)?;
                tracing::info!("drained; bye");
            }
            Err(_) => {
                tracing::warn!("grace period elapsed: abandoning the calls still in flight");
                grpc.abort();
                admin.abort();
            }
        }
        Ok(())
    }
}

/// The gRPC server future: catalogue, health and reflection, with the HTTP/2
/// limits set explicitly.
fn grpc_server<H: Health>(
    config: &ServeConfig,
    store: Arc<dyn Store>,
    listener: TcpListener,
    health_service: HealthServer<H>,
    draining: watch::Receiver<bool>,
) -> Result<impl Future<Output = Result<(), tonic::transport::Error>> + Send + use<H>, StartupError>
{
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let catalogue = CatalogueServiceServer::new(CatalogueApi::new(store))
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Ok(Server::builder()
        .max_concurrent_streams(config.max_concurrent_streams)
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
        .layer(CatchPanicLayer::custom(panic_response))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(catalogue)
        .serve_with_incoming_shutdown(incoming, drained(draining)))
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

/// A panicking handler answers its call with INTERNAL; the server and every
/// other call are unaffected.
fn panic_response(panic: Box<dyn Any + Send + 'static>) -> http::Response<tonic::body::Body> {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload");
    tracing::error!(panic = message, "handler panicked");
    Status::internal("internal error").into_http()
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
