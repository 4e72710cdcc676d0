"""Pictures of every fault's signature, drawn from real scrapes: the
catalogue (`serve --enable-faults`, SQLite, 2,000 products) and a native
Prometheus scraping it every second run on loopback ports the system picks,
`catalogue load` drives the service for the whole run (open loop, 200
calls/s, GetProduct, ListProducts, SearchProducts and health checks), and
each fault of docs/faults.md is switched on in turn:
N seconds before, `PUT /faults` (N seconds during), `DELETE /faults` (N
seconds after, which are the next fault's "before"), in the order of
scripts/fault-pictures.toml.

Then, for each fault, the panels docs/faults.md names (listed in
scripts/fault-pictures.toml) are read from grafana/dashboards/*.json by
title, their own PromQL is evaluated with Prometheus' query_range over the
real time range (Grafana's variables substituted as panel-series.py does,
`$__rate_interval` = 5s to fit the 1 s scrape), and drawn as a
before/during/after strip, the fault's window shaded, to OUT/<picture>.png.
Heatmap panels are drawn as heatmaps of their buckets (rates per bucket,
de-cumulated as Grafana does, on a log colour scale), not as lines. A table of medians before, during and after is printed for each
panel, the numbers docs/faults.md is checked against.

--check verifies, from the data, that every panel of every picture had
series with points during the fault and values that change over the strip,
and that each written PNG reads back as an image that is not blank; it
exits 1 naming what was missing.

Usage: python3 scripts/fault-pictures.py [--binary PATH] [--seconds N]
       [--only FAULT[,FAULT...]] [--out DIR] [--rps N] [--label TEXT] [--check]
Needs matplotlib and Prometheus on PATH (scripts/setup.sh installs both).
"""

import argparse
import json
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import tomllib
import urllib.request
from dataclasses import dataclass, field

import harness
from dashboards import get, panel, substitute

RATE_INTERVAL = "5s"
SCRAPE_INTERVAL_SECONDS = 1
LOAD_MIX = "get=75,list=10,search=10,health=5"
# Long enough for the 5 s rates to have a full window before the first fault.
WARM_UP_SECONDS = 8


@dataclass(frozen=True)
class Panel:
    """A dashboard panel by its title, optionally only some of its targets."""

    dashboard: str
    title: str
    ref_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Picture:
    name: str
    caption: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Fault:
    """A fault of "Break it and watch" (scripts/fault-pictures.toml), the
    body of its PUT /faults exactly as docs/faults.md writes it, and the
    pictures drawn under it."""

    name: str
    body: dict
    pictures: tuple[Picture, ...]


def read_faults(path: str) -> tuple[Fault, ...]:
    with open(path, "rb") as f:
        table = tomllib.load(f)
    return tuple(
        Fault(fault["name"], fault["body"], tuple(
            Picture(picture["name"], picture["caption"],
                    tuple(Panel(dashboard, title, tuple(ref_ids)) for dashboard, title, *ref_ids in picture["panels"]))
            for picture in fault["picture"]))
        for fault in table["fault"])


FAULTS = read_faults(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fault-pictures.toml"))


@dataclass
class Window:
    """One fault's strip, in Unix seconds: before from `start`, switched on
    at `on`, off at `off`, after until `end`."""

    start: float
    on: float
    off: float
    end: float


@dataclass
class Series:
    label: str
    times: list[float]
    values: list[float]


@dataclass
class Drawn:
    """What one panel returned over one strip."""

    panel: Panel
    spec: dict
    series: list[Series] = field(default_factory=list)
    heatmap: bool = False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: dict | None = None, timeout: float = 5) -> None:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()


def switch(method: str, url: str, body: dict | None = None) -> float:
    """Sends a change of the faults and returns when it was answered (the
    fault is in effect, or gone, from then). The admin port shares the
    runtime with the calls: under the blocking fault the answer takes
    seconds, which is printed."""
    sent = time.time()
    http(method, url, body, timeout=60)
    answered = time.time()
    if answered - sent > 1:
        print(f"  {method} /faults took {answered - sent:.1f} s to be answered", flush=True)
    return answered


