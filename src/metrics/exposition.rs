//! Families written straight into the Prometheus text exposition, after what
//! the recorder renders, for values the metrics crate cannot type: its
//! counters are integers (these count seconds) and its histograms bucket
//! observations themselves (Tokio keeps these buckets). Each value is read
//! from its source at scrape time, as a Prometheus client's collector does.

use std::fmt::Write as _;

use super::names::Definition;

/// The exposition text the sampler appends families to.
pub(crate) struct Exposition<'a> {
    out: &'a mut String,
}

/// A family whose header is written: its samples follow.
pub(crate) struct Family<'e, 'a> {
    exposition: &'e mut Exposition<'a>,
    name: &'static str,
}

impl<'a> Exposition<'a> {
    pub fn new(out: &'a mut String) -> Self {
        Self { out }
    }

    /// Starts a counter family (`family.name` ends in `_total`).
    pub fn counter(&mut self, family: &Definition) -> Family<'_, 'a> {
        self.family(family, "counter")
    }

    /// Starts a gauge family.
    pub fn gauge(&mut self, family: &Definition) -> Family<'_, 'a> {
        self.family(family, "gauge")
    }

    /// A histogram family of one series from the count of each bucket, in
    /// order, with its upper bound (`None` for the last, open one). Tokio
    /// keeps no sum of its observations, so the family has no `_sum`.
    pub fn histogram(
        &mut self,
        family: &Definition,
        buckets: impl IntoIterator<Item = (Option<f64>, u64)>,
    ) {
        let name = family.name;
        self.header(family, "histogram");
        let mut cumulative = 0;
        let mut wrote_infinity = false;
        for (upper, count) in buckets {
            cumulative += count;
            match upper {
                Some(upper) => writeln!(self.out, "{name}_bucket{{le=\"{upper}\"}} {cumulative}"),
                None => {
                    wrote_infinity = true;
                    writeln!(self.out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}")
                }
            }
            .expect("writing to a String");
        }
        if !wrote_infinity {
            writeln!(self.out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}")
                .expect("writing to a String");
        }
        writeln!(self.out, "{name}_count {cumulative}").expect("writing to a String");
    }

    fn family(&mut self, family: &Definition, kind: &str) -> Family<'_, 'a> {
        self.header(family, kind);
        Family {
            exposition: self,
            name: family.name,
        }
    }

    fn header(&mut self, family: &Definition, kind: &str) {
        writeln!(self.out, "# HELP {} {}", family.name, family.help).expect("writing to a String");
        writeln!(self.out, "# TYPE {} {kind}", family.name).expect("writing to a String");
    }
}

impl Family<'_, '_> {
    /// One sample of the family.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        let out = &mut *self.exposition.out;
        out.push_str(self.name);
        for (index, (key, value)) in labels.iter().enumerate() {
            out.push(if index == 0 { '{' } else { ',' });
            out.push_str(key);
            out.push_str("=\"");
            for character in value.chars() {
                match character {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    other => out.push(other),
                }
            }
            out.push('"');
        }
        if !labels.is_empty() {
            out.push('}');
        }
        writeln!(out, " {value}").expect("writing to a String");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::names::Kind;

    const COUNTER: Definition = Definition {
        name: "test_seconds_total",
        kind: Kind::Sampled,
        unit: None,
        help: "a test counter",
        labels: &["worker", "odd"],
    };
    const HISTOGRAM: Definition = Definition {
        name: "test_seconds",
        kind: Kind::Sampled,
        unit: None,
        help: "a test histogram",
        labels: &[],
    };

    #[test]
    fn families_are_written_as_prometheus_text() {
        let mut text = String::new();
        let mut exposition = Exposition::new(&mut text);
        let mut counter = exposition.counter(&COUNTER);
        counter.sample(&[("worker", "0"), ("odd", "a\"b\\c")], 0.25);
        counter.sample(&[], 1.0);
        exposition.histogram(&HISTOGRAM, [(Some(0.001), 2), (Some(0.1), 3), (None, 1)]);
        assert_eq!(
            text,
            "# HELP test_seconds_total a test counter\n\
             # TYPE test_seconds_total counter\n\
             test_seconds_total{worker=\"0\",odd=\"a\\\"b\\\\c\"} 0.25\n\
             test_seconds_total 1\n\
             # HELP test_seconds a test histogram\n\
             # TYPE test_seconds histogram\n\
             test_seconds_bucket{le=\"0.001\"} 2\n\
             test_seconds_bucket{le=\"0.1\"} 5\n\
             test_seconds_bucket{le=\"+Inf\"} 6\n\
             test_seconds_count 6\n"
        );
    }

    #[test]
    fn a_histogram_without_an_open_bucket_gets_one() {
        let mut text = String::new();
        Exposition::new(&mut text).histogram(&HISTOGRAM, [(Some(1.0), 4)]);
        assert!(
            text.contains("test_seconds_bucket{le=\"+Inf\"} 4\ntest_seconds_count 4\n"),
            "{text}"
        );
    }
}
