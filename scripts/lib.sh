# Shared by the scripts (source it from the repository root).

# python_venv: sets $venv to the scripts' virtualenv (target/venv, every
# package of scripts/requirements.txt), made by scripts/setup.sh --python
# when it is missing (no root needed; the apt part of setup.sh is not run).
python_venv() {
  venv=target/venv
  if [ ! -x "$venv/bin/python" ]; then
    echo "no $venv: running scripts/setup.sh --python" >&2
    bash scripts/setup.sh --python
  fi
}

# python_client: generates the Python client from proto/ into
# target/python-client/generated. Sets $venv and $generated.
python_client() {
  python_venv
  generated=target/python-client/generated
  rm -rf "$generated" && mkdir -p "$generated"
  "$venv/bin/python" -m grpc_tools.protoc -Iproto --python_out="$generated" \
    --grpc_python_out="$generated" proto/catalogue/v1/catalogue.proto
}

# start_server LOG COMMAND...: runs COMMAND with `--ready-file LOG.ready.json`
# added (any binary that writes the ready file: `catalogue serve`,
# `catalogue upstream`, the grpc-go peer), output to LOG, and waits for the
# file. Sets $started (its pid) and $ready (the file: `ready_address $ready
# grpc`).
start_server() {
  local log=$1
  shift
  ready=$log.ready.json
  rm -f "$ready"
  "$@" --ready-file "$ready" >"$log" 2>&1 &
  started=$!
  for _ in $(seq 300); do
    [ -s "$ready" ] && return 0
    if ! kill -0 "$started" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "$* wrote no ready file; its output:"
  cat "$log"
  kill "$started" 2>/dev/null || true
  return 1
}

# ready_address FILE KEY: the address the ready file FILE names for KEY
# (grpc, admin or console).
ready_address() {
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]] or "")' "$1" "$2"
}

# start_catalogue LOG [FLAG...]: starts $CATALOGUE_BIN (target/debug/catalogue
# by default) on loopback ports chosen by the system, JSON logs to LOG, and
# waits until it serves. Sets $server (its pid), $grpc_addr and $admin_addr.
start_catalogue() {
  local log=$1
  shift
  start_server "$log" "${CATALOGUE_BIN:-target/debug/catalogue}" serve --grpc-addr 127.0.0.1:0 \
    --admin-addr 127.0.0.1:0 --health-addr 127.0.0.1:0 --log-format json "$@" || return 1
  server=$started
  grpc_addr=$(ready_address "$ready" grpc)
  admin_addr=$(ready_address "$ready" admin)
}

# start_upstream LOG [FLAG...]: starts the inventory simulator
# (`catalogue upstream`) on loopback ports chosen by the system, logs to LOG,
# and waits until it serves. Sets $upstream (its pid), $upstream_addr and
# $upstream_admin_addr.
start_upstream() {
  local log=$1
  shift
  start_server "$log" target/debug/catalogue upstream --addr 127.0.0.1:0 \
    --admin-addr 127.0.0.1:0 "$@" || return 1
  upstream=$started
  upstream_addr=$(ready_address "$ready" grpc)
  upstream_admin_addr=$(ready_address "$ready" admin)
}

# need COMMAND...: fails, naming scripts/setup.sh, unless every COMMAND is
# on PATH (the checks install nothing themselves).
need() {
  local missing=()
  for command in "$@"; do
    command -v "$command" >/dev/null || missing+=("$command")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "missing: ${missing[*]}; run scripts/setup.sh first" >&2
    return 1
  fi
}
