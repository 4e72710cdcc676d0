#!/usr/bin/env bash
# Three replicas against one PostgreSQL, driven through the load generator's
# balanced client; the second is drained (SIGTERM) a third of the way in and
# started again on the same ports. Prints the load summary (calls per
# replica) and what each replica served.
#   scripts/replicas.sh                      PostgreSQL at $DATABASE_URL, 15 s
#   DATABASE_URL=postgres://... scripts/replicas.sh --duration 60
# --duration (seconds, `60` or `60s`; default $DURATION or 15) also paces the
# drain; every other argument goes to `catalogue load`.
set -euo pipefail
cd "$(dirname "$0")/.."

database_url=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
duration=${DURATION:-15}
load_args=()
while (($#)); do
  case $1 in
    --duration) duration=${2:?--duration needs a number of seconds}; shift 2 ;;
    --duration=*) duration=${1#--duration=}; shift ;;
    *) load_args+=("$1"); shift ;;
  esac
done
duration=${duration%s}
if ! [[ $duration =~ ^[0-9]+$ ]] || ((duration < 6)); then
  echo "--duration must be whole seconds, at least 6 (got ${duration})" >&2
  exit 2
fi
cargo build --quiet --bin catalogue
bin=target/debug/catalogue
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start N: replica N on its ports, waits until /readyz answers 200.
start() {
  "$bin" serve --database-url "$database_url" --grpc-addr "127.0.0.1:${grpc[$1]}" \
    --admin-addr "127.0.0.1:${admin[$1]}" --health-addr 127.0.0.1:0 --instance-id "replica-$1" \
    --log-format json >>"$work/replica-$1.log" 2>&1 &
  pids[$1]=$!
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:${admin[$1]}/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "replica $1 did not become ready:"; cat "$work/replica-$1.log"; return 1
}

grpc=() admin=() targets=()
for n in 0 1 2; do
  grpc[$n]=$(free_port) admin[$n]=$(free_port)
  targets+=("http://127.0.0.1:${grpc[$n]}")
  start "$n"
done
echo "replicas: ${targets[*]}"

"$bin" load --target "$(IFS=,; echo "${targets[*]}")" --rps 300 \
  --duration "${duration}s" --mix get=80,list=10,search=10 ${load_args[@]+"${load_args[@]}"} &
load=$!
sleep $((duration / 3))
echo "draining replica 1 (SIGTERM)"
kill -TERM "${pids[1]}"; wait "${pids[1]}" || true
sleep $((duration / 6))
echo "starting replica 1 again"
start 1
wait "$load"

for n in 0 1 2; do
  served=$(curl -fsS "http://127.0.0.1:${admin[$n]}/metrics" \
    | awk '/^grpc_server_handled_total\{/ && /grpc_service="catalogue/ { sum += $NF } END { print sum + 0 }')
  echo "replica $n (${targets[$n]}) served $served calls since it last started"
done
