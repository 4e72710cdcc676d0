"""Evaluates every panel query of grafana/dashboards/*.json, and every
recording rule, through a Prometheus' HTTP API; prints panel -> series and
fails if any returns nothing or any rule is unhealthy. A panel titled
"Go: ..." must return series of a Go process (job go-peer, the grpc-go peer)
and one titled "Tokio: ..." series of the catalogue (job catalogue): the
side-by-side dashboard's two halves each prove their own runtime.

Usage: python scripts/panel-series.py PROMETHEUS_URL
"""

import sys

from dashboards import dashboards, get, panels, substitute

# Panel title prefix -> the job its series must come from.
RUNTIME_JOBS = {"Go:": "go-peer", "Tokio:": "catalogue"}


def series(prometheus: str, query: str, job: str | None = None) -> int:
    """The number of series the query returns (of `job` only, if given)."""
    data = get(prometheus, "/api/v1/query", query=substitute(query))
    if data["resultType"] not in ("vector", "matrix"):
        return 1
    return sum(1 for result in data["result"] if job is None or result["metric"].get("job") == job)


def main(prometheus: str) -> int:
    rows = []
    for name, dashboard in dashboards():
        for panel in panels(dashboard["panels"]):
            job = next((job for prefix, job in RUNTIME_JOBS.items() if panel["title"].startswith(prefix)), None)
            for target in panel.get("targets", []):
                title = f"{name}: {panel['title']} [{target['refId']}]" + (f" (job {job})" if job else "")
                rows.append((title, series(prometheus, target["expr"], job)))
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
