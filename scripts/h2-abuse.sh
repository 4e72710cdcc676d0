#!/usr/bin/env bash
# Starts the service and runs the HTTP/2 abuse suite against it (loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

venv=target/python-client/venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c "import grpc, h2, hpack" 2>/dev/null || "$venv/bin/pip" install --quiet grpcio h2

cargo build --quiet --bin catalogue
log=$(mktemp)
start_catalogue "$log" --database-url memory --seed-products 100
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT

"$venv/bin/python" scripts/h2-abuse.py "$grpc_addr" "$server"
kill -0 "$server" || { echo "the server died"; exit 1; }
