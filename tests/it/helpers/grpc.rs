//! gRPC calls to a test app, and the other gRPC parties a test starts or
//! configures: the upstream simulator and the load generator.

use catalogue::{
    api::proto::{GetProductRequest, ListProductsRequest, Product},
    config::{Cli, Command},
    load::LoadConfig,
    upstream::simulator::UpstreamSimulator,
};
use clap::Parser;

use super::TestApp;

impl TestApp {
    /// Calls GetProduct for `product_id`.
    pub async fn get_product(&mut self, product_id: &str) -> Result<Product, tonic::Status> {
        let request = GetProductRequest {
            product_id: product_id.to_owned(),
        };
        self.client
            .get_product(request)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Reads a ListProducts stream of `page_size` to its end; returns how
    /// many products it held.
    pub async fn list_to_end(&mut self, page_size: i32) -> usize {
        let request = ListProductsRequest {
            page_size,
            ..Default::default()
        };
        let mut stream = self
            .client
            .list_products(request)
            .await
            .unwrap()
            .into_inner();
        let mut received = 0;
        while stream.message().await.unwrap().is_some() {
            received += 1;
        }
        received
    }
}

/// `catalogue load --target TARGET EXTRA...`, parsed.
pub fn load_config(target: &str, extra: &[&str]) -> LoadConfig {
    let args = [&["catalogue", "load", "--target", target], extra].concat();
    match Cli::try_parse_from(args)
        .expect("load flags parse")
        .into_command()
    {
        Command::Load(config) => config,
        other => unreachable!("{other:?}"),
    }
}

/// Starts an upstream simulator on loopback; returns its url.
pub async fn upstream(latency_ms: u64, error_rate: f64) -> String {
    simulator(latency_ms, error_rate, 0.0).await.0
}

/// Starts an upstream simulator; returns its url and its admin url.
pub async fn simulator(latency_ms: u64, error_rate: f64, hang_rate: f64) -> (String, String) {
    let (latency, error_rate, hang_rate) = (
        latency_ms.to_string(),
        error_rate.to_string(),
        hang_rate.to_string(),
    );
    let args = [
        "catalogue",
        "upstream",
        "--addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
        "--latency-ms",
        &latency,
        "--error-rate",
        &error_rate,
        "--hang-rate",
        &hang_rate,
    ];
    let config = match Cli::try_parse_from(args)
        .expect("simulator flags parse")
        .into_command()
    {
        Command::Upstream(config) => config,
        other => unreachable!("{other:?}"),
    };
    let simulator = UpstreamSimulator::bind(&config)
        .await
        .expect("simulator binds");
    let url = format!("http://{}", simulator.grpc_addr().unwrap());
    let admin = format!("http://{}", simulator.admin_addr().unwrap());
    tokio::spawn(simulator.run(std::future::pending()));
    (url, admin)
}
