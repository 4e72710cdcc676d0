"""The overload experiment: a flood of GetProduct calls, far beyond capacity,
against a service whose every call waits on a 10-second inventory upstream.

Starts the upstream simulator (10 s latency), the service (memory store) and a
flood from `catalogue load`, all on loopback, for a bounded time; samples the
server's RSS, threads, file descriptors and Tokio tasks; measures health-check
latency during the flood with a second `catalogue load --mix health=1`; then
heals the upstream and measures the time until live stock is served again.

Usage: python3 scripts/flood.py BINARY [--no-protection] [--duration S]
       [--concurrency N] [--connections N] [--memory-cap-mb N]
Prints a table, and the same as JSON on the last line.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

CGROUP_ROOT = "/sys/fs/cgroup/memory"


def wait_for_addresses(log_path, keys, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = open(log_path).read()
        found = {key: re.search(rf'"{key}":"([^"]+)"', text) for key in keys}
        if all(found.values()):
            return {key: match.group(1) for key, match in found.items()}
        time.sleep(0.1)
    raise SystemExit(f"did not start; log:\n{open(log_path).read()}")


def metrics(admin):
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
        values[name_labels] = float(value)
    return values


def metric(values, name, **labels):
    total = 0.0
    for key, value in values.items():
        if key == name or key.startswith(name + "{"):
            if all(f'{label}="{want}"' in key for label, want in labels.items()):
                total += value
    return total


def process_sample(pid):
    sample = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                sample["rss_mb"] = int(line.split()[1]) / 1024
            elif line.startswith("Threads:"):
                sample["threads"] = int(line.split()[1])
    sample["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return sample


def memory_cap(pid, megabytes):
    """Puts the process in a memory cgroup capped at `megabytes` (cgroup v1)."""
    group = f"{CGROUP_ROOT}/catalogue-flood-{pid}"
    try:
        os.makedirs(group, exist_ok=True)
        with open(f"{group}/memory.limit_in_bytes", "w") as limit:
            limit.write(str(megabytes * 1024 * 1024))
        with open(f"{group}/cgroup.procs", "w") as procs:
            procs.write(str(pid))
        return group
    except OSError as error:
        print(f"warning: no memory cgroup ({error}); the unprotected run is not capped", file=sys.stderr)
        return None


def put(url, body):
    request = urllib.request.Request(url, data=body.encode(), method="PUT")
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--no-protection", action="store_true")
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=4000)
    parser.add_argument("--connections", type=int, default=40)
    parser.add_argument("--memory-cap-mb", type=int, default=1024)
    args = parser.parse_args()
    logs = tempfile.mkdtemp(prefix="catalogue-flood-")
    processes = []
    group = None
    try:
        upstream_log = f"{logs}/upstream.log"
        upstream = subprocess.Popen(
            [args.binary, "upstream", "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--latency-ms", "10000"],
            stdout=open(upstream_log, "w"), stderr=subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1"},
        )
        processes.append(upstream)
        # The simulator logs in text: read its addresses from that line.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = re.sub(r"\x1b\[[0-9;]*m", "", open(upstream_log).read())
            grpc = re.search(r"grpc=(\S+)", text)
            admin = re.search(r"admin=(\S+)", text)
            if grpc and admin:
                upstream_grpc, upstream_admin = grpc.group(1), admin.group(1)
                break
            time.sleep(0.1)
        else:
            raise SystemExit(f"upstream did not start:\n{open(upstream_log).read()}")

        server_log = f"{logs}/server.log"
        command = [
            args.binary, "serve", "--database-url", "memory", "--log-format", "json",
            "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
            "--upstream-url", f"http://{upstream_grpc}",
        ]
        if args.no_protection:
            command.append("--no-protection")
        server = subprocess.Popen(command, stdout=open(server_log, "w"), stderr=subprocess.STDOUT)
        processes.append(server)
        addresses = wait_for_addresses(server_log, ["grpc", "admin"])
        if args.no_protection:
            group = memory_cap(server.pid, args.memory_cap_mb)

        target = f"http://{addresses['grpc']}"
        admin = addresses["admin"]
        idle = process_sample(server.pid)
        flood = subprocess.Popen(
            [args.binary, "load", "--target", target, "--retries", "0", "--mix", "get=1", "--concurrency", str(args.concurrency),
             "--connections", str(args.connections), "--duration", f"{args.duration}s", "--deadline", "2s", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        health = subprocess.Popen(
            [args.binary, "load", "--target", target, "--mix", "health=1", "--rps", "20", "--connections", "1",
             "--duration", f"{args.duration}s", "--deadline", "5s", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        processes += [flood, health]
        peak = dict(idle, tasks=0.0)
        server_died = False
        while flood.poll() is None:
            if server.poll() is not None:
                server_died = True
                break
            sample = process_sample(server.pid)
            sample["tasks"] = metric(metrics(admin), "tokio_alive_tasks")
            peak = {key: max(peak.get(key, 0), value) for key, value in sample.items()}
            time.sleep(0.5)
        flood_summary = json.loads(flood.communicate()[0] or "{}")
        health_summary = json.loads(health.communicate()[0] or "{}")
        after = metrics(admin)

        recovery_s = None
        if not server_died and server.poll() is None:
            healed_at = time.monotonic()
            put(f"http://{upstream_admin}/faults", '{"latency_ms": 5}')
            ok_before = metric(after, "catalogue_upstream_requests_total", outcome="ok")
            probe = subprocess.Popen(
                [args.binary, "load", "--target", target, "--mix", "get=1", "--rps", "50", "--duration", "60s"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            processes.append(probe)
            while time.monotonic() - healed_at < 60:
                now = metrics(admin)
                if (metric(now, "catalogue_upstream_circuit_state") == 0
                        and metric(now, "catalogue_upstream_requests_total", outcome="ok") > ok_before):
                    recovery_s = time.monotonic() - healed_at
                    break
                time.sleep(0.25)
            else:
                print(f"no recovery: circuit {metric(now, 'catalogue_upstream_circuit_state')}, "
                      f"ok {metric(now, 'catalogue_upstream_requests_total', outcome='ok')} (before {ok_before}), "
                      f"probe exit {probe.poll()}", file=sys.stderr)
            probe.terminate()

        calls = flood_summary.get("calls", {}).get("GetProduct", {})
        outcomes = {key.split('outcome="')[1].split('"')[0]: value for key, value in after.items()
                    if key.startswith("catalogue_upstream_requests_total{")}
        result = {
            "protection": not args.no_protection,
            "server_survived": not server_died and server.poll() is None,
            "duration_s": args.duration,
            "client_concurrency": args.concurrency,
            "connections": args.connections,
            "rss_idle_mb": round(idle["rss_mb"], 1),
            "rss_peak_mb": round(peak["rss_mb"], 1),
            "threads_peak": peak["threads"],
            "fds_peak": peak["fds"],
            "tasks_peak": peak["tasks"],
            "calls_by_code": calls,
            "achieved_rps": round(flood_summary.get("achieved_rps", 0), 1),
            "served_live": outcomes.get("ok", 0),
            "served_degraded": sum(v for k, v in outcomes.items() if k != "ok"),
            "degraded_by_reason": {k: v for k, v in outcomes.items() if k != "ok" and v},
            "shed": metric(after, "catalogue_shed_total"),
            "health_p50_ms": health_summary.get("latency_ms", {}).get("p50"),
            "health_p99_ms": health_summary.get("latency_ms", {}).get("p99"),
            "health_calls": health_summary.get("calls", {}).get("Health/Check", {}),
            "recovery_s": None if recovery_s is None else round(recovery_s, 2),
        }
        width = max(len(key) for key in result)
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
        print(json.dumps(result))
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        if group:
            try:
                os.rmdir(group)
            except OSError:
                pass


if __name__ == "__main__":
    main()