class Run:
    """The processes of one run, stopped in reverse order on exit."""

    def __init__(self, work: str):
        self.work = work
        self.processes: list[subprocess.Popen] = []

    def start(self, name: str, command: list[str]) -> tuple[subprocess.Popen, str]:
        log = os.path.join(self.work, f"{name}.log")
        process = subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process, log

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self.processes):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def start_catalogue(run: Run, binary: str) -> tuple[str, str]:
    """Starts the service; returns its gRPC and admin addresses."""
    server = harness.Server(harness.serve_argv(
        binary, "--database-url", f"sqlite://{run.work}/catalogue.db", "--seed-products", "2000",
        "--enable-faults",
    ), log=os.path.join(run.work, "catalogue.log"))
    run.processes.append(server.process)
    return server.grpc, server.admin


def start_prometheus(run: Run, admin: str) -> str:
    """A Prometheus scraping the admin port every second, as job catalogue
    (otel/prometheus.yml's name, so the dashboards' $job matches)."""
    config = os.path.join(run.work, "prometheus.yml")
    with open(config, "w") as f:
        f.write(f"""global:
  scrape_interval: {SCRAPE_INTERVAL_SECONDS}s
scrape_configs:
  - job_name: catalogue
    static_configs:
      - targets: ["{admin}"]
""")
    port = free_port()
    process, log = run.start("prometheus", [
        "prometheus", f"--config.file={config}", f"--storage.tsdb.path={run.work}/tsdb",
        f"--web.listen-address=127.0.0.1:{port}",
    ])
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            http("GET", f"{url}/-/ready")
            return url
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.2)
    raise SystemExit(f"prometheus did not start; log:\n{open(log).read()}")


def drive(run: Run, binary: str, grpc: str, admin: str, faults, seconds: float, rps: float) -> dict:
    """Runs the load and switches each fault on and off; returns each
    fault's window."""
    # Slack for changes of the faults answered late (see `switch`); the load
    # is stopped with the rest at the end.
    total = WARM_UP_SECONDS + seconds * (2 * len(faults) + 1) + 60
    load, _ = run.start("load", [
        binary, "load", "--target", f"http://{grpc}", "--rps", str(rps), "--mix", LOAD_MIX,
        "--duration", f"{math.ceil(total)}s",
    ])
    time.sleep(WARM_UP_SECONDS + seconds)
    windows = {}
    for fault in faults:
        print(f"{fault.name}: PUT /faults {json.dumps(fault.body)} for {seconds:g} s", flush=True)
        on = switch("PUT", f"http://{admin}/faults", fault.body)
        time.sleep(seconds)
        off = switch("DELETE", f"http://{admin}/faults")
        time.sleep(seconds)
        windows[fault.name] = Window(on - seconds, on, off, off + seconds)
        if load.poll() is not None:
            raise SystemExit("catalogue load stopped before the run's end")
    # The scrape after the last second.
    time.sleep(2 * SCRAPE_INTERVAL_SECONDS)
    return windows


def legend(format_: str, labels: dict, fallback: str) -> str:
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), format_ or "")
    return " ".join(text.split()) or fallback


def query(prometheus: str, wanted: Panel, window: Window) -> Drawn:
    spec = panel(wanted.dashboard, wanted.title)
    drawn = Drawn(wanted, spec, heatmap=spec.get("type") == "heatmap")
    for target in spec.get("targets", []):
        if wanted.ref_ids and target["refId"] not in wanted.ref_ids:
            continue
        expr = substitute(target["expr"], __rate_interval=RATE_INTERVAL, __interval=RATE_INTERVAL)
        data = get(prometheus, "/api/v1/query_range", query=expr, start=window.start,
                   end=window.end, step=SCRAPE_INTERVAL_SECONDS)
        for result in data["result"]:
            label = legend(target.get("legendFormat", ""), result["metric"], target["refId"])
            times = [float(t) for t, _ in result["values"]]
            values = [float(v) for _, v in result["values"]]
            drawn.series.append(Series(label, times, values))
    return drawn


# Grafana unit -> (axis label, scale) for the largest value plotted.
def unit_axis(unit: str | None, largest: float) -> tuple[str, float]:
    if unit == "s":
        if largest < 1e-3:
            return "µs", 1e6
        return ("ms", 1e3) if largest < 1 else ("s", 1)
    if unit == "percentunit":
        return "%", 100
    if unit == "bytes":
        return "MiB", 1 / 2**20
    return {"reqps": "calls/s", "ops": "per second"}.get(unit or "", ""), 1


