# Shared by the scripts (source it from the repository root).

# Generates the Python client from proto/ into target/python-client (a venv
# with grpcio-tools, made once). Sets $venv and $generated.
python_client() {
  venv=target/python-client/venv
  generated=target/python-client/generated
  # Other scripts share the virtualenv and install their own packages into
  # it: what this one needs is checked, not the virtualenv's existence.
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  if ! "$venv/bin/python" -c "import grpc, grpc_tools" 2>/dev/null; then
    "$venv/bin/pip" install --quiet grpcio grpcio-tools
  fi
  rm -rf "$generated" && mkdir -p "$generated"
  "$venv/bin/python" -m grpc_tools.protoc -Iproto --python_out="$generated" \
    --grpc_python_out="$generated" proto/catalogue/v1/catalogue.proto
}

# start_catalogue LOG [FLAG...]: starts $CATALOGUE_BIN (target/debug/catalogue
# by default) on loopback
# ports chosen by the system, JSON logs to LOG, and waits until it serves.
# Sets $server (its pid), $grpc_addr and $admin_addr.
start_catalogue() {
  local log=$1
  shift
  "${CATALOGUE_BIN:-target/debug/catalogue}" --grpc-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 \
    --log-format json "$@" >"$log" 2>&1 &
  server=$!
  await_address "$server" "$log"
  grpc_addr=$(logged_address "$log" grpc)
  admin_addr=$(logged_address "$log" admin)
}

# start_upstream LOG [FLAG...]: starts the inventory simulator
# (`catalogue upstream`) on loopback ports chosen by the system, logs to LOG,
# and waits until it serves. Sets $upstream (its pid), $upstream_addr and
# $upstream_admin_addr.
start_upstream() {
  local log=$1
  shift
  NO_COLOR=1 target/debug/catalogue upstream --addr 127.0.0.1:0 \
    --admin-addr 127.0.0.1:0 "$@" >"$log" 2>&1 &
  upstream=$!
  await_address "$upstream" "$log"
  upstream_addr=$(logged_address "$log" grpc)
  upstream_admin_addr=$(logged_address "$log" admin)
}

# logged_address LOG KEY: the address LOG names as "KEY":"host:port" (JSON
# logs) or KEY=host:port (text logs); empty until it does.
logged_address() {
  { grep -oE "(\"$2\":\"|$2=)[0-9.:]+" "$1" || true; } | head -1 | sed -E "s/^(\"$2\":\"|$2=)//"
}

# await_address PID LOG: waits until the process PID logs its gRPC address;
# if it never does, prints LOG, stops the process and fails.
await_address() {
  for _ in $(seq 100); do
    [ -n "$(logged_address "$2" grpc)" ] && return 0
    sleep 0.1
  done
  echo "$(basename "$2") names no address: the process did not start:"
  cat "$2"
  kill "$1" 2>/dev/null || true
  return 1
}

# need_prometheus: installs Debian's prometheus package (prometheus and
# promtool) when either is missing; its service is not started.
need_prometheus() {
  command -v promtool >/dev/null && command -v prometheus >/dev/null && return 0
  # policy-rc.d answering 101 keeps the package from starting its service.
  local policy=/usr/sbin/policy-rc.d added_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if [ -n "$added_policy" ]; then rm -f "$policy"; fi
}
