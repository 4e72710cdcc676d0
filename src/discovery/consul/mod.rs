//! Consul: registering this instance with an agent, and resolving the healthy
//! instances of a service.
//!
//! The agent's HTTP API, as Consul documents it:
//! - `PUT /v1/agent/service/register`: the service definition, with a gRPC
//!   health check on the catalogue's health service (`Registrar::register`);
//! - `PUT /v1/agent/service/deregister/:service_id` (`Registrar::deregister`);
//! - `GET /v1/health/service/:service?passing=true`, once
//!   (`ConsulClient::healthy_instances`) or as blocking queries (`index` and
//!   `wait` parameters, `X-Consul-Index` header: `ConsulClient::watch`).
//!
//! Plain HTTP to an agent, normally the one on the same host: no TLS, no ACL
//! token.
//!
//! # Layout
//! - `settings`: the `--consul-*` flags (`ConsulConfig`) and the addresses
//!   they parse into (`ConsulAddr`, `AdvertiseAddr`);
//! - `agent`: `ConsulClient`, the HTTP transport to one agent, and the
//!   `Instance`s its health endpoint answers;
//! - `registration`: what this instance registers (`Registration`) and when
//!   (`Registrar`);
//! - `watch`: following a service with blocking queries (`WatchOptions`),
//!   and the `consul://` target (`ConsulTarget`);
//! - `error`: `ConsulError`, shared by all of them.

mod agent;
mod error;
mod registration;
mod settings;
mod watch;

pub use agent::{ConsulClient, Instance};
pub use error::ConsulError;
pub use registration::{Registrar, Registration};
pub use settings::{AdvertiseAddr, ConsulAddr, ConsulConfig};
pub use watch::{ConsulTarget, WatchOptions};
