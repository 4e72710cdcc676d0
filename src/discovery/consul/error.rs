//! What can go wrong reading Consul flags or talking to an agent.

use std::net::SocketAddr;

use reqwest::{Method, StatusCode};

/// What can go wrong reading Consul flags or talking to an agent.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    #[error("invalid consul address {addr:?}: {reason}")]
    InvalidAddr { addr: String, reason: String },
    #[error("invalid consul target {target:?}: {reason} (expected consul://HOST:PORT/SERVICE)")]
    InvalidTarget { target: String, reason: String },
    #[error("invalid advertise address {addr:?}: {reason}")]
    InvalidAdvertiseAddr { addr: String, reason: String },
    #[error(
        "the gRPC server listens on every interface ({0}), which is no address to \
         advertise: set --consul-advertise-addr to the address other hosts reach it at"
    )]
    UnspecifiedAdvertiseAddr(SocketAddr),
    #[error("could not build the consul HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("{method} {url}: consul agent unreachable: {source}")]
    Unreachable {
        method: Method,
        url: String,
        source: reqwest::Error,
    },
    #[error("{method} {url}: consul agent answered {status}: {body}")]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("{url}: consul agent sent malformed JSON: {source}")]
    MalformedJson {
        url: String,
        source: serde_json::Error,
    },
    #[error("{url}: consul agent sent no X-Consul-Index header, so the watch cannot block")]
    MissingIndex { url: String },
}
