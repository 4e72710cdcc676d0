//! The bare stack: `catalogue.v1.CatalogueService` on tonic with nothing on
//! it, the baseline every cost of the catalogue is measured against, and the
//! lower rungs of the cost ladder (`docs/cost-ladder.md`).
//!
//! `--up-to bare` (the default) is tonic's own server over a `HashMap` of
//! the seed catalogue's protobuf products, each answer a clone: no layer, no
//! telemetry, jemalloc without heap profiling, tokio's default runtime. Each
//! later rung adds one of the catalogue's parts to everything before it, in
//! the order a call meets them, so the difference between two rungs is what
//! that part costs:
//!
//! ```sh
//! cargo build --release --example bare_tonic
//! target/release/examples/bare_tonic --grpc-addr 127.0.0.1:50051 --up-to shed
//! ```
//!
//! The rungs above `task-list` (the telemetry layer, runtime metrics, heap
//! profiling, traces) are the catalogue binary's own configurations:
//! `scripts/ladder.py` runs both.

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, pin::Pin, sync::Arc};

use catalogue::{
    api::{
        CatalogueApi, next_page_trailer,
        proto::{
            self,
            catalogue_service_server::{CatalogueService, CatalogueServiceServer},
        },
    },
    coalesce::CoalescedWrites,
    domain::{
        CategoryId, DEFAULT_LIST_PAGE_SIZE, DEFAULT_SEARCH_PAGE_SIZE, InvalidInput, ListCursor,
        MAX_LIST_PAGE_SIZE, MAX_SEARCH_PAGE_SIZE, PageSize, ProductId, SearchOffset, SearchQuery,
        SearchText,
    },
    faults::{FaultInjector, FaultLayer, FaultsConfig},
    metrics::Metrics,
    protection::{Limits, ProtectionConfig, ShedLayer, expose_tcp_info, guard_connections},
    runtime::{TaskList, runtime_builder},
    store::{MemoryStore, Store},
};
use clap::{Parser, ValueEnum};
use futures::{Stream, StreamExt};
use tonic::{
    Request, Response, Status,
    transport::{Server, server::TcpIncoming},
};
use tower::{Layer as _, util::MapRequestLayer};
use tower_http::catch_panic::CatchPanicLayer;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// One rung of the ladder: each includes every rung before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Rung {
    /// tonic alone, a `HashMap` of protobuf products.
    Bare,
    /// The catalogue's handlers (`CatalogueApi`: requests parsed into domain
    /// values, the `Store` trait) over the memory store.
    Handler,
    /// Each HTTP/2 round's writes in one system call (`CoalescedWrites`).
    Coalesced,
    /// The connection caps and handshake timeout, and each call's
    /// connection slots handed to it.
    Guards,
    /// The global, per-peer and per-connection call limits.
    Shed,
    /// The request timeout and the idle watch.
    Deadlines,
    /// A panicking handler answers INTERNAL.
    Panic,
    /// The fault layer, no fault active.
    Faults,
    /// The runtime's poll-time and schedule-latency histograms.
    RuntimeHistograms,
    /// The task list's spawn and terminate hooks.
    TaskList,
}

#[derive(Debug, Parser)]
#[command(about = "catalogue.v1 on bare tonic, and the lower rungs of the cost ladder")]
struct Cli {
    #[arg(long, default_value = "127.0.0.1:50051")]
    grpc_addr: SocketAddr,
    /// Products in the catalogue (the catalogue's deterministic seed).
    #[arg(long, default_value_t = 10_000)]
    seed_products: u32,
    /// The last rung served: it and every rung before it.
    #[arg(long, value_enum, default_value_t = Rung::Bare)]
    up_to: Rung,
    /// Written once the listener is bound: `{"grpc": ADDR, "admin": null,
    /// "console": null}`.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    #[command(flatten)]
    protection: ProtectionConfig,
    #[command(flatten)]
    faults: FaultsConfig,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut builder = if cli.up_to >= Rung::RuntimeHistograms {
        runtime_builder()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.enable_all();
        builder
    };
    if cli.up_to >= Rung::TaskList {
        TaskList::default().record(&mut builder);
    }
    builder.build()?.block_on(serve(cli))
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(cli.grpc_addr).await?;
    let addr = listener.local_addr()?;
    // The ready file of `catalogue serve` (scripts/harness.py): no admin
    // port here.
    let ready =
        serde_json::json!({ "grpc": addr.to_string(), "admin": null, "console": null }).to_string();
    println!("{ready}");
    if let Some(path) = &cli.ready_file {
        let partial = path.with_extension("partial");
        std::fs::write(&partial, &ready)?;
        std::fs::rename(&partial, path)?;
    }
    let rung = cli.up_to;
    let mut limits: Limits = cli.protection.limits();
    if rung < Rung::Deadlines {
        limits.request_timeout = None;
        limits.stream_idle_timeout = None;
    }
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    // Where the protection's counters go, as in the catalogue; nobody
    // scrapes it.
    let metrics = Metrics::new()?;
    let api = || {
        let store = MemoryStore::seeded(cli.seed_products);
        CatalogueServiceServer::new(CatalogueApi::new(Arc::new(store), None))
    };
    let connection_slots = || MapRequestLayer::new(expose_tcp_info::<tonic::body::Body>);
    // Each rung is a stack of its own types, served by an arm of its own.
    macro_rules! serve {
        ($server:expr, $service:expr) => {{
            let router = $server.add_service($service);
            if rung >= Rung::Guards {
                router
                    .serve_with_incoming(guard_connections(incoming, &limits, &metrics))
                    .await?
            } else if rung >= Rung::Coalesced {
                let coalesced = incoming.map(|accepted| accepted.map(CoalescedWrites::new));
                router.serve_with_incoming(coalesced).await?
            } else {
                router.serve_with_incoming(incoming).await?
            }
        }};
    }
    match rung {
        Rung::Bare => serve!(
            Server::builder(),
            CatalogueServiceServer::new(BareCatalogue::new(cli.seed_products))
        ),
        Rung::Handler | Rung::Coalesced => serve!(Server::builder(), api()),
        Rung::Guards => serve!(Server::builder().layer(connection_slots()), api()),
        Rung::Shed | Rung::Deadlines => serve!(
            Server::builder()
                .layer(connection_slots())
                .layer(ShedLayer::new(&limits, &metrics)),
            api()
        ),
        Rung::Panic => serve!(
            Server::builder()
                .layer(connection_slots())
                .layer(ShedLayer::new(&limits, &metrics))
                .layer(CatchPanicLayer::custom(internal)),
            api()
        ),
        Rung::Faults | Rung::RuntimeHistograms | Rung::TaskList => {
            let faults = Arc::new(FaultInjector::from_config(&cli.faults, &metrics)?);
            serve!(
                Server::builder()
                    .layer(connection_slots())
                    .layer(ShedLayer::new(&limits, &metrics))
                    .layer(CatchPanicLayer::custom(internal)),
                FaultLayer::new(faults).layer(api())
            )
        }
    }
    Ok(())
}

