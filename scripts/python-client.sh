#!/usr/bin/env bash
# Generates a Python client from proto/ with grpcio-tools, starts the service
# on the memory store and calls every RPC through that client.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

python_client
cargo build --quiet --bin catalogue
log=$(mktemp)
start_catalogue "$log" --database-url memory --seed-products 100
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT

"$venv/bin/python" scripts/python-client.py "$grpc_addr" "$generated"
