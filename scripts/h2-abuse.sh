#!/usr/bin/env bash
# Starts the service with its defaults (but a 5 s --stream-idle-timeout, so
# the idle rows take seconds) and runs the HTTP/2 abuse suite against it
# (loopback; attackers from 127.0.0.1 and 127.0.0.10 onwards, the "fresh
# client" of each row from 127.0.0.99). Each row asserts the server's
# answer, then that it serves. CATALOGUE_BIN names another build to attack
# (then nothing is built). Needs the scripts' venv (h2; scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

python_venv
[ -n "${CATALOGUE_BIN:-}" ] || cargo build --quiet --bin catalogue
export STREAM_IDLE_TIMEOUT_S=5
log=$(mktemp)
start_catalogue "$log" --database-url memory --seed-products 1000 \
  --stream-idle-timeout "${STREAM_IDLE_TIMEOUT_S}s"
trap 'kill $server 2>/dev/null || true; rm -f "$log" "$log.ready.json"' EXIT

"$venv/bin/python" scripts/h2-abuse.py "$grpc_addr" "$server"
kill -0 "$server" || { echo "the server died"; exit 1; }
