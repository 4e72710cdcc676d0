//! Drives `GetProduct` at a running catalogue from many concurrent callers
//! and prints the calls per second: load for profiles and flame graphs, and a
//! throughput number to compare runs by.
//!
//! ```sh
//! cargo run --release --example load -- --grpc-addr 127.0.0.1:50051 --seconds 10
//! ```

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use catalogue::api::proto::{
    GetProductRequest, ListProductsRequest, catalogue_service_client::CatalogueServiceClient,
};
use clap::Parser;
use futures::TryStreamExt;
use tonic::transport::Channel;

#[derive(Debug, Parser)]
struct Load {
    /// The service's gRPC address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    grpc_addr: SocketAddr,
    /// How long to drive load.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Callers, each with one call in flight at a time.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// HTTP/2 connections the callers share round-robin.
    #[arg(long, default_value_t = 4)]
    connections: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let load = Load::parse();
    let mut clients = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        let channel = Channel::from_shared(format!("http://{}", load.grpc_addr))?
            .connect()
            .await?;
        clients.push(CatalogueServiceClient::new(channel));
    }
    // Ids of real products, whatever the catalogue holds.
    let ids: Arc<Vec<String>> = Arc::new(
        clients[0]
            .list_products(ListProductsRequest {
                page_size: 1000,
                ..Default::default()
            })
            .await?
            .into_inner()
            .map_ok(|product| product.id)
            .try_collect()
            .await?,
    );
    anyhow::ensure!(!ids.is_empty(), "the catalogue is empty");

    let calls = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(load.seconds);
    let callers: Vec<_> = (0..load.concurrency)
        .map(|caller| {
            let mut client = clients[caller % clients.len()].clone();
            let (ids, calls) = (Arc::clone(&ids), Arc::clone(&calls));
            tokio::spawn(async move {
                let mut next = caller;
                while Instant::now() < deadline {
                    let product_id = ids[next % ids.len()].clone();
                    client.get_product(GetProductRequest { product_id }).await?;
                    calls.fetch_add(1, Ordering::Relaxed);
                    next += load.concurrency;
                }
                Ok::<_, tonic::Status>(())
            })
        })
        .collect();
    let started = Instant::now();
    for caller in callers {
        caller.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let calls = calls.load(Ordering::Relaxed);
    println!(
        "GetProduct: {calls} calls in {elapsed:.1} s = {:.0} calls/s ({} callers, {} connections)",
        calls as f64 / elapsed,
        load.concurrency,
        load.connections
    );
    Ok(())
}
