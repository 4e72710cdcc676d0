#!/usr/bin/env bash
# Pictures of every fault's signature (docs/faults/*.png): the service, a
# native Prometheus scraping it every second and `catalogue load` on
# loopback, each fault of docs/faults.md switched on and off in turn, the
# dashboards' own panels drawn from the scrapes with matplotlib. Builds
# nothing: the binary is $CATALOGUE_BIN, target/debug/catalogue by default,
# or --binary PATH. Flags go to scripts/fault-pictures.py, e.g.
#   scripts/fault-pictures.sh --binary target/release/catalogue
#   scripts/fault-pictures.sh --only latency --seconds 10 --out target/fault-pictures --check
# Needs prometheus and the scripts' venv (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

need prometheus
python_venv
"$venv/bin/python" scripts/fault-pictures.py "$@"
