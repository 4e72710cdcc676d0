#!/usr/bin/env bash
# Measures what profiling costs: GetProduct throughput (`catalogue load`,
# release build, memory store) and the service's CPU time per call, without
# and with a CPU profile running, and with jemalloc heap sampling off (a
# second instance, idle but for its turn). Each round runs the three cases
# back to back and the ratios are taken within a round, so drift and other
# work on the machine hit both sides of a ratio alike; the medians of those
# ratios are printed last. The load generator shares the cores with the
# service.
# Usage: scripts/pprof-overhead.sh [ROUNDS] [SECONDS] [FREQUENCY]
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-10} seconds=${2:-5} frequency=${3:-99}
out=target/pprof-overhead
rm -rf "$out" && mkdir -p "$out"
cargo build --release --quiet --bin catalogue
export CATALOGUE_BIN=target/release/catalogue
. scripts/service.sh

MALLOC_CONF=prof:false start_service "$out/service-heap-sampling-off.log"
off_pid=$service_pid off_grpc=$grpc_addr
start_service "$out/service.log"

# One load run against PID at ADDR; prints "calls/s µs-of-service-CPU/call".
load() {
  local pid=$1 addr=$2 before after result calls_per_second
  before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  result=$(target/release/catalogue load --target "http://$addr" --duration "${seconds}s" \
    --concurrency 32 --mix get=1 --json)
  after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  calls_per_second=$(grep -o '"achieved_rps":[0-9.]*' <<<"$result" | cut -d: -f2 | cut -d. -f1)
  awk -v cps="$calls_per_second" -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" \
    -v s="$seconds" 'BEGIN {printf "%d %.1f\n", cps, ticks / hz * 1e6 / (cps * s)}'
}
median() { sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }

load "$service_pid" "$grpc_addr" >/dev/null   # warm-up
load "$off_pid" "$off_grpc" >/dev/null
echo "round: calls/s and µs CPU/call for no profile | CPU profile at $frequency Hz | heap sampling off"
for round in $(seq "$rounds"); do
  baseline=$(load "$service_pid" "$grpc_addr")
  curl -sSf -o /dev/null \
    "http://$admin_addr/debug/pprof/profile?seconds=$((seconds + 1))&frequency=$frequency" &
  profile=$!
  profiled=$(load "$service_pid" "$grpc_addr")
  wait "$profile"
  off=$(load "$off_pid" "$off_grpc")
  echo "$round: $baseline | $profiled | $off"
  echo "$baseline $profiled $off" >>"$out/rounds.txt"
done

ratio() { awk "{print \$$1 / \$$2}" "$out/rounds.txt" | median; }
printf 'median of per-round ratios: CPU profile at %s Hz vs none: throughput %.3fx, CPU/call %.3fx\n' \
  "$frequency" "$(ratio 3 1)" "$(ratio 4 2)"
printf 'median of per-round ratios: heap sampling on vs off: throughput %.3fx, CPU/call %.3fx\n' \
  "$(ratio 1 5)" "$(ratio 2 6)"
