//! Profile labels: which call a CPU sample was taken in, after Go's
//! `pprof.Do`.
//!
//! While a CPU profile runs, each poll of a call's handler future and of its
//! response body sets the worker thread's label word (pprof's
//! `set_thread_label`, read by its signal handler with every sample) to the
//! call's, and restores the previous word after. When no profile runs a poll
//! pays one relaxed atomic load. The word encodes
//!
//! | bits  | what |
//! |-------|------|
//! | 0-7   | the method: its index in the app's [`LabelTable`], plus one (0: no call) |
//! | 8-23  | the app (one per [`LabelTable`]; a process can run many, the tests do) |
//! | 24-47 | the call's trace: its index in the profile's table of traced calls, plus one (0: untraced) |
//! | 48-63 | the profile's generation, so a word cached by a call in an earlier profile is never read as this one's trace |
//!
//! A traced call gets its entry (trace id, span id) lazily, at its first
//! poll while a profile runs; a profile holds at most [`MAX_TRACED_CALLS`],
//! beyond which calls are labelled by their method only. When the report is
//! built, [`LabelTable::resolve`] turns a word back into names; words of
//! another app resolve to nothing.

use std::sync::{
    Arc,
    atomic::{AtomicU16, AtomicU64, Ordering},
};

use opentelemetry::trace::{SpanId, TraceId};
use parking_lot::Mutex;

/// Traced calls one profile labels with their ids; later ones get their
/// method only. 65,536 entries of 24 bytes: 1.5 MiB at most, freed when the
/// profile ends.
pub(crate) const MAX_TRACED_CALLS: usize = 1 << 16;

const METHOD_BITS: u32 = 8;
const APP_SHIFT: u32 = 8;
const TRACE_SHIFT: u32 = 24;
const GENERATION_SHIFT: u32 = 48;

/// The generation of the running profile; 0 when none runs. One profile
/// runs at a time in a process (pprof's sampler is process-wide).
static PROFILING: AtomicU64 = AtomicU64::new(0);
/// The last generation handed out.
static GENERATIONS: AtomicU16 = AtomicU16::new(0);
/// The traced calls of the running profile.
static TRACED: Mutex<Traced> = Mutex::new(Traced {
    generation: 0,
    calls: Vec::new(),
});
/// The last app id handed out.
static APPS: AtomicU16 = AtomicU16::new(0);

/// The trace and span ids of a traced call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceIds {
    pub trace_id: TraceId,
    pub span_id: SpanId,
}

struct Traced {
    generation: u16,
    calls: Vec<TraceIds>,
}

/// What a sample's label word says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLabel {
    pub service: &'static str,
    /// The method's short name: `SearchProducts`.
    pub method: &'static str,
    /// The call's ids, if it was traced and the profile's table had room.
    pub trace: Option<TraceIds>,
}

/// One app's methods as labels name them.
#[derive(Debug, Clone)]
pub struct LabelTable(Arc<Table>);

#[derive(Debug)]
struct Table {
    app: u16,
    /// (service, method); a method's id is its index plus one.
    methods: Vec<(&'static str, &'static str)>,
}

impl LabelTable {
    /// The table of an app serving `methods` (at most 255: the layer's fixed
    /// method table).
    pub(crate) fn new(methods: Vec<(&'static str, &'static str)>) -> Self {
        assert!(methods.len() < 1 << METHOD_BITS, "too many methods");
        Self(Arc::new(Table {
            app: APPS.fetch_add(1, Ordering::Relaxed),
            methods,
        }))
    }

    /// The label of the method at `index` of the table, for its calls.
    pub(crate) fn method(&self, index: usize) -> MethodLabel {
        debug_assert!(index < self.0.methods.len());
        MethodLabel((index as u64 + 1) | u64::from(self.0.app) << APP_SHIFT)
    }

