//! `catalogue load`: drives a running catalogue over gRPC with a weighted mix
//! of calls, so that dashboards move and faults show.
//!
//! - open loop (`--rps`): calls leave on schedule whatever the latency, and
//!   latency counts from the *intended* send time, so a stall shows as the
//!   queue of late calls it causes (no coordinated omission);
//! - closed loop (`--concurrency`): that many calls in flight, each sent when
//!   the previous one ends.
//!
//! Product ids, categories and search words are discovered from the target
//! through `ListProducts`. Some streams are read slowly and some cancelled
//! part-way, and a few ids are unknown, so every panel has something to show.
//! By default every call carries a fresh W3C `traceparent` with the sampled
//! flag set: each is a trace root, and a server whose sampler is
//! `parentbased_*` traces every call whatever its ratio. `--trace-context
//! unsampled` sends the flag off, `none` no context at all (the server's own
//! sampler decides).
//!
//! `--target` may name several replicas (or a DNS name that resolves to
//! several): calls are balanced over those whose health says SERVING (see
//! `discovery`), a call refused with UNAVAILABLE or cut off by a broken
//! connection is tried again (every call
//! here is a read, safe to repeat), and the summary counts calls per replica.

mod report;

use std::{
    future::Future,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Args;
use parking_lot::Mutex;
use rand::{Rng, seq::IndexedRandom};
use tokio::time::sleep_until;
use tonic::{Code, Request, Status, metadata::MetadataValue};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

pub use report::{Latency, Recorder, Summary};

use crate::{
    api::proto::{
        GetProductRequest, ListProductsRequest, SearchRequest,
        catalogue_service_client::CatalogueServiceClient,
    },
    discovery::{Balanced, BalancedService, Target},
    method::Method,
    status::code_name,
    telemetry::LogConfig,
};

/// `catalogue load`: open loop with --rps, closed loop with --concurrency.
#[derive(Debug, Clone, Args)]
pub struct LoadConfig {
    /// The catalogue to drive: a URL, several (comma separated),
    /// dns:///HOST:PORT for every address a name resolves to, or
    /// consul://AGENT:PORT/SERVICE for the instances whose checks pass. Calls are
    /// balanced over the replicas whose health check says SERVING.
    #[arg(
        long,
        env = "CATALOGUE_LOAD_TARGET",
        default_value = "http://127.0.0.1:50051"
    )]
    pub target: Target,

    /// Attempts after the first for a call refused with UNAVAILABLE or cut
    /// off by a broken connection (every
    /// call is a read, safe to repeat); 0 turns retries off.
    #[arg(long, default_value_t = 2)]
    pub retries: u32,

    /// HTTP/2 connections to each replica.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub connections: u32,

    /// Weighted mix of calls, e.g. get=80,list=10,search=10 (also health:
    /// the standard health check).
    #[arg(long, default_value = "get=80,list=10,search=10")]
    pub mix: Mix,

    /// Open loop: calls per second, sent on schedule whatever the latency
    /// (latency counts from the intended send time).
    #[arg(long, conflicts_with = "concurrency", value_parser = calls_per_second)]
    pub rps: Option<f64>,

    /// Closed loop: calls in flight at once (the default, 16).
    #[arg(long)]
    pub concurrency: Option<u32>,

    /// How long to run.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// Deadline of each call (sent as grpc-timeout).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub deadline: Duration,

    /// Most calls in flight in open-loop mode; beyond it sends are skipped
    /// and counted, so a stalled server cannot make the client unbounded.
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,

    /// Page size of every ListProducts call; 0 picks one at random (10–200),
    /// with some streams read slowly and some cancelled. A fixed size reads
    /// every stream to its end at full speed (for benchmarks).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=1000))]
    pub list_page_size: i32,

    /// The W3C trace context each call carries: `sampled` (a fresh
    /// traceparent with the sampled flag: a parentbased_* sampler on the
    /// server traces every call), `unsampled` (the flag off: such a sampler
    /// traces none) or `none` (no traceparent: the server's root sampler
    /// decides, e.g. its ratio).
    #[arg(long, value_enum, default_value_t = TraceContext::Sampled)]
    pub trace_context: TraceContext,

    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub logs: LogConfig,
}

/// `--trace-context`: what W3C trace context each call carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TraceContext {
    /// A fresh trace id, the sampled flag set.
    Sampled,
    /// A fresh trace id, the sampled flag off.
    Unsampled,
    /// No `traceparent`.
    None,
}

