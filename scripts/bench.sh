#!/usr/bin/env bash
# Benchmarks of the release build: writes target/bench.json and renders
# docs/benchmarks.md from it (scripts/render-benchmarks.py).
#   scripts/bench.sh                  full run (~15 min on 2 cores, after the build)
#   scripts/bench.sh --quick          one short round of everything
#   scripts/bench.sh --only go-peer   one section alone (memory, sqlite,
#                                     observability, go-peer, footprint; repeatable)
#   scripts/bench.sh --ladder [--only-instructions]
#                                     the cost ladder instead (scripts/ladder.py:
#                                     target/ladder.json and docs/cost-ladder.md;
#                                     ~12 min, callgrind alone ~6)
# The go-peer section runs ours side by side with the grpc-go peer, built
# from Debian's Go packages by go-peer/build.sh, and the bare tonic baseline
# (examples/bare_tonic.rs). Needs h2load, valgrind for the ladder, Go's
# packages and the scripts' venv (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

need h2load
python_venv
cargo build --release --quiet --bin catalogue --example bare_tonic
if [[ "${1:-}" == --ladder ]]; then
  shift
  exec "$venv/bin/python" scripts/ladder.py "$@"
fi
# The grpc-go peer, unless --only leaves its section out.
if [[ " $* " != *" --only"* || " $* " == *"go-peer"* ]]; then
  bash go-peer/build.sh
fi
"$venv/bin/python" scripts/bench.py target/release/catalogue --json target/bench.json "$@"
"$venv/bin/python" scripts/render-benchmarks.py target/bench.json --ladder target/ladder.json \
  --out docs/benchmarks.md
