// The live view: reads /debug/live/feed (server-sent events, read with
// fetch so the admin token travels as a header) and draws each sample into
// uPlot charts. Every chart is a few lines of `CHARTS` below: a title, a
// unit and a function from two consecutive samples to named values. The
// functions read the /metrics exposition, so the names here are the
// dashboards' names; a chart naming a family the server's table does not
// have says so in red, and the browser test fails on it.
"use strict";

const KEEP_SECONDS = 300; // what the browser keeps: the last five minutes
const TOKEN_KEY = "catalogue-admin-token";

// ---- reading the exposition -------------------------------------------

// One sample: series text `name{labels}` -> value, and `t` in seconds.
function parseSample(data) {
  const newline = data.indexOf("\n");
  const head = JSON.parse(newline < 0 ? data : data.slice(0, newline));
  const series = [];
  const lines = newline < 0 ? [] : data.slice(newline + 1).split("\n");
  for (const line of lines) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const labels = {};
    for (const label of (match[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[label[1]] = label[2];
    }
    series.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return { t: head.t_ms / 1000, allocated: head.allocated_bytes, series };
}

// Sums the series of `name` matching `where`, grouped by the labels `by`:
// { "GetProduct OK": 12, ... }.
function sum(sample, name, by = [], where = {}) {
  const groups = {};
  for (const s of sample.series) {
    if (s.name !== name) continue;
    if (Object.entries(where).some(([k, v]) => s.labels[k] !== v)) continue;
    const key = by.map((label) => s.labels[label] ?? "").join(" ") || name;
    groups[key] = (groups[key] ?? 0) + s.value;
  }
  return groups;
}

// Per-second increase of a counter between two samples, grouped.
function rate(prev, cur, name, by = [], where = {}) {
  const before = sum(prev, name, by, where);
  const after = sum(cur, name, by, where);
  const dt = cur.t - prev.t;
  const out = {};
  for (const [key, value] of Object.entries(after)) {
    const increase = value - (before[key] ?? 0);
    out[key] = dt > 0 && increase >= 0 ? increase / dt : null;
  }
  return out;
}

// A histogram's bucket increases between two samples, per group:
// { group: [[le, count], ...] } sorted by le.
function bucketIncreases(prev, cur, name, by = [], where = {}) {
  const groups = {};
  const before = sum(prev, name + "_bucket", [...by, "le"], where);
  const after = sum(cur, name + "_bucket", [...by, "le"], where);
  for (const [key, value] of Object.entries(after)) {
    const parts = key.split(" ");
    const leText = parts.pop();
    const le = leText === "+Inf" ? Infinity : Number(leText);
    const group = parts.join(" ") || name;
    (groups[group] ??= []).push([le, value - (before[key] ?? 0)]);
  }
  for (const buckets of Object.values(groups)) buckets.sort((a, b) => a[0] - b[0]);
  return groups;
}

// Prometheus' histogram_quantile over cumulative buckets: linear within
// the bucket the rank falls in; null when nothing was observed.
function quantile(q, buckets) {
  const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (!(total > 0)) return null;
  const rank = q * total;
  let [lower, below] = [0, 0];
  for (const [le, count] of buckets) {
    if (count >= rank) {
      if (le === Infinity) return lower;
      return lower + ((le - lower) * (rank - below)) / Math.max(count - below, 1e-9);
    }
    [lower, below] = [le, count];
  }
  return lower;
}

function quantiles(prev, cur, name, qs, by = [], where = {}) {
  const out = {};
  for (const [group, buckets] of Object.entries(bucketIncreases(prev, cur, name, by, where))) {
    for (const q of qs) {
      const key = group === name ? `p${q * 100}` : `${group} p${q * 100}`;
      out[key] = quantile(q, buckets);
    }
  }
  return out;
}

// Only the values that are not zero: a reason or method is drawn from the
// first second it has something to show.
function nonzero(values) {
  return Object.fromEntries(Object.entries(values).filter(([, value]) => value));
}

// The total of a group's values.
function total(values) {
  return Object.values(values).reduce((a, b) => a + (b ?? 0), 0);
}

// Renames the keys of a group: { a: 1 } -> { "prefix a": 1 }.
function named(prefix, values) {
  const out = {};
  for (const [key, value] of Object.entries(values)) out[`${prefix} ${key}`.trim()] = value;
  return out;
}

// ---- the charts -------------------------------------------------------

// Each chart: its group, title (Go's name where the Go-and-Tokio dashboard
// has one), unit, the families it reads (checked against the server's
// table) and `values(prev, cur)`. `heatmap` draws a histogram's bucket
// increases under its quantile lines.
const CHARTS = [
  {
    group: "Scheduler", id: "busy", unit: "ratio",
    title: "Busy ratio per worker (Go: P ↔ worker, CPU per P)",
    families: ["tokio_worker_busy_seconds_total"],
    values: (p, c) => named("worker", rate(p, c, "tokio_worker_busy_seconds_total", ["worker"])),
  },
  {
    group: "Scheduler", id: "queues", unit: "tasks",
    title: "Run queues (Go: local runq ↔ local queue, global runq ↔ injection queue)",
    families: ["tokio_worker_local_queue_depth", "tokio_global_queue_depth"],
    values: (p, c) => ({
      ...named("local, worker", sum(c, "tokio_worker_local_queue_depth", ["worker"])),
      injection: sum(c, "tokio_global_queue_depth").tokio_global_queue_depth,
    }),
  },
  {
    group: "Scheduler", id: "steals", unit: "/s",
    title: "Steals, parks and unparks per second",
    families: ["tokio_worker_steals_total", "tokio_worker_parks_total",
      "tokio_worker_park_unparks_total", "tokio_worker_overflows_total"],
    values: (p, c) => ({
      steals: rate(p, c, "tokio_worker_steals_total").tokio_worker_steals_total,
      parks: rate(p, c, "tokio_worker_parks_total").tokio_worker_parks_total,
      unparks: rate(p, c, "tokio_worker_park_unparks_total").tokio_worker_park_unparks_total,
      "local queue overflows": rate(p, c, "tokio_worker_overflows_total").tokio_worker_overflows_total,
    }),
  },
  {
    group: "Scheduler", id: "schedules", unit: "/s",
    title: "Tasks scheduled per second: on a worker (Go: runnext, local runq) and from outside (Go: global runq)",
    families: ["tokio_worker_local_schedules_total", "tokio_remote_schedules_total"],
    values: (p, c) => ({
      local: rate(p, c, "tokio_worker_local_schedules_total").tokio_worker_local_schedules_total,
      remote: rate(p, c, "tokio_remote_schedules_total").tokio_remote_schedules_total,
    }),
  },
  {
    group: "Scheduler", id: "tasks", unit: "tasks",
    title: "Tasks alive and spawned per second (Go: goroutines ↔ alive tasks)",
    families: ["tokio_alive_tasks", "tokio_spawned_tasks_total"],
    values: (p, c) => ({
      alive: sum(c, "tokio_alive_tasks").tokio_alive_tasks,
      "spawned /s": rate(p, c, "tokio_spawned_tasks_total").tokio_spawned_tasks_total,
    }),
  },
  {
    group: "Scheduler", id: "blocking", unit: "threads",
    title: "Blocking pool (Go: the M that leaves its P during a syscall)",
    families: ["tokio_blocking_threads", "tokio_idle_blocking_threads", "tokio_blocking_queue_depth"],
    values: (p, c) => ({
      threads: sum(c, "tokio_blocking_threads").tokio_blocking_threads,
      idle: sum(c, "tokio_idle_blocking_threads").tokio_idle_blocking_threads,
      queued: sum(c, "tokio_blocking_queue_depth").tokio_blocking_queue_depth,
    }),
  },
  {
    group: "Scheduler", id: "schedule-latency", unit: "s", log: true,
    title: "Schedule latency: woken to polled (Go: scheduling latency)",
    families: ["tokio_schedule_latency_seconds"], heatmap: "tokio_schedule_latency_seconds",
    values: (p, c) => quantiles(p, c, "tokio_schedule_latency_seconds", [0.5, 0.99]),
  },
  {
    group: "Scheduler", id: "poll-time", unit: "s", log: true,
    title: "Poll time: how long each poll holds its worker",
    families: ["tokio_poll_time_seconds"], heatmap: "tokio_poll_time_seconds",
    values: (p, c) => quantiles(p, c, "tokio_poll_time_seconds", [0.5, 0.99]),
  },
  {
    group: "Calls", id: "rate", unit: "calls/s",
    title: "Calls per second by method and code",
    families: ["grpc_server_handled_total"],
    values: (p, c) => rate(p, c, "grpc_server_handled_total", ["grpc_method", "grpc_code"]),
  },
  {
    group: "Calls", id: "latency", unit: "s", log: true,
    title: "Handling time p50 and p99 by method",
    families: ["grpc_server_handling_seconds"],
    values: (p, c) => quantiles(p, c, "grpc_server_handling_seconds", [0.5, 0.99], ["grpc_method"]),
  },
  {
    group: "Calls", id: "in-flight", unit: "calls",
    title: "Calls in flight against --max-concurrent-calls",
    families: ["grpc_server_in_flight_requests", "catalogue_max_concurrent_calls"],
    values: (p, c) => ({
      "in flight": total(sum(c, "grpc_server_in_flight_requests")),
      limit: sum(c, "catalogue_max_concurrent_calls").catalogue_max_concurrent_calls,
    }),
  },
  {
    group: "Calls", id: "shed", unit: "/s",
    title: "Calls shed and connections refused per second, by reason",
    families: ["catalogue_shed_total", "catalogue_connections_refused_total"],
    values: (p, c) => {
      const shed = rate(p, c, "catalogue_shed_total", ["reason"]);
      const refused = rate(p, c, "catalogue_connections_refused_total", ["reason"]);
      return {
        "calls shed": total(shed), "connections refused": total(refused),
        ...nonzero(named("shed:", shed)), ...nonzero(named("refused:", refused)),
      };
    },
  },
  {
    group: "Calls", id: "upstream", unit: "s", log: true,
    title: "Upstream latency p50 and p99 (the inventory service)",
    families: ["catalogue_upstream_request_duration_seconds"],
    values: (p, c) => quantiles(p, c, "catalogue_upstream_request_duration_seconds", [0.5, 0.99]),
  },
  {
    group: "Calls", id: "breaker", unit: "count",
    title: "Upstream: calls in flight and the breaker (0 closed, 1 half-open, 2 open)",
    families: ["catalogue_upstream_in_flight_requests", "catalogue_upstream_circuit_state"],
    values: (p, c) => ({
      "in flight": sum(c, "catalogue_upstream_in_flight_requests").catalogue_upstream_in_flight_requests,
      breaker: sum(c, "catalogue_upstream_circuit_state").catalogue_upstream_circuit_state,
    }),
  },
  {
    group: "Streams", id: "streams", unit: "streams",
    title: "Open streams by method",
    families: ["grpc_server_streams_active"],
    values: (p, c) => {
      const open = sum(c, "grpc_server_streams_active", ["grpc_method"]);
      return { all: total(open), ...nonzero(open) };
    },
  },
  {
    group: "Streams", id: "messages", unit: "msgs/s",
    title: "Messages sent per second by method",
    families: ["grpc_server_msg_sent_total"],
    values: (p, c) => {
      const sent = rate(p, c, "grpc_server_msg_sent_total", ["grpc_method"]);
      return { all: total(sent), ...nonzero(sent) };
    },
  },
  {
    group: "Streams", id: "stalled", unit: "/s",
    title: "Stalled streams: seconds waiting on a full window, cancellations and idle calls expired, per second",
    families: ["grpc_server_stream_blocked_seconds", "grpc_server_stream_cancelled_total",
      "catalogue_idle_calls_expired_total"],
    values: (p, c) => ({
      "seconds stalled": rate(p, c, "grpc_server_stream_blocked_seconds_sum").grpc_server_stream_blocked_seconds_sum,
      cancelled: rate(p, c, "grpc_server_stream_cancelled_total").grpc_server_stream_cancelled_total,
      "idle expired": rate(p, c, "catalogue_idle_calls_expired_total").catalogue_idle_calls_expired_total,
    }),
  },
  {
    group: "Process", id: "cpu", unit: "cores",
    title: "CPU (Go: process CPU)",
    families: ["process_cpu_seconds_total"],
    values: (p, c) => ({ cpu: rate(p, c, "process_cpu_seconds_total").process_cpu_seconds_total }),
  },
  {
    group: "Process", id: "memory", unit: "bytes",
    title: "Memory: resident and allocated (jemalloc)",
    families: ["process_resident_memory_bytes"],
    values: (p, c) => ({
      resident: sum(c, "process_resident_memory_bytes").process_resident_memory_bytes,
      allocated: c.allocated ?? undefined,
    }),
  },
  {
    group: "Process", id: "fds", unit: "count",
    title: "File descriptors and connections",
    families: ["process_open_fds", "catalogue_connections_open"],
    values: (p, c) => ({
      "open fds": sum(c, "process_open_fds").process_open_fds,
      connections: sum(c, "catalogue_connections_open").catalogue_connections_open,
    }),
  },
];

// ---- drawing ----------------------------------------------------------

const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
  "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];

const state = {
  connected: false, samples: 0, families: null, unknown: [], markers: [],
  charts: {}, // id -> { plot, xs, series: Map(label -> values), heat: [[t, buckets]] }
};

function formatValue(unit) {
  return (u, value) => {
    if (value == null) return "–";
    if (unit === "s") return value >= 1 ? +value.toPrecision(3) + " s"
      : value >= 1e-3 ? +(value * 1e3).toPrecision(3) + " ms" : +(value * 1e6).toPrecision(3) + " µs";
    if (unit === "bytes") return +(value / 2 ** 20).toPrecision(3) + " MiB";
    return Math.abs(value) >= 100 ? value.toFixed(0) : value.toPrecision(3);
  };
}

// Markers: a dashed line at each change's start, its span shaded.
function markerPlugin() {
  return {
    hooks: {
      draw: (u) => {
        const { ctx, bbox } = u;
        let drawn = 0;
        for (const marker of state.markers) {
          const start = u.valToPos(marker.start_ms / 1000, "x", true);
          const end = u.valToPos(marker.end_ms / 1000, "x", true);
          if (end < bbox.left || start > bbox.left + bbox.width) continue;
          drawn++;
          ctx.save();
          ctx.fillStyle = "rgba(255, 140, 0, 0.12)";
          ctx.fillRect(start, bbox.top, Math.max(end - start, 0), bbox.height);
          ctx.strokeStyle = "#e07000";
          ctx.setLineDash([4, 3]);
          ctx.beginPath();
          ctx.moveTo(start, bbox.top);
          ctx.lineTo(start, bbox.top + bbox.height);
          ctx.stroke();
          ctx.restore();
        }
        u.markersDrawn = drawn;
      },
    },
  };
}

// A histogram's bucket increases, one column a sample, darker for more.
function heatmapPlugin(chart) {
  return {
    hooks: {
      drawClear: (u) => {
        const { ctx, bbox } = u;
        const heat = state.charts[chart.id].heat;
        ctx.save();
        ctx.beginPath();
        ctx.rect(bbox.left, bbox.top, bbox.width, bbox.height);
        ctx.clip();
        for (let i = 1; i < heat.length; i++) {
          const [t, buckets] = heat[i];
          const x0 = u.valToPos(heat[i - 1][0], "x", true);
          const x1 = u.valToPos(t, "x", true);
          let [lower, below] = [null, 0];
          const most = Math.max(1, ...buckets.map(([, n], j) => n - (j ? buckets[j - 1][1] : 0)));
          for (const [le, count] of buckets) {
            const n = count - below;
            const top = le === Infinity ? u.scales.y.max : le;
            const bottom = lower ?? top / 2;
            if (n > 0 && top > 0) {
              const y0 = u.valToPos(bottom, "y", true);
              const y1 = u.valToPos(top, "y", true);
              ctx.fillStyle = `rgba(31, 119, 180, ${0.08 + 0.8 * Math.sqrt(n / most)})`;
              ctx.fillRect(x0, y1, Math.max(x1 - x0, 1), Math.max(y0 - y1, 1));
            }
            [lower, below] = [le === Infinity ? lower : le, count];
          }
        }
        ctx.restore();
      },
    },
  };
}

// Two charts a row on a wide screen, one on a narrow one.
// A chart's box is its plot's width and 10 pixels (border and padding);
// the page has 16 pixels of margin a side, 8 between two boxes.
function chartWidth() {
  const room = document.documentElement.clientWidth - 32;
  return Math.max(340, room >= 1000 ? Math.floor((room - 8) / 2) - 12 : room - 12);
}

function makeChart(chart, parent) {
  const box = document.createElement("div");
  box.className = "chart";
  box.id = "chart-" + chart.id;
  box.style.width = chartWidth() + 10 + "px";
  box.innerHTML = `<div class="title"></div><div class="why"></div>`;
  box.querySelector(".title").textContent = chart.title;
  parent.appendChild(box);
  const opts = {
    width: chartWidth(), height: 200,
    legend: { live: false },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, y: chart.log ? { distr: 3 } : { range: (u, min, max) => [Math.min(0, min), max > 0 ? max * 1.1 : 1] } },
    axes: [{}, { size: 72, values: (u, ticks) => ticks.map((v) => formatValue(chart.unit)(u, v)) }],
    series: [{}],
    plugins: chart.heatmap ? [heatmapPlugin(chart), markerPlugin()] : [markerPlugin()],
  };
  const plot = new uPlot(opts, [[]], box);
  state.charts[chart.id] = { chart, plot, box, xs: [], series: new Map(), heat: [] };
}

function addPoint(id, t, values) {
  const entry = state.charts[id];
  entry.xs.push(t);
  for (const [label, value] of Object.entries(values)) {
    if (value === undefined) continue;
    if (!entry.series.has(label)) {
      entry.series.set(label, entry.xs.slice(0, -1).map(() => null));
      entry.plot.addSeries({
        label, stroke: COLOURS[(entry.series.size - 1) % COLOURS.length], width: 1.5,
        value: formatValue(entry.chart.unit), spanGaps: false,
      });
    }
  }
  for (const [label, values_] of entry.series) {
    const value = values[label];
    values_.push(value == null || !Number.isFinite(value) ? null
      : entry.chart.log && value <= 0 ? null : value);
  }
  while (entry.xs.length && entry.xs[0] < t - KEEP_SECONDS) {
    entry.xs.shift();
    for (const values_ of entry.series.values()) values_.shift();
  }
  while (entry.heat.length && entry.heat[0][0] < t - KEEP_SECONDS) entry.heat.shift();
  entry.plot.setData([entry.xs, ...entry.series.values()]);
}

// ---- the feed ---------------------------------------------------------

let previous = null;

function onHello(hello) {
  state.families = new Set(hello.families.map((family) => family.name));
  const help = Object.fromEntries(hello.families.map((family) => [family.name, family.help]));
  state.unknown = [];
  for (const chart of CHARTS) {
    const unknown = chart.families.filter((name) => !state.families.has(name));
    state.unknown.push(...unknown);
    const why = state.charts[chart.id].box.querySelector(".why");
    if (unknown.length) {
      why.textContent = "not in the server's metric table: " + unknown.join(", ");
      why.style.color = "#b00";
    } else {
      why.textContent = help[chart.families[0]] ?? "";
    }
  }
}

function onSample(data) {
  const sample = parseSample(data);
  state.samples++;
  if (previous) {
    for (const chart of CHARTS) {
      let values = {};
      try {
        values = chart.values(previous, sample);
      } catch (error) {
        console.error(chart.id, error);
      }
      if (chart.heatmap) {
        const buckets = bucketIncreases(previous, sample, chart.heatmap)[chart.heatmap];
        if (buckets) state.charts[chart.id].heat.push([sample.t, buckets]);
      }
      addPoint(chart.id, sample.t, values);
    }
  }
  previous = sample;
}

function onMarker(marker) {
  state.markers.push(marker);
  const line = document.createElement("div");
  line.textContent = `${new Date(marker.start_ms).toLocaleTimeString()}  ${marker.label}`;
  const list = document.getElementById("markers");
  list.prepend(line);
  for (const entry of Object.values(state.charts)) entry.plot.redraw(false, false);
}

function setStatus(text, bad = false) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = bad ? "bad" : "";
}

