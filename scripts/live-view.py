"""The live view in a real browser: `/debug/live` opened in headless
Chromium (Debian's chromium and chromedriver, driven by Selenium) while
`catalogue load` drives the service and the inventory simulator answers its
upstream calls. Asserts from the page itself (`window.liveState()`):

1. the page asks for the admin token and then connects with it as a header
   (the feed refuses a request without it, and a token in the URL);
2. every chart has points, and the charts the load moves do move;
3. a latency fault's marker appears on the charts and the handling time
   rises under it; a blocking fault's marker appears and the workers' busy
   ratio and the schedule latency rise under it;
4. a fifth viewer is refused with a 503 while four read the feed.

Writes a screenshot to --screenshot (docs/live-view.png is one such run).
Exits non-zero naming the first assertion that failed.

    scripts/live-view.sh [--binary target/release/catalogue] [--screenshot PATH]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

TOKEN = "live-view-test-token"
LOAD_RPS = 300
# The charts no load of this test moves, and why: they must have points,
# and may be flat.
MAY_BE_FLAT = {
    "queues": "the run queues are empty between polls at this load",
    "steals": "two workers may go a second without stealing",
    "blocking": "the blocking pool is idle unless a profile or a slow query runs",
    "shed": "nothing is shed at this load",
    "stalled": "the load generator reads every stream at once",
    "breaker": "the breaker stays closed and the upstream answers in milliseconds",
    "fds": "connections are opened once",
    "in-flight": "the limit is constant; in flight moves",
    "streams": "ListProducts streams last a millisecond",
    "schedules": "moves, but may repeat a value",
}


def request(method, url, body=None, token=TOKEN, timeout=10):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body, separators=(",", ":")).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def fail(message):
    raise SystemExit(f"live view: FAILED: {message}")


def browser(width=1280, height=3600):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", f"--window-size={width},{height}"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def wait_for(driver, what, check, timeout):
    """Polls `window.liveState()` until `check(state)` is true."""
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = driver.execute_script("return window.liveState()")
        if check(state):
            return state
        time.sleep(0.5)
    fail(f"{what} within {timeout} s; the page's state: {json.dumps(state)[:3000]}")


def series_values(state, chart_id, label_part):
    chart = next(c for c in state["charts"] if c["id"] == chart_id)
    values = []
    for label, series in chart["series"].items():
        if label_part in label:
            values.append(series["values"])
    return values


def recent(state, chart_id, label_part, seconds):
    """Each matching series' last `seconds` points, pooled."""
    pooled = []
    for values in series_values(state, chart_id, label_part):
        pooled.extend(v for v in values[-seconds:] if v is not None)
    return pooled


