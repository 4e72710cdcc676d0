//! Following the healthy instances of a service with blocking queries, and
//! the `consul://` target that names them.

use std::time::Duration;

use futures::Stream;
use tokio::time::Instant;

use super::{
    agent::{ConsulClient, Instance},
    error::ConsulError,
    settings::ConsulAddr,
};

/// Longest pause of a watch between failed queries.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// `consul://HOST:PORT/SERVICE`: the healthy instances of SERVICE as the
/// agent at HOST:PORT knows them (what `catalogue load --target` takes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsulTarget {
    pub agent: ConsulAddr,
    pub service: String,
}

impl ConsulTarget {
    /// How a target naming Consul starts.
    pub(crate) const PREFIX: &str = "consul://";

    /// Refuses anything but `consul://HOST:PORT/SERVICE`, SERVICE one path
    /// segment.
    pub fn parse(target: &str) -> Result<Self, ConsulError> {
        let invalid = |reason: &str| ConsulError::InvalidTarget {
            target: target.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = target
            .strip_prefix(Self::PREFIX)
            .ok_or_else(|| invalid("the scheme must be consul"))?;
        let (authority, service) = rest
            .split_once('/')
            .ok_or_else(|| invalid("no service name"))?;
        if authority.is_empty() {
            return Err(invalid("no agent address"));
        }
        if service.is_empty()
            || service
                .chars()
                .any(|c| matches!(c, '/' | '?' | '#') || c.is_whitespace())
        {
            return Err(invalid("the service name must be one path segment"));
        }
        let agent = ConsulAddr::parse(&format!("http://{authority}"))
            .map_err(|error| invalid(&error.to_string()))?;
        Ok(Self {
            agent,
            service: service.to_owned(),
        })
    }
}

/// How a watch queries the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchOptions {
    /// How long the agent may hold a blocking query while nothing changes
    /// (Consul's `wait`: at most 10 minutes; it adds up to 1/16 of jitter).
    pub wait: Duration,
    /// At most two queries start within any span this long: two answers in a
    /// row go through at once, while a service that keeps changing is polled
    /// at this pace instead of in a busy loop (Consul's advice for blocking
    /// queries).
    pub min_interval: Duration,
    /// Pause after a failed query, doubled for each failure in a row, up to
    /// 30 seconds.
    pub retry_after: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(5 * 60),
            min_interval: Duration::from_secs(1),
            retry_after: Duration::from_secs(1),
        }
    }
}

impl ConsulClient {
    /// The healthy instances of `service` each time the set changes: at once,
    /// then after each blocking query (`index` = the last `X-Consul-Index`)
    /// that answers a different set. A failed query yields its error and the
    /// watch goes on after a pause, so a consumer can keep its last set
    /// through an agent restart. It never ends; drop it to stop.
    pub fn watch(
        &self,
        service: &str,
        options: WatchOptions,
    ) -> impl Stream<Item = Result<Vec<Instance>, ConsulError>> + Send + 'static {
        let watch = Watch {
            client: self.clone(),
            service: service.to_owned(),
            options,
            index: 0,
            last: None,
            failures: 0,
            retry_at: None,
            started: [None, None],
        };
        futures::stream::unfold(watch, |mut watch| async move {
            let item = watch.next().await;
            Some((item, watch))
        })
    }
}

/// The state of `ConsulClient::watch` between answers.
struct Watch {
    client: ConsulClient,
    service: String,
    options: WatchOptions,
    /// The index the next query blocks on; 0: a plain, non-blocking read.
    index: u64,
    /// The set last yielded: an answer that repeats it yields nothing.
    last: Option<Vec<Instance>>,
    failures: u32,
    retry_at: Option<Instant>,
    /// When the last two queries started, older first.
    started: [Option<Instant>; 2],
}

impl Watch {
    async fn next(&mut self) -> Result<Vec<Instance>, ConsulError> {
        loop {
            self.pace().await;
            let blocking = (self.index > 0).then_some((self.index, self.options.wait));
            let answer = match self.client.health(&self.service, blocking).await {
                Ok(answer) => answer,
                Err(error) => return Err(self.failed(error)),
            };
            let Some(index) = answer.index else {
                return Err(self.failed(ConsulError::MissingIndex {
                    url: answer.url.into(),
                }));
            };
            self.failures = 0;
            self.index = next_index(self.index, index);
            if self.last.as_ref() != Some(&answer.instances) {
                self.last = Some(answer.instances.clone());
                return Ok(answer.instances);
            }
        }
    }

    /// Waits out a pause after a failure, and keeps to two queries per
    /// `min_interval`.
    async fn pace(&mut self) {
        if let Some(retry_at) = self.retry_at.take() {
            tokio::time::sleep_until(retry_at).await;
        }
        if let Some(earlier) = self.started[0] {
            tokio::time::sleep_until(earlier + self.options.min_interval).await;
        }
        self.started = [self.started[1], Some(Instant::now())];
    }

    /// Schedules the next query after a pause that doubles with each failure
    /// in a row.
    fn failed(&mut self, error: ConsulError) -> ConsulError {
        let pause = self
            .options
            .retry_after
            .saturating_mul(2u32.saturating_pow(self.failures))
            .min(MAX_RETRY_AFTER.max(self.options.retry_after));
        self.failures = self.failures.saturating_add(1);
        self.retry_at = Some(Instant::now() + pause);
        error
    }
}

/// The index the next blocking query waits on, as Consul's documentation of
/// blocking queries asks: back to 0 (a fresh read) when the index went
/// backwards, and at least 1 after an answer, since index 0 does not block.
fn next_index(previous: u64, answered: u64) -> u64 {
    if answered < previous {
        0
    } else {
        answered.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consul_target_names_the_agent_and_the_service() {
        let target = ConsulTarget::parse("consul://127.0.0.1:8500/catalogue").unwrap();
        assert_eq!(target.agent.to_string(), "http://127.0.0.1:8500");
        assert_eq!(target.service, "catalogue");
        let target = ConsulTarget::parse("consul://[::1]:8500/catalogue").unwrap();
        assert_eq!(target.agent.to_string(), "http://[::1]:8500");
    }

    #[test]
    fn a_malformed_consul_target_is_refused_with_the_expected_form() {
        for target in [
            "http://127.0.0.1:8500/catalogue",
            "consul://127.0.0.1:8500",
            "consul://127.0.0.1:8500/",
            "consul:///catalogue",
            "consul://127.0.0.1:8500/catalogue/extra",
            "consul://127.0.0.1:8500/catalogue?dc=eu",
            "consul://127.0.0.1:notaport/catalogue",
        ] {
            let error = ConsulTarget::parse(target).expect_err(target);
            assert!(
                error.to_string().contains("consul://HOST:PORT/SERVICE"),
                "{error}"
            );
        }
    }

    #[test]
    fn the_blocking_index_resets_when_it_goes_backwards_and_never_stays_zero() {
        assert_eq!(next_index(0, 10), 10);
        assert_eq!(next_index(10, 12), 12);
        assert_eq!(next_index(10, 10), 10);
        assert_eq!(next_index(10, 4), 0, "backwards: start over");
        assert_eq!(next_index(0, 0), 1, "0 would not block");
    }
}