/// A request value that does not parse.
fn invalid(error: InvalidInput) -> Status {
    Status::invalid_argument(error.to_string())
}

/// What a panicking handler answers.
fn internal(_panic: Box<dyn std::any::Any + Send + 'static>) -> http::Response<tonic::body::Body> {
    Status::internal("internal error").into_http()
}

/// The catalogue with nothing but tonic: products looked up and cloned.
struct BareCatalogue {
    by_id: HashMap<String, proto::Product>,
    /// Sorted by id, for list pages.
    sorted: Arc<Vec<proto::Product>>,
    /// Search is the store's work, not the stack's: the memory store's.
    store: MemoryStore,
}

impl BareCatalogue {
    fn new(products: u32) -> Self {
        let store = MemoryStore::seeded(products);
        let mut sorted: Vec<proto::Product> = catalogue::store::seed::products(products)
            .map(proto::Product::from)
            .collect();
        sorted.sort_by(|a, b| a.id.cmp(&b.id));
        let by_id = sorted
            .iter()
            .map(|product| (product.id.clone(), product.clone()))
            .collect();
        Self {
            by_id,
            sorted: Arc::new(sorted),
            store,
        }
    }
}

type ProductStream = Pin<Box<dyn Stream<Item = Result<proto::Product, Status>> + Send>>;

#[tonic::async_trait]
impl CatalogueService for BareCatalogue {
    async fn get_product(
        &self,
        request: Request<proto::GetProductRequest>,
    ) -> Result<Response<proto::Product>, Status> {
        match self.by_id.get(&request.get_ref().product_id) {
            Some(product) => Ok(Response::new(product.clone())),
            None => Err(Status::not_found("no such product")),
        }
    }

    type ListProductsStream = ProductStream;

    async fn list_products(
        &self,
        request: Request<proto::ListProductsRequest>,
    ) -> Result<Response<Self::ListProductsStream>, Status> {
        let request = request.into_inner();
        let size = PageSize::parse(
            request.page_size,
            DEFAULT_LIST_PAGE_SIZE,
            MAX_LIST_PAGE_SIZE,
        )
        .map_err(invalid)?
        .get() as usize;
        let after = ListCursor::decode(&request.page_token).map_err(invalid)?;
        let sorted = self.sorted.clone();
        let start = after.map_or(0, |ListCursor(id)| {
            sorted.partition_point(|product| product.id.as_str() <= id.as_str())
        });
        let end = (start + size).min(sorted.len());
        let next = (end < sorted.len())
            .then(|| ProductId::parse(&sorted[end - 1].id).map(ListCursor))
            .transpose()
            .map_err(invalid)?;
        let products = futures::stream::iter(start..end)
            .map(move |index| Ok(sorted[index].clone()))
            .chain(futures::stream::iter(
                next.map(|cursor| Err(next_page_trailer(&cursor))),
            ));
        Ok(Response::new(Box::pin(products)))
    }

    async fn search_products(
        &self,
        request: Request<proto::SearchRequest>,
    ) -> Result<Response<proto::SearchResponse>, Status> {
        let request = request.into_inner();
        let query = SearchQuery {
            text: SearchText::parse(&request.query).map_err(invalid)?,
            category: CategoryId::parse_optional(&request.category_id).map_err(invalid)?,
            offset: SearchOffset::decode(&request.page_token).map_err(invalid)?,
            page_size: PageSize::parse(
                request.page_size,
                DEFAULT_SEARCH_PAGE_SIZE,
                MAX_SEARCH_PAGE_SIZE,
            )
            .map_err(invalid)?,
        };
        let products = self
            .store
            .search_products(&query, query.page_size.get())
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(proto::SearchResponse {
            products: products.into_iter().map(Into::into).collect(),
            next_page_token: String::new(),
        }))
    }
}
