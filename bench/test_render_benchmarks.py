"""Tests of scripts/render_benchmarks.py: it never writes a figure it has no measurement
for, computes ratios within a round, checks "every round" targets in every round, and
refuses a page that cannot say where its figures came from.

    python3 -m unittest bench/test_render_benchmarks.py
"""
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "scripts", "render_benchmarks.py")
spec = importlib.util.spec_from_file_location("render_benchmarks", SCRIPT)
rb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rb)

START = {"meta": "start", "loadavg": [5.0, 5.0, 5.0], "cores": "2", "cpu_model": "Test CPU",
         "kernel": "6.1", "redis_version": "7.0.15", "command": "ROUNDS=3 scripts/bench.sh",
         "git_rev": "0123456789abcdef", "git_dirty": "false", "baseline_rev": "", "rounds": "3",
         "duration_s": "4", "note": "", "build_s": "10", "cluster_nodes": "6", "date": "2026-01-01T00:00Z"}
END = {"meta": "end", "loadavg": [6.0, 5.0, 5.0], "measure_s": 100, "elapsed_s": 110}


def unc(rnd, workers, pairs, raw):
    return {"round": rnd, "build": "current", "workload": "uncontended", "backend": "redis",
            "workers": workers, "pairs_per_sec": pairs, "raw_pairs_per_sec": raw, "ratio": pairs / raw}


def hot(rnd, p50, spin50, p99=100.0, spin99=100.0):
    return {"round": rnd, "build": "current", "workload": "hot-key", "backend": "redis", "workers": 8,
            "hold_us": 1000, "gap_p50_us": p50, "spin_gap_p50_us": spin50, "gap_p99_us": p99,
            "spin_gap_p99_us": spin99, "overlaps": 0}


def render(lines):
    return rb.render(rb.Run(lines))


def target_row(page, name):
    rows = [l for l in page.splitlines() if l.startswith(f"| {name} |")]
    assert len(rows) == 1, (name, rows)
    return [c.strip() for c in rows[0].strip("|").split("|")]


class RendererTests(unittest.TestCase):
    def test_a_target_without_a_measurement_is_not_measured_never_met(self):
        page = render([START, END, unc(1, 32, 100.0, 200.0)])
        row = target_row(page, "memory backend: bytes per held lock")
        self.assertEqual(row[2], "not measured")
        self.assertEqual(row[5], "not measured")
        row = target_row(page, "Python: uncontended W=32, bidlock-py / redis-py asyncio Lock")
        self.assertEqual(row[5], "not measured")
        # No page section invents rows it has nothing for.
        self.assertNotIn("## Memory backend footprint", page)
        self.assertNotIn("rslock, W=32", page)

    def test_ratios_are_taken_within_a_round_then_summarised(self):
        # Per round: 1.0, 3.0, 0.5 (median 1.0). Medians of each side: 200 / 100 = 2.0.
        lines = [START, END, unc(1, 32, 100.0, 100.0), unc(2, 32, 300.0, 100.0), unc(3, 32, 200.0, 400.0)]
        row = target_row(render(lines), "uncontended W=32, bidlock / raw redis-rs")
        self.assertEqual(row[2], "1.00 (0.50–3.00)")
        self.assertEqual(row[3], "2 of 3")
        self.assertEqual(row[5], "**met**")

    def test_every_round_targets_fail_on_one_bad_round(self):
        # The median ratio (1.05) meets 1.1; round 3 (1.3) does not.
        lines = [START, END, hot(1, 100.0, 100.0), hot(2, 105.0, 100.0), hot(3, 130.0, 100.0)]
        row = target_row(render(lines), "hot key gap p50, bidlock / spinning raw client")
        self.assertEqual(row[2], "1.05 (1.00–1.30)")
        self.assertEqual(row[3], "2 of 3")
        self.assertEqual(row[4], "every round")
        self.assertEqual(row[5], "**missed**")

    def test_a_round_missing_one_contender_gives_no_ratio_for_that_round(self):
        lines = [START, END, hot(1, 100.0, 100.0), hot(2, 100.0, 100.0),
                 {k: v for k, v in hot(3, 100.0, 100.0).items() if not k.startswith("spin_")}]
        row = target_row(render(lines), "hot key gap p50, bidlock / spinning raw client")
        self.assertEqual(row[3], "2 of 2 (1 not measured)")

    def test_the_page_names_the_machine_load_and_command(self):
        page = render([START, END, unc(1, 1, 100.0, 100.0)])
        self.assertIn("`ROUNDS=3 scripts/bench.sh`", page)
        self.assertIn("2 cores, Test CPU", page)
        self.assertIn("start 5.00", page)
        self.assertIn("end 6.00", page)
        self.assertIn("shared and noisy", page)

    def test_refused_without_the_record_of_the_run(self):
        with self.assertRaises(rb.Refused):
            rb.Run([unc(1, 1, 100.0, 100.0)])
        with self.assertRaises(rb.Refused):
            rb.Run([START])
        no_round = unc(1, 1, 100.0, 100.0)
        del no_round["round"]
        with self.assertRaises(rb.Refused):
            rb.Run([START, no_round])

    def test_the_command_line_refuses_with_an_error_and_prints_no_page(self):
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
            f.write(json.dumps(unc(1, 1, 100.0, 100.0)) + "\n")
        try:
            p = subprocess.run([sys.executable, SCRIPT, f.name], capture_output=True, text=True)
        finally:
            os.unlink(f.name)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stdout, "")
        self.assertIn("refused: no record of the machine", p.stderr)

    def test_scale_growth_is_per_round_between_points(self):
        def point(rnd, n, rss):
            return {"round": rnd, "build": "current", "workload": "scale", "backend": "redis", "managers": 1,
                    "leases_per_manager": n, "ttl_s": 30, "window_s": 11.5, "client_rss_bytes_per_lease": rss,
                    "renewals_per_round_trip": 1.0}
        page = render([START, END, point(1, 1000, 400.0), point(1, 10000, 800.0)])
        growth = [l for l in page.splitlines() if l.startswith("| client RSS bytes/lease |")]
        self.assertEqual(growth, ["| client RSS bytes/lease | 2.00 |"])
        self.assertIn("renewals are not batched", page)


if __name__ == "__main__":
    unittest.main()
