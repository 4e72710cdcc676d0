//! Profile labels in a build without the `profiling` feature: the types
//! the call layer holds, doing nothing, so that it needs no `cfg` of its
//! own. A poll is the bare poll.

use opentelemetry::trace::{SpanId, TraceId};

/// The trace and span ids of a traced call (never read here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceIds {
    pub trace_id: TraceId,
    pub span_id: SpanId,
}

/// One app's methods as labels would name them: only their names.
#[derive(Debug, Clone)]
pub struct LabelTable;

impl LabelTable {
    pub(crate) fn new(_methods: Vec<(&'static str, &'static str)>) -> Self {
        Self
    }

    pub(crate) fn method(&self, _index: usize) -> MethodLabel {
        MethodLabel
    }
}

/// A method's label: nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MethodLabel;

/// A call's label: nothing.
#[derive(Debug)]
pub(crate) struct PollLabel;

impl PollLabel {
    pub(crate) fn new(_method: MethodLabel) -> Self {
        Self
    }

    /// Runs `poll`; `trace` is never asked.
    #[inline]
    pub(crate) fn polling<T>(
        &mut self,
        _trace: impl FnOnce() -> Option<TraceIds>,
        poll: impl FnOnce() -> T,
    ) -> T {
        poll()
    }
}
