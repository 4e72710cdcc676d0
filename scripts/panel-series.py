"""Evaluates every panel query of grafana/dashboards/*.json, and every
recording rule, through a Prometheus' HTTP API; prints panel -> series and
fails if any returns nothing or any rule is unhealthy.

Usage: python scripts/panel-series.py PROMETHEUS_URL
"""

import glob
import json
import sys
import urllib.parse
import urllib.request

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


def get(prometheus: str, path: str, **params) -> dict:
    url = f"{prometheus}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    if body["status"] != "success":
        raise RuntimeError(f"{path} {params}: {body}")
    return body["data"]


def series(prometheus: str, query: str) -> int:
    for variable, value in VARIABLES.items():
        query = query.replace(variable, value)
    data = get(prometheus, "/api/v1/query", query=query)
    return len(data["result"]) if data["resultType"] in ("vector", "matrix") else 1


def panels(items):
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def main(prometheus: str) -> int:
    rows = []
    for path in sorted(glob.glob("grafana/dashboards/*.json")):
        with open(path) as f:
            dashboard = json.load(f)
        name = path.rsplit("/", 1)[1].removesuffix(".json")
        for panel in panels(dashboard["panels"]):
            for target in panel.get("targets", []):
                title = f"{name}: {panel['title']} [{target['refId']}]"
                rows.append((title, series(prometheus, target["expr"])))
    bad_rules = []
    for group in get(prometheus, "/api/v1/rules")["groups"]:
        for rule in group["rules"]:
            if rule["health"] != "ok":
                bad_rules.append(f"{rule['name']}: {rule.get('lastError')}")
            if rule["type"] == "recording":
                rows.append((f"rule: {rule['name']}", series(prometheus, rule["name"])))

    width = max(len(title) for title, _ in rows)
    print(f"{'panel':<{width}}  series")
    for title, count in rows:
        print(f"{title:<{width}}  {count}{'' if count else '  <- NO DATA'}")
    empty = [title for title, count in rows if count == 0]
    for problem in bad_rules:
        print(f"unhealthy rule {problem}")
    print(f"{len(rows) - len(empty)} with data, {len(empty)} without; {len(bad_rules)} unhealthy rules")
    return 1 if empty or bad_rules else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
