//! Another application's Redis user (`~app:* &app:* +@all -@dangerous`, as
//! docs/OPERATING-REDIS.md suggests) cannot read, write, delete, move or rename any of
//! bidlock's keys, reach them from a script, nor publish or listen on bidlock's channels;
//! and the `bidlock` user of `deploy/redis/bidlock.acl` cannot reach the application's.

use std::time::Duration;

use bidlock::{AcquireOptions, Backend, BidLockManager, Config, LockKey};
use bidlock_testkit::acl::{self, assert_unchanged, snapshot};
use bidlock_testkit::RedisServer;

const APP_RULES: &[&str] = &["reset", "on", "~app:*", "&app:*", "+@all", "-@dangerous"];

/// One key of each kind bidlock keeps, written as the default user.
fn seed(s: &RedisServer) {
    let _: String = s.cmd(&["SET", "bid_lock:iso:p", "holder-1", "PX", "600000"]);
    let _: String = s.cmd(&["SET", "bid_done:iso:q", "5 holder-0", "PX", "600000"]);
    let _: String = s.cmd(&["SET", "bid_lock_wait:iso:p", "1", "PX", "600000"]);
    let _: i64 = s.cmd(&["ZADD", "bid_lock_queue:iso:p", "1", "w"]);
    let _: i64 = s.cmd(&["HSET", "bid_lock_waiters:iso:p", "w", "1|2|c"]);
    let _: String = s.cmd(&["SET", "bid_lock_fence", "42"]);
    let _: String = s.cmd(&["SET", "app:mine", "v"]);
}

const KEYS: &[&str] = &[
    "bid_lock:iso:p",
    "bid_done:iso:q",
    "bid_lock_wait:iso:p",
    "bid_lock_queue:iso:p",
    "bid_lock_waiters:iso:p",
    "bid_lock_fence",
];

/// Everything the application tries on one of bidlock's keys.
fn attempts_on(k: &str) -> Vec<Vec<String>> {
    let script = format!("return redis.call('DEL', '{k}')");
    let forms: Vec<Vec<&str>> = vec![
        vec!["GET", k],
        vec!["DUMP", k],
        vec!["TYPE", k],
        vec!["EXISTS", k],
        vec!["PTTL", k],
        vec!["OBJECT", "ENCODING", k],
        vec!["HGETALL", k],
        vec!["ZRANGE", k, "0", "-1"],
        vec!["SET", k, "x"],
        vec!["INCR", k],
        vec!["APPEND", k, "x"],
        vec!["DEL", k],
        vec!["UNLINK", k],
        vec!["EXPIRE", k, "1"],
        vec!["PERSIST", k],
        vec!["RENAME", k, "app:stolen"],
        vec!["RENAME", "app:mine", k],
        vec!["COPY", k, "app:copy"],
        vec!["COPY", "app:mine", k, "REPLACE"],
        vec!["MOVE", k, "1"],
        vec!["SORT", "app:mine", "STORE", k],
        vec!["EVAL", "return redis.call('GET', KEYS[1])", "1", k],
        vec!["EVAL", &script, "0"],
    ];
    forms
        .into_iter()
        .map(|f| f.into_iter().map(str::to_owned).collect())
        .collect()
}

/// What reaches everything, whatever the key patterns: refused as @dangerous.
const EVERYWHERE: &[&[&str]] = &[
    &["FLUSHDB"],
    &["FLUSHALL"],
    &["SWAPDB", "0", "1"],
    &["KEYS", "*"],
    &["ACL", "SETUSER", "app", "~*"],
    &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"],
    &["DEBUG", "SLEEP", "0"],
];

/// Bidlock's channels: publishing (a forged release or grant) and listening.
const CHANNELS: &[&[&str]] = &[
    &["PUBLISH", "bid_lock_released", "bid_lock:iso:p"],
    &["PUBLISH", "bid_lock_grants:someone", "1 1 wbid_lock:iso:p"],
    &["SPUBLISH", "bid_lock_released:{iso:p}", "bid_lock:{iso:p}"],
    &["SUBSCRIBE", "bid_lock_released"],
    &["PSUBSCRIBE", "bid_lock*"],
    &["SSUBSCRIBE", "bid_lock_released:{iso:p}"],
];

fn client(s: &RedisServer, user: &str, password: &str) -> redis::Connection {
    let url = acl::with_credentials(&s.url(), user, password);
    redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .expect("connect")
}

/// Runs `args` as a fresh connection of `user` and asserts Redis refused it (NOPERM).
fn refused(s: &RedisServer, user: &str, password: &str, args: &[String]) {
    let mut c = client(s, user, password);
    let mut cmd = redis::cmd(&args[0]);
    for a in &args[1..] {
        cmd.arg(a);
    }
    let reply: redis::RedisResult<redis::Value> = cmd.query(&mut c);
    let e = reply
        .and_then(redis::Value::extract_error)
        .expect_err(&format!("{user} may run {args:?}"));
    let text = e.to_string();
    assert!(
        e.code() == Some("NOPERM") || text.contains("no permissions") || text.contains("can't"),
        "{user} {args:?}: refused, but not by the ACL: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_application_cannot_reach_bidlocks_keys_or_channels() {
    let server = RedisServer::start();
    let bidlock = acl::setuser_args("bidlock", &acl::bidlock_rules(), "bid-pw");
    let _: String = server.cmd(&bidlock.iter().map(String::as_str).collect::<Vec<_>>());
    let app: Vec<String> = APP_RULES.iter().map(|s| (*s).to_owned()).collect();
    let app = acl::setuser_args("app", &app, "app-pw");
    let _: String = server.cmd(&app.iter().map(String::as_str).collect::<Vec<_>>());
    seed(&server);
    let before = snapshot(server.port());
    for k in KEYS {
        for args in attempts_on(k) {
            refused(&server, "app", "app-pw", &args);
        }
    }
    let owned = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    for args in EVERYWHERE.iter().chain(CHANNELS) {
        refused(&server, "app", "app-pw", &owned(args));
    }
    assert_unchanged(
        "the application's attempts",
        &before,
        &snapshot(server.port()),
    );
    // The application's own keys work, and bidlock's user cannot reach them.
    let mut c = client(&server, "app", "app-pw");
    let v: String = redis::cmd("GET")
        .arg("app:mine")
        .query(&mut c)
        .expect("app's own key");
    assert_eq!(v, "v");
    for args in [
        &["GET", "app:mine"][..],
        &["DEL", "app:mine"],
        &["PUBLISH", "app:news", "x"],
    ] {
        refused(&server, "bidlock", "bid-pw", &owned(args));
    }
    // bidlock, under its user, still works beside it.
    let url = acl::with_credentials(&server.url(), "bidlock", "bid-pw");
    let cfg = Config::builder()
        .backend(Backend::Redis)
        .redis_url(url)
        .build()
        .expect("config");
    let m = BidLockManager::new(cfg).await.expect("connect as bidlock");
    let (k, opts) = (
        LockKey::new("iso", "other").expect("key"),
        AcquireOptions::new(),
    );
    let g = m.acquire(&k, &opts).await.expect("acquire");
    assert!(g.release().await.expect("release"));
    m.close().await;
}
