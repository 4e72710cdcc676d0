"""The cost ladder: from bare tonic to the fully observed catalogue, one
part at a time, each rung's GetProduct cost beside bare tonic's.

Usage: scripts/bench.sh --ladder [--calls N] [--rounds R] [--seconds S]
                                [--only-instructions] [--json FILE]
                                [--bare PATH] [--catalogue PATH]

The lower rungs are `examples/bare_tonic.rs --up-to RUNG` (tonic with the
catalogue's parts added one at a time); the upper ones are the catalogue
binary's own configurations. For each rung: instructions per call
(callgrind, the steady figure; `instructions.py`), the server's CPU time per
call at a steady 10,000 calls/s and the saturation rate (h2load -c16 -m32),
the wall-clock figures as medians of rounds run in alternating order.
Needs valgrind, h2load and grpcio; `scripts/bench.sh --ladder` installs
them, builds both binaries and runs this.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import bench
import harness
import instructions

# The OTLP sink's endpoint replaces this placeholder.
SINK = "{sink}"
RATIO_10 = {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
NO_HEAP_PROFILE = {"MALLOC_CONF": "prof:false"}

# (name, what it adds, binary, flags, environment)
RUNGS = [
    ("bare tonic", "tonic alone: a HashMap of protobuf products, each answer a clone",
     "bare", ["--up-to", "bare"], {}),
    ("+ catalogue handler", "CatalogueApi over the memory store: requests parsed into domain values, "
     "the Store trait, domain to protobuf", "bare", ["--up-to", "handler"], {}),
    ("+ coalesced writes", "each HTTP/2 round's frames in one system call (CoalescedWrites): a gain, "
     "not a cost, in CPU; a copy of the round's bytes in instructions", "bare", ["--up-to", "coalesced"], {}),
    ("+ connection guards", "connection caps and handshake timeout; each call handed its connection's slots",
     "bare", ["--up-to", "guards"], {}),
    ("+ ShedLayer", "global, per-peer and per-connection call limits", "bare", ["--up-to", "shed"], {}),
    ("+ deadlines", "request timeout and idle watch", "bare", ["--up-to", "deadlines"], {}),
    ("+ panic catcher", "a panicking handler answers INTERNAL", "bare", ["--up-to", "panic"], {}),
    ("+ fault layer", "FaultLayer, no fault active", "bare", ["--up-to", "faults"], {}),
    ("+ runtime histograms", "tokio's poll-time and schedule-latency histograms",
     "bare", ["--up-to", "runtime-histograms"], {}),
    ("+ task list", "the task list's spawn and terminate hooks", "bare", ["--up-to", "task-list"], {}),
    ("+ telemetry layer, metrics only", "the catalogue binary: RED and stream metrics, "
     "profile labels, the app's log subscriber, and its own routing (catalogue calls skip tonic's "
     "axum router, which every rung below pays), and its allocator options (jemalloc's thread caches "
     "swept every 1 MiB allocated, where the rungs below keep jemalloc's 64 KiB); no runtime metrics, "
     "no heap profiling",
     "catalogue", ["--no-runtime-metrics"], NO_HEAP_PROFILE),
    ("+ runtime metrics", "each call's method task monitor, and the runtime and task metrics collector "
     "(at scrape time)", "catalogue", [], NO_HEAP_PROFILE),
    ("+ heap-profile sampling", "jemalloc's heap profiling (the binary's default MALLOC_CONF: prof:true, a sample per 2 MiB)",
     "catalogue", [], {}),
    ("+ traces 10 %, no keep", "OTLP export of 10 % of calls (head sampling)",
     "catalogue", ["--otlp-endpoint", SINK, "--no-trace-keep"], RATIO_10),
    ("production: + error/slow keep", "every failed or slow call kept whatever the ratio",
     "catalogue", ["--otlp-endpoint", SINK], RATIO_10),
]


def argv_of(rung, binaries, sink):
    _, _, kind, flags, env = rung
    flags = [sink.endpoint if flag == SINK else flag for flag in flags]
    if kind == "bare":
        return bench.bare_argv(binaries["bare"], *flags), env
    return harness.serve_argv(binaries["catalogue"], "--database-url", "memory", *flags), env


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=5000, help="calls counted by callgrind per rung")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--only-instructions", action="store_true")
    parser.add_argument("--json", default="target/ladder.json")
    parser.add_argument("--markdown", default="docs/cost-ladder.md",
                        help="the document rendered from the results")
    parser.add_argument("--bare", default="target/release/examples/bare_tonic")
    parser.add_argument("--catalogue", default="target/release/catalogue")
    args = parser.parse_args()
    binaries = {"bare": args.bare, "catalogue": args.catalogue}
    sink = bench.OtlpSink()
    with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as body:
        body.write(bench.get_product_body())

    counted, raw = {}, {}
    for rung in RUNGS:
        argv, env = argv_of(rung, binaries, sink)
        result = instructions.count(argv, env, body.name, args.calls)
        counted[rung[0]] = result["per_call"]
        raw[rung[0]] = result
        print(f"{rung[0]}: {counted[rung[0]]:,.0f} instructions per call ({result['counted']:,.0f} as counted, "
              f"{result['background']:,.0f} a second of background work)", file=sys.stderr, flush=True)

    cpu = {rung[0]: [] for rung in RUNGS}
    rate = {rung[0]: [] for rung in RUNGS}
    if not args.only_instructions:
        for round_ in range(args.rounds):
            for rung in (RUNGS if round_ % 2 == 0 else RUNGS[::-1]):
                server = harness.Server(*argv_of(rung, binaries, sink))
                try:
                    time.sleep(0.5)
                    cpu[rung[0]].append(bench.cpu_per_call(server, args.seconds, body.name, bench.STEADY_RATE)[1])
                    rate[rung[0]].append(bench.h2load(server, args.seconds, body.name)["rps"])
                finally:
                    server.stop()
                print(f"round {round_ + 1}, {rung[0]}: {cpu[rung[0]][-1]:.1f} µs per call, "
                      f"{rate[rung[0]][-1]:,.0f} calls/s", file=sys.stderr, flush=True)
    os.unlink(body.name)

    bare = RUNGS[0][0]
    rows = []
    previous = None
    for name, adds, *_ in RUNGS:
        row = {"rung": name, "adds": adds, "instructions_per_call": round(counted[name]),
               "instructions_added": round(counted[name] - counted[previous]) if previous else 0,
               "x_bare_instructions": round(counted[name] / counted[bare], 2),
               "instructions_as_counted": round(raw[name]["counted"]),
               "background_instructions_per_s": round(raw[name]["background"]),
               "window_s": round(raw[name]["seconds"], 1)}
        if cpu[name]:
            row.update({"cpu_us_per_call": round(statistics.median(cpu[name]), 1),
                        "x_bare_cpu": round(statistics.median(cpu[name]) / statistics.median(cpu[bare]), 2),
                        "saturation_per_s": round(statistics.median(rate[name])),
                        "x_bare_rate": round(statistics.median(rate[name]) / statistics.median(rate[bare]), 2)})
        rows.append(row)
        previous = name
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    results = {
        "date": datetime.date.today().isoformat(),
        "commit": commit,
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, {os.uname().release}",
        "calls": args.calls,
        "rounds": 0 if args.only_instructions else args.rounds,
        "steady_rate_per_s": bench.STEADY_RATE,
        "rungs": rows,
    }
    with open(args.json, "w") as out:
        json.dump(results, out, indent=2)
    with open(args.markdown, "w") as out:
        out.write(render(results))
    print(json.dumps(results, indent=2))


def render(results):
    """The cost ladder as a document: the table, and what it says, from
    the results alone."""
    rows = results["rungs"]
    bare, full = rows[0], rows[-1]
    timed = "cpu_us_per_call" in full
    columns = ["rung", "instructions per call", "added", "× bare"]
    if timed:
        columns += ["CPU µs per call at 10,000/s", "× bare", "calls/s at saturation", "× bare"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [row["rung"], f"{row['instructions_per_call']:,}",
                 f"{row['instructions_added']:+,}" if row is not bare else "", f"{row['x_bare_instructions']:.2f}"]
        if timed:
            cells += [f"{row['cpu_us_per_call']:.1f}", f"{row['x_bare_cpu']:.2f}",
                      f"{row['saturation_per_s']:,}", f"{row['x_bare_rate']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    tax = full["instructions_per_call"] - bare["instructions_per_call"]
    biggest = sorted(rows[1:], key=lambda row: row["instructions_added"], reverse=True)[:3]
    shares = ", ".join(f"{row['rung'].lstrip('+ ')} ({row['instructions_added'] / tax:.0%})" for row in biggest)
    what = "\n".join(f"- **{row['rung']}**: {row['adds']}." for row in rows)
    timing = (f"CPU per call is the server's `utime + stime` over a steady {results['steady_rate_per_s']:,} "
              f"GetProduct calls a second (h2load `--rps`), and the saturation rate h2load's `-c16 -m32`; both "
              f"are medians of {results['rounds']} rounds run in alternating order, on a machine where rounds "
              "swing by 10 % and more: read them as ratios within one run." if timed else
              "This run counted instructions only (`--only-instructions`).")
    return f"""# The cost ladder

