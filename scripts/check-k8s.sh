#!/usr/bin/env bash
# deploy/k8s/ against the real API schemas, no cluster: every manifest the
# kustomization renders (kubectl kustomize when kubectl is there, otherwise
# its `resources:` list read directly) and the example Secrets are validated
# against the Kubernetes 1.30 and 1.37 OpenAPI schemas in strict mode
# (kubernetes-validate, which ships them) and the PodMonitor against models
# generated from prometheus-operator's CRD schema; then the cross-references
# (selectors, port names, ConfigMap and Secret keys, grace period, variables
# the service's flags in src/ read). The validators are in the scripts' venv
# (scripts/setup.sh). See deploy/k8s/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

python_venv
rendered_flag=()
if command -v kubectl >/dev/null; then
  rendered=$(mktemp)
  trap 'rm -f "$rendered"' EXIT
  kubectl kustomize deploy/k8s >"$rendered"
  rendered_flag=(--rendered "$rendered")
fi
"$venv/bin/python" scripts/check-k8s.py deploy/k8s ${rendered_flag[@]+"${rendered_flag[@]}"}