impl TraceContext {
    /// The `traceparent` of one call, if it carries one.
    fn traceparent(self, rng: &mut impl Rng) -> Option<String> {
        let flags = match self {
            Self::Sampled => "01",
            Self::Unsampled => "00",
            Self::None => return None,
        };
        Some(format!(
            "00-{:032x}-{:016x}-{flags}",
            rng.random::<u128>() | 1,
            rng.random::<u64>() | 1
        ))
    }
}

/// `--rps`: a positive, finite number of calls a second.
fn calls_per_second(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rps) if rps.is_finite() && rps > 0.0 => Ok(rps),
        _ => Err(format!(
            "{text:?} is not a positive number of calls a second"
        )),
    }
}

/// Products discovered before the run (the ids GetProduct picks from).
const DISCOVERY_LIMIT: i32 = 1000;
/// Share of GetProduct calls asking for an id that does not exist.
const UNKNOWN_ID_SHARE: f64 = 0.02;
/// Shares of ListProducts streams read slowly and cancelled part-way.
const SLOW_READER_SHARE: f64 = 0.1;
const CANCEL_SHARE: f64 = 0.1;
/// Pause of a slow reader between messages.
const SLOW_READ_PAUSE: Duration = Duration::from_millis(2);
/// Default closed-loop concurrency.
const DEFAULT_CONCURRENCY: u32 = 16;
/// Pause before trying a refused call again, when the server sent no
/// `grpc-retry-pushback-ms`; doubled on each attempt.
const RETRY_BACKOFF: Duration = Duration::from_millis(10);
/// How long the run waits for a first healthy replica.
const FIRST_REPLICA_WAIT: Duration = Duration::from_secs(5);

type Client = CatalogueServiceClient<BalancedService>;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("no replica of {0} answered SERVING within 5 s")]
    NoReplica(String),
    #[error("discovering the catalogue failed: {0}")]
    Discovery(#[from] tonic::Status),
    #[error("the target's catalogue is empty: nothing to ask for")]
    EmptyCatalogue,
}

/// Relative weights of the calls, from `get=80,list=10,search=10` (and
/// `health`, the standard health check, to watch a server's responsiveness).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Mix {
    pub get: u32,
    pub list: u32,
    pub search: u32,
    pub health: u32,
}

impl Mix {
    /// Whether any call is the catalogue's (not only health checks).
    fn calls_the_catalogue(&self) -> bool {
        self.get + self.list + self.search > 0
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut mix = Mix::default();
        for part in text.split(',').filter(|part| !part.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not name=weight"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("weight of {name:?} is not a whole number"))?;
            match name.trim() {
                "get" => mix.get = weight,
                "list" => mix.list = weight,
                "search" => mix.search = weight,
                "health" => mix.health = weight,
                other => {
                    return Err(format!(
                        "unknown call {other:?}: expected get, list, search or health"
                    ));
                }
            }
        }
        if mix.get + mix.list + mix.search + mix.health == 0 {
            return Err("the mix has no call with a positive weight".into());
        }
        Ok(mix)
    }
}

#[derive(Debug, Clone, Copy)]
enum Call {
    Get,
    List,
    Search,
    Health,
}

impl Mix {
    fn pick(&self, rng: &mut impl Rng) -> Call {
        let roll = rng.random_range(0..self.get + self.list + self.search + self.health);
        if roll < self.get {
            Call::Get
        } else if roll < self.get + self.list {
            Call::List
        } else if roll < self.get + self.list + self.search {
            Call::Search
        } else {
            Call::Health
        }
    }
}

/// What calls are made of, discovered from the target.
#[derive(Default)]
struct Catalogue {
    ids: Vec<String>,
    categories: Vec<String>,
    words: Vec<String>,
}

/// Shared by every call of the run.
struct Run {
    client: Client,
    health: HealthClient<BalancedService>,
    /// Keeps discovery running; counts calls per replica.
    balanced: Balanced,
    catalogue: Catalogue,
    mix: Mix,
    /// 0: random pages with slow readers and cancellations.
    list_page_size: i32,
    deadline: Duration,
    trace_context: TraceContext,
    /// Attempts after the first for a call refused with UNAVAILABLE.
    retries: u32,
    recorder: Mutex<Recorder>,
    calls: AtomicU64,
    errors: AtomicU64,
}

