//! The inventory upstream: the client GetProduct asks for live stock, and a
//! simulator of the upstream (`catalogue upstream`) that can be made slow,
//! failing or hanging on purpose.
//!
//! The client never lets the upstream take the service down: one shared
//! HTTP/2 channel, the caller's deadline propagated (minus a margin), a
//! bulkhead bounding concurrent calls, and a circuit breaker. When the
//! upstream cannot answer in time, GetProduct degrades to the stored stock
//! instead of failing.

pub mod breaker;
pub mod simulator;

/// Code generated from `proto/inventory/v1/inventory.proto`: the upstream
/// GetProduct asks for live stock.
pub mod proto {
    tonic::include_proto!("inventory.v1");
}

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Args;
use metrics::{Counter, Gauge, Histogram};
use opentelemetry::propagation::Injector;
use tokio::sync::Semaphore;
use tonic::{Code, Request, metadata::MetadataMap, transport::Channel};

use self::breaker::{CircuitBreaker, Settings, State, Ticket, Transition};
use crate::{
    metrics::{Metrics, names},
    traces::outgoing_context,
    upstream::proto::{GetStockRequest, inventory_service_client::InventoryServiceClient},
    values::{Ratio, grpc_timeout_of, http_uri, positive_duration},
};

/// Why live stock could not be had; GetProduct then serves the stored stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Degraded {
    BreakerOpen,
    BulkheadFull,
    /// The caller's deadline leaves no time for the upstream.
    NoTimeLeft,
    Timeout,
    Error,
}

impl Degraded {
    pub fn reason(self) -> &'static str {
        match self {
            Self::BreakerOpen => "breaker_open",
            Self::BulkheadFull => "bulkhead_full",
            Self::NoTimeLeft => "no_time_left",
            Self::Timeout => "timeout",
            Self::Error => "error",
        }
    }

    const ALL: [Degraded; 5] = [
        Self::BreakerOpen,
        Self::BulkheadFull,
        Self::NoTimeLeft,
        Self::Timeout,
        Self::Error,
    ];
}

/// The inventory upstream GetProduct enriches products with, and how far it
/// is trusted.
#[derive(Debug, Clone, Args)]
pub struct UpstreamConfig {
    /// Inventory upstream (gRPC), e.g. http://127.0.0.1:50052. Unset: stock
    /// comes from the store.
    #[arg(long, env = "CATALOGUE_UPSTREAM_URL", value_parser = http_uri)]
    pub upstream_url: Option<http::Uri>,

    /// Timeout of an upstream call when the caller set no deadline.
    #[arg(long, env = "CATALOGUE_UPSTREAM_TIMEOUT", default_value = "1s", value_parser = positive_duration)]
    pub upstream_timeout: Duration,

    /// Kept from the caller's deadline to answer with stale stock in time.
    #[arg(long, env = "CATALOGUE_UPSTREAM_DEADLINE_MARGIN", default_value = "20ms", value_parser = humantime::parse_duration)]
    pub upstream_deadline_margin: Duration,

    /// Bulkhead: upstream calls in flight at once.
    #[arg(long, env = "CATALOGUE_UPSTREAM_MAX_CONCURRENCY", default_value_t = 64,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub upstream_max_concurrency: usize,

    /// How long a call waits for a bulkhead slot before degrading.
    #[arg(long, env = "CATALOGUE_UPSTREAM_BULKHEAD_WAIT", default_value = "10ms", value_parser = humantime::parse_duration)]
    pub upstream_bulkhead_wait: Duration,

    /// Failure ratio (0..1) over a window that opens the circuit breaker.
    #[arg(long, env = "CATALOGUE_BREAKER_FAILURE_RATIO", default_value = "0.5")]
    pub breaker_failure_ratio: Ratio,

    /// Calls a window needs before its failure ratio counts.
    #[arg(long, env = "CATALOGUE_BREAKER_MIN_REQUESTS", default_value_t = 20)]
    pub breaker_min_requests: u32,

