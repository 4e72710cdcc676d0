"""Starting servers and reading /proc, for every script in scripts/.

A server is any binary that accepts `--ready-file PATH` and, once its
listeners are bound, writes there one JSON object of its addresses:
`{"grpc": "127.0.0.1:PORT", "admin": "127.0.0.1:PORT", "console": null}`
(and `catalogue serve`'s health lane, `"health"`)
(`catalogue serve`, `catalogue upstream`, the grpc-go peer). `Server` starts
one on ports the system picks and reads where it listens from that file,
never from its log:

    server = harness.Server(harness.serve_argv("target/release/catalogue", "--database-url", "memory"))
    ...  # server.grpc, server.admin, server.process, server.rss_mb(), server.cpu_seconds()
    server.stop()

Standard library only, so that any Python 3.9+ runs it.
"""

import json
import os
import subprocess
import tempfile
import time

READY_TIMEOUT_SECONDS = 60


def serve_argv(binary, *flags):
    """`catalogue serve` on loopback ports the system picks, JSON logs."""
    return [binary, "serve", "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
            "--health-addr", "127.0.0.1:0", "--console-addr", "127.0.0.1:0", "--log-format", "json",
            *flags]


def upstream_argv(binary, *flags):
    """`catalogue upstream`, the inventory simulator, on loopback ports the
    system picks."""
    return [binary, "upstream", "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", *flags]


def go_peer_argv(binary, *flags):
    """The grpc-go peer (go-peer/), gRPC and /metrics on ports the system picks."""
    return [binary, "-addr", "127.0.0.1:0", "-metrics-addr", "127.0.0.1:0", *flags]


class Server:
    """A server process started with `--ready-file`; `grpc`, `admin`,
    `health` and `console` are the addresses it wrote (`None` where it wrote
    none), `process` its Popen, `started` the
    monotonic time of its exec, `log` the file its output goes to."""

    def __init__(self, argv, env=None, log=None, timeout=READY_TIMEOUT_SECONDS, on_spawn=None):
        self.start(argv, env, log, timeout, on_spawn)

    def start(self, argv, env=None, log=None, timeout=READY_TIMEOUT_SECONDS, on_spawn=None):
        """Runs argv with `--ready-file` added and waits for the file;
        `on_spawn(process)` runs first, as soon as the process exists (to
        put it in a cgroup before it allocates, say)."""
        self.directory = tempfile.mkdtemp(prefix="catalogue-server-")
        self.ready_file = os.path.join(self.directory, "ready.json")
        self.log = log or os.path.join(self.directory, "output.log")
        self.owns_log = log is None
        self.started = time.monotonic()
        with open(self.log, "w") as output:
            self.process = subprocess.Popen(
                [*argv, "--ready-file", self.ready_file], stdout=output, stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        if on_spawn:
            on_spawn(self.process)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(self.ready_file):
                with open(self.ready_file) as ready:
                    addresses = json.load(ready)
                self.grpc, self.admin = addresses["grpc"], addresses["admin"]
                self.console = addresses.get("console")
                self.health = addresses.get("health")
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.005)
        output = read(self.log)
        self.stop()
        raise SystemExit(f"{argv[0]} wrote no ready file; its output:\n{output}")

    def alive(self):
        return self.process.poll() is None

    def status_mb(self, *keys):
        return status_mb(self.process.pid, *keys)

    def rss_mb(self):
        return self.status_mb("VmRSS").get("VmRSS", 0.0)

    def cpu_seconds(self):
        return cpu_seconds(self.process.pid)

    def stop(self, timeout=15):
        """SIGTERM, then SIGKILL after `timeout` seconds; removes the ready
        file and, unless the caller named it, the log."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for path in (self.ready_file, self.log if self.owns_log else None):
            if path and os.path.exists(path):
                os.unlink(path)
        if not os.listdir(self.directory):
            os.rmdir(self.directory)


def read(path):
    try:
        with open(path, errors="replace") as file:
            return file.read()
    except OSError:
        return ""


def status_mb(pid, *keys):
    """Lines of /proc/PID/status in kB, as MB: VmRSS (resident), RssAnon
    (heap, stacks), RssFile (the binary's and libraries' pages mapped in)."""
    found = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in keys:
                found[key] = int(value.split()[0]) / 1024
    return found


def threads(pid):
    """Threads of a process (/proc/PID/status)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid):
    """utime + stime of a process (/proc/PID/stat), in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
