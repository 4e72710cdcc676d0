//! What a load run measured: calls by method and code, latency from an HDR
//! histogram, stream messages; printed as a table or as one JSON object.

use std::{collections::BTreeMap, fmt, time::Duration};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Results recorded while the run goes on.
pub struct Recorder {
    /// Microseconds, 1 µs to 1 h at 3 significant digits.
    latency: Histogram<u64>,
    calls: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
    stream_messages: u64,
    /// Open-loop sends skipped because `--max-in-flight` calls were pending.
    skipped: u64,
    /// Attempts after a call's first (it was refused with UNAVAILABLE).
    retries: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds"),
            calls: BTreeMap::new(),
            stream_messages: 0,
            skipped: 0,
            retries: 0,
        }
    }
}

impl Recorder {
    pub fn record(
        &mut self,
        method: &'static str,
        code: &'static str,
        latency: Duration,
        messages: u64,
    ) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.latency.saturating_record(micros);
        *self
            .calls
            .entry(method)
            .or_default()
            .entry(code)
            .or_default() += 1;
        self.stream_messages += messages;
    }

    pub fn skip(&mut self) {
        self.skipped += 1;
    }

    pub fn retry(&mut self) {
        self.retries += 1;
    }

    /// `replicas`: calls (attempts) handed to each replica.
    pub fn summary(&self, elapsed: Duration, replicas: BTreeMap<String, u64>) -> Summary {
        let seconds = elapsed.as_secs_f64().max(f64::EPSILON);
        let total: u64 = self.calls.values().flat_map(|codes| codes.values()).sum();
        let millis = |quantile: f64| self.latency.value_at_quantile(quantile) as f64 / 1000.0;
        Summary {
            duration_s: seconds,
            achieved_rps: total as f64 / seconds,
            calls: self
                .calls
                .iter()
                .map(|(method, codes)| {
                    let codes = codes
                        .iter()
                        .map(|(code, n)| ((*code).to_owned(), *n))
                        .collect();
                    ((*method).to_owned(), codes)
                })
                .collect(),
            latency_ms: Latency {
                p50: millis(0.5),
                p90: millis(0.9),
                p99: millis(0.99),
                p999: millis(0.999),
                max: self.latency.max() as f64 / 1000.0,
            },
            stream_messages_per_s: self.stream_messages as f64 / seconds,
            skipped: self.skipped,
            retries: self.retries,
            replicas,
        }
    }
}

/// The end-of-run summary (`--json` prints it as is).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Summary {
    pub duration_s: f64,
    pub achieved_rps: f64,
    /// Method → status code name → calls.
    pub calls: BTreeMap<String, BTreeMap<String, u64>>,
    pub latency_ms: Latency,
    pub stream_messages_per_s: f64,
    /// Open-loop sends skipped at the in-flight bound (a stalled server).
    pub skipped: u64,
    /// Attempts after a call's first, for calls refused with UNAVAILABLE.
    #[serde(default)]
    pub retries: u64,
    /// Replica address → calls (attempts) sent to it.
    #[serde(default)]
    pub replicas: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Summary {
    /// Calls of `method`, any code.
    pub fn total(&self, method: &str) -> u64 {
        self.calls
            .get(method)
            .map_or(0, |codes| codes.values().sum())
    }
}

impl Summary {
    /// Prints the summary to standard output: one JSON object, or text.
    pub fn print(&self, json: bool) -> serde_json::Result<()> {
        if json {
            println!("{}", serde_json::to_string(self)?);
        } else {
            print!("{self}");
        }
        Ok(())
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "duration        {:.1} s", self.duration_s)?;
        writeln!(f, "achieved rate   {:.1} calls/s", self.achieved_rps)?;
        writeln!(f, "stream messages {:.1} /s", self.stream_messages_per_s)?;
        if self.retries > 0 {
            writeln!(f, "retried calls   {}", self.retries)?;
        }
        if self.skipped > 0 {
            writeln!(
                f,
                "skipped sends   {} (in-flight bound reached)",
                self.skipped
            )?;
        }
        let l = &self.latency_ms;
        writeln!(
            f,
            "latency ms      p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            l.p50, l.p90, l.p99, l.p999, l.max
        )?;
        writeln!(f, "calls")?;
        for (method, codes) in &self.calls {
            let codes: Vec<String> = codes
                .iter()
                .map(|(code, n)| format!("{code} {n}"))
                .collect();
            writeln!(f, "  {method:<16} {}", codes.join(", "))?;
        }
        if self.replicas.len() > 1 {
            writeln!(f, "replicas")?;
            for (replica, calls) in &self.replicas {
                writeln!(f, "  {replica:<28} {calls}")?;
            }
        }
        Ok(())
    }
}
