//! Connection hygiene for the gRPC listener: what tonic's accept loop does
//! not do. `guard_connections` wraps the accepted stream and
//!
//! - closes a connection beyond `--max-connections`, or beyond
//!   `--max-connections-per-peer` from one client IP, or one that would take
//!   the last eighth of the slots from an IP already holding 4 or more
//!   (`peers.rs`), as soon as it is accepted;
//! - closes one that has not sent the HTTP/2 preface and a whole first
//!   HEADERS block within `--handshake-timeout` (silent or slowloris
//!   connections that would hold a slot forever);
//! - closes one `--max-connection-age-grace` after `--max-connection-age`
//!   (tonic sends the GOAWAY at the age), and one with no call open for
//!   `--connection-idle-timeout` (idle connections, even ones answering
//!   pings, would otherwise hold their slot forever);
//! - backs off after a failed accept (out of file descriptors, say), 5 ms
//!   doubling to 1 s, where tonic would retry at once and spin;
//! - gives each connection its own call slots (`--max-calls-per-connection`)
//!   and each client IP its own (`--max-calls-per-peer`), which tonic hands
//!   every request as `ConnectionInfo`;
//! - closes a connection when one of its calls asks (`ConnectionControl`):
//!   a call whose client has left it unread past its idle timeout or its
//!   deadline, which no other way ends (hyper reads nothing more of its
//!   body until the client opens its window, so the body, and h2's buffers
//!   of it, would stay for as long as the connection does). A call with
//!   an idle timeout and no deadline (every unary call) is watched by its
//!   connection's sweep instead of a timer of its own: tokio's timer
//!   wheel, registered and cleared for each call, cost about 800
//!   instructions of a GetProduct call (callgrind); the sweep, every
//!   quarter of `--stream-idle-timeout`, ends what has waited on its
//!   client for 4 whole periods: between 1 and 1.25 times the timeout.
//!
//! Each refusal is counted in `catalogue_connections_refused_total{reason}`.
//! `raise_fd_limit` lifts the soft `RLIMIT_NOFILE` to the hard limit at start.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use futures::{Stream, task::AtomicWaker};
use http::Request;
use metrics::{Counter, Gauge};
use parking_lot::Mutex;
use slab::Slab;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::Sleep,
};
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::{
    Limits,
    capacity::Capacity,
    peers::{AddressSlot, AddressSlots, Refusal},
};
use crate::{
    coalesce::CoalescedWrites,
    metrics::{Metrics, names},
};

/// The first and the longest pause after a failed accept.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Why a connection was closed at once (the `reason` label).
const MAX_CONNECTIONS: &str = "max_connections";
const MAX_CONNECTIONS_PER_PEER: &str = "max_connections_per_peer";
const RESERVED: &str = "reserved_for_new_peers";
const HANDSHAKE_TIMEOUT: &str = "handshake_timeout";
const ACCEPT_ERROR: &str = "accept_error";
/// Why an open connection was closed (the same counter's `reason`).
const STALLED_CALL: &str = "stalled_call";
const CONNECTION_IDLE_TIMEOUT: &str = "connection_idle_timeout";

/// The refusal counters, one per reason.
#[derive(Clone)]
struct Refusals {
    max_connections: Counter,
    per_peer: Counter,
    reserved: Counter,
    handshake_timeout: Counter,
    accept_error: Counter,
    stalled_call: Counter,
    idle: Counter,
}

impl Refusals {
    fn new(metrics: &Metrics) -> Self {
        let reason = |reason: &'static str| {
            metrics.counter(&names::CONNECTIONS_REFUSED, &[("reason", reason)])
        };
        Self {
            max_connections: reason(MAX_CONNECTIONS),
            per_peer: reason(MAX_CONNECTIONS_PER_PEER),
            reserved: reason(RESERVED),
            handshake_timeout: reason(HANDSHAKE_TIMEOUT),
            accept_error: reason(ACCEPT_ERROR),
            stalled_call: reason(STALLED_CALL),
            idle: reason(CONNECTION_IDLE_TIMEOUT),
        }
    }
}

