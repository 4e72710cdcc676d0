"""Benchmarks of the release build: throughput, latency, memory, start-up and
the cost of each observability signal, all on loopback.

Usage: python scripts/bench.py BINARY [--quick] [--json FILE] [--only SECTION]...
                                [--go-peer PATH]
Needs h2load (Debian nghttp2-client) and grpcio (for the OTLP sink and the
start-up probe): scripts/setup.sh installs both; scripts/bench.sh builds the
grpc-go peer of the side-by-side section (go-peer/build.sh) and renders
docs/benchmarks.md from the JSON (scripts/render-benchmarks.py).

Timings on a shared 2-core machine are noisy: configurations are run in
alternating rounds and the median is reported, with ratios taken within the
same run.
"""

import argparse
import json
import os
import re
import socket
import threading
import urllib.request
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent import futures

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

PRODUCT_ID = b"prod-0000042"
SEED_PRODUCTS = 10000
LIST_PAGE_SIZE = 1000
# The steady rate of the CPU-per-call row: moderate load, where most
# services live and throughput cannot tell two servers apart.
STEADY_RATE = 10000
SECTIONS = ("memory", "sqlite", "observability", "go-peer", "footprint")
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def grpc_frame(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


def get_product_body() -> bytes:
    # GetProductRequest { product_id = 1 }: tag 0x0a, length, bytes.
    return grpc_frame(b"\x0a" + bytes([len(PRODUCT_ID)]) + PRODUCT_ID)


def list_products_body() -> bytes:
    # ListProductsRequest { page_size = 1 }: tag 0x08, the size as a varint.
    varint, size = b"", LIST_PAGE_SIZE
    while size >= 0x80:
        varint += bytes([size & 0x7F | 0x80])
        size >>= 7
    return grpc_frame(b"\x08" + varint + bytes([size]))


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


class Server(harness.Server):
    """`catalogue serve` with `flags`, started through the ready file
    (harness.py); with `argv`, any binary that writes one."""

    def __init__(self, binary, flags, env=None, argv=None):
        self.start(argv or harness.serve_argv(binary, *flags), env)

    def first_rpc_ms(self):
        """Milliseconds from exec to the first answered health check (a
        server without the health service, the bare baseline, answers
        UNIMPLEMENTED: an answer all the same)."""
        with grpc.insecure_channel(self.grpc) as channel:
            check = channel.unary_unary("/grpc.health.v1.Health/Check", lambda _: b"", lambda b: b)
            while True:
                try:
                    check(None, timeout=1)
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.UNIMPLEMENTED:
                        time.sleep(0.001)
                        continue
                return (time.monotonic() - self.started) * 1000

    def call(self, method, body):
        """The raw response message of one unary or server-streaming call of
        catalogue.v1.CatalogueService with the framed request `body`."""
        path = f"/catalogue.v1.CatalogueService/{method}"
        with grpc.insecure_channel(self.grpc) as channel:
            if method == "ListProducts":
                stream = channel.unary_stream(path, lambda b: b, lambda b: b)
                return b"".join(grpc_frame(message) for message in stream(body[5:], timeout=10))
            return channel.unary_unary(path, lambda b: b, lambda b: b)(body[5:], timeout=10)


class GoPeer(Server):
    """The grpc-go peer (go-peer/), which writes the same ready file (its
    "admin" is its /metrics)."""

    def __init__(self, binary, products=SEED_PRODUCTS):
        super().__init__(binary, [], argv=harness.go_peer_argv(binary, "-products", str(products)))


cpu_seconds = harness.cpu_seconds


def comparison_arguments(candidate, seconds):
    """The command line of a comparison of two binaries in alternating
    rounds (scripts/console-overhead.py, scripts/profile-labels-cost.py)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("baseline")
    parser.add_argument(candidate)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=seconds)
    return parser


def versus_baseline(rps, cpu, baseline):
    """Each configuration's medians of alternating rounds (`rps` and `cpu`:
    name -> one number per round) and their ratios to `baseline`'s."""
    base_rps, base_cpu = statistics.median(rps[baseline]), statistics.median(cpu[baseline])
    return {
        name: {
            "median_rps": round(statistics.median(rps[name])),
            "rps_vs_baseline": round(statistics.median(rps[name]) / base_rps, 3),
            "median_cpu_us_per_call": round(statistics.median(cpu[name]), 2),
            "cpu_vs_baseline": round(statistics.median(cpu[name]) / base_cpu, 3),
            "runs_rps": rps[name],
            "runs_cpu_us_per_call": cpu[name],
        }
        for name in rps
    }


