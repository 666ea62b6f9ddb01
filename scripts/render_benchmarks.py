"""Renders BENCHMARKS.md from the JSON lines that scripts/bench.sh writes.

    python3 scripts/render_benchmarks.py bench/BENCHMARKS.jsonl > BENCHMARKS.md

Every figure on the page comes from a measurement in that file: the median over the
rounds and, next to it, the minimum and maximum over the rounds. A ratio is computed in
each round from the two contenders measured side by side in that round, and only then
summarised over the rounds. A figure with no measurement is written "not measured",
never as a number, and a target without a measurement is never "met". Without the run's
record of the machine and the command (its `meta` lines) the page is refused.
"""
import json
import statistics
import sys

NOT_MEASURED = "not measured"


class Refused(Exception):
    """The measurements cannot make a page that says where its figures came from."""


class Run:
    """The lines of one bench.sh run: its meta records and its measurements."""

    def __init__(self, lines, source="the run's JSON lines"):
        self.source = source
        self.meta = {}
        self.round_load = {}
        self.lines = []
        for line in lines:
            if "meta" in line:
                if line["meta"] == "round":
                    self.round_load[line["round"]] = line["loadavg"][0]
                else:
                    self.meta[line["meta"]] = line
            elif "workload" in line:
                if not isinstance(line.get("round"), int):
                    raise Refused(f"a measurement without its round: {json.dumps(line)[:120]}")
                self.lines.append(line)
        if "start" not in self.meta:
            raise Refused("no record of the machine and the command (the run's meta start line)")
        if not self.lines:
            raise Refused("no measurements")
        self.rounds = sorted({l["round"] for l in self.lines})

    def select(self, **want):
        """The lines of one contender: every field given must match (absent = None);
        the current build unless said."""
        want.setdefault("build", "current")
        want.setdefault("processes", None)
        return [l for l in self.lines if all(l.get(k) == v for k, v in want.items())]

    def per_round(self, field, **want):
        """{round: value of `field`} for one contender (the median if a round has more)."""
        got = {}
        for l in self.select(**want):
            v = l.get(field)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                got.setdefault(l["round"], []).append(float(v))
        return {r: statistics.median(vs) for r, vs in got.items()}


def load(path):
    with open(path) as f:
        return Run((json.loads(l) for l in f if l.lstrip().startswith("{")), f"`{path}`")


def ratio(a, b):
    """Per round: a / b, for the rounds that measured both."""
    return {r: a[r] / b[r] for r in a if r in b and b[r]}


def combine(f, *series):
    """Per round: f(values...), for the rounds that measured all."""
    rounds = set.intersection(*(set(s) for s in series)) if series else set()
    return {r: f(*(s[r] for s in series)) for r in rounds}


def number(v, digits=0):
    if abs(v) >= 100 and digits < 2:
        digits = 0
    return f"{v:,.{digits}f}"


def fig(values, digits=0):
    """`median (min–max)` over the rounds, or "not measured"."""
    vals = list(values.values()) if isinstance(values, dict) else list(values)
    if not vals:
        return NOT_MEASURED
    med = number(statistics.median(vals), digits)
    if len(vals) == 1:
        return med
    return f"{med} ({number(min(vals), digits)}–{number(max(vals), digits)})"


def param(values, digits=0):
    """A setting of the run (the same in every round, else shown like a figure)."""
    vals = list(values.values())
    if vals and min(vals) == max(vals):
        return number(vals[0], digits)
    return fig(values, digits)


