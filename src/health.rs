//! The health lane: `grpc.health.v1.Health` answered again on a listener of
//! its own (`--health-addr`), by a one-thread Tokio runtime in an OS thread
//! of its own. A flood that saturates the main runtime's workers
//! queues the gRPC port's health checks behind its refusals; on the lane, a
//! probe waits only for the OS to schedule one thread. It is what Kubernetes
//! probes.
//!
//! It answers from the gRPC port's statuses (`server::HealthStatus`: the
//! catalogue's follows the store), and says NOT_SERVING where they say
//! SERVING in two cases, so that it never keeps a dead pod in rotation:
//! - the main runtime is wedged: `Heartbeat` is stamped by a task on the main
//!   runtime every `BEAT_EVERY`, and a stamp older than
//!   `--health-stall-limit` means nothing runs there any more;
//! - the app is shutting down: from SIGTERM to the end of the drain, whatever
//!   the statuses (the drain clears them to end Watch streams).
//!
//! Check and Watch both; a Watch stream also looks again every
//! `BEAT_EVERY`, so that a stall or the shutdown reaches it. The lane's
//! connections (and so its streams) are bounded by `guard_connections` with
//! limits of their own (`lane_limits`) and counted with the gRPC port's.

use std::{
    net::TcpListener as StdTcpListener,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{StreamExt as _, stream::BoxStream};
use tokio::{
    net::TcpListener,
    sync::{oneshot, watch},
};
use tokio_util::{
    sync::{CancellationToken, DropGuard},
    task::AbortOnDropHandle,
};
use tonic::{
    Request, Response, Status,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::{
    pb::{
        HealthCheckRequest, HealthCheckResponse,
        health_check_response::ServingStatus,
        health_server::{Health, HealthServer},
    },
    server::HealthService,
};
use tracing::instrument::WithSubscriber as _;

use crate::{
    metrics::Metrics,
    protection::{Limits, guard_connections},
    telemetry::Telemetry,
};

/// How often the main runtime stamps the heartbeat (more often under a
/// stall limit shorter than four times this).
const BEAT_EVERY: Duration = Duration::from_millis(250);
/// Connections the lane holds open at once, and from one address: probes
/// open one each, briefly.
const MAX_CONNECTIONS: usize = 32;
const MAX_CONNECTIONS_PER_PEER: usize = 8;
/// Calls one lane connection may have open at once.
const MAX_STREAMS: u32 = 4;
/// A lane connection that has not finished its handshake this long is
/// closed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A lane connection gets a GOAWAY at this age and is closed after the
/// grace, so none is held for ever (no idle timeout: without the gRPC
/// port's call accounting every lane connection would look idle).
const MAX_AGE: Duration = Duration::from_secs(300);
const MAX_AGE_GRACE: Duration = Duration::from_secs(5);
/// Largest request: a service name.
const MAX_REQUEST_BYTES: usize = 4 * 1024;
/// How long the lane's connections may take to close once it is stopped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The main runtime's pulse, as the lane reads it; clones share it.
#[derive(Clone)]
pub(crate) struct Heartbeat {
    /// What the stamps count from.
    origin: Instant,
    /// Milliseconds from `origin` to the last beat: one atomic, so the lane
    /// reads it without a lock the main runtime could hold.
    last_beat_ms: Arc<AtomicU64>,
    /// A last beat older than this means the main runtime is stalled.
    stall_limit: Duration,
}

impl Heartbeat {
    /// A heartbeat that has just beaten.
    fn new(stall_limit: Duration) -> Self {
        Self {
            origin: Instant::now(),
            last_beat_ms: Arc::new(AtomicU64::new(0)),
            stall_limit,
        }
    }

    fn millis(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }

    fn beat_at(&self, now: Instant) {
        self.last_beat_ms
            .fetch_max(self.millis(now), Ordering::Relaxed);
    }

    /// How long since the last beat, when that is over the stall limit.
    fn stalled_at(&self, now: Instant) -> Option<Duration> {
        let last = self.last_beat_ms.load(Ordering::Relaxed);
        let silent = Duration::from_millis(self.millis(now).saturating_sub(last));
        (silent > self.stall_limit).then_some(silent)
    }

    /// Beats every `BEAT_EVERY` (or a quarter of the stall limit, if
    /// shorter), for ever: run on the runtime it vouches for.
    async fn keep_beating(self) {
        let every = BEAT_EVERY.min(self.stall_limit / 4);
        let mut ticks = tokio::time::interval(every.max(Duration::from_millis(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.beat_at(Instant::now());
        }
    }
}

/// The health service the lane serves: the shared statuses, overruled.
struct LaneHealth {
    statuses: HealthService,
    overrule: Overrule,
}

/// What makes the lane say NOT_SERVING where the statuses say otherwise.
#[derive(Clone)]
struct Overrule {
    heartbeat: Heartbeat,
    /// `true` once the app stops being ready.
    stopping: watch::Receiver<bool>,
}

impl Overrule {
    /// `shared`, the statuses' answer, unless the app is stopping or the
    /// main runtime has stalled: then NOT_SERVING.
    fn status(&self, shared: ServingStatus) -> ServingStatus {
        if *self.stopping.borrow() {
            return ServingStatus::NotServing;
        }
        let Some(silent) = self.heartbeat.stalled_at(Instant::now()) else {
            return shared;
        };
        if shared == ServingStatus::Serving {
            tracing::warn!(
                ?silent,
                "the main runtime has not run its heartbeat: health lane NOT_SERVING"
            );
        }
        ServingStatus::NotServing
    }
}

#[tonic::async_trait]
impl Health for LaneHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        if *self.overrule.stopping.borrow() {
            // The drain clears the statuses: NOT_SERVING, not NOT_FOUND.
            return Ok(answer(ServingStatus::NotServing));
        }
        let checked = self.statuses.check(request).await?.into_inner();
        Ok(answer(self.overrule.status(checked.status())))
    }

    type WatchStream = BoxStream<'static, Result<HealthCheckResponse, Status>>;

    /// The statuses' stream, overruled, looked at again every `BEAT_EVERY`;
    /// it ends when the statuses are cleared (the drain), as the gRPC
    /// port's does.
    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let statuses = self.statuses.watch(request).await?.into_inner();
        let mut looks = tokio::time::interval(BEAT_EVERY);
        looks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let watching = Watching {
            statuses,
            looks,
            overrule: self.overrule.clone(),
            shared: ServingStatus::Unknown,
            sent: None,
        };
        let stream = futures::stream::unfold(watching, |mut watching| async move {
            let next = watching.next().await?;
            Some((next, watching))
        });
        Ok(Response::new(stream.boxed()))
    }
}

/// One Watch stream of the lane.
struct Watching {
    statuses: tonic_health::server::WatchStream,
    looks: tokio::time::Interval,
    overrule: Overrule,
    /// The statuses' last word.
    shared: ServingStatus,
    /// What the stream last sent.
    sent: Option<ServingStatus>,
}

impl Watching {
    /// The next status to send, once it differs from the last sent; `None`
    /// once the statuses' stream ends.
    async fn next(&mut self) -> Option<Result<HealthCheckResponse, Status>> {
        loop {
            tokio::select! {
                biased;
                next = self.statuses.next() => match next? {
                    Ok(response) => self.shared = response.status(),
                    Err(status) => return Some(Err(status)),
                },
                _ = self.looks.tick() => {}
            }
            let status = self.overrule.status(self.shared);
            if self.sent != Some(status) {
                self.sent = Some(status);
                return Some(Ok(answer(status).into_inner()));
            }
        }
    }
}

fn answer(status: ServingStatus) -> Response<HealthCheckResponse> {
    Response::new(HealthCheckResponse {
        status: status.into(),
    })
}

/// A running health lane: its thread serves until `stop` (or a drop), and
/// its heartbeat task beats on the main runtime meanwhile.
pub(crate) struct HealthLane {
    /// Cancels the lane's server when dropped.
    stop: DropGuard,
    /// Resolves once the lane's thread is done.
    stopped: oneshot::Receiver<()>,
    _heartbeat: AbortOnDropHandle<()>,
}

impl HealthLane {
    /// Serves `statuses` on `listener` from a new thread and runtime, and
    /// spawns the heartbeat on the current (main) runtime. `stopping`: what
    /// readiness watches. Connections are bounded by `lane_limits(limits)`.
    pub fn spawn(
        listener: TcpListener,
        statuses: HealthService,
        stall_limit: Duration,
        stopping: watch::Receiver<bool>,
        limits: &Limits,
        telemetry: &Telemetry,
    ) -> std::io::Result<Self> {
        let heartbeat = Heartbeat::new(stall_limit);
        let beating = telemetry
            .tasks()
            .spawn("health-heartbeat", heartbeat.clone().keep_beating())?;
        let service = HealthServer::new(LaneHealth {
            statuses,
            overrule: Overrule {
                heartbeat,
                stopping,
            },
        })
        .max_decoding_message_size(MAX_REQUEST_BYTES);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = listener.into_std()?;
        let cancel = CancellationToken::new();
        let (done, stopped) = oneshot::channel();
        let lane = serve(
            listener,
            service,
            lane_limits(limits),
            telemetry.metrics(),
            cancel.clone(),
        )
        .with_subscriber(telemetry.dispatch());
        std::thread::Builder::new()
            .name("health-lane".to_owned())
            .spawn(move || {
                runtime.block_on(lane);
                let _ = done.send(());
            })?;
        Ok(Self {
            stop: cancel.drop_guard(),
            stopped,
            _heartbeat: AbortOnDropHandle::new(beating),
        })
    }

    /// Stops accepting, and waits for the lane's thread to finish (its
    /// connections get `CLOSE_GRACE` to close).
    pub async fn stop(self) {
        drop(self.stop);
        let _ = self.stopped.await;
    }
}

/// The lane's server, on its own runtime, until `cancel`.
async fn serve(
    listener: StdTcpListener,
    service: HealthServer<LaneHealth>,
    limits: Limits,
    metrics: Metrics,
    cancel: CancellationToken,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "the health lane cannot listen: probes will fail");
            return;
        }
    };
    let incoming = guard_connections(
        TcpIncoming::from(listener).with_nodelay(Some(true)),
        &limits,
        &metrics,
    );
    let server = Server::builder()
        .max_concurrent_streams(MAX_STREAMS)
        .max_connection_age(MAX_AGE)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, cancel.clone().cancelled_owned());
    let closed = async {
        cancel.cancelled().await;
        tokio::time::sleep(CLOSE_GRACE).await;
    };
    tokio::select! {
        served = server => {
            if let Err(error) = served {
                tracing::error!(%error, "the health lane failed: probes will fail");
            }
        }
        () = closed => {}
    }
}

