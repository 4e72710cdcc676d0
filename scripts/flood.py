"""The overload experiment on both runtimes: a flood of GetProduct calls, far
beyond capacity, against a service whose every call waits on a 10-second
inventory upstream, run against

  go           the grpc-go peer (go-peer/, -upstream): a goroutine per
               call, no bulkhead, no breaker, no shedding;
  protected    the catalogue with its defaults;
  unprotected  the catalogue with --no-protection;

each under the same memory cap (a cgroup v1 memory group), with the number
of calls in flight rising in steps (default 1,000, 5,000, 20,000, 10 s each).

For each run: the upstream simulator (10 s latency) and the server start on
loopback; each step is a closed-loop `catalogue load --mix get=1
--concurrency N` (2 s deadline, no retries, one connection per 150 calls so
that the catalogue's 200 streams per connection never bind); the server's
RSS, threads, goroutines or tasks and calls in flight are sampled twice a
second; a second `catalogue load --mix health=1 --rps 20` measures health
checks on the gRPC port through the whole flood, and for the catalogue a
third the same on its health lane (`--health-addr`, what Kubernetes
probes). Scheduling latency is each runtime's own
metric over the step: Go's go_sched_latencies_seconds histogram (p99 and
mean), and for Tokio its tokio_schedule_latency_seconds histogram (p99) and
the per-RPC mean scheduling delay from tokio-metrics
(tokio_task_scheduled_seconds_total / tokio_task_scheduled_total). Then the upstream
heals (5 ms) and the recovery is timed: until live stock is served again
(breaker closed too, for the catalogue).

Usage: python3 scripts/flood.py BINARY [--go-peer PATH] [--runs go,protected,unprotected]
       [--steps 1000,5000,20000] [--step-seconds 10] [--connections N] [--repeat N]
       [--memory-cap-mb N] [--json FILE] [--plot FILE.png]
The full-speed flood alone (200 connections, 100 calls in flight on each,
20 s): --runs protected --steps 20000 --step-seconds 20 --connections 200.
A single run of one server: BINARY [--no-protection]
[--duration S] [--concurrency N] [--connections N].
Prints one table, the runs side by side (medians when --repeat > 1), and
the same as JSON on the last line.
"""

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

CGROUP_ROOT = "/sys/fs/cgroup/memory"
RUN_NAMES = {"go": "Go peer (grpc-go)", "protected": "catalogue (defaults)",
             "unprotected": "catalogue --no-protection"}
# The catalogue's max_concurrent_streams is 200: fewer calls per connection.
CALLS_PER_CONNECTION = 150


def scrape(admin):
    try:
        with urllib.request.urlopen(f"http://{admin}/metrics", timeout=3) as response:
            text = response.read().decode()
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name_labels, _, value = line.rpartition(" ")
        try:
            values[name_labels] = float(value)
        except ValueError:
            pass
    return values


def metric(values, name, **labels):
    total = 0.0
    for key, value in values.items():
        if key == name or key.startswith(name + "{"):
            if all(f'{label}="{want}"' in key for label, want in labels.items()):
                total += value
    return total


def buckets(values, name):
    """Cumulative histogram buckets {le: count} of an unlabelled histogram."""
    result = {}
    for key, value in values.items():
        if key.startswith(name + "_bucket{"):
            le = re.search(r'le="([^"]+)"', key).group(1)
            result[float(le)] = result.get(float(le), 0) + value
    return result


def quantile(q, before, after):
    """histogram_quantile over the increase of cumulative buckets, as
    Prometheus interpolates it (linearly inside the bucket), and the bounds
    of the bucket it falls in: (value, lower, upper), or None."""
    increase = sorted((le, after.get(le, 0) - before.get(le, 0)) for le in after)
    if not increase or increase[-1][1] <= 0:
        return None
    rank = q * increase[-1][1]
    lower_le, lower_count = 0.0, 0.0
    for le, count in increase:
        if count >= rank:
            if math.isinf(le):
                return lower_le, lower_le, le
            value = lower_le + (le - lower_le) * (rank - lower_count) / max(count - lower_count, 1e-12)
            return value, lower_le, le
        lower_le, lower_count = le, count
    return None


def process_sample(pid):
    return {"rss_mb": harness.status_mb(pid, "VmRSS").get("VmRSS", 0.0), "threads": harness.threads(pid),
            "fds": harness.open_fds(pid)}


