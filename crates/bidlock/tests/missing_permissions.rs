//! A Redis user that lacks any one permission of `deploy/redis/bidlock.acl` (each
//! command, key pattern and channel dropped in turn): bidlock says what is missing (NOPERM
//! and the command, key pattern or channel), and nothing in Redis changes. What only
//! operator commands need is named by `health` and by the refused command itself; what
//! the lock path needs refuses the connect, before anything is written.

use std::time::Duration;

use bidlock::{AcquireOptions, Backend, BidLockManager, Config, Error, LockKey, RetryPolicy};
use bidlock_testkit::acl::{self, assert_unchanged, snapshot};
use bidlock_testkit::{RedisCluster, RedisServer};

const PASSWORD: &str = "missing-pw";

/// Permissions only a cluster needs.
const CLUSTER_ONLY: &[&str] = &[
    "+spublish",
    "+ssubscribe",
    "+sunsubscribe",
    "+cluster|slots",
    "+cluster|info",
    "+asking",
    "~bid_lock_fence:*",
    "&bid_lock_released:*",
];

/// Permissions only one server (or Sentinel, Redlock) needs.
const SERVER_ONLY: &[&str] = &[
    "+publish",
    "+subscribe",
    "+select",
    "~bid_lock_fence",
    "&bid_lock_released",
    "&bid_lock_grants:*",
];

/// What only operator commands need: the connect goes through, `health` names it.
const OPERATOR_ONLY: &[&str] = &["+scan", "+info", "+cluster|info"];

/// Needed before the permission check can run: the refusal comes from Redis itself.
const BEFORE_THE_CHECK: &[&str] = &["+ping", "+select", "+cluster|slots"];

/// The rules of the file without `token`.
fn without(token: &str) -> Vec<String> {
    let rules = acl::bidlock_rules();
    assert!(
        rules.iter().any(|r| r == token),
        "{token} is not in the ACL file"
    );
    rules.into_iter().filter(|r| r != token).collect()
}

/// The dropped permissions a test goes through: every command and pattern of the file.
fn tokens(skip: &[&str]) -> Vec<String> {
    acl::bidlock_rules()
        .into_iter()
        .filter(|r| r.starts_with(['+', '~', '&']))
        .filter(|r| !skip.contains(&r.as_str()))
        .collect()
}

/// How bidlock names a dropped permission.
fn named(token: &str) -> String {
    match token.split_at(1) {
        ("+", c) => format!("'{c}'"),
        ("~", k) => format!("keys {k}"),
        ("&", ch) => format!("channel {ch}"),
        _ => unreachable!(),
    }
}

fn config(url: &str) -> Config {
    Config::builder()
        .backend(Backend::Redis)
        .redis_url(url)
        .connect_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
        .retry(RetryPolicy::new(
            Duration::from_millis(20),
            1.5,
            Duration::from_millis(100),
        ))
        .build()
        .expect("config")
}

fn key(p: &str) -> LockKey {
    LockKey::new("perm", p).expect("key")
}

/// Some state of bidlock's, written as the default user: a held lock, a completion
/// record, the fencing counter.
fn seed(cmd: impl Fn(&[&str])) {
    cmd(&["SET", "bid_lock:perm:held", "someone", "PX", "600000"]);
    cmd(&["SET", "bid_done:perm:done", "7 someone", "PX", "600000"]);
    cmd(&["SET", "bid_lock_fence", "1000"]);
}

