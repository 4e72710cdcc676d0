#!/usr/bin/env bash
# Calls every CatalogueService RPC through a Python client that grpcio-tools
# generates from proto/ (a venv under target/python-client/, made once):
#   scripts/python-client.sh 127.0.0.1:50051   against a running server
#   scripts/python-client.sh                   starts one (debug build, memory
#                                              store) and calls it, as CI does
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

python_client
if [ $# -gt 0 ]; then
  "$venv/bin/python" scripts/python-client.py "$1" "$generated"
  exit 0
fi
cargo build --quiet --bin catalogue
log=$(mktemp)
start_catalogue "$log" --database-url memory --seed-products 100
trap 'kill $server 2>/dev/null || true; rm -f "$log" "$log.ready.json"' EXIT
"$venv/bin/python" scripts/python-client.py "$grpc_addr" "$generated"
