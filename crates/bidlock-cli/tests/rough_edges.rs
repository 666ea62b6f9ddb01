//! What a new user ran into, each driven through the real binary: a silent wait, clap's
//! tip for negative numbers, a release error without the way out, unrounded figures,
//! simulate's leftover records, and `metrics` passing for an instance's counters.

mod common;

use bidlock_testkit::RedisServer;
use common::{json, stderr, stdout, TestCommand};

#[test]
fn a_busy_run_with_wait_says_once_who_holds_it() {
    let s = RedisServer::start();
    let _: () = s.cmd(&[
        "SET",
        "bid_lock:upwork:busy",
        "python-instance",
        "PX",
        "1500",
    ]);
    let out = TestCommand::on(&s, &["run", "upwork", "busy", "--wait", "20", "--", "true"])
        .assert_exit_code(0);
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("bidlock: bid_lock:upwork:busy is held by python-instance, "),
        "{err}"
    );
    assert!(
        lines[0].contains(" s left on its ttl; waiting up to 20.0 s"),
        "{err}"
    );

    let _: () = s.cmd(&[
        "SET",
        "bid_lock:upwork:busy",
        "python-instance",
        "PX",
        "500",
    ]);
    let out = TestCommand::on(
        &s,
        &[
            "run", "upwork", "busy", "--wait", "20", "--quiet", "--", "true",
        ],
    )
    .assert_exit_code(0);
    assert_eq!(stderr(&out), "", "--quiet");
    // A free lock: nothing to say.
    let out = TestCommand::on(&s, &["run", "upwork", "free", "--wait", "5", "--", "true"])
        .assert_exit_code(0);
    assert_eq!(stderr(&out), "");
}

