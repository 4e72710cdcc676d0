#!/usr/bin/env bash
# Benchmarks of the release build; prints a JSON table (and writes
# target/bench.json). Installs what it needs: h2load from Debian's
# nghttp2-client, grpcio into the scripts' virtualenv.
#   scripts/bench.sh            full run (~13 min on 2 cores)
#   scripts/bench.sh --quick    one short round of everything
#   scripts/bench.sh --only go-peer   one section alone (memory, sqlite,
#                                     observability, go-peer; repeatable)
#   scripts/bench.sh --ladder [--only-instructions]
#                               the cost ladder instead (scripts/ladder.py,
#                               target/ladder.json; ~12 min, callgrind alone ~6)
# The go-peer section runs ours side by side with a grpc-go peer, built from
# Debian's Go packages by scripts/go-peer/build.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if ! command -v h2load >/dev/null; then
  apt-get update -qq && apt-get install -y -qq nghttp2-client >/dev/null
fi
python_client
cargo build --release --quiet --bin catalogue --example bare_tonic
if [[ "${1:-}" == --ladder ]]; then
  shift
  exec "$venv/bin/python" scripts/ladder.py "$@"
fi
# The grpc-go peer, unless --only leaves its section out.
if [[ " $* " != *" --only"* || " $* " == *"go-peer"* ]]; then
  scripts/go-peer/build.sh
fi
"$venv/bin/python" scripts/bench.py target/release/catalogue --json target/bench.json "$@"