/// Runs the load described by `config` and returns its summary. Shows a
/// progress line on a terminal unless `--json`.
pub async fn run(config: &LoadConfig) -> Result<Summary, LoadError> {
    let balanced = Balanced::connect(config.target.clone(), Method::SERVICE, config.connections);
    let mut client = CatalogueServiceClient::new(balanced.service.clone());
    let mut health = HealthClient::new(balanced.service.clone());
    let first = async {
        if !config.mix.calls_the_catalogue() {
            // Nothing to discover, and a health lane serves nothing else.
            health.check(HealthCheckRequest::default()).await?;
            return Ok(Catalogue::default());
        }
        discover(&mut client).await
    };
    let catalogue = tokio::time::timeout(FIRST_REPLICA_WAIT, first)
        .await
        .map_err(|_| LoadError::NoReplica(format!("{:?}", config.target)))??;
    let run = Arc::new(Run {
        client,
        health,
        balanced,
        catalogue,
        mix: config.mix,
        list_page_size: config.list_page_size,
        deadline: config.deadline,
        trace_context: config.trace_context,
        retries: config.retries,
        recorder: Mutex::new(Recorder::default()),
        calls: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });

    let progress = progress_bar(config.json);
    let started = Instant::now();
    let ticker = {
        let run = run.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(250));
            loop {
                ticks.tick().await;
                let calls = run.calls.load(Ordering::Relaxed);
                let rate = calls as f64 / started.elapsed().as_secs_f64().max(0.001);
                progress.set_message(format!(
                    "{calls} calls, {rate:.0}/s, {} errors",
                    run.errors.load(Ordering::Relaxed)
                ));
            }
        })
    };
    match config.rps {
        Some(rps) => open_loop(&run, rps, config.duration, config.max_in_flight).await,
        None => {
            let concurrency = config.concurrency.unwrap_or(DEFAULT_CONCURRENCY).max(1);
            closed_loop(&run, concurrency, config.duration).await;
        }
    }
    ticker.abort();
    progress.finish_and_clear();
    let summary = run
        .recorder
        .lock()
        .summary(started.elapsed(), run.balanced.replicas.calls());
    Ok(summary)
}

fn progress_bar(hidden: bool) -> indicatif::ProgressBar {
    if hidden {
        return indicatif::ProgressBar::hidden();
    }
    let progress = indicatif::ProgressBar::new_spinner();
    progress.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    progress.enable_steady_tick(Duration::from_millis(250));
    progress
}