#[test]
fn negative_durations_get_bidlocks_own_message() {
    // (arguments, what the message says is accepted, what it says is wrong)
    let seconds = "expected seconds from 0 to 2592000 (30 days)";
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["run", "upwork", "j", "--wait", "-1", "--", "true"],
            seconds,
            "-1 is negative",
        ),
        (
            &["run", "upwork", "j", "--wait=-0.5", "--", "true"],
            seconds,
            "-0.5 is negative",
        ),
        (
            &["run", "upwork", "j", "--ttl", "-1", "--", "true"],
            "expected seconds from 0.01 to 2592000",
            "-1 is negative",
        ),
        (
            &["run", "upwork", "j", "--grace", "-2", "--", "true"],
            seconds,
            "-2 is negative",
        ),
        (&["simulate", "--wait", "-1"], seconds, "-1 is negative"),
        (
            &["simulate", "--bid-ms", "-1"],
            "expected milliseconds from 0",
            "-1 is negative",
        ),
        (
            &["bench", "uncontended", "--duration", "-1"],
            seconds,
            "-1 is negative",
        ),
        (
            &["bench", "hot-key", "--hold-us", "-1"],
            "",
            "must be zero or more",
        ),
        (&["stats", "--watch", "-1"], seconds, "-1 is negative"),
    ];
    for (args, accepted, wrong) in cases {
        let out = TestCommand::new(args).assert_exit_code(2);
        let err = stderr(&out);
        assert!(
            err.contains(accepted) && err.contains(wrong),
            "{args:?}: {err}"
        );
        assert!(
            !err.contains("tip:") && !err.contains("-- -"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn release_without_holder_names_force_and_touches_nothing() {
    // The dead default Redis shows the check comes before any connection (2, not 69).
    let out = TestCommand::new(&["release", "upwork", "j"]).assert_exit_code(2);
    let err = stderr(&out);
    assert!(err.contains("--holder") && err.contains("--force"), "{err}");
}

/// Durations and rates for people have at most two decimals and grouped thousands.
fn assert_rounded(text: &str) {
    for word in text.split_whitespace().filter(|w| !w.contains("://")) {
        let number = word.trim_matches(|c: char| !c.is_ascii_digit());
        if let Some((_, decimals)) = number.split_once('.') {
            assert!(decimals.len() <= 2, "{word:?} in {text}");
        }
        if !number.contains(',') && !number.contains('.') && word.ends_with("/s") {
            assert!(number.len() <= 3, "{word:?} not grouped in {text}");
        }
    }
}

#[test]
fn figures_for_people_are_rounded_and_json_keeps_full_precision() {
    let s = RedisServer::start();
    let out =
        TestCommand::new(&["simulate", "--agents", "4", "--postings", "2000"]).assert_exit_code(0);
    let text = stdout(&out);
    let elapsed = text.lines().find(|l| l.starts_with("elapsed")).unwrap();
    assert!(elapsed.contains(" postings/s, "), "{text}");
    assert!(text.contains("already done (skips)  6,000"), "{text}");
    assert_rounded(&text);

    let out = TestCommand::on(&s, &["health"]).assert_exit_code(0);
    let text = stdout(&out);
    assert!(
        text.contains(" latency ") && (text.contains(" µs,") || text.contains(" ms,")),
        "{text}"
    );
    assert_rounded(&text);
    let out = TestCommand::on(&s, &["health", "--json"]).assert_exit_code(0);
    assert!(json(&out)["latency_ms"].as_f64().unwrap() > 0.0);

    let bench = [
        "bench",
        "uncontended",
        "--backend",
        "memory",
        "--duration",
        "0.3",
    ];
    let out = TestCommand::new(&bench).assert_exit_code(0);
    let summary = stderr(&out);
    assert!(
        summary.starts_with("bench uncontended (memory, 1 worker): ")
            && summary.contains(" acquire+release pairs/s, acquire p50 "),
        "{summary}"
    );
    assert_rounded(&summary);
    let line = json(&out);
    let rate = line["pairs_per_sec"].as_f64().unwrap();
    assert!(rate > 0.0 && rate.fract() != 0.0, "full precision: {rate}");
    let mut quiet = bench.to_vec();
    quiet.push("--json");
    let out = TestCommand::new(&quiet).assert_exit_code(0);
    assert_eq!(stderr(&out), "", "--json: the JSON line only");
}

#[test]
fn simulate_on_redis_deletes_its_completion_records_unless_kept() {
    let s = RedisServer::start();
    let count = |pattern: &str| scan(&s, pattern).len();
    let out = TestCommand::on(&s, &["simulate", "--agents", "4", "--postings", "120"])
        .assert_exit_code(0);
    let text = stdout(&out);
    assert!(
        text.contains("completion records    120 deleted (bid_done:simulate:"),
        "{text}"
    );
    assert_eq!(count("bid_done:simulate:*"), 0);

    let out = TestCommand::on(
        &s,
        &[
            "simulate",
            "--agents",
            "4",
            "--postings",
            "80",
            "--keep",
            "--json",
        ],
    )
    .assert_exit_code(0);
    let v = json(&out);
    assert_eq!(v["records"]["fate"], "kept");
    let pattern = v["records"]["pattern"].as_str().unwrap();
    assert!(pattern.starts_with("bid_done:simulate:"), "{pattern}");
    assert_eq!(count(pattern), 80);
    let kept = scan(&s, pattern).pop().unwrap();
    assert!(
        s.cmd::<i64>(&["PTTL", &kept]) > 500_000,
        "kept for 10 minutes"
    );

    // Another prefix keeps its records elsewhere; they are found and deleted there.
    let out = TestCommand::on(
        &s,
        &[
            "--prefix",
            "staging",
            "simulate",
            "--agents",
            "4",
            "--postings",
            "50",
            "--json",
        ],
    )
    .assert_exit_code(0);
    let v = json(&out);
    assert_eq!(v["records"]["fate"], "deleted");
    assert_eq!(v["records"]["deleted"], 50);
    assert!(v["records"]["pattern"]
        .as_str()
        .unwrap()
        .starts_with("staging_done:simulate:"));
    assert_eq!(count("staging_done:*"), 0);
    assert_eq!(count(pattern), 80, "the kept run's records are not touched");
}

/// Every key of `pattern`, by SCAN.
fn scan(s: &RedisServer, pattern: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = s.cmd(&[
            "SCAN",
            &cursor.to_string(),
            "MATCH",
            pattern,
            "COUNT",
            "1000",
        ]);
        found.extend(keys);
        if next == 0 {
            return found;
        }
        cursor = next;
    }
}

#[test]
fn metrics_says_it_shows_its_own_self_check() {
    let out = TestCommand::new(&["metrics", "--backend", "memory", "--format", "prometheus"])
        .assert_exit_code(0);
    let first = stdout(&out).lines().next().unwrap_or_default().to_owned();
    assert!(
        first.starts_with("# bidlock metrics: the counters of this command's own short self-check, not of a running instance"),
        "{first}"
    );
    assert!(stderr(&out).contains("not of a running instance"));
    let out = TestCommand::new(&["metrics", "--backend", "memory"]).assert_exit_code(0);
    assert_eq!(json(&out)["scope"], "self-check");
    let help = stdout(&TestCommand::new(&["metrics", "--help"]).assert_exit_code(0));
    for needed in [
        "self-check",
        "not the counters of any running instance",
        "/metrics",
        "bidlock stats",
    ] {
        assert!(help.contains(needed), "{needed}: {help}");
    }
    let list = stdout(&TestCommand::new(&["--help"]).assert_exit_code(0));
    assert!(list.contains("not of a running instance"), "{list}");
}
