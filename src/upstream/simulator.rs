//! `catalogue upstream`: a simulator of the inventory upstream, slow,
//! failing or hanging on demand. Its behaviour is set by flags at start and
//! changed at run time with `PUT /faults` on its own admin port (`GET` shows
//! it, `DELETE` restores the start flags).

use std::{future::Future, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use axum::{
    Json, Router, body::Bytes, extract::State, http::StatusCode, response::IntoResponse,
    routing::get,
};
use clap::Args;
use parking_lot::RwLock;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, transport::Server, transport::server::TcpIncoming};

use crate::{
    ready::{self, Addresses},
    telemetry::LogConfig,
    upstream::proto::{
        GetStockRequest, GetStockResponse,
        inventory_service_server::{InventoryService, InventoryServiceServer},
    },
    values::{Ratio, json_body},
};

/// `catalogue upstream`: the inventory simulator.
#[derive(Debug, Clone, Args)]
pub struct UpstreamSimulatorConfig {
    /// gRPC address of the simulator.
    #[arg(long, default_value = "127.0.0.1:50052")]
    pub addr: SocketAddr,
    /// Admin address (`GET`/`PUT`/`DELETE /faults`).
    #[arg(long, default_value = "127.0.0.1:6061")]
    pub admin_addr: SocketAddr,
    /// Latency of every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Extra random latency, up to this many milliseconds.
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,
    /// Fraction (0..1) of calls answered UNAVAILABLE.
    #[arg(long, default_value = "0")]
    pub error_rate: Ratio,
    /// Fraction (0..1) of calls never answered.
    #[arg(long, default_value = "0")]
    pub hang_rate: Ratio,
    /// Once listening, write the bound addresses here as one JSON object
    /// ({"grpc", "admin", "console": null}), atomically, as `serve` does.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    #[command(flatten)]
    pub logs: LogConfig,
}

/// How the simulated upstream behaves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Behaviour {
    pub latency_ms: u64,
    pub jitter_ms: u64,
    pub error_rate: Ratio,
    pub hang_rate: Ratio,
}

/// A `PUT /faults` body for the simulator.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BehaviourPatch {
    latency_ms: Option<u64>,
    jitter_ms: Option<u64>,
    error_rate: Option<Ratio>,
    hang_rate: Option<Ratio>,
}

impl Behaviour {
    fn merged(&self, patch: BehaviourPatch) -> Self {
        Self {
            latency_ms: patch.latency_ms.unwrap_or(self.latency_ms),
            jitter_ms: patch.jitter_ms.unwrap_or(self.jitter_ms),
            error_rate: patch.error_rate.unwrap_or(self.error_rate),
            hang_rate: patch.hang_rate.unwrap_or(self.hang_rate),
        }
    }
}

impl From<&UpstreamSimulatorConfig> for Behaviour {
    fn from(config: &UpstreamSimulatorConfig) -> Self {
        Self {
            latency_ms: config.latency_ms,
            jitter_ms: config.jitter_ms,
            error_rate: config.error_rate,
            hang_rate: config.hang_rate,
        }
    }
}

#[derive(Clone)]
struct Simulator {
    behaviour: Arc<RwLock<Behaviour>>,
    initial: Behaviour,
}

impl Simulator {
    fn current(&self) -> Behaviour {
        self.behaviour.read().clone()
    }
}

