//! tokio-console's layer, its switch and its endpoint (the `console`
//! feature); see the parent module for how the layer stays out of the
//! other layers' way.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use console_api::instrument::instrument_server::InstrumentServer;
use console_subscriber::ConsoleLayer;
use tokio::sync::oneshot;
use tonic::transport::{Server, server::TcpIncoming};
use tracing::{
    Metadata, Subscriber,
    callsite::{self, Identifier},
    span,
    subscriber::Interest,
};
use tracing_subscriber::{
    Layer,
    filter::{Filtered, LevelFilter},
    layer::{Context, Filter},
    registry::LookupSpan,
};

use super::{ConsoleError, ConsoleState, ConsoleStatus};

/// Completed tasks tokio-console keeps (its default, an hour, grows without
/// bound under load).
const RETENTION: Duration = Duration::from_secs(60);
/// Events buffered between instrumented tasks and the console aggregator;
/// beyond it events are dropped, not queued.
const EVENT_BUFFER: usize = 16 * 1024;

/// The targets tokio-console reads: tokio's task, waker and resource spans
/// and events (tracing-subscriber's `tokio=trace,runtime=trace`).
fn wanted(metadata: &Metadata<'_>) -> bool {
    let target = metadata.target();
    target.starts_with("tokio") || target.starts_with("runtime")
}

/// The console's switch and endpoint; clones share them. Dropping the last
/// one closes the endpoint and stops the aggregator.
#[derive(Clone)]
pub struct Console(Arc<Shared>);

struct Shared {
    /// Read by the layer, its filter and its switch.
    switch: Arc<Switch>,
    /// `--console-addr`.
    addr: SocketAddr,
    /// Transitions one at a time.
    control: tokio::sync::Mutex<Control>,
}

struct Control {
    since: SystemTime,
    /// Before the first wake: the console's server, not started.
    unstarted: Option<console_subscriber::Server>,
    /// After it: the gRPC service each endpoint serves, and the aggregator
    /// feeding it, kept running while dormant so that the tasks seen awake
    /// are still closed in its books (and forgotten after the retention).
    instrument: Option<InstrumentServer<console_subscriber::Server>>,
    _aggregator: Option<Stopper>,
    /// While awake.
    endpoint: Option<Endpoint>,
}

/// The endpoint of one awake period, on a thread and runtime of its own:
/// attaching a console never competes with the service's workers, and
/// dropping the runtime at sleep closes every connection with it.
struct Endpoint {
    addr: SocketAddr,
    stop: Stopper,
}

/// Stops a thread's runtime when told (or dropped); `closed` resolves once
/// the runtime, and everything it ran, is gone.
struct Stopper {
    stop: Option<oneshot::Sender<()>>,
    closed: Option<oneshot::Receiver<()>>,
}

impl Stopper {
    async fn stop(mut self) {
        drop(self.stop.take());
        if let Some(closed) = self.closed.take() {
            // An error means the thread is gone already.
            let _ = closed.await;
        }
    }
}

impl Console {
    /// A dormant console on `addr`, and its layer: the app's subscriber's
    /// outermost layer, around the subscriber `S` of every other layer.
    pub(crate) fn new<S>(addr: SocketAddr) -> (Self, Switched<S>)
    where
        S: Subscriber + for<'lookup> LookupSpan<'lookup>,
    {
        let (layer, server) = ConsoleLayer::builder()
            .retention(RETENTION)
            .event_buffer_capacity(EVENT_BUFFER)
            .build();
        let switch = Arc::new(Switch::default());
        let layer = Switched {
            inner: ConsoleView {
                layer,
                registered: parking_lot::Mutex::default(),
                switch: switch.clone(),
            }
            .with_filter(DormantFilter {
                switch: switch.clone(),
            }),
            switch: switch.clone(),
        };
        let console = Self(Arc::new(Shared {
            switch,
            addr,
            control: tokio::sync::Mutex::new(Control {
                since: SystemTime::now(),
                unstarted: Some(server),
                instrument: None,
                _aggregator: None,
                endpoint: None,
            }),
        }));
        (console, layer)
    }

    /// Awake or dormant, and since when.
    pub async fn status(&self) -> ConsoleStatus {
        self.0.control.lock().await.status()
    }