/// Accepted connections under the rules in the module docs.
pub fn guard_connections<S>(incoming: S, limits: &Limits, metrics: &Metrics) -> GuardedIncoming<S>
where
    S: Stream<Item = io::Result<TcpStream>> + Unpin,
{
    GuardedIncoming {
        incoming,
        slots: AddressSlots::new(
            limits.max_connections,
            limits.max_connections_per_peer,
            limits.max_calls_per_peer,
        ),
        calls_per_connection: limits.max_calls_per_connection,
        handshake_timeout: limits.handshake_timeout,
        idle_timeout: limits.connection_idle_timeout,
        call_idle_timeout: limits.stream_idle_timeout,
        lifetime: limits
            .max_connection_age
            .map(|(age, grace)| age.saturating_add(grace)),
        backoff: None,
        next_backoff: ACCEPT_BACKOFF_MIN,
        refusals: Refusals::new(metrics),
        open: metrics.gauge(&names::CONNECTIONS_OPEN, &[]),
    }
}

/// The stream `guard_connections` returns.
pub struct GuardedIncoming<S> {
    incoming: S,
    slots: Arc<AddressSlots>,
    calls_per_connection: usize,
    /// `None`: a connection may take as long as it likes to start.
    handshake_timeout: Option<Duration>,
    /// `None`: a connection with no call open stays open.
    idle_timeout: Option<Duration>,
    /// `--stream-idle-timeout`, which its sweep serves; `None`: no sweep.
    call_idle_timeout: Option<Duration>,
    /// `--max-connection-age` plus its grace.
    lifetime: Option<Duration>,
    /// Set after a failed accept: nothing is accepted until it fires.
    backoff: Option<Pin<Box<Sleep>>>,
    next_backoff: Duration,
    refusals: Refusals,
    open: Gauge,
}

impl<S> GuardedIncoming<S> {
    /// The accepted stream as a connection, or `None` (closed, counted) when
    /// a bound refuses it.
    fn admit(&self, stream: TcpStream) -> Option<GuardedConnection> {
        let peer = match stream.peer_addr() {
            Ok(peer) => peer.ip(),
            // Gone already.
            Err(_) => return None,
        };
        let slot = match self.slots.admit(peer) {
            Ok(slot) => slot,
            Err(refusal) => {
                let counter = match refusal {
                    Refusal::PerAddress => &self.refusals.per_peer,
                    Refusal::Total => &self.refusals.max_connections,
                    Refusal::Reserve => &self.refusals.reserved,
                };
                counter.increment(1);
                return None;
            }
        };
        self.open.increment(1.0);
        Some(GuardedConnection {
            stream: CoalescedWrites::new(stream),
            slot,
            open: self.open.clone(),
            calls: Capacity::new(self.calls_per_connection),
            control: ConnectionControl::new(
                self.refusals.stalled_call.clone(),
                self.call_idle_timeout.is_some(),
            ),
            sweep: self
                .call_idle_timeout
                .map(|timeout| Every::new(timeout, SWEEPS_PER_IDLE_TIMEOUT)),
            idle: self.idle_timeout.map(|timeout| IdleCheck {
                timer: Every::new(timeout, IDLE_CHECKS),
                seen: 0,
                quiet: 0,
                closed_total: self.refusals.idle.clone(),
            }),
            ends: self.lifetime.map(Alarm::after),
            handshake: self.handshake_timeout.map(|timeout| Handshake {
                deadline: Box::pin(tokio::time::sleep(timeout)),
                frames: FrameScanner::default(),
                timed_out: self.refusals.handshake_timeout.clone(),
            }),
        })
    }
}

impl<S> Stream for GuardedIncoming<S>
where
    S: Stream<Item = io::Result<TcpStream>> + Unpin,
{
    type Item = io::Result<GuardedConnection>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(backoff) = &mut self.backoff {
                ready!(backoff.as_mut().poll(cx));
                self.backoff = None;
            }
            match ready!(Pin::new(&mut self.incoming).poll_next(cx)) {
                None => return Poll::Ready(None),
                Some(Err(error)) => {
                    let pause = self.next_backoff;
                    tracing::warn!(%error, ?pause, "accept failed; backing off");
                    self.refusals.accept_error.increment(1);
                    self.backoff = Some(Box::pin(tokio::time::sleep(pause)));
                    self.next_backoff = (pause * 2).min(ACCEPT_BACKOFF_MAX);
                }
                Some(Ok(stream)) => {
                    self.next_backoff = ACCEPT_BACKOFF_MIN;
                    if let Some(connection) = self.admit(stream) {
                        return Poll::Ready(Some(Ok(connection)));
                    }
                }
            }
        }
    }
}

