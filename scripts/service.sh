# Sourced by the scripts here: `start_service LOG [FLAG…]` starts the service
# (`$CATALOGUE_BIN`, the debug binary by default) on the memory store with
# ports 0 and sets `grpc_addr`, `admin_addr` and `service_pid` from its JSON
# log; an EXIT trap stops every service started so.

service_pids=()
trap 'kill "${service_pids[@]}" 2>/dev/null || true' EXIT

start_service() {
  local log=$1
  shift
  : >"$log"
  "${CATALOGUE_BIN:-target/debug/catalogue}" --database-url memory --grpc-addr 127.0.0.1:0 \
    --admin-addr 127.0.0.1:0 --log-format json "$@" >"$log" 2>&1 &
  service_pid=$!
  service_pids+=("$service_pid")
  grpc_addr="" admin_addr=""
  for _ in $(seq 100); do
    grpc_addr=$(grep -o '"grpc":"[^"]*"' "$log" | head -1 | cut -d'"' -f4 || true)
    admin_addr=$(grep -o '"admin":"[^"]*"' "$log" | head -1 | cut -d'"' -f4 || true)
    [ -n "$grpc_addr" ] && [ -n "$admin_addr" ] && return 0
    sleep 0.1
  done
  echo "the service did not start:"
  cat "$log"
  return 1
}

stop_service() {
  kill "$service_pid" 2>/dev/null || true
  wait "$service_pid" 2>/dev/null || true
}
