#!/usr/bin/env bash
# Pictures of every fault's signature (docs/faults/*.png): the service, a
# native Prometheus scraping it every second and `catalogue load` on
# loopback, each fault of the README's "Break it and watch" switched on and
# off in turn, the dashboards' own panels drawn from the scrapes with
# matplotlib (from PyPI, in a venv under target/fault-pictures/). Builds
# nothing: the binary is $CATALOGUE_BIN, target/debug/catalogue by default,
# or --binary PATH. Flags go to scripts/fault-pictures.py, e.g.
#   scripts/fault-pictures.sh --binary target/release/catalogue
#   scripts/fault-pictures.sh --only latency --seconds 10 --out target/fault-pictures --check
# Installs Debian's prometheus package when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib.sh
need_prometheus

venv=target/fault-pictures/venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c "import matplotlib" 2>/dev/null || "$venv/bin/pip" install --quiet matplotlib
"$venv/bin/python" scripts/fault-pictures.py "$@"