class MemoryCap:
    """A cgroup v1 memory group capped at `megabytes`, holding one process."""

    def __init__(self, pid, megabytes):
        self.group = f"{CGROUP_ROOT}/catalogue-flood-{pid}"
        try:
            os.makedirs(self.group, exist_ok=True)
            self.write("memory.limit_in_bytes", megabytes * 1024 * 1024)
            self.write("cgroup.procs", pid)
        except OSError as error:
            print(f"warning: no memory cgroup ({error}); the run is not capped", file=sys.stderr)
            self.group = None

    def write(self, name, value):
        with open(f"{self.group}/{name}", "w") as file:
            file.write(str(value))

    def read(self, name):
        try:
            with open(f"{self.group}/{name}") as file:
                return file.read()
        except (OSError, TypeError):
            return ""

    def state(self):
        oom = re.search(r"oom_kill (\d+)", self.read("memory.oom_control"))
        return {
            "cgroup_peak_mb": round(int(self.read("memory.max_usage_in_bytes") or 0) / 2**20, 1),
            "cap_failcnt": int(self.read("memory.failcnt") or 0),
            "oom_kills": int(oom.group(1)) if oom else 0,
        }

    def remove(self):
        if self.group:
            try:
                os.rmdir(self.group)
            except OSError:
                pass


def put(url, body):
    request = urllib.request.Request(url, data=body.encode(), method="PUT")
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()


