"""Validates deploy/k8s/ against published API schemas; run by check-k8s.sh
inside its virtualenv, which has the two schema sources:

- kubernetes-validate: the JSON schemas of the Kubernetes API's OpenAPI
  document, one set per Kubernetes release, "strict" (unknown fields are
  errors, as `kubectl apply --validate=strict` makes them).
- cloudcoil-models-prometheus-operator: pydantic models generated from the
  openAPIV3Schema of prometheus-operator's CRDs (its release bundle.yaml),
  for the PodMonitor; unknown fields are found by comparing the input with
  what the model kept.

Then the cross-references no schema sees: selectors that select the pods,
port names that exist, ConfigMaps and Secrets with the keys read, a grace
period longer than preStop plus the drain, CATALOGUE_* variables that
the service's flags read (every clap `Args` in src/), standard labels and no namespace;
and the admin surface: the admin token from a Secret, no --admin-insecure
and no --enable-faults (as a flag or a variable).

Usage: check-k8s.py DIR [--rendered FILE] (FILE: `kubectl kustomize DIR`
output; without it the kustomization's `resources:` are read directly).
"""

import argparse
import importlib.metadata
import pathlib
import re
import sys

import kubernetes_validate
import pydantic
import yaml
from cloudcoil.models.prometheus_operator import v1 as monitoring_v1

# The oldest Kubernetes the manifests support (grpc probes, the preStop
# sleep action and matchLabelKeys are on by default from 1.30) and the
# newest whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30", "1.37")

CRD_MODELS = {
    ("monitoring.coreos.com/v1", "PodMonitor"): monitoring_v1.PodMonitor,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): monitoring_v1.ServiceMonitor,
}

STANDARD_LABELS = {
    "app.kubernetes.io/name": "catalogue",
    "app.kubernetes.io/component": "server",
    "app.kubernetes.io/part-of": "catalogue",
}

# The kustomization keys the fallback (no kubectl) can stand in for.
PLAIN_KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources"}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory", type=pathlib.Path)
    parser.add_argument("--rendered", type=pathlib.Path)
    parser.add_argument("--src", type=pathlib.Path, default=pathlib.Path("src"))
    args = parser.parse_args()

    errors: list[str] = []
    kustomization = yaml.safe_load((args.directory / "kustomization.yaml").read_text())
    listed = check_listing(args.directory, kustomization, errors)

    if args.rendered:
        resources = load_documents(args.rendered, errors)
        rendered_by = "kubectl kustomize"
    else:
        extra = set(kustomization) - PLAIN_KUSTOMIZATION_KEYS
        if extra:
            errors.append(f"kustomization.yaml uses {sorted(extra)}: rendering it needs kubectl (kustomize)")
        resources = [doc for name in listed if (args.directory / name).is_file()
                     for doc in load_documents(args.directory / name, errors)]
        rendered_by = "kustomization resources, no kubectl"
    examples = [doc for path in sorted(args.directory.glob("*.example.yaml"))
                for doc in load_documents(path, errors)]

    for doc in resources + examples:
        validate_schema(doc, errors)
    if not errors:
        # Each subsystem declares its own flags; config.rs composes them.
        flags_rs = "\n".join(path.read_text() for path in sorted(args.src.rglob("*.rs")))
        check_references(resources, examples, flags_rs, errors)

    if errors:
        for error in errors:
            print(f"k8s: {error}", file=sys.stderr)
        print(f"k8s: {len(errors)} problem(s) in {args.directory}", file=sys.stderr)
        return 1
    operator_version = importlib.metadata.version("cloudcoil.models.prometheus_operator")
    print(
        f"k8s: {len(resources)} resources ({rendered_by}) and {len(examples)} example "
        f"Secrets valid against Kubernetes {' and '.join(KUBERNETES_VERSIONS)} schemas (strict, "
        f"kubernetes-validate {importlib.metadata.version('kubernetes-validate')}) and the "
        f"prometheus-operator v{operator_version.rsplit('.', 1)[0]} CRD; references consistent"
    )
    return 0


def check_listing(directory: pathlib.Path, kustomization: dict, errors: list[str]) -> list[str]:
    """Every listed file exists, and every manifest beside it is listed."""
    listed = kustomization.get("resources") or []
    for name in listed:
        if not (directory / name).is_file():
            errors.append(f"kustomization.yaml lists {name}, which does not exist")
    for path in sorted(directory.glob("*.y*ml")):
        if path.name == "kustomization.yaml" or path.name.endswith(".example.yaml"):
            continue
        if path.name not in listed:
            errors.append(f"{path.name} is not in kustomization.yaml's resources (name it *.example.yaml if it is an example)")
    return listed


