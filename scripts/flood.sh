#!/usr/bin/env bash
# The overload experiment, with protection and without: a 10-second upstream
# and a flood of GetProduct calls far beyond capacity, on loopback, for a
# bounded time. The unprotected run is capped at 1 GiB by a memory cgroup so
# the machine survives it. Flags after -- go to scripts/flood.py, e.g.
#   scripts/flood.sh -- --duration 20 --concurrency 2000
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${1:-}" = "--" ] && shift
cargo build --release --quiet --bin catalogue
echo "== protected (defaults)"
python3 scripts/flood.py target/release/catalogue "$@" | tee target/flood-protected.txt
echo "== --no-protection"
python3 scripts/flood.py target/release/catalogue --no-protection "$@" | tee target/flood-unprotected.txt