class Target:
    """A goal checked against per-round values: met when every round meets it (rule
    "every round") or when the median does ("median")."""

    def __init__(self, name, goal, values, ok, rule="median", digits=2):
        self.name, self.goal, self.values, self.ok = name, goal, values, ok
        self.rule, self.digits = rule, digits

    def status(self):
        if not self.values:
            return NOT_MEASURED
        if self.rule == "every round":
            met = all(self.ok(v) for v in self.values.values())
        else:
            met = self.ok(statistics.median(self.values.values()))
        return "**met**" if met else "**missed**"

    def row(self, rounds):
        n = len(self.values)
        meeting = sum(1 for v in self.values.values() if self.ok(v))
        count = f"{meeting} of {n}" if n else "-"
        if n and n < len(rounds):
            count += f" ({len(rounds) - n} not measured)"
        return f"| {self.name} | {self.goal} | {fig(self.values, self.digits)} | {count} | {self.rule} | {self.status()} |"


def targets_table(run, targets):
    out = ["| target | goal | measured: median (min–max) | rounds meeting it | rule | status |",
           "| --- | --- | ---: | ---: | --- | --- |"]
    out += [t.row(run.rounds) for t in targets]
    return out


def issue_targets(run):
    """The goals of issue 25, each from contenders measured side by side per round."""
    hot = dict(workload="hot-key", backend="redis", workers=8, hold_us=1000)
    unc = lambda w, **k: dict(workload="uncontended", workers=w, **({"backend": "redis"} | k))
    p50, spin50 = run.per_round("gap_p50_us", **hot), run.per_round("spin_gap_p50_us", **hot)
    p99, spin99 = run.per_round("gap_p99_us", **hot), run.per_round("spin_gap_p99_us", **hot)
    pairs = lambda **k: run.per_round("pairs_per_sec", **k)
    masters = {}
    for by_round in cluster_nodes(run).values():
        for r, (_, _, items) in by_round.items():
            masters.setdefault(r, []).append(items)
    py = lambda peer, w: pairs(workload="uncontended", backend=peer, workers=w)
    return [
        Target("hot key gap p50, bidlock / spinning raw client", "≤ 1.10", ratio(p50, spin50),
               lambda v: v <= 1.1, "every round"),
        Target("hot key gap p99, bidlock / spinning raw client", "≤ 1.50", ratio(p99, spin99),
               lambda v: v <= 1.5, "every round"),
        Target("uncontended W=32, bidlock / raw redis-rs", "≥ 0.80", run.per_round("ratio", **unc(32)),
               lambda v: v >= 0.8),
        Target("uncontended W=1, bidlock / raw redis-rs", "≥ 1.00", run.per_round("ratio", **unc(1)),
               lambda v: v >= 1.0),
        Target("cluster uncontended W=32, this build / baseline build", "> 1.00 (after / before)",
               ratio(pairs(**unc(32, backend="cluster")), pairs(**unc(32, backend="cluster", build="baseline"))),
               lambda v: v > 1.0),
        Target("cluster masters: acquires or releases per script call (W=32)", "> 1.0 (group commit per node)",
               {r: statistics.median(v) for r, v in masters.items()}, lambda v: v > 1.0),
        Target("memory backend: bytes per held lock", "≤ 256",
               run.per_round("bytes_per_held_lock", workload="footprint", backend="memory"), lambda v: v <= 256, digits=0),
        Target("memory backend: uncontended W=1 pairs/s", "≥ 1,000,000", pairs(**unc(1, backend="memory")),
               lambda v: v >= 1e6, digits=0),
        Target("Python: uncontended W=32, bidlock-py / redis-py asyncio Lock", "≥ 5.0",
               ratio(py("bidlock-py", 32), py("redis-py", 32)), lambda v: v >= 5.0),
        Target("Python: uncontended W=1, bidlock-py / redis-py asyncio Lock", "≥ 1.2",
               ratio(py("bidlock-py", 1), py("redis-py", 1)), lambda v: v >= 1.2),
        Target("Python: hot key gap p50, bidlock-py (µs)", "≤ 150",
               run.per_round("gap_p50_us", workload="hot-key", backend="bidlock-py", workers=8, hold_us=1000),
               lambda v: v <= 150, digits=0),
    ]


