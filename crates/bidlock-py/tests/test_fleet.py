"""A fleet of 8 Python processes (4 tasks each) racing for the same postings on one
Redis: no two holders overlap, fencing tokens increase in holding order, and `bid_once`
places each posting exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

WORKER = Path(__file__).with_name("fleet_worker.py")
PROCESSES, TASKS, POSTINGS = 8, 4, 30


def test_fleet_of_eight_processes(redis_env, redis_client):
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as run_dir:
        procs = [
            subprocess.Popen([sys.executable, str(WORKER), run_dir, str(POSTINGS), str(TASKS), str(seed)],
                             env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for seed in range(PROCESSES)
        ]
        try:
            for p in procs:  # every instance is connected before anyone starts
                assert p.stdout.readline().strip() == "ready"
            for p in procs:
                p.stdin.write("go\n")
                p.stdin.flush()
            outputs = [p.communicate(timeout=300)[0] for p in procs]
        finally:
            for p in procs:
                p.kill()
        assert [p.returncode for p in procs] == [0] * PROCESSES
        leftovers = os.listdir(run_dir)

    events = [json.loads(line) for out in outputs for line in out.splitlines() if line.startswith("{")]
    sections = [e for e in events if e["kind"] == "section"]
    assert len(sections) == PROCESSES * TASKS * POSTINGS
    assert not [e for e in sections if e["overlap"]] and leftovers == []

    by_posting = defaultdict(list)
    for e in sections:
        by_posting[e["posting"]].append(e)
    for posting, held in by_posting.items():
        held.sort(key=lambda e: e["start"])
        for a, b in zip(held, held[1:]):
            assert a["end"] <= b["start"], f"p{posting}: sections overlap in time"
            assert a["token"] < b["token"], f"p{posting}: token went back in holding order"
    assert len({e["pid"] for e in sections}) == PROCESSES

    placed = sorted(e["posting"] for e in events if e["kind"] == "bid" and e["outcome"] == "placed")
    assert placed == list(range(POSTINGS)), "each posting placed exactly once across the fleet"
    assert redis_client.keys("bid_lock:fleet:*") == []
