"""Renders RELIABILITY.md from the JSON figures written by the reliability suite.

Every number on the page comes from a JSON document a test wrote during the run
(target/reliability/*.json); the prose around them only explains what was measured.
"""
import datetime
import json
import os
import platform
import subprocess
import sys

report_dir, profile, command = sys.argv[1], sys.argv[2], sys.argv[3]
docs = {}
for name in sorted(os.listdir(report_dir)):
    if name.endswith(".json"):
        with open(os.path.join(report_dir, name)) as f:
            docs[name[:-5]] = json.load(f)

# Test outcomes from the logs the suite kept (`test NAME ... ok|FAILED`).
test_results = {}
for name in sorted(os.listdir(report_dir)):
    if name.endswith(".log"):
        with open(os.path.join(report_dir, name), errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 4 and parts[0] == "test" and parts[2] == "..." and parts[3] in ("ok", "FAILED"):
                    test_results[parts[1]] = parts[3] == "ok"

out = []
w = out.append


def redis_version():
    try:
        return subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    except Exception:
        return "unknown"


def fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.1f}{unit}"
    return f"{v}{unit}"


def header():
    w("# Reliability\n")
    w("What bidlock does when things go wrong, measured by its own test suite against real")
    w("`redis-server` processes on loopback. This page is generated from the figures the tests")
    w("record; nothing on it is typed in. To reproduce it, run:\n")
    w(f"```sh\n{command}\n```\n")
    suite = docs.get("suite", {})
    verdict = "every test passed" if suite.get("passed") else "**some tests failed** (their figures below show where)"
    w(f"Run: {datetime.date.today().isoformat()}, profile `{profile}`, {os.cpu_count()} cores, "
      f"{platform.system()} {platform.machine()}, redis-server {redis_version()}; "
      f"{fmt(suite.get('seconds'), ' s')} in all; {verdict}.\n")


FAULT_ORDER = ["restart-no-persistence", "restart-aof-always", "sigstop-2s", "debug-sleep-2s", "latency-100ms",
               "connections-dropped", "blackhole-2s", "half-close", "script-flush-client-kill", "maxmemory-noeviction"]