class Run:
    """One server under the stepped flood."""

    def __init__(self, kind, args, logs):
        self.kind, self.args, self.logs = kind, args, f"{logs}/{kind}"
        os.makedirs(self.logs, exist_ok=True)
        self.processes = []
        self.cap = None

    def spawn(self, command, log=None, **kwargs):
        out = open(f"{self.logs}/{log}", "w") if log else subprocess.DEVNULL
        process = subprocess.Popen(command, stdout=kwargs.pop("stdout", out), stderr=subprocess.STDOUT
                                   if log else subprocess.DEVNULL, **kwargs)
        self.processes.append(process)
        return process

    def serve(self, argv, name, on_spawn=None):
        server = harness.Server(argv, log=f"{self.logs}/{name}.log", on_spawn=on_spawn)
        self.processes.append(server.process)
        return server

    def start(self):
        binary = self.args.binary
        upstream = self.serve(harness.upstream_argv(binary, "--latency-ms", "10000"), "upstream")
        self.upstream_grpc, self.upstream_admin = upstream.grpc, upstream.admin
        if self.kind == "go":
            command = harness.go_peer_argv(self.args.go_peer, "-upstream", self.upstream_grpc)
        else:
            command = harness.serve_argv(binary, "--database-url", "memory",
                                         "--upstream-url", f"http://{self.upstream_grpc}")
            if self.kind == "protected":
                # One load generator on one IP stands for the many clients
                # of the experiment: the per-client bounds would otherwise
                # cap it at 256 connections and 768 calls.
                command += ["--max-connections-per-peer", "4096", "--max-calls-per-peer", "1024"]
            if self.kind == "unprotected":
                command.append("--no-protection")
        def cap(process):
            self.cap = MemoryCap(process.pid, self.args.memory_cap_mb)

        served = self.serve(command, "server", on_spawn=cap)
        self.server = served.process
        self.grpc, self.admin = served.grpc, served.admin
        self.target = f"http://{self.grpc}"
        # The catalogue's health lane; the Go peer has none.
        self.lane = getattr(served, "health", None) and f"http://{served.health}"

    def load(self, *flags, stdout=subprocess.PIPE, target=None):
        return self.spawn([self.args.binary, "load", "--target", target or self.target, *flags], stdout=stdout)

    def alive(self):
        return self.server.poll() is None

    def runtime_sample(self, values):
        if self.kind == "go":
            return {"tasks": metric(values, "go_sched_goroutines_goroutines"),
                    "in_flight": metric(values, "grpc_server_started_total", grpc_method="GetProduct")
                    - metric(values, "grpc_server_handled_total", grpc_method="GetProduct")}
        return {"tasks": metric(values, "tokio_alive_tasks"),
                "in_flight": metric(values, "grpc_server_in_flight_requests", grpc_method="GetProduct")}

    def sched_latency(self, before, after):
        """Scheduling latency over a step in seconds, from the runtime's own
        metric: Go's histogram gives p99 and a mean (its _sum / _count);
        Tokio's schedule-latency histogram a p99 (it has no _sum) and its
        per-RPC delay counters a mean."""
        def ratio(total, count):
            increase = metric(after, count) - metric(before, count)
            return (metric(after, total) - metric(before, total)) / increase if increase > 0 else None

        if self.kind == "go":
            name = "go_sched_latencies_seconds"
            p99 = quantile(0.99, buckets(before, name), buckets(after, name))
            return {"p99": p99 and p99[0], "p99_bucket": p99 and p99[1:],
                    "mean": ratio(f"{name}_sum", f"{name}_count")}
        name = "tokio_schedule_latency_seconds"
        p99 = quantile(0.99, buckets(before, name), buckets(after, name))
        mean = ratio("tokio_task_scheduled_seconds_total", "tokio_task_scheduled_total")
        return {"p99": p99 and p99[0], "p99_bucket": p99 and p99[1:], "mean": mean}

    def live_answers(self, values):
        if self.kind == "go":
            return metric(values, "grpc_client_handled_total", grpc_method="GetStock", grpc_code="OK")
        return metric(values, "catalogue_upstream_requests_total", outcome="ok")

    def recovered(self, values, ok_before):
        closed = self.kind == "go" or metric(values, "catalogue_upstream_circuit_state") == 0
        return closed and self.live_answers(values) > ok_before

    def flood(self):
        args = self.args
        total = len(args.steps) * args.step_seconds
        probe = ("--mix", "health=1", "--rps", "20", "--connections", "1",
                 "--duration", f"{total + 2}s", "--deadline", "5s", "--json")
        health = self.load(*probe)
        lane = self.lane and self.load(*probe, target=self.lane)
        idle = process_sample(self.server.pid)
        peak = dict(idle, tasks=0.0, in_flight=0.0)
        samples, steps = [], []
        started = time.monotonic()
        for concurrency in args.steps:
            if not self.alive():
                steps.append({"concurrency": concurrency, "server_died": True})
                continue
            connections = min(1024, max(args.connections, math.ceil(concurrency / CALLS_PER_CONNECTION)))
            before = scrape(self.admin)
            flood = self.load("--retries", "0", "--mix", "get=1", "--concurrency", str(concurrency),
                              "--connections", str(connections), "--duration", f"{args.step_seconds}s",
                              "--deadline", args.deadline, "--json")
            step_peak = {}
            while flood.poll() is None and self.alive():
                try:
                    sample = process_sample(self.server.pid)
                except OSError:
                    break
                sample.update(self.runtime_sample(scrape(self.admin)))
                sample.update(t=round(time.monotonic() - started, 2), step=concurrency)
                samples.append(sample)
                step_peak = {key: max(step_peak.get(key, 0), value) for key, value in sample.items()
                             if key not in ("t", "step")}
                time.sleep(0.5)
            if not self.alive():
                flood.kill()
            summary = json.loads(flood.communicate()[0] or "{}")
            after = scrape(self.admin)
            latency = self.sched_latency(before, after) if after else {}
            calls = summary.get("calls", {}).get("GetProduct", {})
            seconds = args.step_seconds
            steps.append({
                "concurrency": concurrency, "connections": connections,
                "ok_per_s": round(calls.get("OK", 0) / seconds, 1),
                "calls_per_s": round(sum(calls.values()) / seconds, 1),
                "calls_by_code": calls,
                "rss_peak_mb": round(step_peak.get("rss_mb", 0), 1),
                "tasks_peak": step_peak.get("tasks", 0),
                "in_flight_peak": step_peak.get("in_flight", 0),
                "threads_peak": step_peak.get("threads", 0),
                **{f"sched_{kind}_ms": None if latency.get(kind) is None else round(latency[kind] * 1000, 3)
                   for kind in ("p99", "mean")},
                "sched_p99_bucket_ms": [round(bound * 1000, 3) for bound in latency.get("p99_bucket") or []],
                "server_died": not self.alive(),
            })
            peak = {key: max(peak.get(key, 0), step_peak.get(key, 0)) for key in peak}
        health_summary = json.loads(health.communicate()[0] or "{}")
        health_calls = health_summary.get("calls", {}).get("Health/Check", {})
        lane_summary = json.loads(lane.communicate()[0] or "{}") if lane else {}
        lane_calls = lane_summary.get("calls", {}).get("Health/Check", {})

        recovery_s = None
        if self.alive():
            ok_before = self.live_answers(scrape(self.admin))
            healed_at = time.monotonic()
            put(f"http://{self.upstream_admin}/faults", '{"latency_ms": 5}')
            probe = self.load("--mix", "get=1", "--rps", "50", "--duration", "60s", stdout=subprocess.DEVNULL)
            while time.monotonic() - healed_at < self.args.recovery_timeout and self.alive():
                if self.recovered(scrape(self.admin), ok_before):
                    recovery_s = time.monotonic() - healed_at
                    break
                time.sleep(0.25)
            probe.terminate()
        memory = self.cap.state() if self.cap else {}
        survived = self.alive()
        return {
            "run": self.kind,
            "server_survived": survived,
            "memory_cap_mb": self.args.memory_cap_mb,
            "hit_cap": (not survived) or memory.get("cap_failcnt", 0) > 0 or memory.get("oom_kills", 0) > 0,
            **memory,
            "rss_idle_mb": round(idle["rss_mb"], 1),
            "rss_peak_mb": round(peak["rss_mb"], 1),
            "tasks_peak": peak["tasks"],
            "in_flight_peak": peak["in_flight"],
            "threads_peak": peak["threads"],
            "steps": steps,
            "health_p50_ms": health_summary.get("latency_ms", {}).get("p50"),
            "health_p99_ms": health_summary.get("latency_ms", {}).get("p99"),
            "health_calls": health_calls,
            "health_failed": sum(v for k, v in health_calls.items() if k != "OK"),
            "lane_health_p50_ms": lane_summary.get("latency_ms", {}).get("p50"),
            "lane_health_p99_ms": lane_summary.get("latency_ms", {}).get("p99"),
            "lane_health_calls": lane_calls,
            "lane_health_failed": sum(v for k, v in lane_calls.items() if k != "OK") if lane else None,
            "recovery_s": None if recovery_s is None else round(recovery_s, 2),
            "samples": samples,
        }

    def stop(self):
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.cap:
            self.cap.remove()


