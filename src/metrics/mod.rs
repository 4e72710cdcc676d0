//! Metrics: the app's own Prometheus recorder, every family's definition
//! (`names`), the text written after the recorder's (`exposition`) and the
//! OpenMetrics rendering with exemplars (`openmetrics`).
//!
//! The recorder is never installed process-wide: two apps in one process
//! (the integration tests run a hundred) each count their own calls. Every
//! metric handle (`Counter`, `Gauge`, `Histogram`) is registered once, by
//! the component that records it, from the `Metrics` its constructor is
//! handed (`Metrics::counter` and the like): nothing registers through an
//! ambient recorder, so a handle made anywhere belongs to the app that made
//! it, and records on the hot path with no lookup.

use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder as _, SharedString};

use metrics_exporter_prometheus::{
    BuildError, Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

pub mod exposition;
pub mod names;
pub mod openmetrics;

use self::{
    names::{Definition, Kind},
    openmetrics::Exemplars,
};

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
                Matcher::Full(names::STREAM_MESSAGES.name.into()),
                names::MESSAGE_COUNT_BUCKETS,
            )?
            .build_recorder();
        let metrics = Self {
            handle: recorder.handle(),
            recorder: Arc::new(recorder),
            exemplars: Arc::default(),
        };
        metrics.describe();
        Ok(metrics)
    }

    /// Registers a counter of `family` with `labels` (its label names, in
    /// the table's order).
    pub fn counter(&self, family: &Definition, labels: &[(&'static str, &str)]) -> Counter {
        self.recorder
            .register_counter(&key(family, Kind::Counter, labels), &METADATA)
    }

    /// Registers a gauge of `family` with `labels`.
    pub fn gauge(&self, family: &Definition, labels: &[(&'static str, &str)]) -> Gauge {
        self.recorder
            .register_gauge(&key(family, Kind::Gauge, labels), &METADATA)
    }

    /// Registers a histogram of `family` with `labels`.
    pub fn histogram(&self, family: &Definition, labels: &[(&'static str, &str)]) -> Histogram {
        self.recorder
            .register_histogram(&key(family, Kind::Histogram, labels), &METADATA)
    }

    /// The help text and unit of every family the recorder renders.
    fn describe(&self) {
        for family in names::ALL {
            let (name, unit, help) = (
                family.name.into(),
                family.unit,
                SharedString::const_str(family.help),
            );
            match family.kind {
                Kind::Counter => self.recorder.describe_counter(name, unit, help),
                Kind::Gauge => self.recorder.describe_gauge(name, unit, help),
                Kind::Histogram => self.recorder.describe_histogram(name, unit, help),
                Kind::Sampled => {}
            }
        }
    }

    /// The Prometheus text exposition of everything recorded.
    pub(crate) fn render(&self) -> String {
        self.handle.render()
    }

    /// The exemplars of the app's latency histograms.
    pub fn exemplars(&self) -> &Exemplars {
        &self.exemplars
    }

    /// Folds histogram samples into their buckets every second, for ever.
    /// Scrapes do it too, but without this a service nobody scrapes would
    /// hold every sample it ever recorded.
    pub async fn upkeep(self) {
        let mut ticks = tokio::time::interval(UPKEEP_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.run_upkeep();
        }
    }

    /// Folds histogram samples into their buckets (a render does it too).
    pub(crate) fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }
}

/// How often histogram samples are folded into their buckets between
/// scrapes: bounds the samples held to one second's worth.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// What the recorder is told of where a handle came from: nothing it uses.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// The key of one series of `family`. Registration is not the hot path: the
/// label values are copied once, into the handle's series.
fn key(family: &Definition, kind: Kind, labels: &[(&'static str, &str)]) -> Key {
    debug_assert_eq!(
        family.kind, kind,
        "{} registered as another kind",
        family.name
    );
    debug_assert!(
        labels
            .iter()
            .map(|(name, _)| *name)
            .eq(family.labels.iter().copied()),
        "{} registered with labels {labels:?}, defined with {:?}",
        family.name,
        family.labels
    );
    let labels: Vec<Label> = labels
        .iter()
        .map(|&(name, value)| Label::new(name, value.to_owned()))
        .collect();
    Key::from_parts(family.name, labels)
}