def earlier_targets(run):
    """Goals of earlier issues that the previous page listed and that still hold."""
    hot = dict(workload="hot-key", workers=8, hold_us=1000)
    overlaps = {}
    for b in ["redis", "cluster", "redlock", "memory", "bidlock-py"]:
        for r, v in run.per_round("overlaps", backend=b, **hot).items():
            overlaps[r] = overlaps.get(r, 0) + v
    for r, v in run.per_round("overlaps", backend="redis", processes=4, **hot).items():
        overlaps[r] = overlaps.get(r, 0) + v
    errors = {}
    for b in ["redis", "cluster", "redlock", "memory"]:
        for w in [1, 32]:
            for r, v in run.per_round("errors", workload="uncontended", backend=b, workers=w).items():
                errors[r] = errors.get(r, 0) + v
    four = dict(backend="redis", processes=4, **hot)
    unc32 = dict(workload="uncontended", workers=32)
    return [
        Target("hot key overlaps, every bidlock row", "0", overlaps, lambda v: v == 0, "every round", 0),
        Target("uncontended errors, every bidlock row", "0", errors, lambda v: v == 0, "every round", 0),
        Target("hot key Redis round trips per section", "≤ 3",
               run.per_round("round_trips_per_cs", backend="redis", **hot), lambda v: v <= 3),
        Target("4 processes × 2: max share", "≤ 0.14", run.per_round("max_worker_share", **four), lambda v: v <= 0.14),
        Target("4 processes × 2: same holder", "≤ 0.05", run.per_round("same_holder_frac", **four), lambda v: v <= 0.05),
        Target("uncontended W=32, bidlock / rslock", "≥ 1.0",
               ratio(run.per_round("pairs_per_sec", backend="redis", **unc32),
                     run.per_round("pairs_per_sec", backend="rslock", **unc32)), lambda v: v >= 1.0),
        Target("Python: hot key gap p99, bidlock-py (µs)", "≤ 2000",
               run.per_round("gap_p99_us", backend="bidlock-py", **hot), lambda v: v <= 2000, digits=0),
        Target("Python: hot key same holder, bidlock-py", "≤ 0.3",
               run.per_round("same_holder_frac", backend="bidlock-py", **hot), lambda v: v <= 0.3),
    ]


def header(run):
    s, end = run.meta["start"], run.meta.get("end")
    cores = int(s["cores"])
    loads = [s["loadavg"][0]] + [run.round_load[r] for r in sorted(run.round_load)]
    if end:
        loads.append(end["loadavg"][0])
    out = ["# Benchmarks", "",
           "Generated by `scripts/render_benchmarks.py` from the measurements of one run of",
           f"`scripts/bench.sh` ({run.source}): nothing on this page is typed in. Each figure",
           f"is the median over the run's {len(run.rounds)} rounds, with the minimum and maximum over the",
           "rounds in brackets. Contenders run interleaved (round 1 in one order, round 2 in the",
           "reverse, ...), and every ratio is computed within a round from two contenders measured",
           "side by side in it, then summarised over the rounds.", ""]
    if max(loads) > cores / 2:
        out += [f"**The machine was shared and noisy**: its 1-minute load average was {number(min(loads), 2)}–"
                f"{number(max(loads), 2)} on {cores} cores during the run (other jobs were running), so absolute",
                "figures move from run to run; the ratios, measured side by side, move less.", ""]
    if s.get("note"):
        out += [s["note"], ""]
    out += ["| | |", "| --- | --- |",
            f"| command | `{s['command']}` |",
            f"| revision | `{s['git_rev'][:12]}`{' (uncommitted changes)' if s.get('git_dirty') == 'true' else ''} |"]
    if s.get("baseline_rev"):
        out.append(f"| baseline build | `{s['baseline_rev'][:12]}` (rows marked *baseline*) |")
    out += [f"| machine | {cores} cores, {s['cpu_model']}, Linux {s['kernel']} |",
            f"| Redis | {s['redis_version']} on loopback, in the same machine |",
            f"| load average (1 min) | start {number(s['loadavg'][0], 2)}; each round's start "
            f"{', '.join(number(run.round_load[r], 2) for r in sorted(run.round_load))}; "
            f"end {number(end['loadavg'][0], 2) if end else NOT_MEASURED} |",
            f"| rounds | {len(run.rounds)} × {s['duration_s']} s per measured run |",
            f"| date | {s['date']} |"]
    if end:
        out.append(f"| run time | {end['elapsed_s']} s ({end['measure_s']} s measuring, {s['build_s']} s building first) |")
    return out + [""]


