#!/usr/bin/env python3
"""What CPU profile labels cost: unary GetProduct throughput (h2load -c16
-m32, memory store, everything else off) and the service's CPU per call, for
a baseline binary and a labelling one, each without and with one long CPU
profile running for the whole load run (so the report's symbolisation,
after the run, is not counted). Rounds alternate their order (ABBA); the
medians of within-round ratios are printed last.

Usage: scripts/profile-labels-cost.py BASELINE_BINARY LABELS_BINARY
       [--rounds 4] [--seconds 5] [--frequency 99] [--traced]
(--traced: traces at 100 % to an in-process OTLP sink, so every call also
takes an entry in the profile's table of traced calls). Needs h2load.
"""

import os
import statistics
import sys
import tempfile
import threading
import urllib.request

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def profile_in_background(server, seconds, frequency):
    """One CPU profile of `seconds`, abandoned when the server stops."""
    url = f"http://{server.admin}/debug/pprof/profile?seconds={seconds}&frequency={frequency}"

    def run():
        try:
            with urllib.request.urlopen(url, timeout=seconds + 60) as response:
                response.read()
        except OSError:
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def one_run(binary, profiled, args, body_path, flags, env):
    server = bench.Server(binary, ["--database-url", "memory", "--no-runtime-metrics", *flags], env)
    try:
        if profiled:
            profile_in_background(server, args.seconds + 4, args.frequency)
        bench.time.sleep(0.5)
        before = bench.cpu_seconds(server.process.pid)
        rps = bench.h2load(server, args.seconds, body_path)["rps"]
        used = bench.cpu_seconds(server.process.pid) - before
        # h2load's warm-up second is in `used` too: per call over both.
        return rps, used * 1e6 / (rps * (args.seconds + 1))
    finally:
        server.stop()


def main():
    parser = bench.comparison_arguments("labels", seconds=5)
    parser.add_argument("--frequency", type=int, default=99)
    parser.add_argument("--traced", action="store_true")
    args = parser.parse_args()
    flags, env = [], {}
    if args.traced:
        sink = bench.OtlpSink()
        flags = ["--otlp-endpoint", sink.endpoint]
    with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as file:
        file.write(bench.get_product_body())
    cases = {
        "baseline, no profile": (args.baseline, False),
        "labels, no profile": (args.labels, False),
        "labels, profile running": (args.labels, True),
        "baseline, profile running": (args.baseline, True),
    }
    results = {name: [] for name in cases}
    for round_ in range(args.rounds):
        order = list(cases) if round_ % 2 == 0 else list(reversed(cases))
        for name in order:
            binary, profiled = cases[name]
            results[name].append(one_run(binary, profiled, args, file.name, flags, env))
        print(f"round {round_ + 1}: " + " | ".join(
            f"{name}: {results[name][-1][0]:.0f}/s {results[name][-1][1]:.1f} µs" for name in cases),
            flush=True)
    os.unlink(file.name)

    def ratios(numerator, denominator, index):
        return statistics.median(
            a[index] / b[index] for a, b in zip(results[numerator], results[denominator]))

    print(f"\nh2load -c16 -m32 GetProduct, memory store, {args.seconds} s runs, {args.rounds} rounds, "
          f"profile at {args.frequency} Hz{', traces 100 %' if args.traced else ''}")
    for name in cases:
        print(f"{name:28} median {statistics.median(r for r, _ in results[name]):8.0f} calls/s, "
              f"{statistics.median(c for _, c in results[name]):6.1f} µs CPU/call")
    for numerator, denominator in [
        ("labels, no profile", "baseline, no profile"),
        ("labels, profile running", "labels, no profile"),
        ("baseline, profile running", "baseline, no profile"),
        ("labels, profile running", "baseline, profile running"),
    ]:
        print(f"{numerator} / {denominator}: throughput {ratios(numerator, denominator, 0):.3f}x, "
              f"CPU per call {ratios(numerator, denominator, 1):.3f}x")


if __name__ == "__main__":
    main()
