"""Renders docs/benchmarks.md from one benchmark run's JSON, so that no figure
in it is typed by hand.

Usage: python3 scripts/render-benchmarks.py [BENCH_JSON] [--ladder LADDER_JSON] [--out FILE]
  BENCH_JSON   what scripts/bench.py writes (target/bench.json)
  --ladder     what scripts/ladder.py writes (target/ladder.json), if present
  --out        the document (stdout without)

A missing input is left out. The prose around the tables is fixed here
(SECTION_NOTES, keyed by section name); the tables are generic, so a new
section or figure in the JSON appears without a change here:
  - a dict of scalars (or lists of scalars) is a two-column table;
  - a dict whose values are flat dicts is a table, one row per key, one
    column per inner key;
  - a list of flat dicts is a table whose columns are the keys;
  - anything deeper gets a heading of its own.
"""

import argparse
import json
import os
import sys

TITLE = "# Benchmarks"

INTRODUCTION = """\
What you will learn here: what the service sustains on this project's
machine (throughput, latency, memory, start-up), what each observability
signal costs, how it compares with a grpc-go peer and with bare tonic
serving the same catalogue, and, when the ladder was run, what each layer of the stack adds
to a call. The figures are one run's, side by side.

This document is generated: `scripts/bench.sh` writes `target/bench.json`
([`scripts/bench.py`](../scripts/bench.py)) and renders this file with
[`scripts/render-benchmarks.py`](../scripts/render-benchmarks.py); edit the
script's template, never the figures. Earlier runs are in git's history of
this file.

```sh
bash scripts/bench.sh                       # ~15 min after the release build
bash scripts/bench.sh --quick               # one short round of everything
bash scripts/bench.sh --only go-peer        # one section: memory, sqlite, observability, go-peer, footprint
cargo bench --bench hot_paths               # criterion micro-benchmarks of the hot paths
```

How: the release build (`lto = "fat"`, `codegen-units = 1`, jemalloc) on
loopback, driven by `h2load` (a pre-built gRPC frame, `-c 16 -m 32`: the
client is not ours) and by `catalogue load`, against the memory store (the
serving path alone) and the default SQLite store. Timings on a shared
machine are noisy: configurations run in alternating rounds and the median
is reported, ratios taken within the same run. h2load and the service share
the machine's cores."""

NO_RUN = """\
No run is recorded in this checkout yet: run `bash scripts/bench.sh`."""

# Prose before a section's tables, by section name (bench.py's keys).
SECTION_NOTES = {
    "memory store": """\
The serving path alone: products in memory. `unary_h2load` is GetProduct at
saturation; the open-loop rows pace h2load or `catalogue load` at a share of
that rate; `started_again` starts the server three more times and reports
medians of exec to the first successful RPC and idle RSS (anonymous: the
heap and stacks; file-backed: the binary's pages mapped in).""",
    "sqlite store": """\
The default store, SQLite with 10,000 products; `started_again` opens the
existing database.""",
    "cost of observability (h2load -c16 -m32, memory store)": """\
Each configuration's saturation throughput, in alternating rounds, against
everything off (`--no-runtime-metrics`, no OTLP; the RED layer is always
on). Traces are exported over OTLP/gRPC to a local receiver that drops
them.""",
    "the trace cost in pairs (two servers loaded at once)": """\
Two servers run at once, each saturated by its own h2load, so that whatever
else the machine does slows both alike; one configuration's calls/s over the
other's, per round, the order of start swapping. The same configuration
against itself gives the method's own spread.""",
    "side by side with grpc-go": """\
[`go-peer/`](../go-peer/main.go) is the same service in Go, built from
Debian's packages (grpc-go, go-grpc-prometheus handling-time histograms,
GOMAXPROCS = all cores), serving the same catalogue (`same_responses`: byte
for byte the same answers). Ours runs the default production profile: RED,
runtime and task metrics, traces at 10 % exported over OTLP. Bare tonic
([`examples/bare_tonic.rs`](../examples/bare_tonic.rs)) is the same
contract with nothing on it: the tax is ours over it. Ours also writes
each HTTP/2 round's frames in one system call
([`src/coalesce.rs`](../src/coalesce.rs)), which bare tonic does not: the
cost ladder's "coalesced writes" rung says what that alone gains. CPU per
call is the process's `utime + stime` over a run at a steady rate, per
call; write system calls per call are `syscw` of `/proc/PID/io` over the
same run (it counts `write` and `writev`, which is every write the three
servers make, not `send`).""",
    "memory footprint": """\
Memory per idle HTTP/2 connection, per stream whose reader stopped after
one message, and the peak while streaming a SQLite catalogue ten times
larger (`rss_growth_10x_catalogue`: 1.0 is flat).""",
    "ladder": """\
Each rung adds one layer to a bare tonic server, measured by instruction
count per GetProduct (callgrind; work done by the clock counted as it falls
on a call at the steady rate, `instructions_as_counted` as it fell in the
window) and CPU per call; `x_bare_cpu` is the CPU per call against the bare
rung's.""",
}

