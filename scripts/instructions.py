"""Instructions per GetProduct call, counted by callgrind: the steady figure
on a machine whose wall-clock rounds swing by more than the costs measured.

Usage: python scripts/instructions.py CALLS BINARY[::CONFIGURATION]...
CONFIGURATION: OFF, METRICS (the default), OTLP10, OTLP10NOKEEP, OTLP0,
OTLP100 (traces exported over OTLP/gRPC to a local sink at that ratio).

Each server runs under `valgrind --tool=callgrind` with instrumentation off,
takes 2,000 calls to warm up, then counts CALLS calls (h2load -c4 -m8) and
the 6.5 s after them, so that the batch processor's scheduled export of the
last spans is counted too. Needs valgrind, h2load and grpcio (scripts/setup.sh installs them).
"""

import glob
import re
import subprocess
import sys
import tempfile
import time

import bench
import harness


def h2load(server, body_path, calls):
    output = subprocess.run(
        ["h2load", "-c", "4", "-m", "8", "-n", str(calls), "-d", body_path,
         "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"http://{server.grpc}/catalogue.v1.CatalogueService/GetProduct"],
        capture_output=True, text=True, check=True,
    ).stdout
    return int(re.search(r"(\d+) succeeded", output).group(1))


def count(argv, env, body_path, calls):
    """Instructions per GetProduct call of the server `argv` starts (any
    binary that writes a ready file, see harness.py), counted under
    callgrind."""
    out = tempfile.mkdtemp(prefix="callgrind-")
    server = harness.Server(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                             f"--callgrind-out-file={out}/callgrind.%p", *argv], env)
    try:
        h2load(server, body_path, 2000)
        time.sleep(6)
        pid = str(server.process.pid)
        subprocess.run(["callgrind_control", "--instr=on", pid], capture_output=True, check=True)
        succeeded = h2load(server, body_path, calls)
        time.sleep(6.5)
        subprocess.run(["callgrind_control", "--instr=off", pid], capture_output=True, check=True)
        subprocess.run(["callgrind_control", "--dump", pid], capture_output=True, check=True)
    finally:
        server.stop()
    if succeeded != calls:
        raise SystemExit(f"{argv[0]}: {succeeded} of {calls} calls succeeded ({out})")
    total = 0
    for path in glob.glob(f"{out}/callgrind.*"):
        with open(path) as profile:
            total += sum(int(line.split()[1]) for line in profile if line.startswith("totals:"))
    return total / calls


def main():
    calls = int(sys.argv[1])
    sink = bench.OtlpSink()
    otlp = ["--otlp-endpoint", sink.endpoint]

    def ratio(value):
        return {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": value}

    configurations = {
        "OFF": (["--no-runtime-metrics"], {}),
        "METRICS": ([], {}),
        "OTLP10": (otlp, ratio("0.1")),
        "OTLP10NOKEEP": ([*otlp, "--no-trace-keep"], ratio("0.1")),
        "OTLP0": (otlp, ratio("0")),
        "OTLP100": (otlp, {}),
    }
    with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as body:
        body.write(bench.get_product_body())
    for spec in sys.argv[2:]:
        binary, _, name = spec.partition("::")
        flags, env = configurations[name or "METRICS"]
        print(f"{spec}: {count(harness.serve_argv(binary, '--database-url', 'memory', *flags), env, body.name, calls):,.0f}"
              " instructions per call", flush=True)


if __name__ == "__main__":
    sys.exit(main())