/// Reads the client's first bytes as HTTP/2 frames until a header block
/// ends: the 24-byte preface, then frames (a 9-byte header: length, type,
/// flags, stream), skipping payloads, until the last byte of a HEADERS or
/// CONTINUATION frame with END_HEADERS. Validating them is h2's job; this
/// only tells when the client has asked for something.
#[derive(Debug, Default)]
struct FrameScanner {
    preface_read: usize,
    header: [u8; 9],
    header_read: usize,
    payload_left: usize,
    /// Set while the payload being skipped ends a header block.
    in_last_header_frame: bool,
}

const PREFACE_LEN: usize = 24;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_HEADERS: u8 = 0x4;

impl FrameScanner {
    /// Feeds bytes read; true once a header block has ended.
    fn header_block_ended(&mut self, mut bytes: &[u8]) -> bool {
        let preface = (PREFACE_LEN - self.preface_read).min(bytes.len());
        self.preface_read += preface;
        bytes = &bytes[preface..];
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let skipped = self.payload_left.min(bytes.len());
                self.payload_left -= skipped;
                bytes = &bytes[skipped..];
                if self.payload_left == 0 && self.in_last_header_frame {
                    return true;
                }
                continue;
            }
            let taken = (9 - self.header_read).min(bytes.len());
            self.header[self.header_read..self.header_read + taken]
                .copy_from_slice(&bytes[..taken]);
            self.header_read += taken;
            bytes = &bytes[taken..];
            if self.header_read < 9 {
                break;
            }
            self.header_read = 0;
            let [len_high, len_mid, len_low, kind, flags, ..] = self.header;
            self.payload_left =
                usize::from(len_high) << 16 | usize::from(len_mid) << 8 | usize::from(len_low);
            self.in_last_header_frame =
                matches!(kind, FRAME_HEADERS | FRAME_CONTINUATION) && flags & FLAG_END_HEADERS != 0;
            if self.in_last_header_frame && self.payload_left == 0 {
                return true;
            }
        }
        false
    }
}

/// A timer of the connection's, checked at each of its reads. tokio's
/// `Sleep::poll` enters three tracing spans (tokio_unstable), takes a unit
/// of the task's cooperative budget and registers its waker: once polled,
/// the waker stays the connection task's until the timer fires (a timer
/// that fires wakes what it holds, then holds nothing), so in between one
/// atomic load tells that it has not.
struct Alarm {
    sleep: Pin<Box<Sleep>>,
    /// Polled since it was set: its waker is registered.
    polled: bool,
}

impl Alarm {
    fn after(duration: Duration) -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep(duration)),
            polled: false,
        }
    }

    /// Whether it has fired; the connection's task is woken when it does.
    fn rang(&mut self, cx: &mut Context<'_>) -> bool {
        if self.polled && !self.sleep.is_elapsed() {
            return false;
        }
        self.polled = true;
        self.sleep.as_mut().poll(cx).is_ready()
    }

    fn deadline(&self) -> tokio::time::Instant {
        self.sleep.deadline()
    }

    fn reset(&mut self, at: tokio::time::Instant) {
        self.sleep.as_mut().reset(at);
        self.polled = false;
    }
}

/// A `timeout` cut into `checks`, never shorter than tokio's timer
/// resolution: a timer reset to the instant it has just fired at would
/// fire again at once, and the connection's task would never leave its
/// checks.
fn period(timeout: Duration, checks: u32) -> Duration {
    (timeout / checks).max(Duration::from_millis(1))
}

/// An alarm that rings every `timeout / checks`: a connection's periodic
/// checks (the idle check, the sweep of its answers).
struct Every {
    alarm: Alarm,
    period: Duration,
}

impl Every {
    fn new(timeout: Duration, checks: u32) -> Self {
        let period = period(timeout, checks);
        Self {
            alarm: Alarm::after(period),
            period,
        }
    }