    /// Length of the breaker's counting window while closed.
    #[arg(long, env = "CATALOGUE_BREAKER_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub breaker_interval: Duration,

    /// How long the breaker stays open before probing.
    #[arg(long, env = "CATALOGUE_BREAKER_OPEN_TIMEOUT", default_value = "5s", value_parser = positive_duration)]
    pub breaker_open_timeout: Duration,

    /// Probe calls admitted while half-open; that many successes close it.
    #[arg(long, env = "CATALOGUE_BREAKER_PROBES", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub breaker_probes: u32,
}

/// The inventory client; one per process, shared by every call.
pub struct Upstream {
    client: InventoryServiceClient<Channel>,
    bulkhead: Arc<Semaphore>,
    bulkhead_wait: Duration,
    default_timeout: Duration,
    deadline_margin: Duration,
    breaker: CircuitBreaker,
    metrics: UpstreamMetrics,
}

struct UpstreamMetrics {
    ok: Counter,
    ok_seconds: Histogram,
    failed_seconds: Histogram,
    /// Per `Degraded` variant, in `Degraded::ALL` order.
    degraded: [Counter; 5],
    in_flight: Gauge,
    circuit_state: Gauge,
}

impl Upstream {
    /// A shared client of `config.upstream_url`, `None` without one; connects
    /// lazily, so the service starts (degraded) even while the upstream is
    /// down. With `protected` false the bulkhead and breaker never refuse
    /// (the overload experiment's unprotected run).
    pub fn from_config(
        config: &UpstreamConfig,
        protected: bool,
        metrics: &Metrics,
    ) -> Option<Arc<Self>> {
        let url = config.upstream_url.clone()?;
        Some(Arc::new(Self::new(url, config, protected, metrics)))
    }

    fn new(url: http::Uri, config: &UpstreamConfig, protected: bool, metrics: &Metrics) -> Self {
        let channel = Channel::builder(url)
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .connect_lazy();
        let metrics = UpstreamMetrics {
            ok: metrics.counter(&names::UPSTREAM_CALLS, &[("outcome", "ok")]),
            ok_seconds: metrics.histogram(&names::UPSTREAM_SECONDS, &[("outcome", "ok")]),
            failed_seconds: metrics.histogram(&names::UPSTREAM_SECONDS, &[("outcome", "failed")]),
            degraded: Degraded::ALL.map(|degraded| {
                metrics.counter(&names::UPSTREAM_CALLS, &[("outcome", degraded.reason())])
            }),
            in_flight: metrics.gauge(&names::UPSTREAM_IN_FLIGHT, &[]),
            circuit_state: metrics.gauge(&names::UPSTREAM_CIRCUIT_STATE, &[]),
        };
        metrics.circuit_state.set(State::Closed as u8 as f64);
        Self {
            client: InventoryServiceClient::new(channel),
            bulkhead: Arc::new(Semaphore::new(if protected {
                config.upstream_max_concurrency
            } else {
                Semaphore::MAX_PERMITS
            })),
            bulkhead_wait: if protected {
                config.upstream_bulkhead_wait
            } else {
                Duration::MAX
            },
            default_timeout: config.upstream_timeout,
            deadline_margin: config.upstream_deadline_margin,
            breaker: CircuitBreaker::new(
                Settings {
                    max_probes: config.breaker_probes,
                    interval: config.breaker_interval,
                    open_timeout: config.breaker_open_timeout,
                    min_requests: if protected {
                        config.breaker_min_requests
                    } else {
                        u32::MAX
                    },
                    failure_ratio: config.breaker_failure_ratio,
                },
                Instant::now(),
            ),
            metrics,
        }
    }