def median(values):
    values = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return round(statistics.median(values), 3) if values else None


def combine(results):
    """The median of each number over repeated runs of one kind; booleans:
    true if any was."""
    first = results[0]
    out = {"run": first["run"], "repeats": len(results)}
    for key, value in first.items():
        if key in ("run", "steps", "samples", "health_calls", "lane_health_calls"):
            continue
        if isinstance(value, bool):
            out[key] = any(r[key] for r in results)
        else:
            out[key] = median([r.get(key) for r in results])
    out["server_survived"] = all(r["server_survived"] for r in results)
    out["steps"] = []
    for index, step in enumerate(first["steps"]):
        combined = {"concurrency": step["concurrency"]}
        for key in ("ok_per_s", "calls_per_s", "rss_peak_mb", "tasks_peak", "in_flight_peak",
                    "threads_peak", "sched_p99_ms", "sched_mean_ms"):
            combined[key] = median([r["steps"][index].get(key) for r in results if index < len(r["steps"])])
        combined["sched_p99_bucket_ms"] = step.get("sched_p99_bucket_ms")
        combined["server_died"] = any(r["steps"][index].get("server_died") for r in results
                                      if index < len(r["steps"]))
        out["steps"].append(combined)
    out["samples"] = [sample for r in results for sample in r["samples"]]
    out["kb_per_call"] = slope(results)
    return out


def slope(results):
    """RSS per call in flight at the server, in KB: the least-squares slope
    of each step's peak RSS against its peak calls in flight (and the idle
    RSS at none), over every repeat; None without two distinct points."""
    points = []
    for result in results:
        points.append((0, result["rss_idle_mb"]))
        points += [(step["in_flight_peak"], step["rss_peak_mb"]) for step in result["steps"]
                   if step.get("in_flight_peak") is not None and step.get("rss_peak_mb")]
    if len({x for x, _ in points}) < 2:
        return None
    fit = statistics.linear_regression([x for x, _ in points], [y for _, y in points])
    return round(fit.slope * 1024, 2)


def fmt(value, unit="", digits=1):
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer() and digits <= 1:
        value = int(value)
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value:,}{unit}"