    /// Whether a period ended since the last call that said so; the alarm
    /// is then set for the end of the next.
    fn ticked(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.alarm.rang(cx) {
            return false;
        }
        let next = self.alarm.deadline() + self.period;
        self.alarm.reset(next);
        true
    }
}

/// How many checks the idle timeout is cut into: a connection is closed
/// after that many checks in a row found it idle.
const IDLE_CHECKS: u32 = 4;

/// The idle checks of a connection.
struct IdleCheck {
    timer: Every,
    /// `ConnectionControl::activity` at the last check.
    seen: u64,
    /// Checks in a row that found no call and no activity.
    quiet: u32,
    closed_total: Counter,
}

impl IdleCheck {
    /// Whether the connection has been idle for the whole timeout; the
    /// timer is set for the next check.
    fn idle_for_long(&mut self, control: &ConnectionControl, cx: &mut Context<'_>) -> bool {
        while self.timer.ticked(cx) {
            let activity = control.activity.load(Ordering::Relaxed);
            if activity == self.seen && control.open_calls.load(Ordering::Relaxed) == 0 {
                self.quiet += 1;
            } else {
                self.quiet = 0;
                self.seen = activity;
            }
            if self.quiet >= IDLE_CHECKS {
                self.closed_total.increment(1);
                return true;
            }
        }
        false
    }
}

/// How many sweeps `--stream-idle-timeout` is cut into. An answer that
/// began to wait on its client after sweep `n` and still waits at sweep
/// `n + SWEEPS_PER_IDLE_TIMEOUT + 1` has waited at least the timeout, and
/// less than 1.25 times it.
const SWEEPS_PER_IDLE_TIMEOUT: u32 = 4;

/// A call's answer its connection's sweep watches (the call's
/// `protection::Lease`).
pub(crate) trait Answer: Send + Sync {
    /// The sweep (`ConnectionControl::sweeps`) at which it last began to
    /// wait on its client; `None` while it is not waiting on it.
    fn waiting_since(&self) -> Option<u32>;
    /// Its client has read nothing of it for the idle timeout: it ends.
    fn stalled(&self);
}

/// The answers a connection's sweep watches, by key.
#[derive(Default)]
struct Answers(Mutex<Slab<Arc<dyn Answer>>>);

impl std::fmt::Debug for Answers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Answers({} watched)", self.0.lock().len())
    }
}

/// A connection's start: the deadline for its first whole header block.
struct Handshake {
    deadline: Pin<Box<Sleep>>,
    frames: FrameScanner,
    timed_out: Counter,
}

/// An accepted connection: it holds a slot of `--max-connections` and of its
/// peer's `--max-connections-per-peer` while open, and is closed if its
/// handshake does not end in time.
pub struct GuardedConnection {
    /// Each HTTP/2 round's writes in one system call (`coalesce`).
    stream: CoalescedWrites<TcpStream>,
    /// Its slot of `--max-connections` and of its address's share.
    slot: AddressSlot,
    open: Gauge,
    /// Its calls' slots (`--max-calls-per-connection`).
    calls: Arc<Capacity>,
    /// How its calls close it.
    control: Arc<ConnectionControl>,
    /// `None` with no `--connection-idle-timeout`.
    idle: Option<IdleCheck>,
    /// `None` once the first header block has arrived (or with no timeout).
    handshake: Option<Handshake>,
    /// `None` with no `--stream-idle-timeout`.
    sweep: Option<Every>,
    /// When it is closed whatever it is doing: `--max-connection-age` (tonic
    /// sends the GOAWAY) plus its grace.
    ends: Option<Alarm>,
}

impl Drop for GuardedConnection {
    fn drop(&mut self) {
        self.open.decrement(1.0);
    }
}

/// What a connection's calls tell it: that they open and close (a
/// connection with none open for the idle timeout is closed), or that it
/// must close, at its next read, with every call on it.
#[derive(Debug)]
pub(crate) struct ConnectionControl {
    closing: AtomicBool,
    /// The connection's task, woken to read (and so to close).
    task: AtomicWaker,
    closed_total: Counter,
    /// Calls holding slots on it.
    open_calls: AtomicUsize,
    /// Counts calls that started or ended (health checks, which hold no
    /// slot, included): unchanged between two idle checks, nothing
    /// happened.
    activity: AtomicU64,
    /// The answers its sweep watches; `None`: it has no sweep, its calls
    /// keep timers of their own.
    answers: Option<Answers>,
    /// Sweeps so far.
    sweeps: AtomicU32,
}

