#!/usr/bin/env bash
# Generates a Python client from proto/ with grpcio-tools, starts the service
# on the memory store and calls every RPC through that client.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/python-client/venv
generated=target/python-client/generated
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet grpcio grpcio-tools
fi
rm -rf "$generated" && mkdir -p "$generated"
"$venv/bin/python" -m grpc_tools.protoc -Iproto --python_out="$generated" \
  --grpc_python_out="$generated" proto/catalogue/v1/catalogue.proto

cargo build --quiet --bin catalogue
log=$(mktemp)
target/debug/catalogue --database-url memory --seed-products 100 \
  --grpc-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 --log-format json >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT

addr=""
for _ in $(seq 100); do
  addr=$(grep -o '"grpc":"[^"]*"' "$log" | head -1 | cut -d'"' -f4 || true)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "the service did not start:"; cat "$log"; exit 1; }

"$venv/bin/python" scripts/python-client.py "$addr" "$generated"
