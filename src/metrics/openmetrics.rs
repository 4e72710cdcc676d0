//! Exemplars, and the OpenMetrics text that carries them: the two things
//! metrics-exporter-prometheus lacks (metrics-rs#175). The exporter still
//! renders every metric; this module keeps, per histogram series that asks
//! for it, the latest sampled call of each bucket, and turns the exporter's
//! Prometheus text into OpenMetrics 1.0 with those exemplars on the bucket
//! lines, for a scraper that asks for it (`Accept:
//! application/openmetrics-text`).
//!
//! Memory is bounded: one exemplar per bucket per series, replaced by the
//! next sampled call that lands in the bucket. Recording takes one
//! uncontended lock, and only for calls whose trace is exported.

use std::{collections::HashMap, fmt::Write as _, sync::Arc, time::SystemTime};

use opentelemetry::trace::{SpanId, TraceId};
use parking_lot::Mutex;

/// The content type of the OpenMetrics text exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One sampled observation: the trace it belongs to, its value and when.
#[derive(Debug, Clone, Copy)]
struct Exemplar {
    trace_id: TraceId,
    span_id: SpanId,
    value: f64,
    at: SystemTime,
}

/// The latest exemplar of each bucket of one histogram series.
pub struct SeriesExemplars {
    /// The buckets' upper bounds; one more slot than bounds, for `+Inf`.
    bounds: &'static [f64],
    latest: Box<[Mutex<Option<Exemplar>>]>,
}

impl SeriesExemplars {
    /// Keeps `value`, observed in the trace `trace_id` (span `span_id`), as
    /// the exemplar of the smallest bucket that holds it.
    pub fn record(&self, value: f64, trace_id: TraceId, span_id: SpanId) {
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        *self.latest[bucket].lock() = Some(Exemplar {
            trace_id,
            span_id,
            value,
            at: SystemTime::now(),
        });
    }

    fn latest(&self, bucket: usize) -> Option<Exemplar> {
        *self.latest.get(bucket)?.lock()
    }
}

/// A series: its labels, sorted, as the exposition writes them.
type Labels = Vec<(String, String)>;

/// Every series' exemplars, by histogram name and labels. One per app,
/// beside its recorder.
#[derive(Default)]
pub struct Exemplars {
    series: Mutex<HashMap<&'static str, HashMap<Labels, Arc<SeriesExemplars>>>>,
}

impl Exemplars {
    /// The exemplars of the series `name{labels}`, whose buckets are
    /// `bounds` (as the recorder was told): made on first use, shared after.
    pub fn series(
        &self,
        name: &'static str,
        labels: &[(&str, &str)],
        bounds: &'static [f64],
    ) -> Arc<SeriesExemplars> {
        let mut labels: Labels = labels
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        labels.sort();
        let mut series = self.series.lock();
        series
            .entry(name)
            .or_default()
            .entry(labels)
            .or_insert_with(|| {
                Arc::new(SeriesExemplars {
                    bounds,
                    latest: (0..=bounds.len()).map(|_| Mutex::new(None)).collect(),
                })
            })
            .clone()
    }

    /// `prometheus`, the exporter's text exposition, as OpenMetrics 1.0:
    /// counter families named without their `_total` suffix (their samples
    /// keep it), no blank lines, exemplars on the buckets that have one,
    /// and `# EOF`.
    pub fn openmetrics(&self, prometheus: &str) -> String {
        let series = self.series.lock();
        let mut out = String::with_capacity(prometheus.len() + prometheus.len() / 8);
        let counters: Vec<&str> = prometheus
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
            .collect();
        // OpenMetrics has no blank lines; the exporter puts one after each
        // family.
        for line in prometheus.lines().filter(|line| !line.is_empty()) {
            if let Some(comment) = line.strip_prefix("# ") {
                out.push_str(&family_line(comment, &counters));
            } else {
                out.push_str(line);
                if let Some(exemplar) = bucket_exemplar(line, &series) {
                    write_exemplar(&mut out, &exemplar);
                }
            }
            out.push('\n');
        }
        out.push_str("# EOF\n");
        out
    }
}

/// A `# HELP` or `# TYPE` line, with a counter family's name cut of its
/// `_total`, as OpenMetrics names counter families.
fn family_line(comment: &str, counters: &[&str]) -> String {
    let mut words = comment.splitn(3, ' ');
    let (Some(kind), Some(name)) = (words.next(), words.next()) else {
        return format!("# {comment}");
    };
    let rest = words
        .next()
        .map(|rest| format!(" {rest}"))
        .unwrap_or_default();
    let name = match name.strip_suffix("_total") {
        Some(family) if counters.contains(&name) => family,
        _ => name,
    };
    format!("# {kind} {name}{rest}")
}

