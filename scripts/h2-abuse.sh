#!/usr/bin/env bash
# Starts the service with its defaults and runs the HTTP/2 abuse suite
# against it (loopback; the "fresh client" of each row connects from
# 127.0.0.2). Each row asserts the server's answer, then that it serves.
# Needs the scripts' venv (h2; scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

python_venv
cargo build --quiet --bin catalogue
log=$(mktemp)
start_catalogue "$log" --database-url memory --seed-products 100
trap 'kill $server 2>/dev/null || true; rm -f "$log" "$log.ready.json"' EXIT

"$venv/bin/python" scripts/h2-abuse.py "$grpc_addr" "$server"
kill -0 "$server" || { echo "the server died"; exit 1; }
