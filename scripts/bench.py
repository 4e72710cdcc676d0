"""Benchmarks of the release build: throughput, latency, memory, start-up and
the cost of each observability signal, all on loopback.

Usage: python scripts/bench.py BINARY [--quick] [--json FILE]
Needs h2load (Debian nghttp2-client) and grpcio (for the OTLP sink and the
start-up probe); scripts/bench.sh installs both.

Timings on a shared 2-core machine are noisy: configurations are run in
alternating rounds and the median is reported, with ratios taken within the
same run.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent import futures

import grpc

PRODUCT_ID = b"prod-0000042"


def grpc_frame(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


def get_product_body() -> bytes:
    # GetProductRequest { product_id = 1 }: tag 0x0a, length, bytes.
    return grpc_frame(b"\x0a" + bytes([len(PRODUCT_ID)]) + PRODUCT_ID)


class OtlpSink:
    """An OTLP/gRPC trace receiver that accepts and drops every export (an
    empty ExportTraceServiceResponse is zero bytes)."""

    def __init__(self):
        self.exports = 0

        def export(request, context):
            self.exports += 1
            return b""

        handler = grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService",
            {"Export": grpc.unary_unary_rpc_method_handler(export, lambda b: b, lambda b: b)},
        )
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"


class Server:
    def __init__(self, binary, flags, env=None):
        self.log = tempfile.NamedTemporaryFile(prefix="catalogue-bench-", suffix=".log", delete=False)
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [binary, "serve", "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
             "--console-addr", "127.0.0.1:0", "--log-format", "json", *flags],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = open(self.log.name).read()
            grpc_addr = re.search(r'"grpc":"([^"]+)"', text)
            admin_addr = re.search(r'"admin":"([^"]+)"', text)
            if grpc_addr and admin_addr:
                self.grpc, self.admin = grpc_addr.group(1), admin_addr.group(1)
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.005)
        raise SystemExit(f"the server did not start:\n{open(self.log.name).read()}")

    def first_rpc_ms(self):
        """Milliseconds from exec to the first successful health check."""
        with grpc.insecure_channel(self.grpc) as channel:
            check = channel.unary_unary("/grpc.health.v1.Health/Check", lambda _: b"", lambda b: b)
            while True:
                try:
                    check(None, timeout=1)
                    return (time.monotonic() - self.started) * 1000
                except grpc.RpcError:
                    time.sleep(0.001)

    def rss_mb(self):
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.unlink(self.log.name)


def h2load(server, seconds, body_path, clients=16, streams=32):
    """Closed-loop GetProduct saturation by h2load; samples RSS meanwhile."""
    process = subprocess.Popen(
        ["h2load", "-c", str(clients), "-m", str(streams), "-D", str(seconds), "--warm-up-time", "1",
         "-d", body_path, "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"http://{server.grpc}/catalogue.v1.CatalogueService/GetProduct"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    peak_rss = 0.0
    while process.poll() is None:
        peak_rss = max(peak_rss, server.rss_mb())
        time.sleep(0.25)
    output = process.stdout.read()
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", output)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", output)
    failed = re.search(r"(\d+) failed", output)
    if not rps:
        raise SystemExit(f"h2load failed:\n{output}")
    return {
        "rps": float(rps.group(1)),
        "mean_latency": mean.group(1) if mean else None,
        "failed": int(failed.group(1)) if failed else None,
        "rss_under_load_mb": round(peak_rss, 1),
    }


def load(binary, server, *flags):
    output = subprocess.run(
        [binary, "load", "--target", f"http://{server.grpc}", "--json", *flags],
        capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(output)


def store_suite(binary, store, seconds, body_path):
    flags = ["--database-url", store]
    if store.startswith("sqlite"):
        flags += ["--seed-products", "10000"]
    server = Server(binary, flags)
    try:
        startup = server.first_rpc_ms()
        time.sleep(0.5)
        idle = server.rss_mb()
        unary = h2load(server, seconds, body_path)
        closed = load(binary, server, "--mix", "get=1", "--concurrency", "64", "--connections", "4",
                      "--duration", f"{seconds}s")
        open_loop = {}
        for share in (25, 50, 75):
            rate = unary["rps"] * share / 100
            summary = load(binary, server, "--mix", "get=1", "--rps", f"{rate:.0f}", "--connections", "4",
                           "--duration", f"{seconds}s")
            open_loop[f"{share}%"] = {"target_rps": round(rate), "achieved_rps": round(summary["achieved_rps"]),
                                      "p50_ms": summary["latency_ms"]["p50"], "p99_ms": summary["latency_ms"]["p99"]}
        streams = load(binary, server, "--mix", "list=1", "--list-page-size", "1000", "--concurrency", "16",
                       "--connections", "4", "--duration", f"{seconds}s")
        search = load(binary, server, "--mix", "search=1", "--concurrency", "32", "--connections", "4",
                      "--duration", f"{seconds}s")
        return {
            "startup_to_first_rpc_ms": round(startup, 1),
            "rss_idle_mb": round(idle, 1),
            "unary_h2load": unary,
            "unary_catalogue_load": {"rps": round(closed["achieved_rps"]), "p50_ms": closed["latency_ms"]["p50"],
                                     "p99_ms": closed["latency_ms"]["p99"]},
            "unary_open_loop": open_loop,
            "streams_per_s": round(streams["achieved_rps"], 1),
            "stream_messages_per_s": round(streams["stream_messages_per_s"]),
            "search_rps": round(search["achieved_rps"]),
        }
    finally:
        server.stop()


def observability_suite(binary, seconds, rounds, body_path, sink):
    ratio_10 = {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
    otlp = ["--otlp-endpoint", sink.endpoint]
    configurations = {
        "all off": (["--no-runtime-metrics"], {}),
        "metrics only (RED + runtime)": ([], {}),
        "traces 100% only": (["--no-runtime-metrics", *otlp], {}),
        "default: metrics + traces 10%": (otlp, ratio_10),
        "metrics + traces 100%": (otlp, {}),
        "console only": (["--console", "--no-runtime-metrics"], {}),
        "everything (+ console, 100%)": (["--console", *otlp], {}),
    }
    results = {name: [] for name in configurations}
    for _ in range(rounds):
        for name, (flags, env) in configurations.items():
            server = Server(binary, ["--database-url", "memory", *flags], env)
            try:
                results[name].append(h2load(server, seconds, body_path)["rps"])
            finally:
                server.stop()
    baseline = statistics.median(results["all off"])
    return {
        name: {"median_rps": round(statistics.median(runs)), "runs": [round(r) for r in runs],
               "vs_all_off": round(statistics.median(runs) / baseline, 3)}
        for name, runs in results.items()
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--quick", action="store_true", help="shorter runs, one round")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    seconds = 4 if args.quick else 10
    rounds = 1 if args.quick else 3
    body = tempfile.NamedTemporaryFile(suffix=".bin", delete=False)
    body.write(get_product_body())
    body.close()
    sink = OtlpSink()
    results = {
        "machine": f"{os.cpu_count()} cores, {os.uname().release}",
        "memory store": store_suite(args.binary, "memory", seconds, body.name),
        "sqlite store": store_suite(args.binary, f"sqlite://{tempfile.mkdtemp()}/bench.db", seconds, body.name),
        "cost of observability (h2load -c16 -m32, memory store)": observability_suite(
            args.binary, max(seconds - 2, 4), rounds, body.name, sink),
        "otlp_exports_received": sink.exports,
    }
    os.unlink(body.name)
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    sys.exit(main())
