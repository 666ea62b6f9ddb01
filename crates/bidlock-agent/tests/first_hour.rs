//! The agent as a new user meets it (issue 23): with nothing configured it runs on
//! memory and never writes into a Redis that merely answers at the default address (the
//! rule `bidlock simulate` follows too), and its stop summary breaks the marketplace's
//! refusals down as its counters do.

#[path = "../../bidlock-cli/tests/common/netns.rs"]
mod netns;

use std::process::Command;

/// The agent with no lock setting at all (not even USE_REDIS_LOCKS).
fn bare_agent(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bidlock-agent"));
    for var in bidlock::ENV_VARS {
        cmd.env_remove(var);
    }
    cmd.env_remove("RUST_LOG")
        .args(["--seconds", "1", "--rate", "500"])
        .args(args);
    cmd
}

fn summary(out: &std::process::Output) -> serde_json::Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "summary is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn with_nothing_configured_the_agent_bids_on_memory() {
    let out = bare_agent(&["--json"]).output().unwrap();
    let s = summary(&out);
    assert_eq!(s["backend"], "memory", "{s}");
    assert!(s["marketplace"]["accepted"].as_u64().unwrap() > 0, "{s}");
}

#[test]
fn the_agent_never_writes_into_a_redis_it_merely_finds() {
    if !netns::available() {
        eprintln!("skipped: this machine cannot make a network namespace (unshare -rn)");
        return;
    }
    for extra in [&[][..], &["USE_REDIS_LOCKS=auto"]] {
        let mut cmd = bare_agent(&["--json"]);
        for kv in extra {
            let (k, v) = kv.split_once('=').unwrap();
            cmd.env(k, v);
        }
        let (out, keys) = netns::beside_redis_at_the_default_address(&cmd);
        let s = summary(&out);
        assert_eq!(s["backend"], "memory", "{extra:?}: {s}");
        assert_eq!(
            keys, 0,
            "{extra:?}: the agent wrote into the Redis it found"
        );
    }
    // The control: asked for Redis (and given no address), it uses that very server.
    let mut cmd = bare_agent(&["--json"]);
    cmd.env("USE_REDIS_LOCKS", "true");
    let (out, keys) = netns::beside_redis_at_the_default_address(&cmd);
    assert_eq!(summary(&out)["backend"], "redis");
    assert!(keys > 0, "the control run wrote nothing");
}

/// The number just before `label` in `text` (`12 busy` → 12).
fn count_before(text: &str, label: &str) -> u64 {
    let at = text
        .find(label)
        .unwrap_or_else(|| panic!("no {label:?} in {text}"));
    text[..at]
        .split(|c: char| !c.is_ascii_digit())
        .rfind(|w| !w.is_empty())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number before {label:?} in {text}"))
}

#[test]
fn the_stop_summary_breaks_refusals_down_by_cause() {
    let out = bare_agent(&[]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    let refused = count_before(&line, " refused by the marketplace");
    let stale = count_before(&line, " stale tokens, ");
    let busy = count_before(&line, " busy, ");
    let closed = count_before(&line, " closed)");
    assert_eq!(refused, stale + busy + closed, "{line}");
}
