"""The cost of tokio-console's layer: dormant (installed, never woken),
slept (woken, then put back to sleep) and awake, against a build without
the layer at all. h2load saturates GetProduct on the memory store
(-c16 -m32, as scripts/bench.py's observability section does) and the
server's CPU time per call is read from /proc/PID/stat around each run.

Usage: python scripts/console-overhead.py BASELINE CANDIDATE [--rounds N] [--seconds S] [--traces] [--dormant-only]
  BASELINE   a release build with no console layer (the layer left out)
  CANDIDATE  a release build with the dormant layer
  --traces   the default production profile: metrics, and traces at 10 %
             exported over OTLP to a local sink (otherwise everything off)
  --dormant-only  leave the awake configuration out (more rounds in the time)

Configurations run in alternating order each round (ABBA); medians and
ratios to the baseline are printed as JSON. Needs h2load and grpcio (what
bench.py needs: scripts/setup.sh). Both builds must accept --ready-file.
"""

import json
import os
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import bench  # noqa: E402

ALL_OFF = ["--database-url", "memory", "--no-runtime-metrics"]


def admin(server, method, path):
    request = urllib.request.Request(f"http://{server.admin}{path}", method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def run(binary, flags, env, before, seconds, body_path):
    """One h2load run against a fresh server: calls per second and server
    CPU microseconds per call."""
    server = bench.Server(binary, flags, env)
    try:
        for method in before:
            admin(server, method, "/debug/console")
        start = bench.cpu_seconds(server.process.pid)
        result = bench.h2load(server, seconds, body_path)
        used = bench.cpu_seconds(server.process.pid) - start
        return result["rps"], used / max(result["succeeded"] or 1, 1) * 1e6
    finally:
        server.stop()


def main():
    parser = bench.comparison_arguments("candidate", seconds=8)
    parser.add_argument("--traces", action="store_true")
    parser.add_argument("--dormant-only", action="store_true")
    args = parser.parse_args()
    flags, env = ALL_OFF, {}
    if args.traces:
        sink = bench.OtlpSink()
        flags = ["--database-url", "memory", "--otlp-endpoint", sink.endpoint]
        env = {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
    configurations = {
        "no console layer (baseline)": (args.baseline, flags, []),
        "dormant": (args.candidate, flags, []),
        "slept (PUT then DELETE /debug/console)": (args.candidate, flags, ["PUT", "DELETE"]),
        "awake (--console, no client)": (args.candidate, [*flags, "--console"], []),
    }
    if args.dormant_only:
        del configurations["awake (--console, no client)"]
    with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as file:
        file.write(bench.get_product_body())
    rps = {name: [] for name in configurations}
    cpu = {name: [] for name in configurations}
    try:
        for round_number in range(args.rounds):
            order = list(configurations.items())
            if round_number % 2:
                order.reverse()
            for name, (binary, server_flags, before) in order:
                calls, micros = run(binary, server_flags, env, before, args.seconds, file.name)
                rps[name].append(round(calls))
                cpu[name].append(round(micros, 2))
    finally:
        os.unlink(file.name)
    print(json.dumps(bench.versus_baseline(rps, cpu, "no console layer (baseline)"), indent=2))


if __name__ == "__main__":
    sys.exit(main())
