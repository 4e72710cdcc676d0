//! A circuit breaker with gobreaker's semantics (sony/gobreaker):
//!
//! - **closed**: calls pass; outcomes are counted in windows of `interval`
//!   (counts cleared at each window's end). When a call fails and
//!   `ready_to_trip` holds (at least `min_requests` calls in the window and a
//!   failure ratio of at least `failure_ratio`), the breaker opens;
//! - **open**: calls are refused at once, for `open_timeout`; then half-open;
//! - **half-open**: at most `max_probes` calls pass; `max_probes` consecutive
//!   successes close the breaker, any failure opens it again.
//!
//! Each state change starts a new generation: outcomes of calls admitted in
//! an earlier generation are ignored, as gobreaker does.
//!
//! A call can also end with no verdict on the upstream (`release`): its
//! caller's own deadline ran out first, or the caller went away. It gives
//! its admission back (a half-open probe slot too) and counts for neither
//! side, so callers with tiny deadlines cannot open the breaker for all.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::values::Ratio;

/// The breaker's state; the numbers are what `catalogue_upstream_circuit_state`
/// exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half-open",
            Self::Open => "open",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Calls admitted while half-open.
    pub max_probes: u32,
    /// Length of a closed-state counting window.
    pub interval: Duration,
    /// How long the breaker stays open.
    pub open_timeout: Duration,
    /// Calls a window needs before its failure ratio can trip the breaker.
    pub min_requests: u32,
    /// Failure ratio (0..1) that trips the breaker.
    pub failure_ratio: Ratio,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    requests: u32,
    failures: u32,
    consecutive_successes: u32,
}

#[derive(Debug)]
struct Inner {
    state: State,
    generation: u64,
    counts: Counts,
    /// End of the closed window, or of the open period.
    expiry: Option<Instant>,
}

/// A call the breaker admitted: report its outcome with `success`/`failure`.
#[derive(Debug, Clone, Copy)]
#[must_use = "report the outcome of an admitted call"]
pub(crate) struct Ticket {
    generation: u64,
}

/// Admitted or refused, and the state changes that caused, for the caller
/// to log and export.
#[derive(Debug)]
pub(crate) struct Transition {
    pub from: State,
    pub to: State,
}

#[derive(Debug)]
pub(crate) struct CircuitBreaker {
    settings: Settings,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    pub fn new(settings: Settings, now: Instant) -> Self {
        let expiry = Some(now + settings.interval).filter(|_| !settings.interval.is_zero());
        Self {
            settings,
            inner: Mutex::new(Inner {
                state: State::Closed,
                generation: 0,
                counts: Counts::default(),
                expiry,
            }),
        }
    }

    pub fn state(&self, now: Instant) -> (State, Option<Transition>) {
        let mut inner = self.lock();
        let transition = self.refresh(&mut inner, now);
        (inner.state, transition)
    }

    /// Admits a call, or refuses it (open, or half-open with every probe
    /// slot taken).
    pub(crate) fn admit(&self, now: Instant) -> (Option<Ticket>, Option<Transition>) {
        let mut inner = self.lock();
        let transition = self.refresh(&mut inner, now);
        let admitted = match inner.state {
            State::Open => false,
            State::HalfOpen => inner.counts.requests < self.settings.max_probes,
            State::Closed => true,
        };
        if !admitted {
            return (None, transition);
        }
        inner.counts.requests += 1;
        (
            Some(Ticket {
                generation: inner.generation,
            }),
            transition,
        )
    }

    pub fn success(&self, ticket: Ticket, now: Instant) -> Option<Transition> {
        let mut inner = self.lock();
        let refreshed = self.refresh(&mut inner, now);
        if ticket.generation != inner.generation {
            return refreshed;
        }
        inner.counts.consecutive_successes += 1;
        if inner.state == State::HalfOpen
            && inner.counts.consecutive_successes >= self.settings.max_probes
        {
            return Some(self.set_state(&mut inner, State::Closed, now));
        }
        refreshed
    }

    pub fn failure(&self, ticket: Ticket, now: Instant) -> Option<Transition> {
        let mut inner = self.lock();
        let refreshed = self.refresh(&mut inner, now);
        if ticket.generation != inner.generation {
            return refreshed;
        }
        inner.counts.failures += 1;
        inner.counts.consecutive_successes = 0;
        let trip = match inner.state {
            State::HalfOpen => true,
            State::Closed => {
                let counts = inner.counts;
                counts.requests >= self.settings.min_requests
                    && f64::from(counts.failures) / f64::from(counts.requests)
                        >= self.settings.failure_ratio.get()
            }
            State::Open => false,
        };
        if trip {
            return Some(self.set_state(&mut inner, State::Open, now));
        }
        refreshed
    }

    /// An admitted call that says nothing about the upstream: its admission
    /// is given back, and nothing is counted.
    pub fn release(&self, ticket: Ticket, now: Instant) -> Option<Transition> {
        let mut inner = self.lock();
        let refreshed = self.refresh(&mut inner, now);
        if ticket.generation == inner.generation {
            inner.counts.requests = inner.counts.requests.saturating_sub(1);
        }
        refreshed
    }