/// Connects as a user without `token` and does what needs it; checks what bidlock said.
async fn attempt(url: &str, token: &str) {
    let what = named(token);
    match BidLockManager::new(config(url)).await {
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains("NOPERM"), "without {token}: {text}");
            assert!(
                text.contains(&what),
                "without {token}: {text} does not name {what}"
            );
            if !BEFORE_THE_CHECK.contains(&token) {
                assert!(!e.is_retryable(), "without {token}: {e} is retryable");
                // What is missing, nothing else.
                let listed = text.split("(NOPERM): ").nth(1).unwrap_or_default();
                let listed = listed.split("; grant what").next().unwrap_or_default();
                for item in listed
                    .split("; ")
                    .filter(|i| !i.starts_with("nothing else"))
                {
                    assert!(item.contains(&what), "without {token}: {item} named too");
                }
            }
        }
        Ok(m) => {
            assert!(OPERATOR_ONLY.contains(&token), "connected without {token}");
            let h = m.health().await.expect("health");
            let missing = h.missing_permissions.clone().expect("checked");
            assert!(
                missing.iter().any(|x| x.contains(&what)),
                "without {token}: {h:?}"
            );
            if token == "+scan" {
                let e = m.locks(None).await.expect_err("locks without scan");
                assert!(
                    e.to_string().contains("NOPERM") && e.to_string().contains("'scan'"),
                    "{e}"
                );
                assert!(!e.is_retryable(), "{e}");
                let e = m.cleanup_all().await.expect_err("cleanup without scan");
                assert!(e.to_string().contains("'scan'"), "{e}");
            }
            m.close().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_names_each_missing_permission_and_changes_nothing() {
    let server = RedisServer::start();
    seed(|args| {
        let _: String = server.cmd(args);
    });
    for token in tokens(CLUSTER_ONLY) {
        let args = acl::setuser_args("bidlock", &without(&token), PASSWORD);
        let _: String = server.cmd(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let before = snapshot(server.port());
        let mut url = acl::with_credentials(&server.url(), "bidlock", PASSWORD);
        if token == "+select" {
            url = url.replace("/0", "/1");
        }
        attempt(&url, &token).await;
        assert_unchanged(
            &format!("without {token}"),
            &before,
            &snapshot(server.port()),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_names_each_missing_permission_and_changes_nothing() {
    let c = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    let masters = c.master_ports();
    for (k, v) in [
        ("bid_done:{perm:done}", "7 someone"),
        ("bid_lock:{perm:held}", "someone"),
    ] {
        let _: String = c.cmd_for_key(k, &["SET", k, v, "PX", "600000"]);
    }
    let url = acl::with_credentials(&c.url(), "bidlock", PASSWORD);
    for token in tokens(SERVER_ONLY) {
        let rules = without(&token);
        for n in &c.nodes {
            let args = acl::setuser_args("bidlock", &rules, PASSWORD);
            let _: String = n.cmd(&args.iter().map(String::as_str).collect::<Vec<_>>());
        }
        let before: Vec<_> = masters.iter().map(|p| snapshot(*p)).collect();
        attempt(&url, &token).await;
        for (p, b) in masters.iter().zip(&before) {
            assert_unchanged(&format!("without {token} on {p}"), b, &snapshot(*p));
        }
    }
}

/// A user whose ACL changes after bidlock connected: Redis refuses the command (inside a
/// script, or at the top), bidlock says NOPERM, which operation, and that it is no
/// transient error; `health` names what is missing now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permission_taken_away_later_is_named_and_not_retried() {
    let server = RedisServer::start();
    let full = acl::setuser_args("bidlock", &acl::bidlock_rules(), PASSWORD);
    let _: String = server.cmd(&full.iter().map(String::as_str).collect::<Vec<_>>());
    let url = acl::with_credentials(&server.url(), "bidlock", PASSWORD);
    let m = BidLockManager::new(config(&url)).await.expect("connect");
    let _: String = server.cmd(&["ACL", "SETUSER", "bidlock", "-scan", "-time"]);
    let e: Error = m.locks(None).await.expect_err("locks without scan");
    let text = e.to_string();
    assert!(text.contains("NOPERM") && text.contains("'scan'"), "{text}");
    assert!(!e.is_retryable(), "{e}");
    let before = snapshot(server.port());
    let e = m
        .acquire(&key("later"), &AcquireOptions::new())
        .await
        .expect_err("acquire without time");
    let text = e.to_string();
    assert!(
        text.contains("NOPERM") && text.contains("acquire"),
        "{text}"
    );
    assert!(!e.is_retryable(), "{e}");
    // The acquire script stopped at TIME, after its SET NX: the lock it left is released
    // in the background (an acquire whose outcome is unknown is never held).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while snapshot(server.port()) != before {
        assert!(
            std::time::Instant::now() < deadline,
            "the half-taken lock stayed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let h = m.health().await.expect("health");
    let missing = h.missing_permissions.expect("checked");
    assert!(missing.iter().any(|x| x.contains("'scan'")), "{missing:?}");
    assert!(missing.iter().any(|x| x.contains("'time'")), "{missing:?}");
    m.close().await;
}