def table(head, rows):
    if not rows:
        return [f"({head[0]}: {NOT_MEASURED} in this run.)"]
    out = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def contender_rows(run, rows, columns):
    """rows: (label, selector, prefix); columns: (field, digits). Rows with nothing
    measured are left out."""
    out = []
    for label, sel, prefix in rows:
        cells = [fig(run.per_round(prefix + f, **sel), d) for f, d in columns]
        if any(c != NOT_MEASURED for c in cells):
            out.append([label] + cells)
    return out


def uncontended(run):
    rows = []
    for label, backend, build, prefix in [
        ("bidlock, one Redis", "redis", "current", ""), ("raw redis-rs (same process)", "redis", "current", "raw_"),
        ("rslock", "rslock", "current", ""), ("bidlock, baseline build", "redis", "baseline", ""),
        ("bidlock, Redis Cluster", "cluster", "current", ""), ("bidlock, cluster, baseline build", "cluster", "baseline", ""),
        ("bidlock, Redlock (3 masters)", "redlock", "current", ""), ("bidlock, memory", "memory", "current", "")]:
        for w in [1, 32]:
            rows.append((f"{label}, W={w}", dict(workload="uncontended", backend=backend, workers=w, build=build), prefix))
    cols = [("pairs_per_sec", 0), ("acquire_p50_us", 0), ("acquire_p99_us", 0), ("errors", 0)]
    body = contender_rows(run, rows, cols)
    ratios = []
    for w in [1, 32]:
        ratios.append(f"W={w}: {fig(run.per_round('ratio', workload='uncontended', backend='redis', workers=w), 2)}")
    return (["## Uncontended: acquire (no wait) + release on a fresh key", "",
             "`raw redis-rs` is the same loop with plain redis-rs (`SET NX PX`, then an `EVALSHA`",
             "compare-and-delete, one multiplexed connection) in the same process against the same",
             "server, right before or after bidlock (the order alternates by round). `rslock` is the",
             "Rust Redlock client (`bench/peers/rslock`) against the same server. Each measured run",
             "follows an untimed warm-up of its own.", ""]
            + table(["contender", "pairs/s", "acquire p50 µs", "acquire p99 µs", "errors"], body)
            + ["", f"bidlock / raw redis-rs, per round: {'; '.join(ratios)}.", ""])


