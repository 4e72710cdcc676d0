//! `StartupError`: the one error `App` returns.

use std::net::SocketAddr;

use crate::{
    admin::settings::InsecureAdmin, discovery::consul::ConsulError, faults::FaultError,
    ready::ReadyFileError, runtime::console::ConsoleError, store::StoreError,
};

/// Why the app did not start, or stopped other than by its shutdown signal.
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
