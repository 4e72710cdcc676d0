#!/usr/bin/env bash
# Measures what profiling costs: GetProduct throughput (examples/load.rs,
# release build, memory store) without and with a CPU profile running, and
# with jemalloc heap sampling off. Rounds alternate so drift hits every case
# alike; prints each run and the medians. The load generator shares the
# machine with the service, as it would on a small host.
# Usage: scripts/pprof-overhead.sh [ROUNDS] [SECONDS] [FREQUENCY]
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-3} seconds=${2:-10} frequency=${3:-99}
out=target/pprof-overhead
rm -rf "$out" && mkdir -p "$out"
cargo build --release --quiet --bin catalogue --example load
export CATALOGUE_BIN=target/release/catalogue
. scripts/service.sh

load() {
  target/release/examples/load --grpc-addr "$grpc_addr" --seconds "$seconds" \
    | tee -a "$out/$1.txt"
}
median() {
  grep -o '= [0-9]* calls/s' "$out/$1.txt" | awk '{print $2}' | sort -n \
    | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'
}

start_service "$out/service.log"
target/release/examples/load --grpc-addr "$grpc_addr" --seconds 3 >/dev/null   # warm-up
for round in $(seq "$rounds"); do
  echo "round $round: no profile"
  load baseline
  echo "round $round: CPU profile at $frequency Hz"
  curl -sSf -o /dev/null \
    "http://$admin_addr/debug/pprof/profile?seconds=$((seconds + 2))&frequency=$frequency" &
  profile=$!
  load profiled
  wait "$profile"
done
stop_service

MALLOC_CONF=prof:false start_service "$out/service-prof-off.log"
target/release/examples/load --grpc-addr "$grpc_addr" --seconds 3 >/dev/null
for round in $(seq "$rounds"); do
  echo "round $round: jemalloc heap sampling off"
  load heap-sampling-off
done
stop_service

baseline=$(median baseline) profiled=$(median profiled) off=$(median heap-sampling-off)
echo "medians: no profile $baseline calls/s; CPU profile at $frequency Hz $profiled calls/s" \
  "($(awk "BEGIN {printf \"%.3f\", $profiled / $baseline}")x);" \
  "heap sampling off $off calls/s (heap sampling on costs" \
  "$(awk "BEGIN {printf \"%.1f\", (1 - $baseline / $off) * 100}")%)"