impl ConnectionControl {
    /// A connection's, open and quiet; `closed_total` counts its closing
    /// for a stuck call; `swept`: its answers are watched by its sweep
    /// (`--stream-idle-timeout`).
    fn new(closed_total: Counter, swept: bool) -> Arc<Self> {
        Arc::new(Self {
            closing: AtomicBool::new(false),
            task: AtomicWaker::new(),
            closed_total,
            open_calls: AtomicUsize::new(0),
            activity: AtomicU64::new(0),
            answers: swept.then(Answers::default),
            sweeps: AtomicU32::new(0),
        })
    }

    /// A call that holds no slot (a health check) came.
    pub(super) fn touch(&self) {
        self.activity.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn call_opened(&self) {
        self.open_calls.fetch_add(1, Ordering::Relaxed);
        self.touch();
    }

    pub(super) fn call_closed(&self) {
        self.open_calls.fetch_sub(1, Ordering::Relaxed);
        self.touch();
    }

    /// Watches `answer` until `unwatch`: its key, or `None` if this
    /// connection has no sweep.
    pub(super) fn watch(&self, answer: Arc<dyn Answer>) -> Option<usize> {
        Some(self.answers.as_ref()?.0.lock().insert(answer))
    }

    pub(super) fn unwatch(&self, key: usize) {
        if let Some(answers) = &self.answers {
            drop(answers.0.lock().try_remove(key));
        }
    }

    /// The sweeps so far: an answer that begins to wait on its client
    /// notes it.
    pub(super) fn sweeps(&self) -> u32 {
        self.sweeps.load(Ordering::Acquire)
    }

    /// Ends every answer that has waited on its client since
    /// `SWEEPS_PER_IDLE_TIMEOUT` sweeps ago.
    fn sweep(&self) {
        let Some(answers) = &self.answers else {
            return;
        };
        let now = self.sweeps.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
        let stalled: Vec<Arc<dyn Answer>> = answers
            .0
            .lock()
            .iter()
            .filter(|(_, answer)| {
                answer
                    .waiting_since()
                    .is_some_and(|since| now.wrapping_sub(since) > SWEEPS_PER_IDLE_TIMEOUT)
            })
            .map(|(_, answer)| answer.clone())
            .collect();
        // Outside the lock: ending one closes the connection, and its
        // slots go back.
        for answer in stalled {
            answer.stalled();
        }
    }

    /// Closes the connection: one of its calls is stuck behind a client
    /// that reads nothing.
    pub(super) fn close(&self) {
        if !self.closing.swap(true, Ordering::AcqRel) {
            self.closed_total.increment(1);
        }
        self.task.wake();
    }
}

/// What tonic puts in each request's extensions for a `GuardedConnection`:
/// the TCP addresses and the connection's call slots.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    tcp: TcpConnectInfo,
    pub(super) calls: Arc<Capacity>,
    /// Its client IP's, shared with the IP's other connections.
    pub(super) peer_calls: Arc<Capacity>,
    pub(super) control: Arc<ConnectionControl>,
}

/// Copies a request's TCP addresses into its extensions as
/// `TcpConnectInfo`, where the telemetry and tonic's `remote_addr` read
/// them (tonic inserts only `ConnectionInfo`). The outermost layer.
pub fn expose_tcp_info<B>(mut request: Request<B>) -> Request<B> {
    if let Some(tcp) = request
        .extensions()
        .get::<ConnectionInfo>()
        .map(|info| info.tcp.clone())
    {
        request.extensions_mut().insert(tcp);
    }
    request
}

#[cfg(test)]
impl ConnectionInfo {
    /// A connection of its own from the address whose calls are
    /// `peer_calls`, for the admission's tests.
    pub(crate) fn of_address(peer_calls: Arc<Capacity>) -> Self {
        Self {
            tcp: TcpConnectInfo {
                local_addr: None,
                remote_addr: None,
            },
            calls: Capacity::new(usize::MAX),
            peer_calls,
            control: ConnectionControl::new(Counter::noop(), false),
        }
    }
}