What you will learn here: what each part of the catalogue costs a
GetProduct call, from tonic with nothing on it
([`examples/bare_tonic.rs`](../examples/bare_tonic.rs)) to the fully
observed service, one part at a time; read it to decide what to turn on,
and to see where the tax is.

Generated by `scripts/bench.sh --ladder` ([`scripts/ladder.py`](../scripts/ladder.py)) on
{results['date']} at commit `{results['commit']}`; machine: {results['machine']}.
Do not edit by hand: run it again.

{chr(10).join(lines)}

Fully observed, a call costs {full['x_bare_instructions']:.2f}× the instructions of
bare tonic ({tax:+,} per call); the largest rungs are {shares}.

## How it is measured

Each rung is a server of its own serving the same seed catalogue from
memory, byte for byte the same answers. The rungs up to the task list are
`examples/bare_tonic.rs --up-to RUNG`: tonic's server with the catalogue's
parts added one at a time, in the order a call meets them. The rungs above
are the `catalogue` binary itself, whose smallest configuration already
holds every rung below it.

Instructions per call are counted by callgrind (`scripts/instructions.py`):
{results['calls']:,} calls after 2,000 to warm up, and the 6.5 s after them, so
that the batch exporter's work for the traced calls is counted too. They
repeat within about a hundred instructions from run to run whatever the
rest of the machine does, which is what makes a rung of a few hundred
visible; the two traced rungs within a few hundred, since which calls are sampled is random
(one standard deviation of 300 sampled calls costs about 160 a call).
Work the server does by the clock rather than by call (the metrics
recorder's upkeep each second, the runtime collector, timers) is counted as
it falls on a call at {results['steady_rate_per_s']:,} calls a second: the server's
instructions per second with no calls are counted first and that rate is
taken out of the window and put back at the steady rate. Counted as it
fell in the window ({full['window_s']} s for the production rung's calls under
callgrind), it charged each call {full['window_s'] * results['steady_rate_per_s'] / results['calls']:.0f} times its share: that
rung is {full['instructions_as_counted']:,} per call counted that way, against {full['instructions_per_call']:,}. {timing}

## What each rung adds

{what}
"""


if __name__ == "__main__":
    sys.exit(main())