def cpu_breakdown(run):
    cols = [("pairs_per_sec", 0), ("client_cpu_us_per_pair", 1), ("client_csw_per_pair", 2),
            ("server_cpu_us_per_pair", 1), ("server_script_us_per_pair", 1), ("server_calls_per_pair", 2),
            ("script_calls_per_pair", 2), ("items_per_script_call", 2), ("round_trips_per_pair", 2)]
    rows = []
    for w in [1, 32]:
        sel = dict(workload="uncontended", backend="redis", workers=w)
        rows += [(f"bidlock, W={w}", sel, ""), (f"raw redis-rs, W={w}", sel, "raw_")]
    out = ["## Where an uncontended pair's CPU goes (one Redis)", "",
           "Measured in the same runs as above, for each contender separately: the client's CPU",
           "(`getrusage` of the bench process, every thread) and context switches per pair; the",
           "server's CPU per pair (`used_cpu_user + used_cpu_sys`, `INFO cpu`), the part of it spent",
           "running scripts (`INFO commandstats`, `usec` of `EVALSHA`, the commands they call",
           "included; raw's `SET` is outside them; wall-clock time inside the command, so a server",
           "that loses its core mid-script counts the wait too), the commands it ran per pair",
           "(those inside scripts included), the script calls per pair, the acquires or releases",
           "one script call carried (group commit: raw's only script is its release) and the",
           "client's round trips per pair.", ""]
    out += table(["contender", "pairs/s", "client CPU µs", "client ctx switches", "server CPU µs",
                  "server µs in scripts", "server calls", "script calls", "items per script call",
                  "round trips"], contender_rows(run, rows, cols))
    out.append("")
    for w in [1, 32]:
        sel = dict(workload="uncontended", backend="redis", workers=w)
        total = lambda p: combine(lambda c, s: c + s, run.per_round(p + "client_cpu_us_per_pair", **sel),
                                  run.per_round(p + "server_cpu_us_per_pair", **sel))
        lib, raw = total(""), total("raw_")
        out.append(f"- W={w}: client + server CPU per pair, bidlock {fig(lib, 1)} µs, raw {fig(raw, 1)} µs; "
                   f"bidlock / raw per round {fig(ratio(lib, raw), 2)} (client {fig(ratio(run.per_round('client_cpu_us_per_pair', **sel), run.per_round('raw_client_cpu_us_per_pair', **sel)), 2)}, "
                   f"server {fig(ratio(run.per_round('server_cpu_us_per_pair', **sel), run.per_round('raw_server_cpu_us_per_pair', **sel)), 2)}).")
    out.append("")
    out.append("Commands the server ran per pair at W=32 (medians over the rounds):")
    out.append("")
    for label, prefix in [("bidlock", ""), ("raw redis-rs", "raw_")]:
        by = {}
        for l in run.select(workload="uncontended", backend="redis", workers=32):
            for c, v in (l.get(prefix + "server_calls_by_command_per_pair") or {}).items():
                by.setdefault(c, []).append(v)
        text = ", ".join(f"`{c}` {number(statistics.median(v), 2)}" for c, v in sorted(by.items(), key=lambda kv: -statistics.median(kv[1])))
        out.append(f"- {label}: {text or NOT_MEASURED}")
    return out + [""]


def hot_key(run):
    hot = dict(workload="hot-key", workers=8, hold_us=1000)
    rows = [("bidlock, one Redis", dict(backend="redis", **hot), ""),
            ("raw redis-rs, poll 1 ms (same process)", dict(backend="redis", **hot), "raw_"),
            ("raw redis-rs, spin (same process)", dict(backend="redis", **hot), "spin_"),
            ("bidlock, 4 processes × 2", dict(backend="redis", processes=4, **hot), ""),
            ("bidlock, baseline build", dict(backend="redis", build="baseline", **hot), ""),
            ("rslock", dict(backend="rslock", **hot), ""),
            ("bidlock, Redis Cluster", dict(backend="cluster", **hot), ""),
            ("bidlock, Redlock", dict(backend="redlock", **hot), ""),
            ("bidlock, memory", dict(backend="memory", **hot), "")]
    cols = [("cs_per_sec", 0), ("gap_p50_us", 1), ("gap_p99_us", 1), ("same_holder_frac", 2),
            ("max_worker_share", 2), ("overlaps", 0), ("round_trips_per_cs", 2), ("server_calls_per_cs", 1),
            ("client_cpu_us_per_cs", 0), ("client_csw_per_cs", 1)]
    sel = dict(backend="redis", **hot)
    # A bidlock line without `gaps` comes from an older harness (a baseline build's),
    # whose quantiles were a histogram's bucket midpoints, not measured gaps.
    bucketed = [label for label, s, p in rows if s.get("build") == "baseline"
                and any(p + "gaps" not in l for l in run.select(**s))]
    rows = [(label + (" †" if label in bucketed else ""), s, p) for label, s, p in rows]
    note = ["", "† That build's harness gave gap quantiles as the midpoint of a histogram bucket (8 per",
            "power of two: 8 µs wide at 64–128 µs, 16 µs at 128–256), not measured gaps."] if bucketed else []
    return (["## Hot key: 8 workers, one key, 1 ms of real work per section", "",
             "`gap` runs from one holder's release to the next holder's start, across different",
             "holders; its quantiles are exact (every gap kept, in ns). `same` is the fraction of",
             "consecutive sections taken by the same worker, `max share` the largest fraction one",
             "worker got. `round trips` are the client's requests per section, `server calls` every",
             "command Redis ran per section (inside scripts too). The raw clients run in bidlock's",
             "process, right before or after it: one polls with `SET NX PX` every 1 ms, one retries",
             "at once (`spin`, the fastest handover a client without queueing gets).", ""]
            + table(["contender", "cs/s", "gap p50 µs", "gap p99 µs", "same", "max share", "overlaps",
                     "round trips/cs", "server calls/cs", "client CPU µs/cs", "client ctx switches/cs"],
                    contender_rows(run, rows, cols)) + note
            + ["", f"Per round, bidlock / spin: gap p50 {fig(ratio(run.per_round('gap_p50_us', **sel), run.per_round('spin_gap_p50_us', **sel)), 2)}, "
               f"gap p99 {fig(ratio(run.per_round('gap_p99_us', **sel), run.per_round('spin_gap_p99_us', **sel)), 2)}.", ""])


