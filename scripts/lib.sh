# Shared by the scripts (source it from the repository root).

# Generates the Python client from proto/ into target/python-client (a venv
# with grpcio-tools, made once). Sets $venv and $generated.
python_client() {
  venv=target/python-client/venv
  generated=target/python-client/generated
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet grpcio grpcio-tools
  fi
  rm -rf "$generated" && mkdir -p "$generated"
  "$venv/bin/python" -m grpc_tools.protoc -Iproto --python_out="$generated" \
    --grpc_python_out="$generated" proto/catalogue/v1/catalogue.proto
}

# start_catalogue LOG [FLAG...]: starts target/debug/catalogue on loopback
# ports chosen by the system, JSON logs to LOG, and waits until it serves.
# Sets $server (its pid), $grpc_addr and $admin_addr.
start_catalogue() {
  local log=$1
  shift
  target/debug/catalogue --grpc-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 \
    --log-format json "$@" >"$log" 2>&1 &
  server=$!
  grpc_addr=""
  admin_addr=""
  for _ in $(seq 100); do
    grpc_addr=$(grep -o '"grpc":"[^"]*"' "$log" | head -1 | cut -d'"' -f4 || true)
    admin_addr=$(grep -o '"admin":"[^"]*"' "$log" | head -1 | cut -d'"' -f4 || true)
    [ -n "$grpc_addr" ] && return 0
    sleep 0.1
  done
  echo "the service did not start:"
  cat "$log"
  kill "$server" 2>/dev/null || true
  return 1
}