def seconds_label(value: float) -> str:
    if value >= 1:
        return f"{value:g} s"
    if value >= 1e-3:
        return f"{value * 1e3:g} ms"
    return f"{value * 1e6:g} µs"


def buckets(drawn: Drawn):
    """A heatmap panel's series as (upper bounds, times, per-bucket rates):
    the cumulative `le` buckets de-cumulated, as Grafana's heatmap shows
    them."""
    by_bound = sorted(drawn.series, key=lambda s: float(s.label))
    times = sorted({t for s in by_bound for t in s.times})
    bounds = [float(s.label) for s in by_bound]
    cumulative = []
    for s in by_bound:
        at = dict(zip(s.times, s.values))
        cumulative.append([at.get(t, math.nan) for t in times])
    rates = [cumulative[0]] + [
        [upper - lower for upper, lower in zip(cumulative[i], cumulative[i - 1])]
        for i in range(1, len(cumulative))
    ]
    return bounds, times, rates


def draw_heatmap(axes, drawn: Drawn, window: Window, figure):
    import matplotlib.colors
    import matplotlib.ticker
    import numpy

    bounds, times, rates = buckets(drawn)
    finite = [b for b in bounds if math.isfinite(b)]
    # Edges: each bucket from the previous bound to its own; the first from
    # half its bound, +Inf drawn as one more doubling.
    edges = [finite[0] / 2] + finite + ([finite[-1] * 2] if len(finite) < len(bounds) else [])
    x_edges = [t - window.on for t in times] + [times[-1] - window.on + SCRAPE_INTERVAL_SECONDS]
    # Zero and missing cells stay blank; a log colour scale, so that a band
    # of a few polls a second shows beside thousands of short ones.
    cells = numpy.ma.masked_less_equal(numpy.nan_to_num(numpy.array(rates, dtype=float)), 0)
    mesh = axes.pcolormesh(x_edges, edges, cells, cmap="inferno", shading="flat",
                           norm=matplotlib.colors.LogNorm())
    axes.set_yscale("log")
    axes.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: seconds_label(value)))
    colorbar = figure.colorbar(mesh, ax=axes, pad=0.01)
    colorbar.set_label("polls per second in the bucket (log)", fontsize=7)
    colorbar.ax.tick_params(labelsize=7)
    axes.set_ylabel("poll time (bucket)", fontsize=8)


def with_gaps(s: Series) -> tuple[list[float], list[float]]:
    """The series with a NaN where a step has no point, so the line breaks
    there as Grafana's does instead of joining across the gap."""
    times, values = [], []
    for t, v in zip(s.times, s.values):
        if times and t - times[-1] > 1.5 * SCRAPE_INTERVAL_SECONDS:
            times.append(times[-1] + SCRAPE_INTERVAL_SECONDS)
            values.append(math.nan)
        times.append(t)
        values.append(v)
    return times, values


def draw_lines(axes, drawn: Drawn, window: Window):
    unit = drawn.spec.get("fieldConfig", {}).get("defaults", {}).get("unit")
    largest = max((abs(v) for s in drawn.series for v in s.values if math.isfinite(v)), default=0)
    label, scale = unit_axis(unit, largest)
    silent = 0
    for s in drawn.series:
        times, values = with_gaps(s)
        # A series at 0 or without data throughout is drawn but not listed,
        # as the legend would hide the plot otherwise.
        zero = all(v == 0 or not math.isfinite(v) for v in s.values)
        silent += zero
        x = [t - window.on for t in times]
        y = [v * scale for v in values]
        (line,) = axes.plot(x, y, label="_nolegend_" if zero else s.label, linewidth=1.2)
        # A point between two gaps draws no line: a dot, as Grafana's.
        alone = [i for i in range(len(y)) if math.isfinite(y[i])
                 and (i == 0 or not math.isfinite(y[i - 1])) and (i + 1 == len(y) or not math.isfinite(y[i + 1]))]
        axes.plot([x[i] for i in alone], [y[i] for i in alone], ".", color=line.get_color(), markersize=4)
    axes.set_ylabel(label, fontsize=8)
    axes.set_ylim(bottom=min(0, axes.get_ylim()[0]))
    if drawn.series:
        title = f"{silent} more at 0 or without data" if silent else None
        axes.legend(fontsize=7, loc="best", framealpha=0.7, title=title, title_fontsize=7)


