//! The app's own Prometheus recorder. It is never installed process-wide:
//! two apps in one process (the integration tests run a hundred) each count
//! their own calls.
//!
//! Every metric handle (`Counter`, `Gauge`, `Histogram`) is registered once,
//! when the component that records it is built, and keeps pointing at the
//! recorder it was registered with. `Metrics::scope` makes this app's
//! recorder the one `counter!`, `gauge!` and `histogram!` register with, so
//! components are built inside it and record on the hot path through their
//! handles, with no lookup.

use std::sync::Arc;

use metrics_exporter_prometheus::{
    BuildError, Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

pub mod exposition;
pub mod names;
pub mod openmetrics;

use self::openmetrics::Exemplars;

/// One app's recorder and its renderer, and the exemplars of its latency
/// histograms; clones share them.
#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    exemplars: Arc<Exemplars>,
}

impl Metrics {
    /// A recorder with the latency and message-count buckets, every metric
    /// described.
    pub fn new() -> Result<Self, BuildError> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), names::LATENCY_BUCKETS)?
            .set_buckets_for_metric(
                Matcher::Full(names::STREAM_MESSAGES.into()),
                names::MESSAGE_COUNT_BUCKETS,
            )?
            .build_recorder();
        let metrics = Self {
            handle: recorder.handle(),
            recorder: Arc::new(recorder),
            exemplars: Arc::default(),
        };
        metrics.scope(names::describe);
        Ok(metrics)
    }

    /// Runs `register` with this recorder as the current one: the handles
    /// made inside belong to it.
    pub fn scope<T>(&self, register: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(self.recorder.as_ref(), register)
    }

    /// The Prometheus text exposition of everything recorded.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// The exemplars of the app's latency histograms.
    pub fn exemplars(&self) -> &Exemplars {
        &self.exemplars
    }

    /// Folds histogram samples into their buckets (a render does it too).
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }
}
