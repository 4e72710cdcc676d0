//! catalogue: an observability-first reference gRPC service.
//!
//! # Layout
//! - `config`: flags and environment, read once;
//! - `app`: `App::build` binds, `App::run_until_stopped` serves and drains;
//! - `api`: the gRPC handlers and generated protobuf types;
//! - `method`: the service's RPCs as one type (`Method`);
//! - `values`: values checked where they are parsed (`Ratio`, URLs);
//! - `domain`: products and validated request values;
//! - `store`: the `Store` trait with SQLite, PostgreSQL and memory backends;
//! - `error`: the one mapping from errors to gRPC statuses;
//! - `admin`: the HTTP admin server (metrics, health, faults, profiles and
//!   task dumps);
//! - `faults`: runtime fault injection;
//! - `load`: the load generator (`catalogue load`);
//! - `discovery`: where a service's replicas are, and a client balanced over
//!   the healthy ones; Consul registration and resolution;
//! - `upstream`: the inventory client (deadline, bulkhead, circuit breaker)
//!   and its simulator (`catalogue upstream`);
//! - `health`: the health lane, probes answered on a thread of their own;
//! - `protection`: server-side load shedding and connection limits;
//! - `coalesce`: a connection's writes of one HTTP/2 round in one system call;
//! - `ready`: the `--ready-file` a server writes once it listens;
//! - `telemetry`: the app's subscriber (logs, traces, console) and its
//!   set-up, one per app;
//! - `metrics`: the app's recorder, every metric's definition, the
//!   exposition and its exemplars;
//! - `traces`: head sampling, the keep decision and every exported span;
//! - `runtime`: the Tokio runtime's and tasks' metrics, the task list,
//!   tokio-console;
//! - `profiling`: the call each CPU sample was taken in;
//! - `grpc`: the tower layer that turns every call into a span and metrics;
//! - `status`: gRPC status codes as each convention names them.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod app;
pub mod coalesce;
pub mod config;
pub mod discovery;
pub mod domain;
pub mod error;
pub mod faults;
pub mod grpc;
pub mod health;
pub mod load;
pub mod method;
pub mod metrics;
pub mod profiling;
pub mod protection;
pub mod ready;
pub mod runtime;
pub mod server;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod traces;
pub mod upstream;
pub mod values;