def load_documents(path: pathlib.Path, errors: list[str]) -> list[dict]:
    try:
        documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    except yaml.YAMLError as error:
        errors.append(f"{path}: not YAML: {error}")
        return []
    for doc in documents:
        if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
            errors.append(f"{path}: a document without apiVersion and kind")
    return [doc for doc in documents if isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc]


def name_of(doc: dict) -> str:
    return f"{doc['kind']}/{(doc.get('metadata') or {}).get('name', '?')}"


def validate_schema(doc: dict, errors: list[str]) -> None:
    model = CRD_MODELS.get((doc["apiVersion"], doc["kind"]))
    if model is not None:
        validate_custom_resource(doc, model, errors)
        return
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path) or "(top)"
            errors.append(f"{name_of(doc)}: Kubernetes {version}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(
                f"{name_of(doc)}: Kubernetes {version} has no kind {doc['kind']} in {doc['apiVersion']}"
                " (misspelled, or an API version it no longer serves)"
            )


def validate_custom_resource(doc: dict, model: type[pydantic.BaseModel], errors: list[str]) -> None:
    try:
        kept = model.model_validate(doc, strict=True).model_dump(by_alias=True, exclude_unset=True, mode="json")
    except pydantic.ValidationError as error:
        for detail in error.errors():
            path = ".".join(str(part) for part in detail["loc"])
            errors.append(f"{name_of(doc)}: CRD schema: {path}: {detail['msg']}")
        return
    for path in unknown_fields(doc, kept, ""):
        errors.append(f"{name_of(doc)}: CRD schema: unknown field {path}")


def unknown_fields(given, kept, path: str):
    """Paths in `given` that the model dropped (pydantic ignores extras)."""
    if isinstance(given, dict) and isinstance(kept, dict):
        for key, value in given.items():
            if key not in kept:
                yield f"{path}.{key}".lstrip(".")
            else:
                yield from unknown_fields(value, kept[key], f"{path}.{key}")
    elif isinstance(given, list) and isinstance(kept, list):
        for index, (value, kept_value) in enumerate(zip(given, kept)):
            yield from unknown_fields(value, kept_value, f"{path}[{index}]")


def seconds(duration: str) -> float:
    """A humantime duration of the kinds the manifests use: 10s, 500ms, 1m."""
    match = re.fullmatch(r"(\d+)(ms|s|m)", duration)
    if not match:
        raise ValueError(f"cannot read duration {duration!r}")
    return int(match[1]) * {"ms": 0.001, "s": 1, "m": 60}[match[2]]