async function connect() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = token ? { Authorization: "Bearer " + token } : {};
  let response;
  try {
    response = await fetch("/debug/live/feed", { headers, cache: "no-store" });
  } catch (error) {
    setStatus("cannot reach the admin port; retrying", true);
    return retry();
  }
  if (response.status === 401) {
    setStatus("needs the admin token", true);
    document.getElementById("token").style.display = "block";
    return;
  }
  if (!response.ok) {
    setStatus(`${response.status}: ${(await response.text()).trim()}; retrying`, true);
    return retry(10000);
  }
  document.getElementById("token").style.display = "none";
  state.connected = true;
  setStatus("live: one sample a second, the last five minutes kept here");
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        dispatch(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  } catch (error) {
    console.error(error);
  }
  state.connected = false;
  previous = null;
  setStatus("the feed ended; reconnecting", true);
  retry();
}

function dispatch(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (!data.length) return;
  const text = data.join("\n");
  if (event === "hello") onHello(JSON.parse(text));
  else if (event === "sample") onSample(text);
  else if (event === "marker") onMarker(JSON.parse(text));
}

function retry(after = 2000) {
  setTimeout(connect, after);
}

// What the browser test reads: each chart's points and whether they move.
window.liveState = () => ({
  connected: state.connected,
  samples: state.samples,
  unknown: state.unknown,
  markers: state.markers.map((marker) => marker.label),
  charts: Object.values(state.charts).map((entry) => {
    const series = {};
    for (const [label, values] of entry.series) {
      const points = values.filter((value) => value != null);
      series[label] = { points: points.length, last: points.at(-1) ?? null, values: points.slice(-60) };
    }
    return {
      id: entry.chart.id, title: entry.chart.title, series,
      heat: entry.heat.length, markersDrawn: entry.plot.markersDrawn ?? 0,
    };
  }),
});

window.addEventListener("resize", () => {
  for (const entry of Object.values(state.charts)) {
    entry.box.style.width = chartWidth() + 10 + "px";
    entry.plot.setSize({ width: chartWidth(), height: 200 });
  }
});

document.getElementById("token").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token-value").value);
  connect();
});

const main = document.getElementById("charts");
for (const group of [...new Set(CHARTS.map((chart) => chart.group))]) {
  const heading = document.createElement("h2");
  heading.textContent = group;
  main.appendChild(heading);
  const row = document.createElement("div");
  row.className = "group";
  main.appendChild(row);
  for (const chart of CHARTS.filter((c) => c.group === group)) makeChart(chart, row);
}
connect();
