#!/usr/bin/env bash
# Installs everything the checks and benchmarks in scripts/ need, once, so
# that they install nothing themselves: Debian packages (apt) and the
# scripts' Python virtualenv, target/venv (from PyPI, scripts/requirements.txt).
# Runs again in seconds when everything is there.
#   scripts/setup.sh            Debian packages (as root), cargo-nextest and the virtualenv
#   scripts/setup.sh --python   the virtualenv only (no root needed)
set -euo pipefail
cd "$(dirname "$0")/.."

# Each package and who needs it (see scripts/README.md).
packages=(
  python3-venv                 # the virtualenv
  chromium chromium-driver     # the live view's browser test (live-view.sh)
  curl                         # every shell check
  nghttp2-client               # h2load: bench.py, instructions.py, console-overhead.py
  prometheus                   # promtool and prometheus: check-dashboards.sh, fault-pictures.sh
  valgrind                     # callgrind: instructions.py
  golang-go                    # go tool pprof (pprof-check.sh), the grpc-go peer
  # The grpc-go peer (go-peer/build.sh), offline from Debian's Go packages.
  # golang-github-golang-protobuf-1-5-dev, not the 1.3 one the gRPC package
  # would pull in: grpc-go's codec goes through github.com/golang/protobuf,
  # and only 1.5 handles APIv2 generated messages.
  golang-google-grpc-dev golang-github-grpc-ecosystem-go-grpc-prometheus-dev
  golang-github-prometheus-client-golang-dev golang-google-protobuf-dev
  golang-github-golang-protobuf-1-5-dev protobuf-compiler libprotobuf-dev
  protoc-gen-go protoc-gen-go-grpc
)

if [ "${1:-}" != "--python" ]; then
  missing=()
  for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "apt: installing ${missing[*]}" >&2
    # policy-rc.d answering 101 keeps packages (prometheus) from starting
    # their services.
    policy=/usr/sbin/policy-rc.d added_policy=""
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [ -n "$added_policy" ]; then rm -f "$policy"; fi
  fi
  # The second test runner CI uses (one process per test).
  command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
fi

venv=target/venv
requirements=scripts/requirements.txt
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$requirements" "$venv/requirements.txt"; then
  echo "venv: installing $requirements into $venv" >&2
  rm -rf "$venv"
  mkdir -p target
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$venv/requirements.txt"
fi
