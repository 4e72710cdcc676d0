#!/usr/bin/env bash
# The overload experiment on both runtimes: a 10-second upstream and a flood
# of GetProduct calls rising in steps (1k, 5k, 20k in flight, 10 s each)
# against the grpc-go peer, the catalogue with its defaults and the
# catalogue with --no-protection, each in the same 1 GiB memory cgroup, on
# loopback. Prints one table, the three side by side, and with --plot draws
# memory and scheduling latency against calls in flight. Flags after -- go
# to scripts/flood.py, e.g.
#   scripts/flood.sh -- --repeat 3 --plot docs/flood-go-and-tokio.png
#   scripts/flood.sh -- --runs protected,unprotected --steps 4000 --step-seconds 30
# Needs Go's packages and the scripts' venv (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
[ "${1:-}" = "--" ] && shift
python_venv
cargo build --release --quiet --bin catalogue
bash go-peer/build.sh
mkdir -p target/flood
"$venv/bin/python" scripts/flood.py target/release/catalogue --go-peer target/go-peer/catalogue-go \
  --json target/flood/flood.json "$@" | tee target/flood/flood.txt
