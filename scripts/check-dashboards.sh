#!/usr/bin/env bash
# The dashboards and rules against a live service and a real Prometheus, no
# Docker: promtool checks otel/prometheus.yml and the rules (and runs the
# alert unit tests), then the inventory simulator, the service in front of
# it and a Prometheus scraping it every second run natively on loopback
# while `catalogue load` drives it (a fault switched on and off, a burst
# over the concurrency limit); every panel query and recording rule is
# evaluated through Prometheus' HTTP API, and the script fails if any
# returns no data. The grpc-go peer (go-peer/, built from Debian's Go
# packages) runs beside it against the same upstream, scraped as job go-peer
# and driven by its own load, so that the Go panels of go-and-tokio.json
# are proved on a Go process and the Tokio ones on the catalogue. Needs
# prometheus, promtool and Go's packages (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

LOAD_SECONDS=${LOAD_SECONDS:-30}
# Low, so that the burst below is partly shed.
MAX_CONCURRENT_CALLS=8

need prometheus promtool go

promtool check config otel/prometheus.yml
promtool check rules otel/rules/*.yml
promtool test rules otel/tests/*.yml

cargo build --quiet --bin catalogue
bash go-peer/build.sh

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# An upstream slow and failing enough that GetProduct degrades and, with
# the service's low breaker thresholds, the circuit breaker opens and closes.
start_upstream "$work/upstream.log" --latency-ms 5 --error-rate 0.3
pids+=("$upstream")
# Traces at 10 % head sampling, exported to a port nothing listens on: the
# sampled calls still leave exemplars on the latency buckets.
dead_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start_catalogue "$work/catalogue.log" --database-url "sqlite://$work/catalogue.db" \
  --otlp-endpoint "http://127.0.0.1:$dead_port" \
  --trace-sampler parentbased_traceidratio --trace-sampler-arg 0.1 \
  --seed-products 2000 --upstream-url "http://$upstream_addr" \
  --breaker-min-requests 5 --breaker-interval 2s --breaker-open-timeout 1s \
  --max-concurrent-calls "$MAX_CONCURRENT_CALLS" --enable-faults
pids+=("$server")

# The Go peer, calling the same upstream.
start_server "$work/go-peer.log" target/go-peer/catalogue-go -addr 127.0.0.1:0 \
  -metrics-addr 127.0.0.1:0 -products 2000 -upstream "$upstream_addr"
pids+=("$started")
go_grpc_addr=$(ready_address "$ready" grpc)
go_metrics_addr=$(ready_address "$ready" admin)

# The job names are otel/prometheus.yml's, so the dashboards' $job matches.
prometheus_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/prometheus.yml" <<CONFIG
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $PWD/otel/rules/*.yml
scrape_configs:
  - job_name: catalogue
    static_configs:
      - targets: ["$admin_addr"]
  - job_name: go-peer
    static_configs:
      - targets: ["$go_metrics_addr"]
CONFIG
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --enable-feature=exemplar-storage \
  --web.listen-address="127.0.0.1:$prometheus_port" >"$work/prometheus.log" 2>&1 &
pids+=($!)
prometheus_url="http://127.0.0.1:$prometheus_port"
for _ in $(seq 100); do
  curl -fsS "$prometheus_url/-/ready" >/dev/null 2>&1 && break
  sleep 0.2
done

# Steady load (NotFound calls and cancelled streams included); meanwhile a
# fault for a while, and a burst of calls over the concurrency limit.
load() { target/debug/catalogue load --target "http://$grpc_addr" "$@"; }
load --rps 100 --duration "${LOAD_SECONDS}s" >"$work/steady.txt" &
steady=$!
pids+=("$steady")
target/debug/catalogue load --target "http://$go_grpc_addr" --mix get=1 --rps 50 --duration "${LOAD_SECONDS}s" >"$work/go-peer-load.txt" &
go_load=$!
pids+=("$go_load")
sleep 5
curl -fsS -X PUT "http://$admin_addr/faults" -d '{"latency_ms": 1}' >/dev/null
load --concurrency $((MAX_CONCURRENT_CALLS * 4)) --duration 5s >"$work/burst.txt"
curl -fsS -X DELETE "http://$admin_addr/faults" >/dev/null
wait "$steady" "$go_load"
echo "steady load:" && cat "$work/steady.txt"
echo "Go peer, GetProduct:" && cat "$work/go-peer-load.txt"
echo "burst over --max-concurrent-calls $MAX_CONCURRENT_CALLS:" && cat "$work/burst.txt"
echo "circuit breaker changes: $(grep -c 'circuit breaker changed state' "$work/catalogue.log" || true)"

# Prometheus' own linter on a live scrape, every family present after load:
# no finding allowed (base units, histograms typed as histograms, counters
# named _total).
curl -fsS "http://$admin_addr/metrics" >"$work/scrape.txt"
if ! promtool check metrics <"$work/scrape.txt"; then
  echo "promtool check metrics found problems in /metrics" >&2
  exit 1
fi
echo "promtool check metrics: clean ($(grep -c '^# TYPE' "$work/scrape.txt") families)"

# Prometheus scraped OpenMetrics and stored the exemplars of sampled calls.
python3 - "$prometheus_url" <<'PYTHON'
import json, re, sys, time, urllib.parse, urllib.request
now = time.time()
for name in ("grpc_server_handling_seconds_bucket", "rpc_server_call_duration_seconds_bucket"):
    query = urllib.parse.urlencode({"query": name, "start": now - 600, "end": now})
    answer = json.load(urllib.request.urlopen(f"{sys.argv[1]}/api/v1/query_exemplars?{query}"))
    exemplars = [e for series in answer["data"] for e in series["exemplars"]]
    trace_ids = {e["labels"].get("trace_id", "") for e in exemplars}
    if not exemplars or not all(re.fullmatch("[0-9a-f]{32}", t) for t in trace_ids):
        sys.exit(f"no exemplars with trace ids stored for {name}: {answer}")
    print(f"exemplars: {name}: {len(exemplars)} stored, {len(trace_ids)} traces")
PYTHON

# Two more scrapes and a rule evaluation after the last call.
sleep 3
python3 scripts/panel-series.py "$prometheus_url"
