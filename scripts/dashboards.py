"""The Grafana dashboards of grafana/dashboards/*.json as the scripts read
them: their panels (rows' nested panels included), each panel's PromQL with
the Grafana variables substituted, and Prometheus' HTTP API. Shared by
panel-series.py (every query returns data) and fault-pictures.py (the
panels drawn under each fault).
"""

import glob
import json
import os
import urllib.parse
import urllib.request

DASHBOARDS = "grafana/dashboards"

# As Grafana substitutes them, with every job and instance selected.
VARIABLES = {
    "${job}": ".*",
    "${instance}": ".*",
    "$job": ".*",
    "$instance": ".*",
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
}


def substitute(query: str, **overrides: str) -> str:
    """The query with Grafana's variables replaced; `overrides` maps a
    variable's name without the `$` (e.g. `__rate_interval`) to its value."""
    values = dict(VARIABLES)
    for name, value in overrides.items():
        values[f"${name}"] = value
        values[f"${{{name}}}"] = value
    # Longest first, so that $__rate_interval is not taken for $__range.
    for variable in sorted(values, key=len, reverse=True):
        query = query.replace(variable, values[variable])
    return query


def get(prometheus: str, path: str, **params) -> dict:
    """The `data` of a Prometheus API answer; raises unless it succeeded."""
    url = f"{prometheus}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    if body["status"] != "success":
        raise RuntimeError(f"{path} {params}: {body}")
    return body["data"]


def panels(items):
    """Every panel of a list, the panels of collapsed rows included."""
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def dashboards():
    """(name, dashboard) for each file, by name: `service-overview`, ..."""
    for path in sorted(glob.glob(os.path.join(DASHBOARDS, "*.json"))):
        with open(path) as f:
            yield os.path.basename(path).removesuffix(".json"), json.load(f)


def panel(dashboard_name: str, title: str) -> dict:
    """The panel of that dashboard with exactly that title."""
    for name, dashboard in dashboards():
        if name == dashboard_name:
            found = [p for p in panels(dashboard["panels"]) if p.get("title") == title]
            if len(found) != 1:
                raise LookupError(f"{dashboard_name}.json has {len(found)} panels titled {title!r}")
            return found[0]
    raise LookupError(f"no dashboard {dashboard_name}.json in {DASHBOARDS}")
