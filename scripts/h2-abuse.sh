#!/usr/bin/env bash
# Starts the service and runs the HTTP/2 abuse suite against it (loopback).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/python-client/venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c "import grpc, h2, hpack" 2>/dev/null || "$venv/bin/pip" install --quiet grpcio h2

cargo build --quiet --bin catalogue
log=$(mktemp)
target/debug/catalogue --database-url memory --seed-products 100 --no-console \
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

"$venv/bin/python" scripts/h2-abuse.py "$addr" "$server"
kill -0 "$server" || { echo "the server died"; exit 1; }