/// The gRPC port's limits with the lane's own connection bounds: a probe's
/// connection is short, and the lane's are few whatever `--max-connections`
/// (or `--no-protection`) says.
fn lane_limits(limits: &Limits) -> Limits {
    Limits {
        max_connections: MAX_CONNECTIONS,
        max_connections_per_peer: MAX_CONNECTIONS_PER_PEER,
        max_calls_per_connection: MAX_STREAMS as usize,
        handshake_timeout: Some(HANDSHAKE_TIMEOUT),
        connection_idle_timeout: None,
        max_connection_age: Some((MAX_AGE, MAX_AGE_GRACE)),
        ..*limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_heartbeat_is_not_stalled() {
        let heartbeat = Heartbeat::new(Duration::from_secs(10));

        assert_eq!(heartbeat.stalled_at(heartbeat.origin), None);
        assert_eq!(
            heartbeat.stalled_at(heartbeat.origin + Duration::from_secs(10)),
            None
        );
    }

    #[test]
    fn a_heartbeat_silent_past_the_limit_is_stalled_until_it_beats_again() {
        let heartbeat = Heartbeat::new(Duration::from_secs(10));
        let later = heartbeat.origin + Duration::from_secs(11);

        let stalled = heartbeat.stalled_at(later);
        heartbeat.clone().beat_at(later);

        assert_eq!(stalled, Some(Duration::from_secs(11)));
        assert_eq!(heartbeat.stalled_at(later), None, "clones share the beat");
    }

    #[test]
    fn a_late_stamp_never_moves_the_beat_back() {
        let heartbeat = Heartbeat::new(Duration::from_secs(10));
        let origin = heartbeat.origin;

        heartbeat.beat_at(origin + Duration::from_secs(20));
        heartbeat.beat_at(origin + Duration::from_secs(5));

        assert_eq!(heartbeat.stalled_at(origin + Duration::from_secs(25)), None);
    }
}
