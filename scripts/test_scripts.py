"""Tests of the scripts' own code: the benchmark renderer and the server
harness. Standard library only:

    python3 -m unittest discover -s scripts -p 'test_*.py'
"""

import importlib.util
import json
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402


def load_script(name):
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), os.path.join(HERE, name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_benchmarks = load_script("render-benchmarks.py")

BENCH = {
    "date": "2026-12-03 20:00 UTC",
    "commit": "abc123def456",
    "machine": "2 cores, 24 GiB, Linux 6.18",
    "memory store": {
        "startup_to_first_rpc_ms": 34.4,
        "unary_h2load": {"rps": 97341.2, "mean_latency": "4.9ms", "failed": 0},
        "unary_open_loop": {"25%": {"target_rps": 24335, "p99_ms": 3.8}, "50%": {"target_rps": 48670, "p99_ms": 9.1}},
    },
    "cost of observability (h2load -c16 -m32, memory store)": {
        "all off": {"median_rps": 97561, "runs": [97000, 98000], "vs_all_off": 1.0},
        "metrics only (RED + runtime)": {"median_rps": 95211, "runs": [95000], "vs_all_off": 0.976},
    },
    "a section added later": {"new_figure": 42, "same_responses": True},
    "otlp_exports_received": 12,
}
LADDER = {
    "date": "2026-12-03", "commit": "abc123def456", "machine": "2 cores", "calls": 5000,
    "rungs": [
        {"rung": "bare tonic", "adds": "nothing", "instructions_per_call": 12345, "cpu_us_per_call": 15.9,
         "x_bare_cpu": 1.0},
        {"rung": "+ metrics", "adds": "RED layer", "instructions_per_call": 14000, "cpu_us_per_call": 17.1,
         "x_bare_cpu": 1.08},
    ],
}


class RenderBenchmarks(unittest.TestCase):
    def test_the_run_is_named_at_the_top(self):
        document = render_benchmarks.render(BENCH, None)

        self.assertIn("date 2026-12-03 20:00 UTC, commit abc123def456, machine 2 cores, 24 GiB, Linux 6.18",
                      document)

    def test_a_dict_of_scalars_is_a_two_column_table_and_nested_dicts_get_headings(self):
        document = render_benchmarks.render(BENCH, None)

        self.assertIn("| startup to first rpc ms | 34.4 |", document)
        self.assertIn("### unary h2load", document)
        self.assertIn("| rps | 97,341 |", document)

    def test_a_dict_of_flat_dicts_is_one_row_each(self):
        document = render_benchmarks.render(BENCH, None)

        self.assertIn("|  | median rps | runs | vs all off |", document)
        self.assertIn("| all off | 97,561 | 97,000, 98,000 | 1 |", document)
        self.assertIn("| 25% | 24,335 | 3.8 |", document)

    def test_a_new_section_appears_without_a_change_to_the_renderer(self):
        document = render_benchmarks.render(BENCH, None)

        self.assertIn("## a section added later", document)
        self.assertIn("| new figure | 42 |", document)
        self.assertIn("| same responses | yes |", document)
        self.assertIn("| otlp exports received | 12 |", document)

    def test_the_ladder_is_a_table_whose_columns_are_the_keys(self):
        document = render_benchmarks.render(BENCH, LADDER)

        self.assertIn("| rung | adds | instructions per call | cpu us per call | x bare cpu |", document)
        self.assertIn("| bare tonic | nothing | 12,345 | 15.9 | 1 |", document)
        self.assertIn("| calls | 5,000 |", document)

    def test_no_input_says_no_run_is_recorded(self):
        document = render_benchmarks.render(None, None)

        self.assertIn("No run is recorded", document)

    def test_main_reads_the_files_and_writes_the_document(self):
        with tempfile.TemporaryDirectory() as directory:
            bench = os.path.join(directory, "bench.json")
            out = os.path.join(directory, "benchmarks.md")
            with open(bench, "w") as file:
                json.dump(BENCH, file)

            render_benchmarks.main([bench, "--ladder", os.path.join(directory, "none.json"), "--out", out])

            with open(out) as file:
                self.assertIn("## memory store", file.read())


# A stand-in server: binds two ports, writes the ready file given after
# --ready-file (atomically), then sleeps until stopped.
FAKE_SERVER = """
import json, os, socket, sys, time
path = sys.argv[sys.argv.index("--ready-file") + 1]
sockets = [socket.socket() for _ in range(2)]
for s in sockets:
    s.bind(("127.0.0.1", 0)); s.listen()
addresses = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
with open(path + ".tmp", "w") as f:
    json.dump({"grpc": addresses[0], "admin": addresses[1], "console": None}, f)
os.rename(path + ".tmp", path)
time.sleep(60)
"""


class Harness(unittest.TestCase):
    def test_a_server_is_found_through_its_ready_file(self):
        server = harness.Server([sys.executable, "-c", FAKE_SERVER])
        try:
            self.assertRegex(server.grpc, r"^127\.0\.0\.1:\d+$")
            self.assertNotEqual(server.grpc, server.admin)
            self.assertIsNone(server.console)
            self.assertGreater(server.rss_mb(), 0)
            self.assertGreaterEqual(server.cpu_seconds(), 0)
        finally:
            server.stop()

        self.assertFalse(server.alive())
        self.assertFalse(os.path.exists(server.ready_file))

    def test_a_server_that_exits_without_a_ready_file_fails_with_its_output(self):
        with self.assertRaises(SystemExit) as failed:
            harness.Server([sys.executable, "-c", "print('bad flag'); raise SystemExit(2)"])

        self.assertIn("bad flag", str(failed.exception))


if __name__ == "__main__":
    unittest.main()