def faults():
    rows = [docs[k] for k in FAULT_ORDER if k in docs]
    if not rows:
        return
    wl = rows[0].get("workload", {})
    w("## Faults, one at a time\n")
    w(f"Three instances (separate managers, {fmt(wl.get('tasks_per_instance'))} tasks each) contend on "
      f"{fmt(wl.get('keys'))} hot keys for {fmt(wl.get('seconds'), ' s')}. Sections hold "
      f"{fmt(wl.get('hold_ms'), ' ms')}, and every sixth holds {fmt(wl.get('long_hold_ms'), ' ms')} (kept by "
      f"renewal); the ttl is {fmt(wl.get('ttl_ms'), ' ms')}. Each fault is injected once a long section holds "
      "its lock, and the test shows that it took effect (the server stopped answering, the proxy stalled, a "
      "write was refused). The checker proves that tokens increase in holding order and that no two sections "
      "on a key overlapped while both leases were valid (a section counts as protected until its end, its "
      "last confirmed lease, or the moment `lost()` told it, whichever came first). *late loss* counts "
      f"sections whose lease ended while they ran and whose `lost()` did not resolve within "
      f"{fmt(wl.get('loss_slack_ms'), ' ms')} of that end; *recovery* is the time from the fault's end to the "
      "first section after it.\n")
    w("| fault | what holders were told | sections | not acquired | errors | told lost | late loss | "
      "max loss delay | worked past lease | unsafe overlaps | token order violations | recovery |")
    w("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for d in rows:
        o = d["outcomes"]
        w(f"| **{d['fault']}**: {d['description']} | {d['holders_told']} | {fmt(o.get('sections'))} | "
          f"{fmt(o.get('not_acquired'))} | {fmt(o.get('errors'))} | {fmt(o.get('lost'))} | "
          f"{fmt(o.get('late_loss_reports'))} | {fmt(o.get('max_loss_report_delay_ms'), ' ms')} | "
          f"{fmt(o.get('kept_working_after_lease'))} | {fmt(o.get('unsafe_overlaps'))} | "
          f"{fmt(o.get('token_order_violations'))} | {fmt(o.get('recovery_ms'), ' ms')} |")
    w("")
    w("**restart-no-persistence** is the one fault here that can give unsafe overlaps: Redis forgets a lock")
    w("whose holder's lease is still valid, so a second holder can start before the first learns at its next")
    w("renewal. The tokens still increase, so a receiver that checks fencing tokens refuses the earlier")
    w("holder's writes. *errors* are typed errors and never \"acquired\"; *told lost* counts sections whose")
    w("`lost()` resolved.\n")


def processes():
    keys = ["process-sigkill", "process-sigstop", "process-once-faults"]
    rows = [docs[k] for k in keys if k in docs]
    if not rows:
        return
    w("## Holder processes\n")
    w("Real `bidlock run` processes. Sections, overlaps and token order come from the commands' own output")
    w("(a start line with `$BIDLOCK_FENCE` and a clock stamp); each fault waits for the command to print")
    w("that it runs, and shows it took effect (the processes stopped or died, the proxy had connections).\n")
    w("| fault | what holders were told | sections | unsafe overlaps | token order violations | recovery | other measured figures |")
    w("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    shown = {"sections", "unsafe_overlaps", "token_order_violations", "recovery_ms"}
    for d in rows:
        o = d["outcomes"]
        extra = ", ".join(f"{k}: {v}" for k, v in o.items() if k not in shown)
        w(f"| **{d['fault']}**: {d['description']} | {d['holders_told']} | {fmt(o.get('sections'))} | "
          f"{fmt(o.get('unsafe_overlaps'))} | {fmt(o.get('token_order_violations'))} | "
          f"{fmt(o.get('recovery_ms'), ' ms')} | {extra} |")
    w("")


def chaos_intro(run):
    b, c = run.get("bounds_ms", {}), run.get("clients", {})
    w("## Randomized checker\n")
    w(f"`cargo test -p bidlock --test chaos` (seed {run['seed']}, profile {run['profile']}, "
      f"{fmt(run.get('seconds'), ' s')}; replay with `BIDLOCK_CHAOS_SEED={run['seed']}`). Each round starts "
      f"fresh servers for one fault class; {fmt(c.get('instances'))} library instances "
      f"({fmt(c.get('tasks_per_instance'))} tasks each, more in the classes that need them) and "
      f"{fmt(c.get('process_drivers'))} drivers of `bidlock run` processes contend on {fmt(c.get('hot_keys'))} hot keys "
      f"and {fmt(c.get('postings_per_round'))} postings, with random waits, ttls ({c.get('ttls_ms')} ms), renewal on "
      "and off, generated and shared given holder ids, extends longer and shorter, releases and drops, acquires "
      "cancelled mid-flight, `bid_once` closures that fail, succeed or outlive their lease, and managers closed "
      "under their guards. An observer reads every lock from Redis about once a millisecond, and the handoff keys "
      "(wait marker, queue, waiters and the last grant) every ten readings; at each reading it asks every live lease "
      "whose holder Redis no longer shows whether it still claims the lock. After each round a census reads every "
      "key of the server with its ttl.\n")
    w("What the checker proves, and the bounds it holds the library to:\n")
    w("- **(a)** tokens increase in holding order per key, and a token is above every token told before its "
      "acquire began;")
    w("- **(b)** no two valid leases on a key overlap, except where a rule below lets the history pass (the "
      "earlier holder's lock went for a stated cause before the later one got it), and even there the later "
      "token is higher;")
    w(f"- **(c)** no lease claims \"held\" after Redis stopped holding it: more than {fmt(b.get('expiry_slack'), ' ms')} "
      f"after its expiry by the server's clock; after an operator's release more than {fmt(b.get('forced_notice'), ' ms')}; "
      f"after another stated cause more than ttl/3 + {fmt(b.get('data_loss_notice_extra'), ' ms')} (the next renewal); "
      "for any other reason (a background release of a given id by bidlock itself included), at all. No lock is "
      "removed under a holder that still held it validly, unless a stated cause removed it (caught even when the "
      "holder learns at once); no grant is taken up after the tenure it reports ended;")
    w(f"- **(d)** every posting was bid at least once, twice only after the earlier bidder was told its "
      "completion was not recorded or its lease lapsed (or a rule below), and a placed bid is recorded whenever "
      "Redis can be reached;")
    w(f"- **(e)** `lost()` resolves no later than {fmt(b.get('loss_slack'), ' ms')} after the lease ends, and a "
      f"`bidlock run` stops its command within {fmt(b.get('process_stop_slack'), ' ms')} of that; an acquire "
      "never returns a lease that already ended;")
    w(f"- **(f)** a lock a cancelled or failed acquire took (an orphan) is released in the background within "
      f"{fmt(b.get('orphan_bound'), ' ms')}, never left to its ttl, unless a rule below lets it pass;")
    w("- **(g)** every key a script writes has a ttl but the fencing counter: the handoff keys while the round "
      "runs, and every key of the server in the census at its end.\n")


def chaos_tables(classes):
    w("| fault class | rounds | s | faults (took effect) | sections (processes, bids) | told lost | "
      "excused overlaps | unsafe overlaps | token order (per key / global) | held after Redis ended | "
      "removed under holder | late loss (hidden by a given id) | max loss delay | worked past lease | "
      "expired at acquire | orphans: released / left | recovery | errors | violations |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for d in classes:
        o = d["outcomes"]
        w(f"| **{d['class']}**: {d['description']} ({d['harm']}) | {o['rounds']} | {fmt(o['seconds'])} | "
          f"{o['faults_injected']} ({o['faults_effective']}) | {o['sections']} ({o['process_sections']}, "
          f"{o['bid_sections']}) | {o['lost_reported']} | {o['expected_overlaps']} | {o['unsafe_overlaps']} | "
          f"{o['token_order_violations']} / {o['global_token_violations']} | {o['held_after_server_end']} | "
          f"{o.get('removed_under_holder', 0)} | "
          f"{o['late_loss_reports']} ({o.get('loss_hidden_by_shared_id', 0)}) | {fmt(o['max_loss_report_delay_ms'], ' ms')} | "
          f"{o['kept_working_after_lease']} | {o['expired_at_acquire']} | "
          f"{o.get('orphans_released', 0)} / {o.get('orphans_left', 0)} | "
          f"{fmt(o.get('recovery_ms_max'), ' ms')} | {o['errors']} | {o['violations']} |")
    w("")
    w("| fault class | postings | placed | unrecorded (told) | placed but not recorded | twice: told / "
      "data loss / untold | never bid | record without a bid | bids past their lease |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for d in classes:
        o = d["outcomes"]
        w(f"| {d['class']} | {o['postings']} | {o['bids_placed']} | {o['bids_unrecorded']} | "
          f"{o['records_dropped_after_placed']} | {o['ran_twice_told']} / "
          f"{o['ran_twice_after_data_loss']} / {o['ran_twice_untold']} | {o['never_ran']} | "
          f"{o['phantom_records']} | {o['bids_past_lease']} |")
    w("")
    w("What each class reached, and the keys: *batched* counts acquire-script calls that carried two or more "
      "tries (seen by `MONITOR` on the server, in the batch class) and the tries they carried; *grants* are handovers the waiters "
      "hashes recorded, by how they ended; *held back* counts chunks a per-instance link held (all, and "
      "messages on subscriber links); *given-id locks no section held* are locks of cancelled tries with a given "
      "id, left to their ttl as they must be; *without a ttl* counts handoff keys seen without one while the round "
      "ran, and keys without one in the census (the fencing counter aside).\n")
    w("| fault class | batched acquire calls (tries) | lone acquire calls | batched release calls (items) | "
      "cancelled acquires (with a given id) | given-id locks no section held | grants: taken / handed on / "
      "expired unclaimed | held back (messages) | operator releases by holder id | without a ttl: handoff keys / "
      "census | census keys (locks left) |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for d in classes:
        o = d["outcomes"]
        g = lambda k: o.get(k, 0)
        monitored = g('acquire_calls_batched') + g('acquire_calls_lone') > 0
        calls = (f"{g('acquire_calls_batched')} ({g('acquire_items_batched')}) | {g('acquire_calls_lone')} | "
                 f"{g('release_calls_batched')} ({g('release_items_batched')})") if monitored else "- | - | -"
        w(f"| {d['class']} | {calls} | {g('cancelled_acquires')} "
          f"({g('cancelled_given_acquires')}) | {g('given_orphans')} | {g('grants_taken')} / "
          f"{g('grants_handed_on')} / {g('grants_expired_unclaimed')} | {g('link_chunks_held')} "
          f"({g('subscriber_chunks_held')}) | {g('operator_releases_by_holder')} | "
          f"{g('handoff_keys_without_ttl')} / {g('census_without_ttl')} | {g('census_keys')} ({g('census_locks_left')}) |")
    w("")
    failing = [d for d in classes if d.get("violation_examples")]
    if failing:
        w("Violations found (first few per class; the test prints the history around each):\n")
        for d in failing:
            for v in d["violation_examples"]:
                w(f"- {d['class']}: {v}")
        w("")


def chaos_rules(run):
    rules = run.get("excuse_rules", [])
    if not rules:
        return
    w("### Rules that let a history pass\n")
    w("A checker report is a library bug until a deterministic test shows that the history lies outside a "
      "stated promise. These are all the rules by which the checker lets a history pass that would otherwise "
      "be a violation (`tests/chaos/excuses.rs`), each with the limit it stands for and the test that shows the "
      "excused history is that limit and nothing wider (in `crates/bidlock/tests/` unless the path says "
      "otherwise; a test of the checker fails when one does not exist). *passed* is that test's outcome in "
      "this run (a rule whose test fails does not yet stand for a stated limit: what it let pass is a library "
      "bug); *used* is how often the rule let a history pass.\n")
    w("| rule | the history it lets pass | stated limit | test | passed | used |")
    w("| --- | --- | --- | --- | --- | ---: |")
    for r in rules:
        outcome = test_results.get(r["test"].rsplit("::", 1)[-1])
        passed = "-" if outcome is None else ("yes" if outcome else "**no**")
        w(f"| `{r['name']}` | {r['rule']} | {r['limit']} | `{r['test']}` | {passed} | {r['used']} |")
    w("")


def sparkline(values):
    bars = "▁▂▃▄▅▆▇█"
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1
    return "".join(bars[min(7, int((v - lo) * 8 / span))] for v in values)


def chaos_memory(run):
    rss = run.get("rss_kib", [])
    tasks = dict((t, n) for t, n in run.get("tasks_alive", []))
    if len(rss) < 2:
        return
    w("### Client memory over the run\n")
    w("The test process (all library instances, the observer and the checker's records) sampled every 10 s. "
      "Each round's records are dropped after its checks, so growth across rounds would come from state that "
      "outlives its managers.\n")
    mib = [kib / 1024 for _, kib in rss]
    half = len(rss) // 2
    t0, t1 = rss[half][0], rss[-1][0]
    slope = (mib[-1] - mib[half]) / ((t1 - t0) / 60) if t1 > t0 else 0.0
    w(f"RSS {mib[0]:.1f} MiB at the start, {max(mib):.1f} MiB at most, {mib[-1]:.1f} MiB at the end; over the "
      f"second half of the run it changed by {slope:+.2f} MiB per minute. `{sparkline(mib)}`\n")
    w("| s | RSS (MiB) | tokio tasks alive |")
    w("| ---: | ---: | ---: |")
    step = max(1, len(rss) // 40)
    for i, (t, kib) in enumerate(rss):
        if i % step == 0 or i == len(rss) - 1:
            w(f"| {t:.0f} | {kib / 1024:.1f} | {fmt(tasks.get(t))} |")
    w("")


def chaos():
    run = docs.get("chaos-run")
    if not run:
        return
    chaos_intro(run)
    classes = sorted((d for k, d in docs.items() if k.startswith("chaos-") and k != "chaos-run"),
                     key=lambda d: d["class"])
    chaos_tables(classes)
    chaos_rules(run)
    chaos_memory(run)


def load_and_soak():
    for key in ["load-16x", "soak-hot-key-64"]:
        d = docs.get(key)
        if not d:
            continue
        w(f"## {'Load' if key == 'load-16x' else 'Soak'}: `{key}`\n")
        w("| figure | value |")
        w("| --- | ---: |")
        for k, v in d.items():
            if isinstance(v, float):
                v = f"{v:,.1f}"
            w(f"| {k} | {v} |")
        w("")
    w("`redis_keys_after` counts what Redis holds after the run (completion records and the fencing")
    w("counter; no lock key). The client's RSS is read from `/proc/self/status`.\n")


def security():
    w("## Bad input and security\n")
    w("These are covered by tests, not figures:\n")
    w("- `tests/bad_input.rs` and `tests/prefixes.rs` (proptest): any string in gives a key or a typed error,")
    w("  never a panic, and validation matches the rules exactly. Keys round-trip and distinct pairs never share a")
    w("  Redis key; no prefix reaches another's keys.")
    w("  Any environment or URL in gives a config or an error naming the variable, never one that shows the")
    w("  password.")
    w("- Hostile ids (glob characters, the prefix itself, bidi controls, 512-byte ids) are stored verbatim or")
    w("  refused. A key of another Redis type is reported, never overwritten.")
    w("- Release and extend refuse guessed holder ids from a second client. `cleanup` removes only its own")
    w("  prefix. Passwords are absent from logs, errors, `Debug` output and CLI output, checked by capturing")
    w("  them. TLS (`rediss://`) is tested against a redis-server with a self-signed certificate made in the")
    w("  test, verified through `REDIS_TLS_CA_CERT`.")
    w("- `scripts/fuzz.sh [seconds]` fuzzes the environment, URL and key parsers (cargo-fuzz) for a bounded")
    w("  time, as a separate command; its figures are not part of this page.")


header()
faults()
processes()
chaos()
load_and_soak()
security()
print("\n".join(out))