def python_peers(run):
    rows = []
    for peer in ["bidlock-py", "redis-py", "python-redis-lock"]:
        for w in [1, 32]:
            rows.append((f"{peer}, W={w}", dict(workload="uncontended", backend=peer, workers=w), ""))
    cols = [("pairs_per_sec", 0), ("acquire_p50_us", 0), ("acquire_p99_us", 0), ("client_cpu_us_per_op", 1), ("errors", 0)]
    hot_rows = [(peer, dict(workload="hot-key", backend=peer, workers=8, hold_us=1000), "")
                for peer in ["bidlock-py", "redis-py", "python-redis-lock"]]
    hot_cols = [("cs_per_sec", 0), ("gap_p50_us", 0), ("gap_p99_us", 0), ("same_holder_frac", 2),
                ("max_worker_share", 2), ("overlaps", 0), ("client_cpu_us_per_op", 0)]
    return (["## Python", "",
             "bidlock's Python package (`async with manager.with_lock(...)`, asyncio tasks in one",
             "process) against redis-py's asyncio `Lock` and python-redis-lock (threads), each a",
             "process of its own (`bench/peers`), in an order that alternates by round.", ""]
            + table(["peer", "pairs/s", "acquire p50 µs", "acquire p99 µs", "client CPU µs/pair", "errors"],
                    contender_rows(run, rows, cols))
            + [""] + table(["hot key", "cs/s", "gap p50 µs", "gap p99 µs", "same", "max share", "overlaps",
                            "client CPU µs/cs"], contender_rows(run, hot_rows, hot_cols)) + [""])


SCALE_CLIENT = [("leases", 0), ("acquires_per_sec", 0), ("client_rss_bytes_per_lease", 0),
                ("client_cpu_us_per_lease_acquired", 1), ("client_cpu_pct_window", 1),
                ("client_cpu_us_per_renewal", 1), ("renewals_per_lease", 2), ("renewals_per_round_trip", 2),
                ("lost", 0)]
SCALE_SERVER = [("renewals_per_sec", 0), ("redis_cmds_per_sec", 0), ("redis_cmds_per_renewal", 2),
                ("redis_script_calls_per_sec", 0), ("redis_cpu_pct_window", 1), ("redis_cpu_us_per_renewal", 1),
                ("redis_bytes_per_lock", 0), ("redis_keys_per_lock", 2), ("redis_keys_left", 0)]


