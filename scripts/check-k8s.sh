#!/usr/bin/env bash
# deploy/k8s/ against the real API schemas, no cluster: every manifest the
# kustomization renders (kubectl kustomize when kubectl is there, otherwise
# its `resources:` list read directly) and the example Secrets are validated
# against the Kubernetes 1.30 and 1.37 OpenAPI schemas in strict mode
# (kubernetes-validate, which ships them) and the PodMonitor against models
# generated from prometheus-operator's CRD schema; then the cross-references
# (selectors, port names, ConfigMap and Secret keys, grace period, variables
# the service's flags in src/ read). The validators live in a virtualenv in target/,
# installed from PyPI on the first run only. See deploy/k8s/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/k8s-venv
requirements="kubernetes-validate==1.37.0 cloudcoil-models-prometheus-operator==0.80.1.0"

if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.requirements" 2>/dev/null)" != "$requirements" ]; then
  rm -rf "$venv"
  mkdir -p target
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    # Debian's python3 keeps venv (ensurepip) in a package of its own.
    rm -rf "$venv"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  fi
  # shellcheck disable=SC2086 # one word per requirement
  "$venv/bin/pip" install --quiet --disable-pip-version-check $requirements
  echo "$requirements" >"$venv/.requirements"
fi

rendered_flag=()
if command -v kubectl >/dev/null; then
  rendered=$(mktemp)
  trap 'rm -f "$rendered"' EXIT
  kubectl kustomize deploy/k8s >"$rendered"
  rendered_flag=(--rendered "$rendered")
fi
"$venv/bin/python" scripts/check-k8s.py deploy/k8s "${rendered_flag[@]}"
