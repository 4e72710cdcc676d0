#!/usr/bin/env bash
# The live view (/debug/live) in headless Chromium while `catalogue load`
# runs: every chart has points and moves, a fault's marker and effect
# appear, a fifth viewer is refused (scripts/live-view.py says what each
# check asserts). Builds nothing: the binary is $CATALOGUE_BIN,
# target/debug/catalogue by default, or --binary PATH.
#   scripts/live-view.sh
#   scripts/live-view.sh --binary target/release/catalogue --screenshot docs/live-view.png
# Needs chromium, chromium-driver and the scripts' venv (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

need chromium
need chromedriver
python_venv
"$venv/bin/python" scripts/live-view.py "$@"