impl Connected for GuardedConnection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnectionInfo {
            tcp: self.stream.get_ref().connect_info(),
            calls: self.calls.clone(),
            peer_calls: self.slot.calls.clone(),
            control: self.control.clone(),
        }
    }
}

impl AsyncRead for GuardedConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.control.task.register(cx.waker());
        if let Some(sweep) = &mut this.sweep {
            while sweep.ticked(cx) {
                this.control.sweep();
            }
        }
        if this.control.closing.load(Ordering::Acquire) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "closed by the server: idle, or a call on it left unread past its bound",
            )));
        }
        if let Some(idle) = &mut this.idle
            && idle.idle_for_long(&this.control, cx)
        {
            // The end of the stream: h2 closes a connection with no stream.
            this.idle = None;
            this.control.closing.store(true, Ordering::Release);
            return Poll::Ready(Ok(()));
        }
        if let Some(ends) = &mut this.ends
            && ends.rang(cx)
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "--max-connection-age and its grace are over",
            )));
        }
        let Some(handshake) = &mut this.handshake else {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        };
        // Checked before every read, so a client trickling bytes is cut off
        // as surely as a silent one.
        if handshake.deadline.as_mut().poll(cx).is_ready() {
            handshake.timed_out.increment(1);
            this.handshake = None;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no HTTP/2 preface and first HEADERS within --handshake-timeout",
            )));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        if handshake.frames.header_block_ended(&buf.filled()[before..]) {
            this.handshake = None;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for GuardedConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Files the process keeps open besides client connections: listeners,
/// admin connections, the database pool, the log, the binary's own.
const RESERVED_FDS: u64 = 256;

/// Raises the soft limit on open files to the hard one (`raise_fd_limit`)
/// and returns `limits` with `max_connections` lowered, with a warning, if
/// the limit cannot hold that many connections and the files the process
/// needs besides. No cap (`--no-protection`) stays no cap.
pub fn fit_to_fd_limit(mut limits: Limits) -> Limits {
    let Some(open_files) = raise_fd_limit() else {
        return limits;
    };
    let fits = usize::try_from(open_files.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
    let asked = limits.max_connections;
    if asked > fits && asked != usize::MAX {
        let fits = fits.max(1);
        tracing::warn!(
            max_connections = asked,
            open_files_limit = open_files,
            lowered_to = fits,
            "--max-connections is more than the open-files limit allows; lowered"
        );
        limits.max_connections = fits;
    }
    limits
}

/// Raises the soft limit on open files to the hard limit (a service started
/// under `ulimit -Sn 1024` would otherwise stop accepting near a thousand
/// connections) and returns the soft limit in force, `None` where it cannot
/// be read.
pub fn raise_fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        let (Some(current), hard) = (limit.current, limit.maximum) else {
            return None;
        };
        let Some(hard) = hard else {
            // Unlimited: keep whatever is set (setting "unlimited" fails).
            return Some(current);
        };
        if current >= hard {
            return Some(current);
        }
        let raised = rustix::process::Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::info!(
                    from = current,
                    to = hard,
                    "raised the soft limit on open files"
                );
                Some(hard)
            }
            Err(error) => {
                tracing::warn!(%error, soft = current, "could not raise the soft limit on open files");
                Some(current)
            }
        }
    }
    #[cfg(not(unix))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut frame = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        frame.extend_from_slice(payload);
        frame
    }

    /// An answer that waits on its client from `since` until `read_at`
    /// (a sweep number), if ever.
    struct Waiting {
        since: u32,
        read_at: Option<u32>,
        control: Arc<ConnectionControl>,
        stalled_at: Mutex<Option<u32>>,
    }

    impl Answer for Waiting {
        fn waiting_since(&self) -> Option<u32> {
            let now = self.control.sweeps();
            (now >= self.since && self.read_at.is_none_or(|read| now < read)).then_some(self.since)
        }

        fn stalled(&self) {
            self.stalled_at.lock().get_or_insert(self.control.sweeps());
        }
    }

    fn swept_control() -> Arc<ConnectionControl> {
        ConnectionControl::new(Counter::noop(), true)
    }

    #[test]
    fn a_check_period_is_never_shorter_than_a_timer_tick() {
        assert_eq!(
            period(Duration::from_secs(30), 4),
            Duration::from_millis(7500)
        );
        assert_eq!(period(Duration::from_nanos(1), 4), Duration::from_millis(1));
    }

    /// With 4 sweeps to the timeout, an answer that began waiting between
    /// sweeps 2 and 3 has waited the whole timeout at sweep 7, not before;
    /// one its client read in time, or that was unwatched, never ends.
    #[test]
    fn the_sweep_ends_an_answer_that_waited_the_whole_idle_timeout_and_no_other() {
        let control = swept_control();
        let answer = |read_at| {
            Arc::new(Waiting {
                since: 2,
                read_at,
                control: control.clone(),
                stalled_at: Mutex::new(None),
            })
        };
        let (stalled, read, gone) = (answer(None), answer(Some(6)), answer(None));
        for waiting in [&stalled, &read, &gone] {
            assert!(control.watch(waiting.clone()).is_some());
        }
        control.unwatch(2);
        for _ in 0..10 {
            control.sweep();
        }

        assert_eq!(*stalled.stalled_at.lock(), Some(7));
        assert_eq!(*read.stalled_at.lock(), None);
        assert_eq!(*gone.stalled_at.lock(), None);
    }

    #[test]
    fn a_handshake_ends_with_the_first_whole_header_block() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        let settings = frame(0x4, 0, &[0; 12]);
        let open_headers = frame(FRAME_HEADERS, 0, &[1, 2, 3]);
        let continuation = frame(FRAME_CONTINUATION, FLAG_END_HEADERS, &[4]);
        let mut bytes = preface.to_vec();
        bytes.extend(&settings);
        bytes.extend(&open_headers);

        // Byte by byte: a trickle reads the same as one read.
        let mut scanner = FrameScanner::default();
        assert!(
            !bytes
                .iter()
                .any(|byte| scanner.header_block_ended(&[*byte]))
        );
        assert!(scanner.header_block_ended(&continuation));

        let mut scanner = FrameScanner::default();
        let mut whole = preface.to_vec();
        whole.extend(&settings);
        whole.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS | 0x1, &[9; 40]));
        assert!(scanner.header_block_ended(&whole));

        // A HEADERS frame's header alone is not a header block: its payload
        // must arrive too.
        let mut scanner = FrameScanner::default();
        let mut header_only = preface.to_vec();
        header_only.extend(&frame(FRAME_HEADERS, FLAG_END_HEADERS, &[7; 100])[..9]);
        assert!(!scanner.header_block_ended(&header_only));
        assert!(!scanner.header_block_ended(&[7; 99]));
        assert!(scanner.header_block_ended(&[7]));

        // A DATA frame's payload that looks like HEADERS is skipped.
        let mut scanner = FrameScanner::default();
        let mut tricky = preface.to_vec();
        tricky.extend(frame(0x0, 0, &frame(FRAME_HEADERS, FLAG_END_HEADERS, &[])));
        assert!(!scanner.header_block_ended(&tricky));
    }

    #[tokio::test]
    async fn a_failed_accept_pauses_the_loop_instead_of_spinning() {
        use futures::{FutureExt as _, StreamExt as _};
        let too_many_files = || Err(io::Error::from_raw_os_error(24));
        let failing = futures::stream::iter([too_many_files(), too_many_files(), too_many_files()]);
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            protection: crate::protection::ProtectionConfig,
        }
        let limits = <Flags as clap::Parser>::parse_from(["test"])
            .protection
            .limits();
        let mut incoming =
            guard_connections(failing, &limits, &Metrics::new().expect("a recorder"));

        // Two more errors are ready, yet the stream waits out its backoff.
        assert!(incoming.next().now_or_never().is_none());
        assert_eq!(incoming.next_backoff, ACCEPT_BACKOFF_MIN * 2);
        // It resumes after it and backs off longer at each failure.
        assert!(incoming.next().await.is_none());
        assert_eq!(incoming.next_backoff, ACCEPT_BACKOFF_MIN * 8);
    }
}