HEADER_KEYS = ("date", "commit", "machine")


def is_scalar(value):
    return value is None or isinstance(value, (str, int, float, bool))


def is_flat(value):
    """A scalar, or a list of scalars: fits in one cell."""
    return is_scalar(value) or (isinstance(value, list) and all(is_scalar(item) for item in value))


def is_flat_dict(value):
    return isinstance(value, dict) and all(is_flat(item) for item in value.values())


def cell(value):
    """One value as a table cell."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}"
    if isinstance(value, list):
        return ", ".join(cell(item) for item in value)
    if isinstance(value, dict):
        return "; ".join(f"{label(key)} {cell(item)}" for key, item in value.items())
    return str(value).replace("|", "\\|").replace("\n", " ")


def label(key):
    return str(key).replace("_", " ")


def row(cells):
    return "| " + " | ".join(cells) + " |"


def two_columns(mapping):
    lines = [row(["", ""]), row(["---", "---"])]
    lines += [row([label(key), cell(value)]) for key, value in mapping.items()]
    return lines


def keyed_rows(mapping, first=""):
    """One row per key of `mapping`, one column per key of its values."""
    columns = []
    for value in mapping.values():
        columns += [key for key in value if key not in columns]
    lines = [row([first, *map(label, columns)]), row(["---"] * (len(columns) + 1))]
    lines += [row([label(key), *(cell(value.get(column)) for column in columns)])
              for key, value in mapping.items()]
    return lines


def list_rows(items):
    """A list of flat dicts: one row each, one column per key."""
    columns = []
    for item in items:
        columns += [key for key in item if key not in columns]
    lines = [row(list(map(label, columns))), row(["---"] * len(columns))]
    lines += [row([cell(item.get(column)) for column in columns]) for item in items]
    return lines


def render_value(name, value, level):
    """The tables of one named value, with a heading at `level` when it
    needs one."""
    heading = ["#" * level + " " + name, ""]
    if isinstance(value, list) and value and all(is_flat_dict(item) for item in value):
        return heading + list_rows(value) + [""]
    if not isinstance(value, dict):
        return heading + [cell(value), ""]
    if value and all(is_flat_dict(item) for item in value.values()):
        return heading + keyed_rows(value) + [""]
    lines = list(heading)
    flat = {key: item for key, item in value.items() if is_flat(item)}
    if flat:
        lines += two_columns(flat) + [""]
    for key, item in value.items():
        if not is_flat(item):
            lines += render_value(label(key), item, min(level + 1, 6))
    return lines


def section(name, value):
    lines = [f"## {name}", ""]
    note = SECTION_NOTES.get(name)
    if note:
        lines += [note, ""]
    body = render_value(name, value, 2)
    return lines + body[2:]


def provenance(run, what):
    parts = [f"{label(key)} {run[key]}" for key in HEADER_KEYS if run.get(key)]
    return f"{what}: " + (", ".join(parts) if parts else "date, commit and machine not recorded") + "."


def render(bench, ladder):
    lines = [TITLE, "", INTRODUCTION, ""]
    if bench is None and ladder is None:
        return "\n".join(lines + [NO_RUN, ""])
    if bench is not None:
        lines += [provenance(bench, "The run below (`target/bench.json`)"), ""]
    if ladder is not None:
        lines += [provenance(ladder, "The ladder (`target/ladder.json`)"), ""]
    if bench is not None:
        other = {}
        for name, value in bench.items():
            if name in HEADER_KEYS:
                continue
            if is_flat(value):
                other[name] = value
            else:
                lines += section(name, value)
        if other:
            lines += ["## Other figures", ""] + two_columns(other) + [""]
    if ladder is not None:
        body = {key: value for key, value in ladder.items() if key not in HEADER_KEYS}
        lines += ["## The ladder: what each layer adds", "", SECTION_NOTES["ladder"], ""]
        flat = {key: value for key, value in body.items() if is_flat(value)}
        if flat:
            lines += two_columns(flat) + [""]
        for key, value in body.items():
            if not is_flat(value):
                lines += render_value(label(key), value, 3)[2:]
    return "\n".join(lines).rstrip("\n") + "\n"


def load(path):
    if not path or not os.path.exists(path):
        return None
    with open(path) as file:
        return json.load(file)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("bench", nargs="?", default="target/bench.json")
    parser.add_argument("--ladder", default="target/ladder.json")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    document = render(load(args.bench), load(args.ladder))
    if args.out:
        with open(args.out, "w") as out:
            out.write(document)
    else:
        sys.stdout.write(document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