def under_fault(driver, admin, body, checks, timeout):
    """Switches a fault on, waits for its marker and for every check of the
    charts, then switches it off."""
    before = driver.execute_script("return window.liveState()")
    status, answer = request("PUT", f"http://{admin}/faults", body)
    if status != 200:
        fail(f"PUT /faults {body}: {status} {answer!r}")
    label = json.dumps(body, separators=(",", ":"))
    state = wait_for(driver, f"the marker of PUT /faults {label}",
                     lambda s: any(label in m for m in s["markers"]) and
                     all(c["markersDrawn"] > 0 for c in s["charts"]), 15)
    print(f"  marker drawn on all {len(state['charts'])} charts: {state['markers'][-1]}")
    for what, check in checks:
        state = wait_for(driver, what, lambda s: check(before, s), timeout)
        print(f"  {what}: yes")
    status, _ = request("DELETE", f"http://{admin}/faults")
    if status != 200:
        fail(f"DELETE /faults: {status}")
    return state


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=os.environ.get("CATALOGUE_BIN", "target/debug/catalogue"))
    parser.add_argument("--screenshot", default="target/live-view/live-view.png")
    parser.add_argument("--screenshot-height", type=int,
                        help="the top this many pixels of the page (default: all of it)")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="live-view-")
    processes = []
    driver = None
    try:
        upstream = harness.Server(harness.upstream_argv(args.binary),
                                  log=os.path.join(work, "upstream.log"))
        processes.append(upstream.process)
        server = harness.Server(harness.serve_argv(
            args.binary, "--database-url", "memory", "--seed-products", "2000",
            "--enable-faults", "--admin-token", TOKEN,
            "--upstream-url", f"http://{upstream.grpc}",
        ), log=os.path.join(work, "catalogue.log"))
        processes.append(server.process)
        admin = server.admin
        with open(os.path.join(work, "load.log"), "w") as log:
            load = subprocess.Popen([
                args.binary, "load", "--target", f"http://{server.grpc}", "--rps", str(LOAD_RPS),
                "--duration", "600s",
            ], stdout=log, stderr=subprocess.STDOUT)
        processes.append(load)

        # The feed is guarded; the page is not (it holds no data).
        status, _ = request("GET", f"http://{admin}/debug/live/feed", token=None)
        if status != 401:
            fail(f"the feed without a token answered {status}, not 401")
        status, _ = request("GET", f"http://{admin}/debug/live/feed?token={TOKEN}", token=None)
        if status not in (400, 401):
            fail(f"a token in the feed's URL answered {status}, not 400 or 401")
        status, page = request("GET", f"http://{admin}/debug/live", token=None)
        if status != 200 or b"uPlot" not in page:
            fail(f"the page answered {status} without uPlot")
        print("feed: 401 without the token; page: open")

        driver = browser()
        driver.get(f"http://{admin}/debug/live")
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        field = WebDriverWait(driver, 15).until(
            expected_conditions.visibility_of_element_located((By.ID, "token-value")))
        field.send_keys(TOKEN)
        driver.find_element(By.CSS_SELECTOR, "#token button").click()
        state = wait_for(driver, "the page connected with the token", lambda s: s["connected"], 15)
        print("page: asked for the token, connected with it as a header")
        if state["unknown"]:
            fail(f"the page draws families the server's table lacks: {state['unknown']}")

        # 2. Points everywhere, movement where the load moves things.
        def every_chart_has_points(s):
            return all(any(series["points"] >= 5 for series in chart["series"].values())
                       for chart in s["charts"])
        state = wait_for(driver, "points on every chart", every_chart_has_points, 60)
        moving, flat = [], []
        for chart in state["charts"]:
            moves = any(len(set(series["values"])) > 1 for series in chart["series"].values())
            (moving if moves else flat).append(chart["id"])
        not_moving = [c for c in flat if c not in MAY_BE_FLAT]
        if not_moving:
            fail(f"charts with points that do not move under load: {not_moving}")
        print(f"charts: {len(state['charts'])} with points; moving: {', '.join(moving)}; "
              f"flat (allowed): {', '.join(flat) or 'none'}")

        # 3. A latency fault: its marker, and the handling time up.
        print("latency fault:")
        get_p50 = lambda s, n: recent(s, "latency", "GetProduct p50", n)  # noqa: E731
        under_fault(driver, admin, {"latency_ms": 200}, [(
            "GetProduct's p50 handling time over 150 ms",
            lambda before, s: (get_p50(s, 2) and min(get_p50(s, 2)) > 0.15
                               and statistics.median(get_p50(before, 10)) < 0.1),
        )], 30)
        time.sleep(3)

        # A blocking fault: its marker, the workers busy, schedule latency up.
        print("blocking fault:")
        busy = lambda s, n: recent(s, "busy", "worker", n)  # noqa: E731
        latency_p99 = lambda s, n: recent(s, "schedule-latency", "p99", n)  # noqa: E731
        under_fault(driver, admin, {"blocking_ms": 20}, [
            ("the workers' busy ratio up", lambda before, s: busy(s, 4) and
             statistics.median(busy(s, 4)) > statistics.median(busy(before, 10)) + 0.2),
            ("the schedule latency p99 up", lambda before, s: latency_p99(s, 3) and
             statistics.median(latency_p99(s, 3)) > 2 * statistics.median(latency_p99(before, 10))),
        ], 30)
        time.sleep(4)

        os.makedirs(os.path.dirname(os.path.abspath(args.screenshot)), exist_ok=True)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, args.screenshot_height or max(height, 800))
        driver.save_screenshot(args.screenshot)
        print(f"screenshot: {args.screenshot}")

        # 4. At most four viewers: this page is one; three more, then a 503.
        extra = [subprocess.Popen(["curl", "-sN", "-H", f"Authorization: Bearer {TOKEN}",
                                   f"http://{admin}/debug/live/feed"], stdout=subprocess.DEVNULL)
                 for _ in range(3)]
        processes.extend(extra)
        time.sleep(1.5)
        status, body = request("GET", f"http://{admin}/debug/live/feed", timeout=5)
        if status != 503:
            fail(f"a fifth viewer got {status}, not 503")
        print(f"fifth viewer: 503 ({body.decode().strip()})")
        print("live view: ok")
    finally:
        if driver is not None:
            driver.quit()
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
        for process in reversed(processes):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
