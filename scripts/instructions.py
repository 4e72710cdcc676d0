"""Instructions per GetProduct call, counted by callgrind: the steady figure
on a machine whose wall-clock rounds swing by more than the costs measured.

Usage: python scripts/instructions.py CALLS BINARY[::CONFIGURATION]...
CONFIGURATION: OFF, METRICS (the default), OTLP10, OTLP10NOKEEP, OTLP0,
OTLP100 (traces exported over OTLP/gRPC to a local sink at that ratio).

Each server runs under `valgrind --tool=callgrind` with instrumentation off,
takes 2,000 calls to warm up, then counts CALLS calls (h2load -c4 -m8) and
the 6.5 s after them, so that the batch processor's scheduled export of the
last spans is counted too. Needs valgrind, h2load and grpcio (scripts/setup.sh installs them).

Work done by the clock, not by calls (the metrics recorder's upkeep every
second, the runtime collector, timers), is counted as it would fall on a
call at the steady 10,000 calls/s the CPU figures are taken at: first the
server's instructions per second with no calls are counted over 6.5 s
(`background`), then that rate times the counted window is taken out of its
instructions and the rate divided by 10,000 put back. Under callgrind 3,000
calls and their 6.5 s take about 8 s, so counting the clock's work as it
falls there charged each call the work of 2.7 ms of a server's life,
against 0.1 ms at 10,000 calls/s: 500 instructions a call where it is 20.
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


# Seconds of no calls over which the server's own background work is counted:
# longer than the longest of its periodic timers (the batch exporter's 5 s).
BACKGROUND_SECONDS = 6.5


def count(argv, env, body_path, calls):
    """Instructions per GetProduct call of the server `argv` starts (any
    binary that writes a ready file, see harness.py), counted under
    callgrind, with the server's background work counted at bench.STEADY_RATE
    calls a second (see the module docs): a dict of `per_call`, the raw
    count (`counted`, background work as it fell in the window), the
    `background` instructions per second and the window's `seconds`."""
    out = tempfile.mkdtemp(prefix="callgrind-")
    server = harness.Server(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                             f"--callgrind-out-file={out}/callgrind.%p", *argv], env)
    pid = str(server.process.pid)

    def counted_while(action):
        """The instructions the server runs while `action` runs, and its
        seconds; each dump holds what was counted since the one before."""
        subprocess.run(["callgrind_control", "--instr=on", pid], capture_output=True, check=True)
        started = time.monotonic()
        result = action()
        seconds = time.monotonic() - started
        subprocess.run(["callgrind_control", "--instr=off", pid], capture_output=True, check=True)
        before = set(glob.glob(f"{out}/callgrind.*"))
        subprocess.run(["callgrind_control", "--dump", pid], capture_output=True, check=True)
        dumped = set(glob.glob(f"{out}/callgrind.*")) - before
        total = 0
        for path in dumped:
            with open(path) as profile:
                total += sum(int(line.split()[1]) for line in profile if line.startswith("totals:"))
        return total, seconds, result

    def calls_then_tail():
        succeeded = h2load(server, body_path, calls)
        time.sleep(6.5)
        return succeeded

    try:
        h2load(server, body_path, 2000)
        time.sleep(6)
        idle, idle_seconds, _ = counted_while(lambda: time.sleep(BACKGROUND_SECONDS))
        total, seconds, succeeded = counted_while(calls_then_tail)
    finally:
        server.stop()
    if succeeded != calls:
        raise SystemExit(f"{argv[0]}: {succeeded} of {calls} calls succeeded ({out})")
    background = idle / idle_seconds
    return {
        "per_call": (total - background * seconds) / calls + background / bench.STEADY_RATE,
        "counted": total / calls,
        "background": background,
        "seconds": seconds,
    }


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
        result = count(harness.serve_argv(binary, '--database-url', 'memory', *flags), env, body.name, calls)
        print(f"{spec}: {result['per_call']:,.0f} instructions per call ({result['counted']:,.0f} as counted, "
              f"{result['background']:,.0f} a second of background work)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