    /// Live stock of `product_id`, answered before `deadline` (the caller's,
    /// if it set one).
    pub async fn stock(
        &self,
        product_id: &str,
        deadline: Option<Instant>,
    ) -> Result<i32, Degraded> {
        let result = self.call(product_id, deadline).await;
        if let Err(degraded) = result {
            self.metrics.degraded[Degraded::ALL
                .iter()
                .position(|d| *d == degraded)
                .unwrap_or(0)]
            .increment(1);
        }
        result
    }

    async fn call(&self, product_id: &str, deadline: Option<Instant>) -> Result<i32, Degraded> {
        let timeout = match deadline {
            Some(deadline) => deadline
                .checked_duration_since(Instant::now())
                .and_then(|left| left.checked_sub(self.deadline_margin))
                .filter(|left| !left.is_zero())
                .ok_or(Degraded::NoTimeLeft)?,
            None => self.default_timeout,
        };
        // A call its caller's deadline gave less than `--upstream-timeout`
        // that times out says nothing about the upstream: the breaker does
        // not count it.
        let timeout_outcome = if timeout < self.default_timeout {
            Outcome::Inconclusive
        } else {
            Outcome::Failure
        };
        // The bulkhead first: a call refused here never reaches the breaker,
        // whose counts are about the upstream's answers only.
        let Ok(Ok(_permit)) =
            tokio::time::timeout(self.bulkhead_wait.min(timeout), self.bulkhead.acquire()).await
        else {
            return Err(Degraded::BulkheadFull);
        };
        let (ticket, transition) = self.breaker.admit(Instant::now());
        self.observe(transition);
        let ticket = ticket.ok_or(Degraded::BreakerOpen)?;

        let mut request = Request::new(GetStockRequest {
            product_id: product_id.to_owned(),
        });
        request.set_timeout(timeout);
        // A CLIENT span only inside a traced call, its context sent on; an
        // untraced call passes its trace on with the sampled flag off, so
        // that the upstream follows the same decision. Either with the
        // caller's baggage.
        let (context, mut span) = match outgoing_context() {
            Some(outgoing) => outgoing.send(GET_STOCK_SPAN, get_stock_attributes()),
            None => (opentelemetry::Context::new(), None),
        };
        inject_trace_context(&context, request.metadata_mut());

        let mut call = InFlight::start(self, ticket);
        let started = Instant::now();
        let mut client = self.client.clone();
        let request = tokio::time::timeout(timeout, client.get_stock(request));
        let answer = match &span {
            Some(span) => span.around(request).await,
            None => request.await,
        };
        let elapsed = started.elapsed().as_secs_f64();
        match answer {
            Ok(Ok(response)) => {
                call.settle(Outcome::Success);
                self.metrics.ok.increment(1);
                self.metrics.ok_seconds.record(elapsed);
                Ok(response.into_inner().stock_qty)
            }
            Ok(Err(status)) => {
                self.metrics.failed_seconds.record(elapsed);
                if let Some(span) = &mut span {
                    span.fail();
                }
                // tonic reports its own client-side timeout as CANCELLED.
                let degraded = match status.code() {
                    Code::DeadlineExceeded | Code::Cancelled => Degraded::Timeout,
                    _ => Degraded::Error,
                };
                call.settle(match degraded {
                    Degraded::Timeout => timeout_outcome,
                    _ => Outcome::Failure,
                });
                Err(degraded)
            }
            Err(_elapsed) => {
                call.settle(timeout_outcome);
                self.metrics.failed_seconds.record(elapsed);
                if let Some(span) = &mut span {
                    span.fail();
                }
                Err(Degraded::Timeout)
            }
        }
    }

    /// What the metrics collector runs on each scrape: the breaker turns
    /// half-open by the clock, and a scrape moves it on, so its state gauge
    /// is never staler than the scrape.
    pub(crate) fn scrape_hook(self: &Arc<Self>) -> impl Fn() + Send + Sync + 'static {
        let upstream = self.clone();
        move || {
            upstream.circuit_state();
        }
    }

    /// The breaker's state now (turning open into half-open when due).
    pub(crate) fn circuit_state(&self) -> State {
        let (state, transition) = self.breaker.state(Instant::now());
        self.observe(transition);
        state
    }

    fn observe(&self, transition: Option<Transition>) {
        if let Some(Transition { from, to }) = transition {
            tracing::warn!(
                from = from.name(),
                to = to.name(),
                "upstream circuit breaker changed state"
            );
            self.metrics.circuit_state.set(to as u8 as f64);
        }
    }
}

