# Sourced by the profile scripts: `start_service LOG [FLAG…]` starts the
# service on the memory store (see `start_catalogue` in lib.sh) and sets
# `grpc_addr`, `admin_addr` and `service_pid`; an EXIT trap stops every
# service started so.
source scripts/lib.sh

service_pids=()
trap 'kill "${service_pids[@]}" 2>/dev/null || true' EXIT

start_service() {
  local log=$1
  shift
  start_catalogue "$log" --database-url memory "$@" || return 1
  service_pid=$server
  service_pids+=("$service_pid")
}

stop_service() {
  kill "$service_pid" 2>/dev/null || true
  wait "$service_pid" 2>/dev/null || true
}