def render(picture: Picture, fault: Fault, window: Window, drawn: list[Drawn], path: str, footnote: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(drawn)
    columns = count if count <= 3 else (2 if count == 4 else 3)
    rows = math.ceil(count / columns)
    figure, grid = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.1 * rows + 0.9), squeeze=False)
    during = window.off - window.on
    for axes, item in zip((a for row in grid for a in row), drawn):
        if item.heatmap:
            draw_heatmap(axes, item, window, figure)
        else:
            draw_lines(axes, item, window)
        axes.axvspan(0, during, color="tab:red", alpha=0.12, linewidth=0)
        axes.axvline(0, color="tab:red", linewidth=0.8, linestyle="--")
        axes.axvline(during, color="tab:red", linewidth=0.8, linestyle="--")
        axes.set_xlim(window.start - window.on, window.end - window.on)
        kind = " (heatmap of its buckets)" if item.heatmap else ""
        axes.set_title(f"{item.panel.title}{kind}\n{item.panel.dashboard}.json", fontsize=9)
        axes.set_xlabel("seconds since PUT /faults (shaded: fault on)", fontsize=8)
        axes.tick_params(labelsize=7)
        axes.grid(alpha=0.3)
    for axes in list(a for row in grid for a in row)[count:]:
        axes.set_visible(False)
    figure.suptitle(f"{picture.caption}: PUT /faults {json.dumps(fault.body)}, "
                    f"{during:.0f} s on, then DELETE /faults", fontsize=11)
    width, height = figure.get_size_inches()
    lines = textwrap.wrap(footnote, width=int(width * 17))
    figure.text(0.5, 0.005, "\n".join(lines), ha="center", va="bottom", fontsize=7, color="dimgray")
    figure.tight_layout(rect=(0, (0.05 + 0.13 * len(lines)) / height, 1, 1))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def in_window(s: Series, start: float, end: float) -> list[float]:
    return [v for t, v in zip(s.times, s.values) if start <= t <= end and math.isfinite(v)]


def bucket_quantile(bounds, totals, quantile: float) -> float:
    """The upper bound of the bucket holding that quantile."""
    whole, running = sum(totals), 0.0
    for bound, total in zip(bounds, totals):
        running += total
        if whole and running >= quantile * whole:
            return bound
    return math.nan


def summary(item: Drawn, window: Window) -> list[str]:
    """Rows of before (median), during (median and peak) and after
    (median), one per series; for a heatmap the buckets holding the median
    and the 99th percentile poll, from the rates summed over each part."""
    parts = ((window.start, window.on), (window.on, window.off), (window.off, window.end))
    if item.heatmap:
        bounds, times, rates = buckets(item)
        cells = []
        for start, end in parts:
            totals = [sum(r for t, r in zip(times, row) if start <= t <= end and math.isfinite(r)) for row in rates]
            cells.append("/".join(seconds_label(bucket_quantile(bounds, totals, q)) for q in (0.5, 0.99)))
        return [f"  {item.panel.title} [p50/p99 bucket]: " + " | ".join(cells)]
    rows = []
    for s in item.series:
        before, during, after = (in_window(s, start, end) for start, end in parts)
        cells = [statistics.median(v) if v else math.nan for v in (before, during, after)]
        peak = max(during, default=math.nan)
        rows.append(f"  {item.panel.title} [{s.label}]: {cells[0]:.4g} | {cells[1]:.4g} (peak {peak:.4g}) "
                    f"| {cells[2]:.4g}")
    return rows


def problems(item: Drawn, window: Window, seconds: float) -> list[str]:
    """What makes a panel an empty plot: no series with points during the
    fault, or values that never change over the strip. A quarter of the
    fault's seconds is enough: under the blocking fault some scrapes time
    out, and Prometheus marks the series stale until the next one."""
    need = max(3, int(seconds / 4))
    during = [sum(1 for t, v in zip(s.times, s.values) if window.on <= t <= window.off and math.isfinite(v))
              for s in item.series]
    found = []
    if max(during, default=0) < need:
        found.append(f"{item.panel.title!r}: {max(during, default=0)} points during the fault (need {need})")
    values = {v for s in item.series for v in s.values if math.isfinite(v)}
    if len(values) < 2:
        found.append(f"{item.panel.title!r}: no value changes over the strip ({sorted(values)})")
    return found


