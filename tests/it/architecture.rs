//! The absences ARCHITECTURE.md states as invariants, checked against the
//! source: a room that must not import another, a way of doing things the
//! crate no longer has.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/` + `room`, with its text.
fn sources(room: &str) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    let mut pending = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(room)];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("a readable source folder") {
                pending.push(entry.expect("a directory entry").path());
            }
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            let text = std::fs::read_to_string(&path).expect("a readable source file");
            files.push((path, text));
        }
    }
    assert!(!files.is_empty(), "no source under src/{room}");
    files
}

/// The lines of `room` that `matches`, outside comments.
fn places(room: &str, matches: impl Fn(&str) -> bool) -> Vec<String> {
    sources(room)
        .into_iter()
        .flat_map(|(path, text)| {
            text.lines()
                .enumerate()
                .filter(|(_, line)| !line.trim_start().starts_with("//") && matches(line))
                .map(|(number, line)| format!("{}:{}: {}", path.display(), number + 1, line.trim()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The places in `room` where any of `needles` is written.
fn mentions(room: &str, needles: &[&str]) -> Vec<String> {
    places(room, |line| {
        needles.iter().any(|needle| line.contains(needle))
    })
}

#[test]
fn no_metric_is_registered_through_an_ambient_recorder() {
    let found = mentions(
        "",
        &[
            "counter!(",
            "gauge!(",
            "histogram!(",
            "with_local_recorder",
            "set_global_recorder",
        ],
    );
    // The OpenMetrics rendering's own test feeds a bare recorder.
    let found: Vec<_> = found
        .into_iter()
        .filter(|place| !place.contains("openmetrics.rs"))
        .collect();
    assert!(found.is_empty(), "{found:#?}");
}

/// The places in `room` that name one of the crate's `modules` as a path
/// (`store::`, inside a `use crate::{…}` too).
fn imports(room: &str, modules: &[&str]) -> Vec<String> {
    places(room, |line| {
        modules.iter().any(|module| names_path(line, module))
    })
}

/// Whether `line` has `module::` not preceded by an identifier character
/// or `::` of another path (`opentelemetry::` is not `telemetry::`).
fn names_path(line: &str, module: &str) -> bool {
    let needle = format!("{module}::");
    line.match_indices(&needle).any(|(at, _)| {
        let before = &line[..at];
        let previous = before.chars().next_back();
        let after_crate = before.ends_with("crate::");
        after_crate
            || !(previous.is_some_and(|c| c.is_alphanumeric() || c == '_')
                || before.ends_with("::"))
    })
}

#[test]
fn spans_have_one_path_and_the_traces_know_no_table() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .expect("the manifest");
    assert!(
        !manifest.contains("tracing-opentelemetry"),
        "a second span path"
    );
    let found = mentions("traces", &["\"products\""]);
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn the_signal_rooms_import_no_room_above_them() {
    for (room, above) in [
        (
            "metrics",
            &["telemetry", "traces", "grpc", "runtime", "profiling"][..],
        ),
        (
            "traces",
            &["telemetry", "grpc", "store", "api", "runtime"][..],
        ),
        ("profiling", &["telemetry", "grpc", "traces"][..]),
        (
            "grpc",
            &["api", "store", "telemetry", "upstream", "protection"][..],
        ),
        (
            "runtime",
            &["grpc", "traces", "api", "store", "profiling"][..],
        ),
        ("server.rs", &["config", "app"][..]),
    ] {
        let found = imports(room, above);
        assert!(
            found.is_empty(),
            "src/{room} imports a room above it: {found:#?}"
        );
    }
}

#[test]
fn locks_are_parking_lots_and_never_poisoned() {
    let mut found = mentions("", &["PoisonError", "poisoned", "p.into_inner()"]);
    // A file that holds a lock takes it from parking_lot (or tokio, for
    // one held across an await).
    for (path, text) in sources("") {
        let locks = ["Mutex<", "Mutex::", "RwLock<", "RwLock::"]
            .iter()
            .any(|lock| {
                text.replace("tokio::sync::Mutex", "")
                    .replace("tokio::sync::RwLock", "")
                    .contains(lock)
            });
        if locks && !text.contains("parking_lot::") && !text.contains("use tokio::sync::") {
            found.push(format!("{}: a lock not from parking_lot", path.display()));
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn a_ratio_is_checked_in_one_place() {
    let found: Vec<_> = mentions("", &["0.0..=1.0", "clamp(0.0, 1.0)"])
        .into_iter()
        .filter(|place| !place.contains("src/values.rs"))
        .collect();
    assert!(found.is_empty(), "use values::Ratio: {found:#?}");
}

#[test]
fn sampler_means_one_thing_the_head_sampling_of_traces() {
    let found = mentions("runtime", &["Sampler", "sampler"]);
    assert!(found.is_empty(), "the runtime's is a Collector: {found:#?}");
}