    /// Opens the endpoint on `--console-addr` and wakes the layer: tasks
    /// spawned from now on are seen. Awake already: the status, unchanged.
    pub async fn wake(&self) -> Result<ConsoleStatus, ConsoleError> {
        let mut control = self.0.control.lock().await;
        if control.endpoint.is_some() {
            return Ok(control.status());
        }
        let addr = self.0.addr;
        let bind_error = |source| ConsoleError::Bind { addr, source };
        let listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let bound = listener.local_addr().map_err(bind_error)?;
        let instrument = control.instrument()?;
        let stop = on_own_thread("tokio-console", move || async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            Server::builder()
                .add_service(instrument)
                .serve_with_incoming(TcpIncoming::from(listener))
                .await?;
            Ok(())
        })?;
        control.endpoint = Some(Endpoint { addr: bound, stop });
        control.since = SystemTime::now();
        self.0.switch.awake.store(true, Ordering::Release);
        callsite::rebuild_interest_cache();
        tracing::warn!(addr = %bound, "tokio-console awake");
        Ok(control.status())
    }

    /// Puts the layer back to sleep and closes the endpoint (a connected
    /// console sees its connection end). Dormant already: the status,
    /// unchanged.
    pub async fn sleep(&self) -> ConsoleStatus {
        let mut control = self.0.control.lock().await;
        let Some(endpoint) = control.endpoint.take() else {
            return control.status();
        };
        self.0.switch.awake.store(false, Ordering::Release);
        callsite::rebuild_interest_cache();
        endpoint.stop.stop().await;
        control.since = SystemTime::now();
        tracing::warn!(addr = %endpoint.addr, "tokio-console dormant");
        control.status()
    }
}

impl Control {
    fn status(&self) -> ConsoleStatus {
        let addr = self.endpoint.as_ref().map(|endpoint| endpoint.addr);
        ConsoleStatus {
            state: match addr {
                Some(_) => ConsoleState::Awake,
                None => ConsoleState::Dormant,
            },
            since: self.since,
            addr,
        }
    }

    /// The console's gRPC service; the first call starts the aggregator.
    fn instrument(&mut self) -> Result<InstrumentServer<console_subscriber::Server>, ConsoleError> {
        if let Some(server) = self.unstarted.take() {
            let parts = server.into_parts();
            let aggregator = parts.aggregator;
            self._aggregator = Some(on_own_thread("tokio-console-aggregator", move || async {
                aggregator.run().await;
                Ok(())
            })?);
            self.instrument = Some(parts.instrument_server);
        }
        Ok(self
            .instrument
            .clone()
            .expect("the console's service exists once its aggregator started"))
    }
}

/// Why a console thread's future ended early (logged, not returned: nobody
/// waits for it).
type ThreadError = Box<dyn std::error::Error + Send + Sync>;

/// Runs `make()`'s future on a new thread's current-thread runtime until the
/// stopper is told to stop or dropped; then the runtime, and every task it
/// spawned, is dropped. (The thread keeps the process's subscriber: under
/// `Dispatch::none` the console was told of no task at all, so an awake
/// console lists its own endpoint's tasks too.)
fn on_own_thread<F, Fut>(name: &'static str, make: F) -> Result<Stopper, ConsoleError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), ThreadError>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ConsoleError::Thread)?;
    let (stop, stopped) = oneshot::channel::<()>();
    let (closed, on_closed) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let ended = runtime.block_on(async move {
                tokio::select! {
                    ended = make() => ended,
                    _ = stopped => Ok(()),
                }
            });
            drop(runtime);
            if let Err(error) = ended {
                tracing::error!(%error, thread = name, "tokio-console failed");
            }
            let _ = closed.send(());
        })
        .map_err(ConsoleError::Thread)?;
    Ok(Stopper {
        stop: Some(stop),
        closed: Some(on_closed),
    })
}

/// Whether the console is awake, and how many of the spans it was handed
/// are still open.
#[derive(Default)]
struct Switch {
    awake: AtomicBool,
    /// Spans handed to the console (tokio's tasks, resources and async
    /// operations, made while it was awake) and not yet closed: after a
    /// sleep, their polls and closes still reach it, so that its books
    /// never keep a finished task alive.
    live: AtomicUsize,
}

impl Switch {
    fn awake(&self) -> bool {
        self.awake.load(Ordering::Acquire)
    }

    /// Whether the console needs to hear of entering, leaving and closing
    /// spans at all: while it sleeps with none of its spans open, it does
    /// not, and those calls stop at this one load.
    fn listening(&self) -> bool {
        self.awake() || self.live.load(Ordering::Acquire) > 0
    }
}

/// The console layer's filter. Tokio's targets: `always` while awake,
/// `never` while dormant. Every other callsite: `always`, awake or not,
/// since a per-layer filter's `never` turns every other layer's `always`
/// into `sometimes` (tracing-subscriber sums the filters' interests), and
/// each span and event of the app would be filtered again at run time: the
/// console ignores those spans itself (`ConsoleView`), and while it sleeps
/// `Switched` keeps even their entering and leaving from it. Decisions are
/// cached per callsite by tracing, so `wake` and `sleep` rebuild that
/// cache.
struct DormantFilter {
    switch: Arc<Switch>,
}