def failed_scrapes(prometheus: str, window: Window) -> str:
    """How many of Prometheus' scrapes of the service failed (`up` 0)
    before, during and after the fault."""
    data = get(prometheus, "/api/v1/query_range", query='up{job="catalogue"}', start=window.start,
               end=window.end, step=SCRAPE_INTERVAL_SECONDS)
    points = [(float(t), float(v)) for result in data["result"] for t, v in result["values"]]
    parts = ((window.start, window.on), (window.on, window.off), (window.off, window.end))
    return " | ".join(f"{sum(1 for t, v in points if start <= t < end and v == 0)}/"
                      f"{sum(1 for t, _ in points if start <= t < end)}" for start, end in parts)


def blank(path: str) -> str | None:
    """Why the PNG does not hold a picture, or None."""
    import matplotlib.image

    image = matplotlib.image.imread(path)
    if image.size == 0:
        return "empty image"
    if float(image.max() - image.min()) == 0:
        return "one colour only"
    return None


def build_label(binary: str) -> str:
    for kind in ("release", "debug"):
        if f"/{kind}/" in binary or binary.endswith(f"-{kind}"):
            return f"{kind} build"
    return os.path.basename(binary)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default=os.environ.get("CATALOGUE_BIN", "target/debug/catalogue"))
    parser.add_argument("--seconds", type=float, default=20, help="before, during and after each fault")
    parser.add_argument("--only", help="comma-separated faults: " + ",".join(f.name for f in FAULTS))
    parser.add_argument("--out", default="docs/faults")
    parser.add_argument("--rps", type=float, default=200)
    parser.add_argument("--label", help="the binary as the footnote names it (default: release or debug "
                        "build, from its path)")
    parser.add_argument("--check", action="store_true", help="fail unless every picture holds a non-empty plot")
    args = parser.parse_args()

    faults = FAULTS
    if args.only:
        names = args.only.split(",")
        unknown = [n for n in names if n not in {f.name for f in FAULTS}]
        if unknown:
            raise SystemExit(f"unknown fault {', '.join(unknown)}: expected one of "
                             + ", ".join(f.name for f in FAULTS))
        faults = tuple(f for f in FAULTS if f.name in names)
    if not os.access(args.binary, os.X_OK):
        raise SystemExit(f"no catalogue binary at {args.binary}: build it (cargo build) "
                         "or pass --binary PATH")
    # Every panel named exists before anything starts.
    for fault in faults:
        for picture in fault.pictures:
            for wanted in picture.panels:
                panel(wanted.dashboard, wanted.title)

    footnote = (f"catalogue {args.label or build_label(args.binary)}, catalogue load --rps {args.rps:g} --mix {LOAD_MIX}; "
                f"Prometheus scraping every {SCRAPE_INTERVAL_SECONDS} s; each panel's own PromQL from "
                f"grafana/dashboards/, $__rate_interval = {RATE_INTERVAL}; scripts/fault-pictures.sh")
    found = []
    with tempfile.TemporaryDirectory(prefix="fault-pictures.") as work, Run(work) as run:
        grpc, admin = start_catalogue(run, args.binary)
        prometheus = start_prometheus(run, admin)
        windows = drive(run, args.binary, grpc, admin, faults, args.seconds, args.rps)
        for fault in faults:
            window = windows[fault.name]
            for picture in fault.pictures:
                drawn = [query(prometheus, wanted, window) for wanted in picture.panels]
                path = os.path.join(args.out, f"{picture.name}.png")
                render(picture, fault, window, drawn, path, footnote)
                print(f"{path}: median before | median (peak) during | median after")
                for item in drawn:
                    print("\n".join(summary(item, window)))
                print(f"  failed scrapes (up == 0): {failed_scrapes(prometheus, window)}")
                if args.check:
                    found += [f"{path}: {p}" for item in drawn for p in problems(item, window, args.seconds)]
                    reason = blank(path)
                    if reason:
                        found.append(f"{path}: {reason}")
    for problem in found:
        print(f"check failed: {problem}", file=sys.stderr)
    if args.check and not found:
        print("check: every picture holds a plot with data during its fault")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