def h2load(server, seconds, body_path, clients=16, streams=32, method="GetProduct", rate=None):
    """Closed-loop saturation of one method by h2load (a ListProducts stream
    is one request), or with `rate` an open loop at that many calls per
    second in all; samples RSS meanwhile."""
    paced = ["--rps", str(max(1, round(rate / clients)))] if rate else []
    process = subprocess.Popen(
        ["h2load", "-c", str(clients), "-m", str(streams), "-D", str(seconds), "--warm-up-time", "1", *paced,
         "-d", body_path, "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"http://{server.grpc}/catalogue.v1.CatalogueService/{method}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    peak_rss = 0.0
    while process.poll() is None:
        peak_rss = max(peak_rss, server.rss_mb())
        time.sleep(0.25)
    output = process.stdout.read()
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", output)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", output)
    request_times = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", output)
    failed = re.search(r"(\d+) failed", output)
    succeeded = re.search(r"(\d+) succeeded", output)
    if not rps:
        raise SystemExit(f"h2load failed:\n{output}")
    return {
        "rps": float(rps.group(1)),
        "mean_latency": mean.group(1) if mean else None,
        "max_latency": request_times.group(2) if request_times else None,
        "sd_latency": request_times.group(4) if request_times else None,
        "failed": int(failed.group(1)) if failed else None,
        "succeeded": int(succeeded.group(1)) if succeeded else None,
        "rss_under_load_mb": round(peak_rss, 1),
    }


def write_calls(pid):
    """The write-family system calls (write, writev, ...) a process has made:
    `syscw` of /proc/PID/io."""
    with open(f"/proc/{pid}/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("syscw:"))


def cpu_per_call(server, seconds, body_path, rate):
    """GetProduct at a steady `rate` calls/s (h2load --rps): the achieved
    rate, the server's CPU time (utime + stime) per call in µs, and its
    write system calls per call. h2load's warm-up second is in both counts,
    so they are divided over the calls of both."""
    pid = server.process.pid
    cpu_before, writes_before = cpu_seconds(pid), write_calls(pid)
    result = h2load(server, seconds, body_path, rate=rate)
    calls = result["rps"] * (seconds + 1)
    used, writes = cpu_seconds(pid) - cpu_before, write_calls(pid) - writes_before
    return result["rps"], used * 1e6 / calls, writes / calls


def load(binary, server, *flags):
    output = subprocess.run(
        [binary, "load", "--target", f"http://{server.grpc}", "--json", *flags],
        capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(output)


def fresh_starts(binary, flags, times=3):
    """Exec to first RPC and idle RSS of `times` starts on what the first
    server left (for SQLite, an existing database), medians."""
    runs = []
    for _ in range(times):
        server = Server(binary, flags)
        try:
            startup = server.first_rpc_ms()
            time.sleep(0.5)
            runs.append({"startup_to_first_rpc_ms": startup, "rss_idle_mb": server.rss_mb(),
                         **{f"{key}_mb": value for key, value in server.status_mb("RssAnon", "RssFile").items()}})
        finally:
            server.stop()
    return {key: round(statistics.median(run[key] for run in runs), 1) for key in runs[0]}


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
        # h2load's own open loop (--rps per client): the client is not ours.
        # It reports mean, spread and maximum, no percentiles.
        h2load_open_loop = {}
        for share in (25, 50, 75):
            paced = h2load(server, seconds, body_path, rate=unary["rps"] * share / 100)
            h2load_open_loop[f"{share}%"] = {key: paced[key] for key in ("rps", "mean_latency", "sd_latency",
                                                                       "max_latency")}
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
        results = {
            "startup_to_first_rpc_ms": round(startup, 1),
            "rss_idle_mb": round(idle, 1),
            "unary_h2load": unary,
            "unary_catalogue_load": {"rps": round(closed["achieved_rps"]), "p50_ms": closed["latency_ms"]["p50"],
                                     "p99_ms": closed["latency_ms"]["p99"]},
            "unary_open_loop": open_loop,
            "unary_open_loop_h2load": h2load_open_loop,
            "streams_per_s": round(streams["achieved_rps"], 1),
            "stream_messages_per_s": round(streams["stream_messages_per_s"]),
            "search_rps": round(search["achieved_rps"]),
        }
    finally:
        server.stop()
    # Started again: on SQLite, with the database seeded above.
    results["started_again"] = fresh_starts(binary, flags)
    return results


def footprint_suite(binary, seconds):
    """What memory costs: per idle connection, per open stream held by a
    reader that stopped reading, and while streaming a catalogue 10x larger
    (SQLite, so that the catalogue itself lives on disk)."""
    results = {}
    # The 1,000 streams below come from one address: the default limits
    # (1,024 calls, three quarters of them for one address) would refuse a
    # quarter of them.
    server = Server(binary, ["--database-url", "memory", "--max-concurrent-calls", "2048",
                             "--max-calls-per-peer", "1536", "--max-calls-per-connection", "256"])
    try:
        time.sleep(0.5)
        idle = server.rss_mb()
        host, port = server.grpc.rsplit(":", 1)
        connections = []
        for _ in range(1000):
            connection = socket.create_connection((host, int(port)))
            connection.sendall(H2_PREFACE)
            connections.append(connection)
        time.sleep(1)
        with_connections = server.rss_mb()
        for connection in connections:
            connection.close()
        time.sleep(1)
        # 1,000 ListProducts streams of 1,000 products over 5 connections
        # (200 streams each); each reader takes one message, then stops.
        before_streams = server.rss_mb()
        # No BDP probing: the window stays at 64 KiB, less than a page.
        channels = [grpc.insecure_channel(server.grpc, options=[("grpc.use_local_subchannel_pool", 1),
                                                              ("grpc.http2.bdp_probe", 0)])
                    for _ in range(5)]
        readers = []
        for index in range(1000):
            stream = channels[index % 5].unary_stream(
                "/catalogue.v1.CatalogueService/ListProducts", lambda b: b, lambda b: b)
            reader = stream(list_products_body()[5:], timeout=60)
            next(reader)
            readers.append(reader)
        time.sleep(1)
        with_streams = server.rss_mb()
        for reader in readers:
            reader.cancel()
        for channel in channels:
            channel.close()
        results.update({
            "rss_idle_mb": round(idle, 1),
            "rss_per_idle_connection_kb": round((with_connections - idle) * 1024 / 1000, 1),
            "rss_per_stalled_stream_kb": round((with_streams - before_streams) * 1024 / 1000, 1),
            "rss_with_1000_stalled_streams_mb": round(with_streams, 1),
        })
    finally:
        server.stop()
    for products in (10000, 100000):
        # Seeded by a first start, measured on the second: the seeding's own
        # garbage is not what streaming costs.
        flags = ["--database-url", f"sqlite://{tempfile.mkdtemp()}/bench.db", "--seed-products", str(products)]
        seeding = Server(binary, flags)
        seeding.first_rpc_ms()
        seeding.stop()
        server = Server(binary, flags)
        try:
            server.first_rpc_ms()
            peak = [0.0]
            done = threading.Event()

            def sample():
                while not done.is_set():
                    peak[0] = max(peak[0], server.rss_mb())
                    time.sleep(0.1)

            sampler = threading.Thread(target=sample)
            sampler.start()
            streamed = load(binary, server, "--mix", "list=1", "--list-page-size", "1000", "--concurrency", "16",
                            "--duration", f"{seconds}s")
            done.set()
            sampler.join()
            results[f"sqlite_{products}_products_streaming_peak_rss_mb"] = round(peak[0], 1)
            results[f"sqlite_{products}_products_stream_messages_per_s"] = round(streamed["stream_messages_per_s"])
        finally:
            server.stop()
    small, large = (results[f"sqlite_{n}_products_streaming_peak_rss_mb"] for n in (10000, 100000))
    results["rss_growth_10x_catalogue"] = round(large / small, 3)
    return results


class Profiling:
    """Takes back-to-back CPU profiles from the admin port while it runs."""

    def __init__(self, server, seconds):
        self.url = f"http://{server.admin}/debug/pprof/profile?seconds={seconds}"
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self):
        while not self.done.is_set():
            with urllib.request.urlopen(self.url, timeout=60) as response:
                response.read()

    def stop(self):
        self.done.set()
        self.thread.join()


def observability_suite(binary, seconds, rounds, body_path, sink):
    ratio_10 = {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
    otlp = ["--otlp-endpoint", sink.endpoint]
    configurations = {
        "all off": (["--no-runtime-metrics"], {}),
        "metrics only (RED + runtime)": ([], {}),
        "traces 100% only": (["--no-runtime-metrics", *otlp], {}),
        "default: metrics + traces 10%": (otlp, ratio_10),
        "metrics + traces 10%, no error/slow keep": ([*otlp, "--no-trace-keep"], ratio_10),
        "metrics + traces 100%": (otlp, {}),
        "console only": (["--console", "--no-runtime-metrics"], {}),
        "a CPU profile running (99 Hz), all else off": (["--no-runtime-metrics"], {"PROFILE": "1"}),
        "everything (+ console, 100%)": (["--console", *otlp], {}),
    }
    results = {name: [] for name in configurations}
    for _ in range(rounds):
        for name, (flags, env) in configurations.items():
            env = dict(env)
            profiling = env.pop("PROFILE", None)
            server = Server(binary, ["--database-url", "memory", *flags], env)
            profile = Profiling(server, 2) if profiling else None
            try:
                results[name].append(h2load(server, seconds, body_path)["rps"])
            finally:
                if profile:
                    profile.stop()
                server.stop()
    baseline = statistics.median(results["all off"])
    return {
        name: {"median_rps": round(statistics.median(runs)), "runs": [round(r) for r in runs],
               "vs_all_off": round(statistics.median(runs) / baseline, 3)}
        for name, runs in results.items()
    }


def paired_suite(binary, seconds, rounds, body_path, sink):
    """The trace cost, measured in pairs: two servers run at once, each
    saturated by its own h2load, so that whatever else the machine does
    slows both alike; one configuration's calls/s over the other's, per
    round, the order of start swapping each round. Run one after the other,
    this machine's rounds swing by 10 % and more, several times the cost
    measured; the same configuration against itself gives the method's own
    spread."""
    ratio_10 = {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
    metrics = ([], {})
    traces_10 = (["--otlp-endpoint", sink.endpoint], ratio_10)
    pairs = {
        "metrics only against itself (the method's spread)": (metrics, metrics),
        "default (metrics + traces 10%, keep) against metrics only": (metrics, traces_10),
    }
    results = {}
    for name, (base, candidate) in pairs.items():
        ratios = []
        for round_ in range(rounds):
            sides = [base, candidate] if round_ % 2 == 0 else [candidate, base]
            servers = [Server(binary, ["--database-url", "memory", *flags], env) for flags, env in sides]
            rps = [0.0, 0.0]

            def run(index):
                rps[index] = h2load(servers[index], seconds, body_path)["rps"]

            threads = [threading.Thread(target=run, args=(index,)) for index in (0, 1)]
            try:
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
            finally:
                for server in servers:
                    server.stop()
            base_rps, candidate_rps = rps if round_ % 2 == 0 else rps[::-1]
            ratios.append(candidate_rps / base_rps)
        ordered = sorted(ratios)
        results[name] = {
            "median_ratio": round(statistics.median(ratios), 3),
            "quartiles": [round(ordered[len(ordered) // 4], 3), round(ordered[(3 * len(ordered)) // 4], 3)],
            "rounds": [round(ratio, 3) for ratio in ratios],
        }
    return results


def bare_argv(binary, *flags):
    """The bare tonic baseline (examples/bare_tonic.rs): the same contract on
    tonic with nothing on it, on a port the system picks; it has no admin
    port (its ready file says `"admin": null`)."""
    return [binary, "--grpc-addr", "127.0.0.1:0", *flags]


class BareTonic(Server):
    def __init__(self, binary, products=SEED_PRODUCTS):
        super().__init__(binary, [], argv=bare_argv(binary, "--seed-products", str(products)))


def go_peer_suite(binary, go_binary, bare_binary, seconds, rounds, bodies, sink):
    """Ours (memory store, default production profile: metrics + traces at
    10 % exported over OTLP) against the grpc-go peer and the bare tonic
    baseline, all three serving the same seed catalogue, driven by h2load with the same frames in alternating
    rounds (the order swaps each round): GetProduct at saturation (-c 16 -m
    32), ListProducts streams of 1,000 products (16 streams at a time, on
    4 connections), and the CPU time per GetProduct at a steady 10,000 calls
    a second."""
    sides = {
        "ours": lambda: Server(binary, ["--database-url", "memory", "--seed-products", str(SEED_PRODUCTS),
                                        "--otlp-endpoint", sink.endpoint],
                               {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}),
        "go": lambda: GoPeer(go_binary),
        "bare": lambda: BareTonic(bare_binary),
    }
    workloads = {
        "unary GetProduct (h2load -c16 -m32)": dict(method="GetProduct", body_path=bodies["GetProduct"]),
        f"ListProducts, {LIST_PAGE_SIZE}-product streams (h2load -c4 -m4)": dict(
            method="ListProducts", body_path=bodies["ListProducts"], clients=4, streams=4),
    }
    steady = f"CPU per call at a steady {STEADY_RATE:,} GetProduct/s (h2load --rps), µs"
    runs = {side: {name: [] for name in workloads} for side in sides}
    cpu = {side: [] for side in sides}
    rss = {side: {"idle": [], "under_load": []} for side in sides}
    startup = {side: [] for side in sides}
    answers = {}
    for round_ in range(rounds):
        # Each round starts one place later: every side goes first once in
        # three rounds.
        shift = round_ % len(sides)
        for side in list(sides)[shift:] + list(sides)[:shift]:
            server = sides[side]()
            try:
                startup[side].append(server.first_rpc_ms())
                time.sleep(0.5)
                rss[side]["idle"].append(server.rss_mb())
                if side not in answers:
                    with open(bodies["GetProduct"], "rb") as get, open(bodies["ListProducts"], "rb") as page:
                        answers[side] = (server.call("GetProduct", get.read()), server.call("ListProducts", page.read()))
                for name, workload in workloads.items():
                    result = h2load(server, seconds, **workload)
                    runs[side][name].append(result)
                    rss[side]["under_load"].append(result["rss_under_load_mb"])
                cpu[side].append(cpu_per_call(server, seconds, bodies["GetProduct"], STEADY_RATE))
            finally:
                server.stop()
    results = {
        "bare": "the same contract on tonic with nothing on it (examples/bare_tonic.rs): a HashMap of "
                "protobuf products, no layer, no telemetry, jemalloc without heap profiling",
        "go_peer": "grpc-go (Debian golang-google-grpc-dev) with go-grpc-prometheus handling-time histograms, "
                   "GOMAXPROCS = all cores",
        "ours": "memory store, default telemetry, traces at 10 % exported over OTLP",
        "seed_products": SEED_PRODUCTS,
        "rounds": rounds,
        # Byte for byte the same GetProduct answer and ListProducts page to
        # the frames h2load sends (h2load sees HTTP statuses only, and a gRPC
        # error is HTTP 200).
        "same_responses": answers["ours"] == answers["go"] == answers["bare"],
    }
    for name in workloads:
        medians = {side: statistics.median(r["rps"] for r in runs[side][name]) for side in sides}
        results[name] = {
            **{f"{side}_median_per_s": round(medians[side], 1) for side in sides},
            **{f"{side}_runs": [round(r["rps"], 1) for r in runs[side][name]] for side in sides},
            "ratio_ours_go": round(medians["ours"] / medians["go"], 3),
            "ratio_ours_bare": round(medians["ours"] / medians["bare"], 3),
        }
    medians = {side: statistics.median(us for _, us, _ in cpu[side]) for side in sides}
    results[steady] = {
        **{f"{side}_median_us": round(medians[side], 2) for side in sides},
        **{f"{side}_runs": [{"rps": round(rps), "us": round(us, 2)} for rps, us, _ in cpu[side]] for side in sides},
        "ratio_ours_go": round(medians["ours"] / medians["go"], 3),
        "ratio_ours_bare": round(medians["ours"] / medians["bare"], 3),
    }
    results["write system calls per call at the steady rate"] = {
        f"{side}_median": round(statistics.median(writes for _, _, writes in cpu[side]), 2) for side in sides
    }
    for side in sides:
        results[f"{side}_rss_idle_mb"] = round(statistics.median(rss[side]["idle"]), 1)
        results[f"{side}_rss_under_load_mb"] = round(max(rss[side]["under_load"]), 1)
        results[f"{side}_startup_to_first_rpc_ms"] = round(statistics.median(startup[side]), 1)
    return results


def print_side_by_side(results):
    """The side-by-side section as a table, on stderr (stdout is the JSON)."""
    rows = [(name, f"{r['ours_median_per_s']:,.0f}/s", f"{r['go_median_per_s']:,.0f}/s",
             f"{r['bare_median_per_s']:,.0f}/s", f"{r['ratio_ours_go']:.2f}", f"{r['ratio_ours_bare']:.2f}")
            if "ours_median_per_s" in r else
            (name, f"{r['ours_median_us']:.1f} µs", f"{r['go_median_us']:.1f} µs", f"{r['bare_median_us']:.1f} µs",
             f"{r['ratio_ours_go']:.2f}", f"{r['ratio_ours_bare']:.2f}")
            for name, r in results.items() if isinstance(r, dict) and "ratio_ours_go" in r]
    writes = results["write system calls per call at the steady rate"]
    rows.append(("write system calls per call", *(f"{writes[f'{side}_median']:.2f}" for side in ("ours", "go", "bare")),
                 "", ""))
    for label, key in (("RSS idle", "rss_idle_mb"), ("RSS under load (peak)", "rss_under_load_mb")):
        ours, go, bare = (results[f"{side}_{key}"] for side in ("ours", "go", "bare"))
        rows.append((label, f"{ours} MB", f"{go} MB", f"{bare} MB", f"{ours / go:.2f}", f"{ours / bare:.2f}"))
    header = (f"side by side, median of {results['rounds']} round(s)", "ours", "grpc-go", "bare tonic", "ours/go",
              "ours/bare")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)), file=sys.stderr)
    if not results["same_responses"]:
        print("warning: ours and the Go peer did not give the same responses", file=sys.stderr)


def commit():
    """The checked-out commit, `+dirty` when the tree has changes."""
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def machine():
    """Cores, memory and kernel of this machine."""
    memory = harness.read("/proc/meminfo").split("\n", 1)[0].split()
    gib = f", {int(memory[1]) / 1024 / 1024:.0f} GiB" if len(memory) > 1 else ""
    return f"{os.cpu_count()} cores{gib}, Linux {os.uname().release}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--quick", action="store_true", help="shorter runs, one round")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--only", action="append", choices=SECTIONS,
                        help="run only this section (repeatable); all of them by default")
    parser.add_argument("--go-peer", default="target/go-peer/catalogue-go",
                        help="the grpc-go peer's binary (go-peer/build.sh)")
    parser.add_argument("--bare", default="target/release/examples/bare_tonic",
                        help="the bare tonic baseline (cargo build --release --example bare_tonic)")
    args = parser.parse_args()
    sections = args.only or SECTIONS
    seconds = 4 if args.quick else 10
    rounds = 1 if args.quick else 3
    bodies = {}
    for method, body in (("GetProduct", get_product_body()), ("ListProducts", list_products_body())):
        with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as file:
            file.write(body)
        bodies[method] = file.name
    sink = OtlpSink()
    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit(),
               "machine": machine()}
    if "memory" in sections:
        results["memory store"] = store_suite(args.binary, "memory", seconds, bodies["GetProduct"])
    if "sqlite" in sections:
        results["sqlite store"] = store_suite(args.binary, f"sqlite://{tempfile.mkdtemp()}/bench.db", seconds,
                                              bodies["GetProduct"])
    if "observability" in sections:
        results["cost of observability (h2load -c16 -m32, memory store)"] = observability_suite(
            args.binary, max(seconds - 2, 4), rounds, bodies["GetProduct"], sink)
        results["the trace cost in pairs (two servers loaded at once)"] = paired_suite(
            args.binary, 3 if args.quick else 5, 2 if args.quick else 10, bodies["GetProduct"], sink)
    if "go-peer" in sections:
        results["side by side with grpc-go"] = go_peer_suite(args.binary, args.go_peer, args.bare, seconds, rounds,
                                                                 bodies, sink)
    if "footprint" in sections:
        results["memory footprint"] = footprint_suite(args.binary, seconds)
    results["otlp_exports_received"] = sink.exports
    for path in bodies.values():
        os.unlink(path)
    print(json.dumps(results, indent=2))
    if "side by side with grpc-go" in results:
        print_side_by_side(results["side by side with grpc-go"])
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    sys.exit(main())
