#!/usr/bin/env bash
# Starts the service, drives GetProduct and SearchProducts load, fetches a
# CPU and a heap profile from /debug/pprof/ and reads them with Go's own
# `go tool pprof`, asserting Rust function names come out and that
# `-tags` lists the calls' labels (rpc_method of both methods, trace_id of
# the traced ones); then checks the task dump and the 501 of a heap profile
# with jemalloc profiling off. Needs `go` and `curl` (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/pprof-check
rm -rf "$out" && mkdir -p "$out"
cargo build --quiet --bin catalogue
. scripts/service.sh
need go curl
# Traced calls (1 in 20) make spans whether or not their export succeeds:
# nothing listens on the discard port, and labels need only the spans.
start_service "$out/service.log" --otlp-endpoint http://127.0.0.1:9 \
  --trace-sampler traceidratio --trace-sampler-arg 0.05
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
# Labels: which RPC spent the CPU, and which trace.
go tool pprof -tags "$out/cpu.pb.gz" >"$out/cpu.tags.txt" 2>&1
for tag in 'rpc_method:' ': GetProduct$' ': SearchProducts$' 'trace_id:' 'span_id:'; do
  grep -q "$tag" "$out/cpu.tags.txt" || { echo "go tool pprof -tags shows no '$tag':"; cat "$out/cpu.tags.txt"; exit 1; }
done
echo "go tool pprof -tags:"
grep -A3 'rpc_method:' "$out/cpu.tags.txt"
go tool pprof -top -tagfocus rpc_method=SearchProducts "$out/cpu.pb.gz" >"$out/cpu.search.txt" 2>&1
grep -q 'tagfocus=rpc_method=SearchProducts' "$out/cpu.search.txt" \
  && grep -q 'catalogue::' "$out/cpu.search.txt" \
  || { echo "-tagfocus rpc_method=SearchProducts:"; cat "$out/cpu.search.txt"; exit 1; }
status=$(curl -s -o "$out/bad-method.txt" -w '%{http_code}' "$debug/profile?seconds=1&rpc_method=Nope")
[ "$status" = 400 ] || { echo "?rpc_method=Nope: $status, expected 400"; exit 1; }
echo "?rpc_method=Nope: 400 $(cat "$out/bad-method.txt")"
grep -q '"grpc-server"' "$out/tasks.txt" || { echo "no grpc-server task:"; cat "$out/tasks.txt"; exit 1; }
echo "task dump: $(head -1 "$out/tasks.txt"), grpc-server among them"
stop_service

# With jemalloc profiling off the heap endpoint says so, and the rest works.
MALLOC_CONF=prof:false start_service "$out/service-prof-off.log" --seed-products 100
status=$(curl -s -o "$out/heap-off.txt" -w '%{http_code}' "http://$admin_addr/debug/pprof/heap")
[ "$status" = 501 ] || { echo "heap with profiling off: $status, expected 501"; exit 1; }
echo "heap with MALLOC_CONF=prof:false: 501 $(cat "$out/heap-off.txt")"
