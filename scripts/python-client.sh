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
. scripts/service.sh
log=target/python-client/service.log
start_service "$log" --seed-products 100
addr=$grpc_addr

"$venv/bin/python" scripts/python-client.py "$addr" "$generated"
