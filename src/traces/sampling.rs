//! Head sampling: whether a call is traced is decided once, as it arrives,
//! before any span exists.
//!
//! A span built and then dropped by the SDK's sampler still costs its
//! attributes and clock reads; at 10 % sampling that work for the 90 % of
//! calls nobody exports cost more throughput than exporting the rest.
//! So the decision moves here, with the semantics of the SDK's sampler of
//! the same name (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`), and the
//! SDK is left to follow it: a call that is sampled gets spans, one that is
//! not gets none, and its W3C context still travels to the services it calls,
//! with the sampled flag off (`unsampled_continuation`), so that they agree.

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use rand::Rng;

use crate::values::Ratio;

/// `OTEL_TRACES_SAMPLER`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SamplerKind {
    #[value(name = "always_on")]
    AlwaysOn,
    #[value(name = "always_off")]
    AlwaysOff,
    #[value(name = "traceidratio")]
    TraceIdRatio,
    #[value(name = "parentbased_always_on")]
    ParentBasedAlwaysOn,
    #[value(name = "parentbased_always_off")]
    ParentBasedAlwaysOff,
    #[value(name = "parentbased_traceidratio")]
    ParentBasedTraceIdRatio,
}

/// Decides whether a call is traced, from its remote parent.
#[derive(Debug, Clone, Copy)]
pub struct HeadSampler {
    kind: SamplerKind,
    /// For the ratio samplers: the share of new traces sampled.
    ratio: Ratio,
}

impl HeadSampler {
    pub fn new(kind: SamplerKind, ratio: Ratio) -> Self {
        Self { kind, ratio }
    }

    /// Whether a call whose caller sent `parent` (invalid when it sent
    /// none) is traced.
    pub fn sample(&self, parent: &SpanContext) -> bool {
        let new_trace = || match self.kind {
            SamplerKind::AlwaysOn | SamplerKind::ParentBasedAlwaysOn => true,
            SamplerKind::AlwaysOff | SamplerKind::ParentBasedAlwaysOff => false,
            SamplerKind::TraceIdRatio | SamplerKind::ParentBasedTraceIdRatio => {
                rand::rng().random_bool(self.ratio.get())
            }
        };
        match self.kind {
            SamplerKind::ParentBasedAlwaysOn
            | SamplerKind::ParentBasedAlwaysOff
            | SamplerKind::ParentBasedTraceIdRatio
                if parent.is_valid() =>
            {
                parent.is_sampled()
            }
            _ => new_trace(),
        }
    }
}

/// The trace context a call that is not traced passes on to the services
/// its handler calls (`telemetry::outgoing_context`): its caller's trace id
/// (or a new one) and a span id of its own, with the sampled flag off.
pub(crate) fn unsampled_continuation(parent: &SpanContext) -> SpanContext {
    let mut rng = rand::rng();
    let trace_id = if parent.is_valid() {
        parent.trace_id()
    } else {
        TraceId::from_bytes(rng.random::<u128>().max(1).to_be_bytes())
    };
    let span_id = SpanId::from_bytes(rng.random::<u64>().max(1).to_be_bytes());
    let state = if parent.is_valid() {
        parent.trace_state().clone()
    } else {
        TraceState::default()
    };
    SpanContext::new(trace_id, span_id, TraceFlags::default(), false, state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(sampled: bool) -> SpanContext {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanContext::new(
            TraceId::from_bytes([7; 16]),
            SpanId::from_bytes([9; 8]),
            flags,
            true,
            TraceState::default(),
        )
    }

    #[test]
    fn parent_based_samplers_follow_the_caller_and_the_others_do_not() {
        let none = SpanContext::empty_context();
        let on = HeadSampler::new(SamplerKind::ParentBasedAlwaysOn, Ratio::ONE);
        assert!(on.sample(&none));
        assert!(on.sample(&remote(true)));
        assert!(!on.sample(&remote(false)));
        let ratio = HeadSampler::new(SamplerKind::ParentBasedTraceIdRatio, Ratio::ZERO);
        assert!(!ratio.sample(&none));
        assert!(ratio.sample(&remote(true)));
        assert!(HeadSampler::new(SamplerKind::AlwaysOn, Ratio::ZERO).sample(&remote(false)));
        assert!(!HeadSampler::new(SamplerKind::AlwaysOff, Ratio::ONE).sample(&remote(true)));
    }

    #[test]
    fn a_ratio_samples_about_that_share_of_new_traces() {
        let sampler =
            HeadSampler::new(SamplerKind::TraceIdRatio, Ratio::new(0.1).expect("a ratio"));
        let none = SpanContext::empty_context();
        let sampled = (0..20_000).filter(|_| sampler.sample(&none)).count();
        // 2,000 expected; ±400 is over 9 standard deviations.
        assert!((1_600..=2_400).contains(&sampled), "{sampled}");
    }

    #[test]
    fn an_unsampled_call_keeps_its_callers_trace_with_the_flag_off() {
        let continued = unsampled_continuation(&remote(false));
        assert_eq!(continued.trace_id(), remote(false).trace_id());
        assert_ne!(continued.span_id(), remote(false).span_id());
        assert!(!continued.is_sampled());
        let fresh = unsampled_continuation(&SpanContext::empty_context());
        assert!(fresh.is_valid());
        assert!(!fresh.is_sampled());
    }
}