    /// Every method name a label can carry, each once, in table order.
    pub(crate) fn method_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = Vec::new();
        for &(_, name) in &self.0.methods {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// What `word`, a sample's label, says; `None` for a sample taken
    /// outside any call or in a call of another app.
    pub fn resolve(&self, profile: &Labelled, word: u64) -> Option<CallLabel> {
        let method = word & ((1 << METHOD_BITS) - 1);
        let app = (word >> APP_SHIFT) as u16;
        if method == 0 || app != self.0.app {
            return None;
        }
        let &(service, method) = self.0.methods.get(method as usize - 1)?;
        let slot = (word >> TRACE_SHIFT) & ((1 << (GENERATION_SHIFT - TRACE_SHIFT)) - 1);
        let trace = if slot > 0 && (word >> GENERATION_SHIFT) as u16 == profile.generation {
            profile.calls.get(slot as usize - 1).copied()
        } else {
            None
        };
        Some(CallLabel {
            service,
            method,
            trace,
        })
    }
}

/// A method's part of a label word (method and app bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MethodLabel(u64);

/// Labels a running profile's samples; dropping it (or [`Self::finish`])
/// stops labelling. Take one only while holding the CPU profiler.
#[derive(Debug)]
pub(crate) struct Labelling {
    generation: u16,
}

/// The traced calls of a finished profile, to resolve its labels.
#[derive(Debug, Default)]
pub struct Labelled {
    generation: u16,
    calls: Vec<TraceIds>,
}

impl Labelling {
    /// Starts labelling the polls of every call.
    pub fn start() -> Self {
        let mut generation = GENERATIONS.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        if generation == 0 {
            generation = GENERATIONS.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        }
        *traced() = Traced {
            generation,
            calls: Vec::new(),
        };
        PROFILING.store(u64::from(generation), Ordering::Relaxed);
        Self { generation }
    }

    /// Stops labelling; returns the traced calls the labels point at.
    pub(crate) fn finish(self) -> Labelled {
        PROFILING.store(0, Ordering::Relaxed);
        let calls = std::mem::take(&mut traced().calls);
        Labelled {
            generation: self.generation,
            calls,
        }
    }
}

impl Drop for Labelling {
    fn drop(&mut self) {
        PROFILING.store(0, Ordering::Relaxed);
        let mut traced = traced();
        if traced.generation == self.generation {
            traced.calls = Vec::new();
        }
    }
}

fn traced() -> parking_lot::MutexGuard<'static, Traced> {
    TRACED.lock()
}

/// A call's label word, worked out once per profile.
#[derive(Debug)]
pub(crate) struct PollLabel {
    method: MethodLabel,
    /// The full word for the profile in its generation bits; 0 before the
    /// first poll under a profile.
    word: u64,
}

impl PollLabel {
    pub(crate) fn new(method: MethodLabel) -> Self {
        Self { method, word: 0 }
    }

    /// Runs `poll` with the thread labelled as this call while a profile
    /// runs; `trace` gives the call's ids if it is traced, asked once per
    /// profile.
    #[inline]
    pub(crate) fn polling<T>(
        &mut self,
        trace: impl FnOnce() -> Option<TraceIds>,
        poll: impl FnOnce() -> T,
    ) -> T {
        let generation = PROFILING.load(Ordering::Relaxed);
        if generation == 0 {
            return poll();
        }
        let _labelled = ThreadLabel::set(self.word(generation as u16, trace));
        poll()
    }

    fn word(&mut self, generation: u16, trace: impl FnOnce() -> Option<TraceIds>) -> u64 {
        let cached = self.word;
        if cached != 0 && (cached >> GENERATION_SHIFT) as u16 == generation {
            return cached;
        }
        let slot = trace().map_or(0, |ids| register(generation, ids));
        let word = self.method.0 | slot << TRACE_SHIFT | u64::from(generation) << GENERATION_SHIFT;
        self.word = word;
        word
    }
}

/// A traced call's entry in the running profile's table, plus one; 0 when
/// the table is full or belongs to another profile.
fn register(generation: u16, ids: TraceIds) -> u64 {
    let mut traced = traced();
    if traced.generation != generation || traced.calls.len() >= MAX_TRACED_CALLS {
        return 0;
    }
    traced.calls.push(ids);
    traced.calls.len() as u64
}