    /// Moves time forward: a closed window that ended clears its counts; an
    /// open period that ended turns half-open.
    fn refresh(&self, inner: &mut Inner, now: Instant) -> Option<Transition> {
        let expired = inner.expiry.is_some_and(|expiry| expiry <= now);
        match inner.state {
            State::Closed if expired => {
                self.new_generation(inner, now);
                None
            }
            State::Open if expired => Some(self.set_state(inner, State::HalfOpen, now)),
            _ => None,
        }
    }

    fn set_state(&self, inner: &mut Inner, to: State, now: Instant) -> Transition {
        let from = inner.state;
        inner.state = to;
        self.new_generation(inner, now);
        Transition { from, to }
    }

    fn new_generation(&self, inner: &mut Inner, now: Instant) {
        inner.generation += 1;
        inner.counts = Counts::default();
        inner.expiry = match inner.state {
            State::Closed => {
                Some(now + self.settings.interval).filter(|_| !self.settings.interval.is_zero())
            }
            State::Open => Some(now + self.settings.open_timeout),
            State::HalfOpen => None,
        };
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Inner> {
        self.inner.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(now: Instant) -> CircuitBreaker {
        CircuitBreaker::new(
            Settings {
                max_probes: 2,
                interval: Duration::from_secs(10),
                open_timeout: Duration::from_secs(5),
                min_requests: 4,
                failure_ratio: Ratio::new(0.5).expect("a ratio"),
            },
            now,
        )
    }

    fn fail(breaker: &CircuitBreaker, now: Instant) -> Option<Transition> {
        let (ticket, _) = breaker.admit(now);
        breaker.failure(ticket.expect("admitted"), now)
    }

    #[test]
    fn trips_only_with_enough_calls_and_failures() {
        let t0 = Instant::now();
        let breaker = breaker(t0);
        assert!(fail(&breaker, t0).is_none());
        assert!(fail(&breaker, t0).is_none());
        assert!(
            fail(&breaker, t0).is_none(),
            "three calls are below min_requests"
        );
        let transition = fail(&breaker, t0).expect("the fourth failure trips");
        assert_eq!(
            (transition.from, transition.to),
            (State::Closed, State::Open)
        );
        assert!(breaker.admit(t0).0.is_none(), "open refuses calls");
    }

    #[test]
    fn a_window_that_ends_forgets_its_failures() {
        let t0 = Instant::now();
        let breaker = breaker(t0);
        for _ in 0..3 {
            fail(&breaker, t0);
        }
        let later = t0 + Duration::from_secs(11);
        assert!(
            fail(&breaker, later).is_none(),
            "a new window starts from zero"
        );
        assert_eq!(breaker.state(later).0, State::Closed);
    }

    #[test]
    fn half_open_admits_probes_then_closes_or_reopens() {
        let t0 = Instant::now();
        let breaker = breaker(t0);
        for _ in 0..4 {
            fail(&breaker, t0);
        }
        let t1 = t0 + Duration::from_secs(5);
        let (state, transition) = breaker.state(t1);
        assert_eq!(state, State::HalfOpen);
        assert_eq!(transition.map(|t| t.to), Some(State::HalfOpen));

        let (first, _) = breaker.admit(t1);
        let (second, _) = breaker.admit(t1);
        assert!(breaker.admit(t1).0.is_none(), "only max_probes calls pass");
        assert!(breaker.success(first.unwrap(), t1).is_none());
        let closed = breaker.success(second.unwrap(), t1).expect("closes");
        assert_eq!(closed.to, State::Closed);

        for _ in 0..4 {
            fail(&breaker, t1);
        }
        let t2 = t1 + Duration::from_secs(5);
        let reopened = fail(&breaker, t2).expect("a failed probe reopens");
        assert_eq!((reopened.from, reopened.to), (State::HalfOpen, State::Open));
    }

    #[test]
    fn a_released_call_counts_for_neither_side_and_frees_its_probe_slot() {
        let now = Instant::now();
        let breaker = breaker(now);
        for _ in 0..20 {
            let (ticket, _) = breaker.admit(now);
            breaker.release(ticket.unwrap(), now);
        }
        assert_eq!(breaker.state(now).0, State::Closed);
        assert_eq!(breaker.lock().counts.requests, 0);

        // Open, then half-open: a released probe's slot is taken again.
        for _ in 0..breaker.settings.min_requests {
            fail(&breaker, now);
        }
        let later = now + Duration::from_secs(60);
        assert_eq!(breaker.state(later).0, State::HalfOpen);
        let probes: Vec<Ticket> = (0..breaker.settings.max_probes)
            .map(|_| breaker.admit(later).0.expect("a probe slot"))
            .collect();
        assert!(breaker.admit(later).0.is_none(), "every slot taken");
        breaker.release(probes[0], later);
        assert!(breaker.admit(later).0.is_some(), "the released slot");
    }

    #[test]
    fn outcomes_of_an_earlier_generation_are_ignored() {
        let t0 = Instant::now();
        let breaker = breaker(t0);
        let (stale, _) = breaker.admit(t0);
        // With the stale call, four requests: three failures trip.
        for _ in 0..3 {
            fail(&breaker, t0);
        }
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(breaker.state(t1).0, State::HalfOpen);
        assert!(
            breaker.failure(stale.unwrap(), t1).is_none(),
            "stale failure ignored"
        );
        assert_eq!(breaker.state(t1).0, State::HalfOpen);
    }
}