impl DormantFilter {
    fn wants(&self, metadata: &Metadata<'_>) -> bool {
        !wanted(metadata) || self.switch.awake()
    }
}

impl<S> Filter<S> for DormantFilter {
    fn enabled(&self, metadata: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        self.wants(metadata)
    }

    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.wants(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    /// `OFF` while dormant, `TRACE` while awake. Dormant, the subscriber's
    /// maximum level is then the other layers' (INFO by default), so
    /// tokio's TRACE instrumentation stops at its macros' first comparison.
    /// This holds only while every other layer gives a hint:
    /// tracing-subscriber takes the larger of the outermost layer's hint and
    /// the rest's, and counts "no hint" below `OFF`, so one layer without a
    /// hint beside this `OFF` would switch every span and log line of the
    /// app off (`telemetry::tests` checks the subscriber's maximum).
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(if self.switch.awake() {
            LevelFilter::TRACE
        } else {
            LevelFilter::OFF
        })
    }
}

/// The console layer, handed only tokio's spans and events, only the spans
/// its own filter enabled, and each callsite once.
struct ConsoleView {
    layer: ConsoleLayer,
    /// The callsites the console has registered.
    registered: parking_lot::Mutex<HashSet<Identifier>>,
    switch: Arc<Switch>,
}

impl<S> Layer<S> for ConsoleView
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        let first = wanted(metadata) && self.registered.lock().insert(metadata.callsite());
        if first {
            Layer::<S>::register_callsite(&self.layer, metadata)
        } else {
            Interest::always()
        }
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        // `ctx` is the filtered context: it finds the span only if the
        // registry recorded the console's filter as enabling it.
        if wanted(attrs.metadata()) && ctx.span(id).is_some() {
            self.switch.live.fetch_add(1, Ordering::AcqRel);
            self.layer.on_new_span(attrs, id, ctx);
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        if wanted(event.metadata()) && self.switch.listening() {
            self.layer.on_event(event, ctx);
        }
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.layer.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.layer.on_exit(id, ctx);
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        let handed = ctx.span(&id).is_some_and(|span| wanted(span.metadata()));
        if handed {
            self.layer.on_close(id, ctx);
            self.switch.live.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The console's filtered layer behind its switch: while the console sleeps
/// with none of its spans open, entering, leaving and closing a span stop
/// here, before the per-layer filter looks the span up in the registry.
/// Everything that keeps tracing-subscriber's per-layer filter state
/// (interest, `enabled`, a new span, an event) always goes through.
pub(crate) struct Switched<S> {
    inner: Filtered<ConsoleView, DormantFilter, S>,
    switch: Arc<Switch>,
}

impl<S> Layer<S> for Switched<S>
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.inner.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.inner.on_layer(subscriber);
    }

    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        self.inner.register_callsite(metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.enabled(metadata, ctx)
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) -> bool {
        self.inner.event_enabled(event, ctx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.inner.max_level_hint()
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_new_span(attrs, id, ctx);
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        self.inner.on_event(event, ctx);
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        if self.switch.listening() {
            self.inner.on_enter(id, ctx);
        }
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        if self.switch.listening() {
            self.inner.on_exit(id, ctx);
        }
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        if self.switch.listening() {
            self.inner.on_close(id, ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_refuses_tokio_targets_while_dormant_and_nothing_else() {
        let switch = Arc::new(Switch::default());
        let filter = DormantFilter {
            switch: switch.clone(),
        };
        let interest = |metadata| {
            <DormantFilter as Filter<tracing_subscriber::Registry>>::callsite_enabled(
                &filter, metadata,
            )
        };
        let hint =
            || <DormantFilter as Filter<tracing_subscriber::Registry>>::max_level_hint(&filter);
        tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            let task = tracing::trace_span!(target: "tokio::task", "runtime.spawn");
            let call = tracing::info_span!(target: "catalogue::app", "call");
            let (task, call) = (task.metadata().unwrap(), call.metadata().unwrap());
            assert!(
                interest(task).is_never(),
                "dormant: never for tokio's targets"
            );
            assert!(
                interest(call).is_always(),
                "dormant: always for the rest, so other layers' interest stays as it is"
            );
            assert_eq!(hint(), Some(LevelFilter::OFF));
            switch.awake.store(true, Ordering::Release);
            assert!(interest(task).is_always(), "awake: tokio's targets");
            assert!(interest(call).is_always(), "awake: the rest as before");
            assert_eq!(hint(), Some(LevelFilter::TRACE));
        });
    }
}
