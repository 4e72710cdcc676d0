"""What the live view costs the service: a build without the route, the
same build as the candidate with no page open (dormant), and with one page
reading `/debug/live/feed`. h2load saturates GetProduct on the memory store
(-c16 -m32, as scripts/bench.py's observability section does), then sends
it at a steady 10,000 calls/s; the server's CPU time per call is read from
/proc/PID/stat around each run. Runtime metrics stay on (the default): the
feed renders the whole exposition once a second, runtime families and all.

Usage: python scripts/live-view-cost.py BASELINE CANDIDATE [--rounds N] [--seconds S]
  BASELINE   a release build without /debug/live
  CANDIDATE  a release build with it

Configurations run in alternating order each round (ABBA); medians and
ratios to the baseline are printed as JSON. Needs h2load and grpcio (what
bench.py needs: scripts/setup.sh).
"""

import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import bench  # noqa: E402

FLAGS = ["--database-url", "memory"]


class Viewer(threading.Thread):
    """One page's worth of feed: reads every event until the server goes."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.url = f"http://{server.admin}/debug/live/feed"
        self.bytes = 0

    def run(self):
        try:
            with urllib.request.urlopen(self.url, timeout=30) as feed:
                while chunk := feed.read1(65536):
                    self.bytes += len(chunk)
        except (OSError, http.client.HTTPException):
            pass  # the server stopped


def run(binary, viewer, seconds, body_path):
    """A fresh server: saturated calls per second, then CPU microseconds per
    call at the steady rate, and the feed's bytes per second when watched."""
    server = bench.Server(binary, FLAGS, {})
    try:
        watching = None
        if viewer:
            watching = Viewer(server)
            watching.start()
        saturated = bench.h2load(server, seconds, body_path)["rps"]
        start_bytes = watching.bytes if watching else 0
        _, cpu_us, _ = bench.cpu_per_call(server, seconds, body_path, bench.STEADY_RATE)
        feed_rate = (watching.bytes - start_bytes) / (seconds + 1) if watching else 0
        return saturated, cpu_us, feed_rate
    finally:
        server.stop()


def scrape_cost(binary, body_path, scrapes=1000):
    """Server CPU microseconds per `/metrics` scrape, once every method's
    and the runtime's series exist: an upper bound on one feed sample (the
    same render, less the HTTP request), which a viewer costs once a second.
    Precise where the rounds are not: 1,000 scrapes against a 10 ms clock."""
    server = bench.Server(binary, FLAGS, {})
    try:
        bench.h2load(server, 2, body_path)
        url = f"http://{server.admin}/metrics"
        before = server.cpu_seconds()
        for _ in range(scrapes):
            with urllib.request.urlopen(url, timeout=10) as response:
                response.read()
        return (server.cpu_seconds() - before) / scrapes * 1e6
    finally:
        server.stop()


def main():
    parser = bench.comparison_arguments("candidate", seconds=8)
    args = parser.parse_args()
    configurations = {
        "without the route (baseline)": (args.baseline, False),
        "no viewer": (args.candidate, False),
        "one viewer": (args.candidate, True),
    }
    with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as file:
        file.write(bench.get_product_body())
    rps = {name: [] for name in configurations}
    cpu = {name: [] for name in configurations}
    feed = []
    try:
        for round_number in range(args.rounds):
            order = list(configurations.items())
            if round_number % 2:
                order.reverse()
            for name, (binary, viewer) in order:
                calls, micros, feed_rate = run(binary, viewer, args.seconds, file.name)
                rps[name].append(round(calls))
                cpu[name].append(round(micros, 2))
                if viewer:
                    feed.append(round(feed_rate))
        sample_us = scrape_cost(args.candidate, file.name)
    finally:
        os.unlink(file.name)
    print(json.dumps({
        "scrape_cpu_us": round(sample_us),
        "one_viewer_share_of_a_core": round(sample_us / 1e6, 5),
        "rounds": args.rounds,
        "seconds": args.seconds,
        "steady_rate": bench.STEADY_RATE,
        "feed_bytes_per_second": round(statistics.median(feed)) if feed else None,
        "configurations": bench.versus_baseline(rps, cpu, "without the route (baseline)"),
    }, indent=2))


if __name__ == "__main__":
    sys.exit(main())