/// The thread's label word for as long as it lives; the previous word is
/// put back on drop, a panicking poll included.
struct ThreadLabel {
    previous: u64,
}

impl ThreadLabel {
    fn set(word: u64) -> Self {
        Self {
            previous: pprof::set_thread_label(word),
        }
    }
}

impl Drop for ThreadLabel {
    fn drop(&mut self) {
        pprof::set_thread_label(self.previous);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(byte: u8) -> TraceIds {
        TraceIds {
            trace_id: TraceId::from_bytes([byte; 16]),
            span_id: SpanId::from_bytes([byte; 8]),
        }
    }

    /// The process-wide profile state: these tests take it in turn.
    static PROFILE: Mutex<()> = Mutex::new(());

    #[test]
    fn a_word_resolves_to_its_method_and_trace_in_its_own_app_only() {
        let _profile = PROFILE.lock();
        let table = LabelTable::new(vec![("s", "GetProduct"), ("s", "SearchProducts")]);
        let other = LabelTable::new(vec![("s", "GetProduct"), ("s", "SearchProducts")]);
        let labelling = Labelling::start();
        let mut traced = PollLabel::new(table.method(1));
        let mut untraced = PollLabel::new(table.method(0));
        let traced_word = traced.polling(|| Some(ids(7)), || pprof::set_thread_label(0));
        let untraced_word = untraced.polling(|| None, || pprof::set_thread_label(0));
        let labelled = labelling.finish();

        assert_eq!(
            table.resolve(&labelled, traced_word),
            Some(CallLabel {
                service: "s",
                method: "SearchProducts",
                trace: Some(ids(7)),
            })
        );
        let untraced = table.resolve(&labelled, untraced_word).unwrap();
        assert_eq!((untraced.method, untraced.trace), ("GetProduct", None));
        assert_eq!(other.resolve(&labelled, traced_word), None);
        assert_eq!(table.resolve(&labelled, 0), None);
    }

    #[test]
    fn polls_outside_a_profile_leave_the_thread_unlabelled_and_labels_are_restored() {
        let _profile = PROFILE.lock();
        let table = LabelTable::new(vec![("s", "GetProduct")]);
        let mut call = PollLabel::new(table.method(0));

        let outside = call.polling(|| None, || pprof::set_thread_label(0));
        let labelling = Labelling::start();
        let inside = call.polling(|| None, || pprof::set_thread_label(0));
        let after = pprof::set_thread_label(0);
        drop(labelling);

        assert_eq!(outside, 0);
        assert_ne!(inside, 0);
        assert_eq!(after, 0, "the previous word is put back");
    }

    #[test]
    fn a_word_cached_in_an_earlier_profile_keeps_its_method_but_not_its_trace() {
        let _profile = PROFILE.lock();
        let table = LabelTable::new(vec![("s", "SearchProducts")]);
        let mut call = PollLabel::new(table.method(0));
        let first = Labelling::start();
        let word = call.polling(|| Some(ids(1)), || pprof::set_thread_label(0));
        drop(first);
        let second = Labelling::start();
        // Another traced call takes the first entry of the second profile.
        let mut other = PollLabel::new(table.method(0));
        other.polling(|| Some(ids(2)), || ());
        let labelled = second.finish();

        let label = table.resolve(&labelled, word).unwrap();
        assert_eq!((label.method, label.trace), ("SearchProducts", None));
    }

    #[test]
    fn the_table_of_traced_calls_is_bounded() {
        let _profile = PROFILE.lock();
        let labelling = Labelling::start();
        let generation = labelling.generation;
        for _ in 0..MAX_TRACED_CALLS {
            assert_ne!(register(generation, ids(3)), 0);
        }

        assert_eq!(register(generation, ids(3)), 0, "full");
        assert_eq!(labelling.finish().calls.len(), MAX_TRACED_CALLS);
    }

    #[test]
    fn method_names_are_listed_once() {
        let table = LabelTable::new(vec![("a", "Check"), ("b", "Info"), ("c", "Info")]);

        assert_eq!(table.method_names(), ["Check", "Info"]);
    }
}
