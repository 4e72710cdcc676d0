#!/usr/bin/env bash
# The overload experiment on both runtimes: a 10-second upstream and a flood
# of GetProduct calls rising in steps (1k, 5k, 20k in flight, 10 s each)
# against the grpc-go peer, the catalogue with its defaults and the
# catalogue with --no-protection, each in the same 1 GiB memory cgroup, on
# loopback. Prints one table, the three side by side, and draws memory and
# scheduling latency against calls in flight (matplotlib from PyPI, in a
# venv under target/flood/). Flags after -- go to scripts/flood.py, e.g.
#   scripts/flood.sh -- --repeat 3 --plot docs/flood.png
#   scripts/flood.sh -- --runs protected,unprotected --steps 4000 --step-seconds 30
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${1:-}" = "--" ] && shift
cargo build --release --quiet --bin catalogue
bash scripts/go-peer/build.sh
mkdir -p target/flood
python=python3
if [[ " $* " == *" --plot"* ]]; then
  venv=target/flood/venv
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet matplotlib
  fi
  python=$venv/bin/python
fi
"$python" scripts/flood.py target/release/catalogue --go-peer target/go-peer/catalogue-go \
  --json target/flood/flood.json "$@" | tee target/flood/flood.txt