/// Calls leave at `rps` whatever happens to earlier ones.
async fn open_loop(run: &Arc<Run>, rps: f64, duration: Duration, max_in_flight: usize) {
    let interval = Duration::from_secs_f64(1.0 / rps);
    let started = tokio::time::Instant::now();
    let end = started + duration;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0u32.. {
        let intended = started + interval.mul_f64(f64::from(n));
        if intended >= end {
            break;
        }
        sleep_until(intended).await;
        // Reap finished calls so the set stays as small as what is in flight.
        while tasks.try_join_next().is_some() {}
        if in_flight.load(Ordering::Relaxed) >= max_in_flight {
            run.recorder.lock().skip();
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let run = run.clone();
        let in_flight = in_flight.clone();
        tasks.spawn(async move {
            run.one_call(intended.into_std()).await;
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// `concurrency` workers, each sending its next call when the last ends.
async fn closed_loop(run: &Arc<Run>, concurrency: u32, duration: Duration) {
    let end = Instant::now() + duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let run = run.clone();
        workers.spawn(async move {
            while Instant::now() < end {
                run.one_call(Instant::now()).await;
            }
        });
    }
    while workers.join_next().await.is_some() {}
}

impl Run {
    /// Makes one call of the mix and records it, with latency measured from
    /// `intended`.
    async fn one_call(&self, intended: Instant) {
        let call = self.mix.pick(&mut rand::rng());
        let (method, code, messages) = match call {
            Call::Get => (Method::GetProduct.name(), self.get().await, 0),
            Call::List => {
                let (code, messages) = self.list().await;
                (Method::ListProducts.name(), code, messages)
            }
            Call::Search => (Method::SearchProducts.name(), self.search().await, 0),
            Call::Health => ("Health/Check", self.health().await, 0),
        };
        self.calls.fetch_add(1, Ordering::Relaxed);
        if code != Code::Ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.recorder
            .lock()
            .record(method, code_name(code), intended.elapsed(), messages);
    }

    /// Makes a call, and again (at most `retries` times) while it is refused
    /// with UNAVAILABLE: after the server's `grpc-retry-pushback-ms`, or a
    /// doubling backoff; a negative pushback means do not retry. Each attempt
    /// gets the deadline.
    async fn with_retries<T, F, Fut>(&self, mut call: F) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut attempt = 0;
        loop {
            let result = tokio::time::timeout(self.deadline, call())
                .await
                .unwrap_or_else(|_| Err(Status::deadline_exceeded("client deadline passed")));
            let status = match result {
                Err(status) if retryable(&status) && attempt < self.retries => status,
                other => return other,
            };
            let pause = match status.metadata().get("grpc-retry-pushback-ms") {
                Some(pushback) => match pushback.to_str().ok().and_then(|ms| ms.parse().ok()) {
                    Some(ms) => Duration::from_millis(ms),
                    None => return Err(status),
                },
                None => RETRY_BACKOFF * 2u32.pow(attempt),
            };
            attempt += 1;
            self.recorder.lock().retry();
            tokio::time::sleep(pause).await;
        }
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.deadline);
        if let Some(traceparent) = self.trace_context.traceparent(&mut rand::rng())
            && let Ok(value) = MetadataValue::try_from(traceparent)
        {
            request.metadata_mut().insert("traceparent", value);
        }
        request
    }

    async fn get(&self) -> Code {
        let product_id = {
            let mut rng = rand::rng();
            if rng.random_bool(UNKNOWN_ID_SHARE) {
                format!("prod-unknown-{}", rng.random::<u32>())
            } else {
                self.catalogue
                    .ids
                    .choose(&mut rng)
                    .cloned()
                    .unwrap_or_default()
            }
        };
        let result = self
            .with_retries(|| {
                let mut client = self.client.clone();
                let request = self.request(GetProductRequest {
                    product_id: product_id.clone(),
                });
                async move { client.get_product(request).await }
            })
            .await;
        code_of(result)
    }

    /// A stream of random size and category; some read slowly, some
    /// cancelled half-way. Returns the code and the messages read.
    async fn list(&self) -> (Code, u64) {
        let (request, slow, cancel_after) = {
            let mut rng = rand::rng();
            if self.list_page_size > 0 {
                let request = ListProductsRequest {
                    page_size: self.list_page_size,
                    ..Default::default()
                };
                (request, false, None)
            } else {
                let page_size = rng.random_range(10..=200);
                let category_id = if rng.random_bool(0.5) {
                    self.catalogue
                        .categories
                        .choose(&mut rng)
                        .cloned()
                        .unwrap_or_default()
                } else {
                    String::new()
                };
                let slow = rng.random_bool(SLOW_READER_SHARE);
                let cancel_after = rng
                    .random_bool(CANCEL_SHARE)
                    .then_some(page_size as u64 / 2);
                let request = ListProductsRequest {
                    page_size,
                    category_id,
                    ..Default::default()
                };
                (request, slow, cancel_after)
            }
        };
        // Only opening the stream is tried again: products already read
        // would be read twice.
        let opened = self
            .with_retries(|| {
                let mut client = self.client.clone();
                let request = self.request(request.clone());
                async move { client.list_products(request).await }
            })
            .await;
        let mut stream = match opened {
            Ok(response) => response.into_inner(),
            Err(status) => return (status.code(), 0),
        };
        let mut messages = 0;
        loop {
            match stream.message().await {
                Ok(Some(_)) => {
                    messages += 1;
                    if cancel_after == Some(messages) {
                        return (Code::Cancelled, messages);
                    }
                    if slow {
                        tokio::time::sleep(SLOW_READ_PAUSE).await;
                    }
                }
                Ok(None) => return (Code::Ok, messages),
                Err(status) => return (status.code(), messages),
            }
        }
    }

    async fn search(&self) -> Code {
        let query = {
            let mut rng = rand::rng();
            let count = rng.random_range(1..=2);
            let words: Vec<&str> = self
                .catalogue
                .words
                .choose_multiple(&mut rng, count)
                .map(String::as_str)
                .collect();
            words.join(" ")
        };
        let request = SearchRequest {
            query,
            page_size: 20,
            ..Default::default()
        };
        let result = self
            .with_retries(|| {
                let mut client = self.client.clone();
                let request = self.request(request.clone());
                async move { client.search_products(request).await }
            })
            .await;
        code_of(result)
    }

    async fn health(&self) -> Code {
        let result = self
            .with_retries(|| {
                let mut client = self.health.clone();
                let request = self.request(HealthCheckRequest::default());
                async move { client.check(request).await }
            })
            .await;
        code_of(result)
    }
}

/// UNAVAILABLE, or the connection broke under the call: tonic reports that
/// as UNKNOWN, or as CANCELLED when hyper gave the call up because its
/// connection closed (a replica killed), with the transport error as its
/// source; an UNKNOWN or CANCELLED the server sent has none. Either way the
/// call may be repeated because it is a read.
fn retryable(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable => true,
        Code::Unknown | Code::Cancelled => std::error::Error::source(status).is_some(),
        _ => false,
    }
}

fn code_of<T>(result: Result<T, Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// Reads the first products of the target to learn ids, categories and
/// words.
async fn discover(client: &mut Client) -> Result<Catalogue, LoadError> {
    let mut stream = client
        .list_products(ListProductsRequest {
            page_size: DISCOVERY_LIMIT,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut ids = Vec::new();
    let mut categories = std::collections::BTreeSet::new();
    let mut words = std::collections::BTreeSet::new();
    while let Some(product) = stream.message().await? {
        categories.insert(product.category_id.clone());
        words.extend(crate::domain::words(&product.name));
        ids.push(product.id);
    }
    if ids.is_empty() {
        return Err(LoadError::EmptyCatalogue);
    }
    Ok(Catalogue {
        ids,
        categories: categories.into_iter().collect(),
        words: words.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A transport error whose source chain holds the status the client
    /// library chose for it, as hyper's canceled request does (tonic makes
    /// it CANCELLED, with this error as its source).
    #[derive(Debug)]
    struct Transport(Status);

    impl std::fmt::Display for Transport {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "connection closed under the call")
        }
    }

    impl std::error::Error for Transport {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_call_cut_off_by_its_connection_is_retried_whatever_code_the_client_gave_it() {
        let cut_off = |code| Status::from_error(Box::new(Transport(Status::new(code, "cut off"))));
        assert_eq!(cut_off(Code::Cancelled).code(), Code::Cancelled);
        assert!(retryable(&cut_off(Code::Cancelled)));
        assert!(retryable(&cut_off(Code::Unknown)));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(retryable(&Status::from_error(Box::new(reset))));
        assert!(retryable(&Status::unavailable("overloaded")));
        // What a server answered is final, unless it is UNAVAILABLE.
        for code in [Code::Cancelled, Code::Unknown, Code::Internal] {
            assert!(!retryable(&Status::new(code, "answered")), "{code:?}");
        }
    }

    #[test]
    fn mixes_parse_and_bad_ones_are_refused() {
        assert_eq!(
            "get=80,list=10,search=10".parse::<Mix>(),
            Ok(Mix {
                get: 80,
                list: 10,
                search: 10,
                health: 0
            })
        );
        assert_eq!("list=1".parse::<Mix>().map(|m| m.get), Ok(0));
        assert_eq!("health=3".parse::<Mix>().map(|m| m.health), Ok(3));
        for bad in ["get=-1", "get=x", "fetch=1", "get", "get=0,list=0"] {
            assert!(bad.parse::<Mix>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_trace_context_flag_sets_the_sampled_flag_or_leaves_the_header_out() {
        let mut rng = rand::rng();

        let sampled = TraceContext::Sampled.traceparent(&mut rng).unwrap();
        let unsampled = TraceContext::Unsampled.traceparent(&mut rng).unwrap();

        assert!(sampled.ends_with("-01"), "{sampled}");
        assert!(unsampled.ends_with("-00"), "{unsampled}");
        assert_eq!(unsampled.len(), 55, "{unsampled}");
        assert_eq!(TraceContext::None.traceparent(&mut rng), None);
    }

    #[test]
    fn picks_follow_the_weights() {
        let mix: Mix = "get=1,list=0,search=0".parse().unwrap();
        let mut rng = rand::rng();
        assert!((0..100).all(|_| matches!(mix.pick(&mut rng), Call::Get)));
    }
}