/// What an upstream call says about the upstream, for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure,
    /// Its caller's deadline or its caller's going away ended it first.
    Inconclusive,
}

/// An upstream call in progress. Its breaker ticket and its place in the
/// in-flight gauge are settled exactly once, also when the caller abandons
/// the call (a cancelled GetProduct drops this future mid-flight): an
/// abandoned call is inconclusive, its admission given back, so a
/// half-open breaker is never left waiting for probes that will not
/// report, and callers going away do not open it.
struct InFlight<'a> {
    upstream: &'a Upstream,
    ticket: Option<Ticket>,
}

impl<'a> InFlight<'a> {
    fn start(upstream: &'a Upstream, ticket: Ticket) -> Self {
        upstream.metrics.in_flight.increment(1.0);
        Self {
            upstream,
            ticket: Some(ticket),
        }
    }

    fn settle(&mut self, outcome: Outcome) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let breaker = &self.upstream.breaker;
        let now = Instant::now();
        let transition = match outcome {
            Outcome::Success => breaker.success(ticket, now),
            Outcome::Failure => breaker.failure(ticket, now),
            Outcome::Inconclusive => breaker.release(ticket, now),
        };
        self.upstream.observe(transition);
        self.upstream.metrics.in_flight.decrement(1.0);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.settle(Outcome::Inconclusive);
    }
}

/// The CLIENT span of an upstream call: OpenTelemetry's RPC conventions.
const GET_STOCK_SPAN: &str = "inventory.v1.InventoryService/GetStock";

fn get_stock_attributes() -> Vec<opentelemetry::KeyValue> {
    use opentelemetry::KeyValue;
    vec![
        KeyValue::new("rpc.system", "grpc"),
        KeyValue::new("rpc.system.name", "grpc"),
        KeyValue::new("rpc.service", "inventory.v1.InventoryService"),
        KeyValue::new("rpc.method", "GetStock"),
    ]
}

/// Puts the current trace context into the outgoing call's metadata (W3C
/// `traceparent`, `tracestate`, `baggage`).
fn inject_trace_context(context: &opentelemetry::Context, metadata: &mut MetadataMap) {
    struct MetadataInjector<'a>(&'a mut MetadataMap);
    impl Injector for MetadataInjector<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(key), Ok(value)) = (
                tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
                tonic::metadata::MetadataValue::try_from(value),
            ) {
                self.0.insert(key, value);
            }
        }
    }
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(context, &mut MetadataInjector(metadata));
    });
}

/// The caller's deadline, from its `grpc-timeout` header: digits and a unit
/// (H, M, S, m, u, n).
pub(crate) fn caller_deadline(metadata: &MetadataMap, now: Instant) -> Option<Instant> {
    now.checked_add(grpc_timeout_of(metadata.as_ref())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        let now = Instant::now();
        let deadline = |value: &str| {
            let mut metadata = MetadataMap::new();
            metadata.insert("grpc-timeout", value.parse().unwrap());
            caller_deadline(&metadata, now).map(|deadline| deadline - now)
        };
        assert_eq!(deadline("2S"), Some(Duration::from_secs(2)));
        assert_eq!(deadline("150m"), Some(Duration::from_millis(150)));
        assert_eq!(deadline("7u"), Some(Duration::from_micros(7)));
        assert_eq!(deadline("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(deadline("12"), None);
        assert_eq!(deadline("xS"), None);
        assert_eq!(caller_deadline(&MetadataMap::new(), now), None);
    }
}