#[tonic::async_trait]
impl InventoryService for Simulator {
    async fn get_stock(
        &self,
        request: Request<GetStockRequest>,
    ) -> Result<Response<GetStockResponse>, Status> {
        let behaviour = self.current();
        let (delay, hang, fail) = {
            let mut rng = rand::rng();
            let jitter = if behaviour.jitter_ms > 0 {
                rng.random_range(0..=behaviour.jitter_ms)
            } else {
                0
            };
            (
                Duration::from_millis(behaviour.latency_ms + jitter),
                rng.random_bool(behaviour.hang_rate.get()),
                rng.random_bool(behaviour.error_rate.get()),
            )
        };
        if hang {
            // Never answers: only the caller's deadline ends the call.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(delay).await;
        if fail {
            return Err(Status::unavailable("simulated upstream failure"));
        }
        Ok(Response::new(GetStockResponse {
            stock_qty: stock_of(&request.get_ref().product_id),
        }))
    }
}

/// A stock level derived from the id, so answers are stable.
fn stock_of(product_id: &str) -> i32 {
    let hash = product_id
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    (hash % 1000) as i32
}

/// The bound listeners of a simulator, ready to serve.
pub struct UpstreamSimulator {
    grpc: TcpListener,
    admin: TcpListener,
    simulator: Simulator,
    ready_file: Option<PathBuf>,
}

impl UpstreamSimulator {
    pub async fn bind(config: &UpstreamSimulatorConfig) -> std::io::Result<Self> {
        let behaviour = Behaviour::from(config);
        Ok(Self {
            grpc: TcpListener::bind(config.addr).await?,
            admin: TcpListener::bind(config.admin_addr).await?,
            simulator: Simulator {
                behaviour: Arc::new(RwLock::new(behaviour.clone())),
                initial: behaviour,
            },
            ready_file: config.ready_file.clone(),
        })
    }

    pub fn grpc_addr(&self) -> std::io::Result<SocketAddr> {
        self.grpc.local_addr()
    }

    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// Serves until `shutdown` resolves.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        if let Some(path) = &self.ready_file {
            let addresses = Addresses {
                grpc: self.grpc_addr()?,
                admin: self.admin_addr()?,
                health: None,
                console: None,
            };
            ready::write(path, &addresses).map_err(std::io::Error::other)?;
        }
        tracing::info!(
            grpc = %self.grpc_addr()?,
            admin = %self.admin_addr()?,
            behaviour = ?self.simulator.initial,
            "inventory upstream simulator is serving"
        );
        let admin = Router::new()
            .route(
                "/faults",
                get(get_behaviour)
                    .put(put_behaviour)
                    .delete(reset_behaviour),
            )
            .with_state(self.simulator.clone());
        let admin = tokio::spawn(async move { axum::serve(self.admin, admin).await });
        let served = Server::builder()
            .add_service(InventoryServiceServer::new(self.simulator))
            .serve_with_incoming_shutdown(
                TcpIncoming::from(self.grpc).with_nodelay(Some(true)),
                shutdown,
            )
            .await;
        admin.abort();
        served.map_err(std::io::Error::other)
    }
}

async fn get_behaviour(State(simulator): State<Simulator>) -> Json<Behaviour> {
    Json(simulator.current())
}

async fn put_behaviour(
    State(simulator): State<Simulator>,
    body: Bytes,
) -> axum::response::Response {
    let merged = json_body::<BehaviourPatch>(&body).map(|patch| simulator.current().merged(patch));
    match merged {
        Ok(behaviour) => {
            tracing::warn!(?behaviour, "upstream behaviour changed");
            *simulator.behaviour.write() = behaviour.clone();
            Json(behaviour).into_response()
        }
        Err(error) => (
            StatusCode::BAD_REQUEST,
            format!("invalid behaviour: {error}\n"),
        )
            .into_response(),
    }
}

async fn reset_behaviour(State(simulator): State<Simulator>) -> Json<Behaviour> {
    *simulator.behaviour.write() = simulator.initial.clone();
    Json(simulator.initial.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_is_stable_and_in_range() {
        assert_eq!(stock_of("prod-0000001"), stock_of("prod-0000001"));
        assert!((0..1000).contains(&stock_of("prod-0000002")));
    }

    #[test]
    fn rates_outside_zero_to_one_are_refused_naming_the_field() {
        let error = json_body::<BehaviourPatch>(br#"{"hang_rate": 1.5}"#).unwrap_err();
        assert!(error.starts_with("hang_rate: "), "{error}");
        assert!(error.contains("not a ratio"), "{error}");
        let patch = json_body::<BehaviourPatch>(br#"{"error_rate": 0.25}"#).expect("a ratio");
        assert_eq!(patch.error_rate.map(Ratio::get), Some(0.25));
    }
}
