#!/usr/bin/env bash
# Benchmarks of the release build; prints a JSON table (and writes
# target/bench.json). Installs what it needs: h2load from Debian's
# nghttp2-client, grpcio into the scripts' virtualenv.
#   scripts/bench.sh            full run (~10 min on 2 cores)
#   scripts/bench.sh --quick    one short round of everything
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if ! command -v h2load >/dev/null; then
  apt-get update -qq && apt-get install -y -qq nghttp2-client >/dev/null
fi
python_client
cargo build --release --quiet --bin catalogue
"$venv/bin/python" scripts/bench.py target/release/catalogue --json target/bench.json "$@"