def table(runs, args):
    header = ["", *(RUN_NAMES[run["run"]] for run in runs)]
    rows = []
    for index, concurrency in enumerate(args.steps):
        rows.append([f"**{concurrency:,} calls in flight**", *[""] * len(runs)])
        step = [run["steps"][index] if index < len(run["steps"]) else {} for run in runs]
        rows.append(["calls answered OK per second (all codes)",
                     *(f"{fmt(s.get('ok_per_s'))} ({fmt(s.get('calls_per_s'))})" for s in step)])
        rows.append(["peak RSS", *(fmt(s.get("rss_peak_mb"), " MB") for s in step)])
        rows.append(["peak goroutines / tasks", *(fmt(s.get("tasks_peak")) for s in step)])
        rows.append(["peak calls in flight at the server", *(fmt(s.get("in_flight_peak")) for s in step)])
        rows.append(["scheduling latency p99 (Go: go_sched_latencies_seconds; Tokio: tokio_schedule_latency_seconds)",
                     *(p99_cell(s) for s in step)])
        rows.append(["scheduling latency mean (Go: the same histogram; Tokio: per-RPC delay)",
                     *(fmt(s.get("sched_mean_ms"), " ms", 3) for s in step)])
        rows.append(["server died", *(fmt(s.get("server_died")) for s in step)])
    rows.append(["**whole run**", *[""] * len(runs)])
    rows.append(["health check p50 / p99, gRPC port",
                 *(f"{fmt(r['health_p50_ms'], ' ms')} / {fmt(r['health_p99_ms'], ' ms')}" for r in runs)])
    rows.append(["health check p50 / p99, health lane",
                 *(f"{fmt(r.get('lane_health_p50_ms'), ' ms')} / {fmt(r.get('lane_health_p99_ms'), ' ms')}"
                   for r in runs)])
    rows.append(["failed health probes, gRPC port / health lane",
                 *(f"{fmt(r['health_failed'])} / {fmt(r.get('lane_health_failed'))}" for r in runs)])
    rows.append([f"hit the {args.memory_cap_mb} MiB cap (cgroup peak)",
                 *(f"{fmt(r['hit_cap'])} ({fmt(r.get('cgroup_peak_mb'), ' MB')})" for r in runs)])
    rows.append(["recovery after the upstream heals",
                 *(fmt(r["recovery_s"], " s", 2) if r["recovery_s"] is not None or not r["server_survived"]
                   else f"none in {args.recovery_timeout} s" for r in runs)])
    rows.append(["RSS per call in flight (least-squares slope)", *(fmt(r.get("kb_per_call"), " KB", 1) for r in runs)])
    rows.append(["… at 100M calls in flight", *(at_seed_scale(r) for r in runs)])
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(str(cell).ljust(width) for cell, width in zip(header, widths)) + " |",
             "|" + "|".join("-" * (width + 2) for width in widths) + "|"]
    lines += ["| " + " | ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) + " |" for row in rows]
    return "\n".join(lines)


def p99_cell(step):
    """Go's p99 with the bucket it falls in (client_golang 1.14's buckets
    are powers of ten apart); past the last finite bound only a floor."""
    bucket = step.get("sched_p99_bucket_ms")
    if not bucket:
        return fmt(step.get("sched_p99_ms"), " ms", 1)
    if math.isinf(bucket[1]):
        return f"> {bucket[0]:,.1f} ms (top bucket)"
    return f"{fmt(step.get('sched_p99_ms'), ' ms', 1)} (bucket {bucket[0]:,.1f}–{bucket[1]:,.1f})"


def at_seed_scale(run):
    """The slope times 100 million calls in flight."""
    if run["run"] == "protected":
        return "never held: sheds beyond --max-concurrent-calls"
    if run.get("kb_per_call") is None:
        return "—"
    gigabytes = run["kb_per_call"] * 1e8 / 2**20
    return f"{gigabytes / 1024:,.1f} TB" if gigabytes >= 1024 else f"{gigabytes:,.0f} GB"


def plot(runs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (memory, latency) = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = {"go": ("tab:blue", "o"), "protected": ("tab:green", "s"), "unprotected": ("tab:red", "^")}
    for run in runs:
        color, marker = styles[run["run"]]
        label = RUN_NAMES[run["run"]]
        samples = [s for s in run["samples"] if "rss_mb" in s]
        memory.scatter([s.get("in_flight", 0) for s in samples], [s["rss_mb"] for s in samples],
                       s=8, alpha=0.35, color=color)
        steps = [s for s in run["steps"] if s.get("in_flight_peak") is not None]
        memory.plot([s["in_flight_peak"] for s in steps], [s["rss_peak_mb"] for s in steps],
                    marker=marker, color=color, label=label)
        for kind, line in (("mean", "-"), ("p99", ":")):
            points = [s for s in run["steps"] if s.get(f"sched_{kind}_ms")]
            if points:
                what = kind if run["run"] == "go" else "per-RPC mean"
                latency.plot([s["concurrency"] for s in points], [s[f"sched_{kind}_ms"] for s in points],
                             marker=marker, linestyle=line, color=color, label=f"{label} ({what})")
    memory.set(xlabel="calls in flight at the server (sampled; line: each step's peak)", ylabel="RSS (MB)",
               title="Memory against calls in flight")
    latency.set(xlabel="calls in flight (client concurrency)", ylabel="scheduling latency (ms)",
                title="Scheduling latency, each runtime's own metric", xscale="log", yscale="log")
    for axes in (memory, latency):
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"plot: {path}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary", nargs="?", help="the catalogue binary")
    parser.add_argument("--go-peer", default="target/go-peer/catalogue-go")
    parser.add_argument("--runs", default="go,protected,unprotected")
    parser.add_argument("--steps", default="1000,5000,20000", help="calls in flight, one step each")
    parser.add_argument("--step-seconds", type=int, default=10)
    parser.add_argument("--deadline", default="2s", help="each call's deadline")
    parser.add_argument("--connections", type=int, default=8,
                        help=f"at least; one more per {CALLS_PER_CONNECTION} calls in flight")
    parser.add_argument("--memory-cap-mb", type=int, default=1024)
    parser.add_argument("--recovery-timeout", type=int, default=60,
                        help="seconds to wait for live stock after the upstream heals")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each kind; the table shows medians")
    parser.add_argument("--json", help="write every result, samples included, to this file")
    parser.add_argument("--plot", help="draw memory and scheduling latency against calls in flight (PNG)")
    parser.add_argument("--from-json", help="print the table (and --plot) of a run saved with --json, running nothing")
    # The single-run form of the first version of this script.
    parser.add_argument("--no-protection", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.no_protection:
        args.runs = "unprotected"
    if args.concurrency:
        args.steps = str(args.concurrency)
    if args.duration:
        args.step_seconds = args.duration
    args.steps = [int(step) for step in args.steps.split(",")]
    if args.from_json:
        with open(args.from_json) as file:
            saved = json.load(file)
        for key in ("steps", "step_seconds", "deadline", "memory_cap_mb", "repeat", "recovery_timeout"):
            if key in saved["args"]:
                setattr(args, key, saved["args"][key])
        report({kind: results for kind, results in saved["runs"].items()}, args)
        return
    if not args.binary:
        parser.error("the catalogue binary is required")
    kinds = args.runs.split(",")
    for kind in kinds:
        if kind not in RUN_NAMES:
            parser.error(f"unknown run {kind!r}: go, protected or unprotected")
    if "go" in kinds and not os.access(args.go_peer, os.X_OK):
        parser.error(f"{args.go_peer} missing: go-peer/build.sh builds it")

    logs = tempfile.mkdtemp(prefix="catalogue-flood-")
    results = {kind: [] for kind in kinds}
    for repeat in range(args.repeat):
        for kind in kinds:
            run = Run(kind, args, f"{logs}/{repeat}")
            print(f"== {RUN_NAMES[kind]} (repeat {repeat + 1}/{args.repeat})", file=sys.stderr)
            try:
                run.start()
                results[kind].append(run.flood())
            finally:
                run.stop()
            last = results[kind][-1]
            print(f"   survived {last['server_survived']}, peak RSS {last['rss_peak_mb']} MB, "
                  f"recovery {last['recovery_s']} s", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"args": vars(args), "runs": results}, file, indent=1)
    report(results, args)


def report(results, args):
    runs = [combine(results[kind]) for kind in results if results[kind]]
    print(f"Flood: 10 s upstream, steps {', '.join(f'{s:,}' for s in args.steps)} calls in flight, "
          f"{args.step_seconds} s each, {args.deadline} deadline, no retries, memory cap {args.memory_cap_mb} MiB"
          + (f"; medians of {args.repeat} runs" if args.repeat > 1 else ""))
    print(table(runs, args))
    if args.plot:
        plot(runs, args.plot)
    print(json.dumps([{k: v for k, v in run.items() if k != "samples"} for run in runs]))


if __name__ == "__main__":
    main()