def scale(run):
    points = sorted({(l["managers"], l["leases_per_manager"]) for l in run.select(workload="scale", backend="redis")})
    if not points:
        return []
    rows = [(f"{m} × {n:,}" if m > 1 else f"{n:,}", dict(workload="scale", backend="redis", managers=m,
                                                         leases_per_manager=n), "") for m, n in points]
    ttl = run.per_round("ttl_s", workload="scale", backend="redis")
    window = {i: round(l["window_s"], 1) for i, l in enumerate(run.select(workload="scale", backend="redis"))}
    out = ["## Cost as work grows: many held leases", "",
           f"`bidlock bench scale`: each manager is a process of its own, takes its leases (ttl "
           f"{param(ttl, 0)} s, renewal on, {param(window, 1)} s window)",
           "and holds them; the window opens once every manager holds all of its leases and lasts",
           "a little over a third of the ttl, so each lease is renewed about once in it. Client",
           "memory is the growth of each manager's RSS while it took its leases (the keys existed",
           "before), divided by its leases (median over the managers); CPU % is of one core, all",
           "managers together. Redis figures are the server's `INFO` deltas over the window, its",
           "memory the growth of `used_memory` with every lease held.", "",
           "Client side:", ""]
    out += table(["managers × leases", "leases held", "acquires/s", "client RSS bytes/lease",
                  "client CPU µs per lease taken", "client CPU % in window", "client CPU µs/renewal",
                  "renewals per lease in window", "renewals per round trip", "leases lost"],
                 contender_rows(run, rows, SCALE_CLIENT))
    out += ["", "Redis side:", ""]
    out += table(["managers × leases", "renewals/s", "Redis commands/s", "commands per renewal",
                  "script calls/s", "Redis CPU %", "Redis CPU µs/renewal", "Redis bytes/lock",
                  "Redis keys/lock", "keys left after release"], contender_rows(run, rows, SCALE_SERVER))
    out += ["", *growth(run, [p for p in points if p[0] == 1])]
    trips = [v for m, n in points for v in run.per_round(
        "renewals_per_round_trip", workload="scale", backend="redis", managers=m, leases_per_manager=n).values()]
    per_trip = statistics.median(trips) if trips else None
    if per_trip is not None:
        verdict = ("each renewal is a round trip of its own: renewals are not batched"
                   if per_trip < 1.05 else f"renewals go {number(per_trip, 1)} to a round trip: they are batched")
        out += [f"Renewals per round trip, median over every point and round: {number(per_trip, 2)}, so {verdict}.", ""]
    return out


def growth(run, points):
    """How each figure of one manager grows from one point to the next (per round)."""
    if len(points) < 2:
        return []
    figures = [("client RSS bytes/lease", "client_rss_bytes_per_lease"), ("client CPU % in window", "client_cpu_pct_window"),
               ("client CPU µs/renewal", "client_cpu_us_per_renewal"), ("renewals/s", "renewals_per_sec"),
               ("Redis commands/s", "redis_cmds_per_sec"), ("Redis CPU µs/renewal", "redis_cpu_us_per_renewal"),
               ("Redis bytes/lock", "redis_bytes_per_lock")]
    steps = list(zip(points, points[1:]))
    head = ["figure"] + [f"{a[1]:,} → {b[1]:,} leases (×{b[1] / a[1]:g})" for a, b in steps]
    rows = []
    for name, field in figures:
        cells = []
        for a, b in steps:
            va = run.per_round(field, workload="scale", backend="redis", managers=1, leases_per_manager=a[1])
            vb = run.per_round(field, workload="scale", backend="redis", managers=1, leases_per_manager=b[1])
            cells.append(fig(ratio(vb, va), 2))
        rows.append([name] + cells)
    return ["How each figure of one manager grows (per round: the larger point's figure / the",
            "smaller's; a per-lease figure that stays near 1 grows linearly in total):", ""] + table(head, rows) + [""]


