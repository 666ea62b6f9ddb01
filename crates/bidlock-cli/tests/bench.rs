//! `bidlock bench` on a real Redis: each contender's cost is its own (the raw client's
//! commands per pair are exactly its four), the order can be reversed, and `bench scale`
//! holds, renews and releases every lease of every manager process.

mod common;

use bidlock_testkit::RedisServer;
use common::{json, stderr, TestCommand};

fn close(v: &serde_json::Value, field: &str, want: f64) {
    let got = v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing: {v}"));
    assert!(
        (got - want).abs() < 0.05,
        "{field} = {got}, want {want}: {v}"
    );
}

#[test]
fn uncontended_measures_each_contender_on_its_own() {
    let s = RedisServer::start();
    let args = [
        "bench",
        "uncontended",
        "--workers",
        "4",
        "--duration",
        "0.3",
        "--backend",
        "redis",
    ];
    let v = json(&TestCommand::on(&s, &args).assert_exit_code(0));
    assert_eq!(v["order"], serde_json::json!(["bidlock", "raw redis-rs"]));
    // The raw loop: SET NX PX, then EVALSHA of a compare-and-delete (GET, DEL inside).
    close(&v, "raw_server_calls_per_pair", 4.0);
    close(&v, "raw_script_calls_per_pair", 1.0);
    close(&v, "raw_round_trips_per_pair", 2.0);
    let by = &v["raw_server_calls_by_command_per_pair"];
    for cmd in ["set", "evalsha", "get", "del"] {
        assert!((by[cmd].as_f64().unwrap() - 1.0).abs() < 0.05, "{cmd}: {v}");
    }
    // bidlock's acquires and releases are scripts; the server's CPU was read for both.
    assert!(v["script_calls_per_pair"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["items_per_script_call"].as_f64().unwrap() >= 1.0, "{v}");
    for f in ["server_cpu_us_per_pair", "raw_server_cpu_us_per_pair"] {
        assert!(v[f].as_f64().unwrap() > 0.0, "{f}: {v}");
    }
    assert!(v["pairs"].as_u64().unwrap() > 0 && v["raw_pairs"].as_u64().unwrap() > 0);

    let mut first = args.to_vec();
    first.push("--baseline-first");
    let v = json(&TestCommand::on(&s, &first).assert_exit_code(0));
    assert_eq!(v["order"], serde_json::json!(["raw redis-rs", "bidlock"]));
}

#[test]
fn scale_holds_renews_and_releases_every_lease_of_every_manager() {
    let s = RedisServer::start();
    let args = [
        "bench",
        "scale",
        "--leases",
        "300",
        "--managers",
        "2",
        "--ttl",
        "3",
        "--window",
        "1.5",
        "--backend",
        "redis",
    ];
    let v = json(&TestCommand::on(&s, &args).assert_exit_code(0));
    assert_eq!(v["leases"], 600, "{v}");
    assert_eq!(v["managers"], 2, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["released"], 600, "{v}");
    // A renewal is due a third of the way through the 3 s ttl, inside the 1.5 s window.
    assert!(v["renewals"].as_u64().unwrap() > 0, "{v}");
    assert!(v["redis_keys_per_lock"].as_f64().unwrap() >= 1.0, "{v}");
    assert!(v["redis_bytes_per_lock"].as_f64().unwrap() > 0.0, "{v}");
    let left: Vec<String> = s.cmd(&["KEYS", "bid_lock:scale:*"]);
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn scale_refuses_what_is_not_one_redis_server() {
    let out = TestCommand::new(&["bench", "scale", "--backend", "memory"]).assert_exit_code(2);
    assert!(
        stderr(&out).contains("bench scale measures one Redis server"),
        "{}",
        stderr(&out)
    );
}
