#!/usr/bin/env bash
# Starts the service, drives GetProduct load, fetches a CPU and a heap
# profile from /debug/pprof/ and reads them with Go's own `go tool pprof`,
# asserting Rust function names come out; then checks the task dump and the
# 501 of a heap profile with jemalloc profiling off. Needs `go` and `curl`.
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/pprof-check
rm -rf "$out" && mkdir -p "$out"
cargo build --quiet --bin catalogue
. scripts/service.sh
start_service "$out/service.log"
debug="http://$admin_addr/debug/pprof"

# CPU: sampled while the load runs.
target/debug/catalogue load --target "http://$grpc_addr" --duration 6s --concurrency 8 \
  --mix get=8,search=2 >"$out/load.txt" &
load=$!
curl -sSf -D "$out/cpu.headers" -o "$out/cpu.pb.gz" "$debug/profile?seconds=3"
wait "$load"
grep -i '^x-profile-' "$out/cpu.headers" || { echo "no coverage headers:"; cat "$out/cpu.headers"; exit 1; }
cat "$out/load.txt"
curl -sSf -o "$out/heap.pb.gz" "$debug/heap"
curl -sSf -o "$out/tasks.txt" "$debug/tasks"

for profile in cpu heap; do
  go tool pprof -top "$out/$profile.pb.gz" >"$out/$profile.top.txt" 2>&1
  if ! grep -q 'catalogue::' "$out/$profile.top.txt"; then
    echo "go tool pprof -top shows no catalogue:: function in the $profile profile:"
    cat "$out/$profile.top.txt"
    exit 1
  fi
  echo "go tool pprof -top $profile: $(grep -c '::' "$out/$profile.top.txt") Rust lines, e.g."
  grep -m 3 'catalogue::' "$out/$profile.top.txt"
done
grep -q '"grpc-server"' "$out/tasks.txt" || { echo "no grpc-server task:"; cat "$out/tasks.txt"; exit 1; }
echo "task dump: $(head -1 "$out/tasks.txt"), grpc-server among them"
stop_service

# With jemalloc profiling off the heap endpoint says so, and the rest works.
MALLOC_CONF=prof:false start_service "$out/service-prof-off.log" --seed-products 100
status=$(curl -s -o "$out/heap-off.txt" -w '%{http_code}' "http://$admin_addr/debug/pprof/heap")
[ "$status" = 501 ] || { echo "heap with profiling off: $status, expected 501"; exit 1; }
echo "heap with MALLOC_CONF=prof:false: 501 $(cat "$out/heap-off.txt")"