def check_references(resources: list[dict], examples: list[dict], flags_rs: str, errors: list[str]) -> None:
    def by_kind(kind: str, docs=resources) -> dict[str, dict]:
        return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}

    for doc in resources + examples:
        metadata = doc.get("metadata") or {}
        if "namespace" in metadata:
            errors.append(f"{name_of(doc)}: sets a namespace; the manifests are namespace-agnostic")
        labels = metadata.get("labels") or {}
        for key, value in STANDARD_LABELS.items():
            if labels.get(key) != value:
                errors.append(f"{name_of(doc)}: label {key} should be {value!r}, is {labels.get(key)!r}")

    deployments = by_kind("Deployment")
    if list(deployments) != ["catalogue"]:
        errors.append(f"expected one Deployment, catalogue; found {sorted(deployments)}")
        return
    deployment = deployments["catalogue"]
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"].get("labels") or {}
    (container,) = pod["spec"]["containers"]
    port_numbers = {port["name"]: port["containerPort"] for port in container.get("ports", [])}

    def selects_pods(what: str, selector: dict | None) -> None:
        if not selector:
            errors.append(f"{what}: no selector")
        elif any(pod_labels.get(key) != value for key, value in selector.items()):
            errors.append(f"{what}: selector {selector} does not select the pods (labels {pod_labels})")

    selects_pods("Deployment/catalogue", (deployment["spec"].get("selector") or {}).get("matchLabels"))
    for index, constraint in enumerate(pod["spec"].get("topologySpreadConstraints", [])):
        selects_pods(f"Deployment/catalogue topologySpreadConstraints[{index}]", (constraint.get("labelSelector") or {}).get("matchLabels"))
    for name, service in by_kind("Service").items():
        selects_pods(f"Service/{name}", service["spec"].get("selector"))
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if isinstance(target, str) and target not in port_numbers:
                errors.append(f"Service/{name}: targetPort {target!r} is no container port ({sorted(port_numbers)})")
    for name, budget in by_kind("PodDisruptionBudget").items():
        selects_pods(f"PodDisruptionBudget/{name}", (budget["spec"].get("selector") or {}).get("matchLabels"))
        if "minAvailable" in budget["spec"] and "maxUnavailable" in budget["spec"]:
            errors.append(f"PodDisruptionBudget/{name}: minAvailable and maxUnavailable both set (the API refuses it)")
    for name, monitor in by_kind("PodMonitor").items():
        selects_pods(f"PodMonitor/{name}", (monitor["spec"].get("selector") or {}).get("matchLabels"))
        for endpoint in monitor["spec"].get("podMetricsEndpoints", []):
            if endpoint.get("port") not in port_numbers:
                errors.append(f"PodMonitor/{name}: port {endpoint.get('port')!r} is no container port")
            for relabeling in endpoint.get("relabelings", []):
                if relabeling.get("targetLabel") == "instance":
                    errors.append(f"PodMonitor/{name}: rewrites `instance`, which the dashboards split by")
    for name, autoscaler in by_kind("HorizontalPodAutoscaler").items():
        target = autoscaler["spec"]["scaleTargetRef"]
        if (target["kind"], target["name"]) != ("Deployment", "catalogue"):
            errors.append(f"HorizontalPodAutoscaler/{name}: scales {target['kind']}/{target['name']}, not Deployment/catalogue")

    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        grpc = (container.get(probe) or {}).get("grpc")
        if grpc is None or grpc["port"] != port_numbers.get("health"):
            errors.append(f"Deployment/catalogue: {probe} is not a grpc probe on the health port")

    # Every ConfigMap and Secret key read exists (Secrets in the example).
    sources = {"configMapKeyRef": by_kind("ConfigMap"), "secretKeyRef": by_kind("Secret", examples)}
    config_variables = set(re.findall(r'env\s*=\s*"([A-Z0-9_]+)"', flags_rs))
    environment = {}
    for variable in container.get("env", []):
        environment[variable["name"]] = variable.get("value")
        for reference, objects in sources.items():
            ref = (variable.get("valueFrom") or {}).get(reference)
            if ref is None:
                continue
            source = objects.get(ref["name"])
            keys = set((source or {}).get("data") or {}) | set((source or {}).get("stringData") or {})
            if ref["key"] not in keys:
                errors.append(f"Deployment/catalogue: {variable['name']} reads key {ref['key']!r} of {ref['name']}, which has none")
        if variable["name"].startswith("CATALOGUE_") and variable["name"] not in config_variables:
            errors.append(f"Deployment/catalogue: no flag in src/ reads {variable['name']}")

    check_admin_surface(container, errors)

    # SIGKILL must not cut the drain short.
    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    pre_stop = ((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds", 0)
    drain = seconds(environment.get("CATALOGUE_DRAIN_DELAY") or "1s") + seconds(
        environment.get("CATALOGUE_SHUTDOWN_GRACE") or "10s"
    )
    if grace <= pre_stop + drain:
        errors.append(f"Deployment/catalogue: terminationGracePeriodSeconds {grace} <= preStop {pre_stop} s + drain delay and grace {drain} s")


# Switches the cluster's manifests must never turn on: an unauthenticated
# admin port on the pod network, and faults anyone with the token could
# inject into production.
FORBIDDEN_SWITCHES = {"--admin-insecure": "CATALOGUE_ADMIN_INSECURE", "--enable-faults": "CATALOGUE_ENABLE_FAULTS"}


def check_admin_surface(container: dict, errors: list[str]) -> None:
    """The admin token comes from a Secret; nothing opens the admin port or faults."""
    variables = {variable["name"]: variable for variable in container.get("env", [])}
    token = variables.get("CATALOGUE_ADMIN_TOKEN")
    if token is None or "secretKeyRef" not in (token.get("valueFrom") or {}):
        errors.append("Deployment/catalogue: CATALOGUE_ADMIN_TOKEN must come from a Secret (secretKeyRef)")
    words = [str(word) for word in (container.get("command") or []) + (container.get("args") or [])]
    for flag, variable in FORBIDDEN_SWITCHES.items():
        if any(word == flag or word.startswith(f"{flag}=") for word in words):
            errors.append(f"Deployment/catalogue: passes {flag}, which the cluster must never turn on")
        if variable in variables:
            errors.append(f"Deployment/catalogue: sets {variable} ({flag}), which the cluster must never turn on")


if __name__ == "__main__":
    sys.exit(main())