/// The exemplar of the bucket a `name_bucket{…,le="…"} count` line counts,
/// if its series keeps exemplars and the bucket has one.
fn bucket_exemplar(
    line: &str,
    series: &HashMap<&'static str, HashMap<Labels, Arc<SeriesExemplars>>>,
) -> Option<Exemplar> {
    let (name, rest) = line.split_once("_bucket{")?;
    let by_labels = series.get(name)?;
    let (labels, _count) = rest.rsplit_once("} ")?;
    let mut labels = parse_labels(labels)?;
    let le_at = labels.iter().position(|(key, _)| key == "le")?;
    let (_, le) = labels.remove(le_at);
    labels.sort();
    let exemplars = by_labels.get(&labels)?;
    let bucket = if le == "+Inf" {
        exemplars.bounds.len()
    } else {
        let le: f64 = le.parse().ok()?;
        exemplars.bounds.iter().position(|&bound| bound == le)?
    };
    exemplars.latest(bucket)
}

/// `key="value",…` as written by the exporter (values escaped with `\`).
fn parse_labels(text: &str) -> Option<Labels> {
    let mut labels = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut characters = after.char_indices();
        let end = loop {
            match characters.next()? {
                (_, '\\') => match characters.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (index, '"') => break index,
                (_, other) => value.push(other),
            }
        };
        labels.push((key.trim_start_matches(',').to_owned(), value));
        rest = &after[end + 1..];
    }
    Some(labels)
}

fn write_exemplar(out: &mut String, exemplar: &Exemplar) {
    let at = exemplar
        .at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    write!(
        out,
        " # {{trace_id=\"{}\",span_id=\"{}\"}} {} {at:.3}",
        exemplar.trace_id, exemplar.span_id, exemplar.value
    )
    .expect("writing to a String");
}

/// Whether an `Accept` header asks for OpenMetrics (any media range of it
/// with a non-zero quality), as Prometheus' scrapes do.
pub(crate) fn accepts_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parameters = range.split(';').map(str::trim);
        parameters.next() == Some("application/openmetrics-text")
            && !parameters.any(|parameter| {
                parameter
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f64>().ok())
                    .is_some_and(|q| q <= 0.0)
            })
    })
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    const BOUNDS: &[f64] = &[0.001, 0.01, 0.1];

    fn ids(byte: u8) -> (TraceId, SpanId) {
        (
            TraceId::from_bytes([byte; 16]),
            SpanId::from_bytes([byte; 8]),
        )
    }

    /// The exporter's own text for a histogram and a counter, as the app's
    /// recorder renders them.
    fn rendered() -> String {
        let recorder = PrometheusBuilder::new()
            .set_buckets(BOUNDS)
            .unwrap()
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::describe_counter!("calls_total", "calls");
            let labels = [("method", "Get"), ("code", "OK")];
            metrics::histogram!("call_seconds", &labels).record(0.005);
            metrics::histogram!("call_seconds", &labels).record(0.5);
            metrics::counter!("calls_total", &labels).increment(2);
        });
        handle.render()
    }

    #[test]
    fn exemplars_go_on_the_buckets_of_their_series_in_openmetrics_text() {
        let exemplars = Exemplars::default();
        // Labels in another order than the recorder's: series are sets.
        let series = exemplars.series("call_seconds", &[("code", "OK"), ("method", "Get")], BOUNDS);
        let (trace, span) = ids(0xab);
        series.record(0.005, trace, span);
        let (late_trace, late_span) = ids(0xcd);
        series.record(0.5, late_trace, late_span);

        let text = exemplars.openmetrics(&rendered());

        let bucket = |le: &str| {
            text.lines()
                .find(|line| {
                    line.starts_with("call_seconds_bucket")
                        && line.contains(&format!("le=\"{le}\""))
                })
                .unwrap_or_else(|| panic!("no bucket {le} in {text}"))
                .to_owned()
        };
        let expected = format!(" # {{trace_id=\"{trace}\",span_id=\"{span}\"}} 0.005 ");
        assert!(bucket("0.01").contains(&expected), "{}", bucket("0.01"));
        assert!(!bucket("0.001").contains('#'), "an empty bucket has none");
        assert!(bucket("+Inf").contains(&format!("trace_id=\"{late_trace}\"")));
        assert!(text.contains("# TYPE calls counter\n"), "{text}");
        assert!(text.contains("calls_total{"), "samples keep _total: {text}");
        assert!(text.ends_with("# EOF\n"));
        assert!(!text.contains("\n\n"), "no blank line: {text}");
    }

    #[test]
    fn prometheus_scrapes_ask_for_openmetrics() {
        assert!(accepts_openmetrics(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(!accepts_openmetrics("text/plain;version=0.0.4"));
        assert!(!accepts_openmetrics("application/openmetrics-text;q=0"));
        assert!(!accepts_openmetrics("*/*"));
    }

    #[test]
    fn labels_are_read_with_their_escapes() {
        assert_eq!(
            parse_labels(r#"a="1",b="x\"y\\z",le="+Inf""#).unwrap(),
            vec![
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), "x\"y\\z".to_owned()),
                ("le".to_owned(), "+Inf".to_owned())
            ]
        );
    }
}