def cluster_nodes(run):
    """Per master, per round, from the cluster's uncontended W=32 lines: (share of pairs,
    server CPU µs per pair, acquires or releases per script call). A master's pairs are
    the bench's pairs shared out by the master's script calls."""
    nodes = {}
    for l in run.select(workload="uncontended", backend="cluster", workers=32):
        stats = l.get("server_nodes") or []
        calls = sum(n["script_calls"] for n in stats)
        if not calls or not l.get("pairs"):
            continue
        for n in stats:
            pairs = l["pairs"] * n["script_calls"] / calls
            if pairs:
                nodes.setdefault(n["node"], {})[l["round"]] = (
                    100 * n["script_calls"] / calls, n["cpu_s"] * 1e6 / pairs, 2 * pairs / n["script_calls"])
    return nodes


def cluster_model(run):
    nodes = cluster_nodes(run)
    if not nodes:
        return []
    single = dict(workload="uncontended", backend="redis", workers=32)
    out = ["## Redis Cluster: server CPU per pair on each master", "",
           "Redis runs each node's commands on one thread, so a master's CPU per acquire + release",
           "pair bounds what it serves: `1 s / (CPU per pair)`. Each master's `INFO` CPU is read",
           "around the measured uncontended W=32 run (`--server-stats`), over the pairs the bench",
           "counted, shared out among the masters by their script calls. A cluster master also",
           "feeds its replica; the single server has none.", ""]
    cpu1 = run.per_round("server_cpu_us_per_pair", **single)
    rows = [["single Redis", "100", fig(run.per_round("items_per_script_call", **single), 2),
             fig(cpu1, 1), fig({r: 1e6 / v for r, v in cpu1.items() if v}, 0)]]
    for node, by_round in sorted(nodes.items()):
        cpu = {r: v[1] for r, v in by_round.items()}
        rows.append([f"cluster master {node.split('//')[-1].rsplit('/', 1)[0]}",
                     fig({r: v[0] for r, v in by_round.items()}, 0),
                     fig({r: v[2] for r, v in by_round.items()}, 2), fig(cpu, 1),
                     fig({r: 1e6 / v for r, v in cpu.items() if v}, 0)])
    out += table(["node", "share of pairs %", "items per script call", "server CPU µs per pair",
                  "one core's ceiling, pairs/s"], rows)
    return out + ["", f"On this machine the client and all {run.meta['start'].get('cluster_nodes', '?')} cluster nodes share "
                  f"{run.meta['start']['cores']} cores: a cluster cannot scale out here, only show its cost per pair.", ""]


def footprint(run):
    sel = dict(workload="footprint", backend="memory")
    locks = run.per_round("locks", **sel)
    if not locks:
        return []
    return ["## Memory backend footprint", "",
            f"Holding {param(locks, 0)} locks grows the client's RSS by **{fig(run.per_round('bytes_per_held_lock', **sel), 0)} "
            "bytes per held lock** (guard, lease and store entry; the keys are allocated before the",
            f"measurement). Taking them ran at {fig(run.per_round('acquires_per_sec', **sel), 0)} acquires/s.", ""]


def render(run):
    out = header(run)
    out += ["## Targets", "", "Issue 25's goals:", ""] + targets_table(run, issue_targets(run))
    out += ["", "Earlier goals, still checked:", ""] + targets_table(run, earlier_targets(run)) + [""]
    out += uncontended(run) + cpu_breakdown(run) + hot_key(run) + scale(run) + cluster_model(run)
    out += footprint(run) + python_peers(run)
    out += ["How the figures were profiled, and what changed because of them, is in",
            "[bench/NOTES.md](bench/NOTES.md): a log written by hand, and so kept out of this page.", ""]
    return "\n".join(out)


def main(argv):
    if len(argv) != 2:
        print("usage: render_benchmarks.py bench/BENCHMARKS.jsonl > BENCHMARKS.md", file=sys.stderr)
        return 2
    try:
        page = render(load(argv[1]))
    except Refused as e:
        print(f"render_benchmarks: refused: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
