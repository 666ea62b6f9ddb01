//! Least privilege: every operation of the library works under the Redis user that
//! `deploy/redis/bidlock.acl` defines (the file itself is loaded), on one server, through
//! Sentinel (across a failover) and on a cluster; and `MONITOR` shows that bidlock sends
//! nothing but what the file allows, and uses all of it.

use std::collections::BTreeSet;
use std::time::Duration;

use bidlock::{AcquireOptions, Backend, BidLockManager, BidOutcome, Config, LockKey, RetryPolicy};
use bidlock_testkit::acl::{self, Monitor};
use bidlock_testkit::{RedisCluster, RedisServer, SentinelCluster};

const PASSWORD: &str = "acl-test-pw";

/// What the single-server layout sends (one server, Sentinel, each Redlock node).
const SERVER_USES: &[&str] = &[
    "del",
    "evalsha",
    "exists",
    "get",
    "hdel",
    "hget",
    "hset",
    "info",
    "pexpire",
    "ping",
    "pttl",
    "publish",
    "scan",
    "script|load",
    "select",
    "set",
    "subscribe",
    "time",
    "type",
    "zadd",
    "zcard",
    "zrange",
    "zrem",
    "zscore",
];

/// What a cluster sends: no queue of its own (waiters do not queue there; a release and a
/// try still look whether a queue is empty, and touch one only when it holds an entry),
/// sharded messages, the slot map, and `ASKING` while a slot moves.
const CLUSTER_USES: &[&str] = &[
    "asking",
    "cluster|info",
    "cluster|slots",
    "del",
    "evalsha",
    "exists",
    "get",
    "info",
    "pexpire",
    "ping",
    "pttl",
    "scan",
    "script|load",
    "set",
    "spublish",
    "ssubscribe",
    "sunsubscribe",
    "time",
    "type",
    "zcard",
];

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

/// Loads the file's `bidlock` user into a server (as the default user, which the tests
/// keep for themselves).
fn load_acl(cmd: impl Fn(&[&str])) {
    let args = acl::setuser_args("bidlock", &acl::bidlock_rules(), PASSWORD);
    cmd(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

fn config(url: &str) -> Config {
    Config::builder()
        .backend(Backend::Redis)
        .redis_url(url)
        .ttl(Duration::from_millis(900))
        .connect_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
        .retry(RetryPolicy::new(
            Duration::from_millis(20),
            1.5,
            Duration::from_millis(200),
        ))
        .build()
        .expect("config")
}

async fn manager(url: &str) -> BidLockManager {
    BidLockManager::new(config(url))
        .await
        .unwrap_or_else(|e| panic!("connect as bidlock to {url}: {e}"))
}

fn key(posting: &str) -> LockKey {
    LockKey::new("acl", posting).expect("key")
}

/// Every operation of the library, each checked for its answer. `flush` drops the
/// server's scripts (`SCRIPT FLUSH`) half-way, so they are loaded again.
async fn every_operation(url: &str, flush: impl Fn()) {
    let a = manager(url).await;
    let b = manager(url).await;
    let k = key("p1");
    // Acquire; the keeper renews (a third of 900 ms); extend.
    let g = a
        .acquire(&k, &AcquireOptions::new().no_wait())
        .await
        .expect("acquire");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!g.is_lost(), "renewal under the ACL");
    g.extend(Duration::from_secs(5)).await.expect("extend");
    // A waiter that gives up leaves the queue; one that waits gets the lock at release.
    let gave_up = b
        .acquire(
            &k,
            &AcquireOptions::new().timeout(Duration::from_millis(300)),
        )
        .await;
    assert!(gave_up.unwrap_err().is_not_acquired());
    // Someone waited, nobody waits now: the release publishes and clears the queue's keys.
    assert!(g.release().await.expect("release"));
    let g = a
        .acquire(&k, &AcquireOptions::new().no_wait())
        .await
        .expect("acquire again");
    let b2 = b.clone();
    let k2 = k.clone();
    let waiter = tokio::spawn(async move {
        b2.acquire(&k2, &AcquireOptions::new().timeout(Duration::from_secs(10)))
            .await
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let first = g.fencing_token();
    assert!(g.release().await.expect("release"));
    let g2 = waiter
        .await
        .expect("join")
        .expect("the waiter gets the lock");
    assert!(g2.fencing_token() > first);
    // Read-only views.
    let st = a.status(&k).await.expect("status");
    assert_eq!(st.holder.as_deref(), Some(g2.holder().as_str()));
    let locks = a.locks(None).await.expect("locks");
    assert!(locks.iter().any(|l| l.posting == "p1"), "{locks:?}");
    let stats = a.stats().await.expect("stats");
    assert!(stats.locks >= 1, "{stats:?}");
    flush();
    // Operators: a forced release; a release by holder id.
    assert!(a.force_release(&k).await.expect("force_release"));
    let given = AcquireOptions::new().no_wait().holder("ops-holder");
    let g3 = b
        .acquire(&key("p2"), &given)
        .await
        .expect("acquire with a holder id");
    assert!(a
        .release(&key("p2"), &"ops-holder".into())
        .await
        .expect("release by id"));
    drop(g3);
    // with_lock, bid_once, completion records.
    let (p3, p4, opts) = (key("p3"), key("p4"), AcquireOptions::new().no_wait());
    let got = a.with_lock(&p3, &opts, |l| async move { l.fencing_token() });
    assert!(got.await.expect("with_lock").get() > 0);
    let placed = a.bid_once(&p4, &opts, |_| async { Ok::<_, std::io::Error>(1) });
    assert!(matches!(
        placed.await.expect("bid_once"),
        BidOutcome::Placed(1)
    ));
    let again = a.bid_once(&p4, &opts, |_| async { Ok::<_, std::io::Error>(2) });
    assert!(again.await.unwrap_err().is_already_done());
    assert!(a.is_done(&key("p4")).await.expect("is_done"));
    assert!(a.clear_done(&key("p4")).await.expect("clear_done"));
    let g5 = a
        .acquire(&key("p5"), &AcquireOptions::new())
        .await
        .expect("acquire p5");
    assert!(g5.complete().await.expect("complete"));
    // Health: every permission present.
    let h = a.health().await.expect("health");
    assert_eq!(h.missing_permissions, Some(Vec::new()), "{h:?}");
    assert!(a.health_check().await);
    a.ping().await.expect("ping");
    // Cleanup, then close.
    let _held = a
        .acquire(&key("p6"), &AcquireOptions::new())
        .await
        .expect("acquire p6");
    assert!(a.cleanup_all().await.expect("cleanup") >= 1);
    a.close().await;
    b.close().await;
}

/// AUTH and HELLO need no permission (every user may authenticate).
const NO_PERMISSION: &[&str] = &["auth", "hello"];

fn assert_uses(seen: &BTreeSet<String>, expected: &[&str], what: &str) {
    let seen: BTreeSet<String> = seen
        .iter()
        .filter(|c| !NO_PERMISSION.contains(&c.as_str()))
        .cloned()
        .collect();
    let seen = &seen;
    let allowed = acl::allowed_commands(&acl::bidlock_rules());
    let outside: Vec<_> = seen.difference(&allowed).collect();
    assert!(
        outside.is_empty(),
        "{what}: bidlock sent {outside:?}, which the ACL does not allow"
    );
    assert_eq!(seen, &set(expected), "{what}: the commands bidlock sends");
}

#[test]
fn every_command_the_acl_allows_is_one_bidlock_sends() {
    let used: BTreeSet<String> = set(SERVER_USES)
        .union(&set(CLUSTER_USES))
        .cloned()
        .collect();
    assert_eq!(used, acl::allowed_commands(&acl::bidlock_rules()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server() {
    let server = RedisServer::start();
    load_acl(|args| {
        let _: String = server.cmd(args);
    });
    let monitor = Monitor::start(server.port());
    let url = acl::with_credentials(&server.url(), "bidlock", PASSWORD);
    every_operation(&url, || {
        let _: String = server.cmd(&["SCRIPT", "FLUSH"]);
    })
    .await;
    // A URL with another database number.
    let other_db = url.replace("/0", "/1");
    let m = manager(&other_db).await;
    drop(
        m.acquire(&key("db1"), &AcquireOptions::new())
            .await
            .expect("acquire in db 1"),
    );
    m.close().await;
    let seen: BTreeSet<String> = monitor
        .commands()
        .into_iter()
        .filter(|c| !["script|flush", "acl|setuser"].contains(&c.as_str()))
        .collect();
    assert_uses(&seen, SERVER_USES, "one server");
}

/// Through Sentinel, with the user loaded on both data nodes (ACLs are not replicated),
/// and on the new master after a failover. (The sentinels' and the replication's own
/// commands reach these servers too, so MONITOR tells nothing here: that everything
/// passes under the ACL is the check.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_across_a_failover() {
    let mut cluster = tokio::task::spawn_blocking(SentinelCluster::start)
        .await
        .unwrap();
    for s in &cluster.servers {
        load_acl(|args| {
            let _: String = s.cmd(args);
        });
    }
    let url = acl::with_credentials(&cluster.url(), "bidlock", PASSWORD);
    let old = cluster.master().port();
    every_operation(&url, || {
        let _: String = cluster.master().cmd(&["SCRIPT", "FLUSH"]);
    })
    .await;
    let m = manager(&url).await;
    let (back, _) = tokio::task::spawn_blocking(move || {
        let took = cluster.fail_over();
        (cluster, took)
    })
    .await
    .unwrap();
    cluster = back;
    assert_ne!(cluster.master().port(), old);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match m
            .acquire(&key("after-failover"), &AcquireOptions::new())
            .await
        {
            Ok(g) => {
                assert!(g.release().await.expect("release on the new master"));
                break;
            }
            Err(e) => {
                assert!(!e.to_string().contains("NOPERM"), "{e}");
                let late = tokio::time::Instant::now() > deadline;
                assert!(!late, "no acquire after the failover: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    m.close().await;
}

/// What the test kit itself sends to the cluster's nodes as the default user.
const KIT: &[&str] = &[
    "cluster|nodes",
    "cluster|myid",
    "cluster|keyslot",
    "cluster|setslot",
    "script|flush",
    "acl|setuser",
];

/// A posting whose slot is half moved: the source answers ASK for its names (none are
/// there), and the client follows to the target with ASKING, which answers TRYAGAIN (a
/// script's several keys, not all there yet) until the move ends; then the acquire goes
/// through.
async fn across_a_slot_migration(c: &RedisCluster, m: &BidLockManager) {
    let name = "bid_lock:{acl:moving}";
    let slot = c.slot_of(name).to_string();
    let from = c.master_of_key(name);
    let to = c
        .master_ports()
        .into_iter()
        .find(|p| *p != from)
        .expect("another master");
    let (src, dst) = (c.node(from), c.node(to));
    let (src_id, dst_id) = (src.id(), dst.id());
    let _: String = dst.cmd(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &src_id]);
    let _: String = src.cmd(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &dst_id]);
    let m2 = m.clone();
    let taking = tokio::spawn(async move {
        m2.acquire(
            &key("moving"),
            &AcquireOptions::new().timeout(Duration::from_secs(20)),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in &c.nodes {
        let _: Option<String> = n.try_cmd(&["CLUSTER", "SETSLOT", &slot, "NODE", &dst_id]);
    }
    let g = taking
        .await
        .expect("join")
        .expect("acquire across the move");
    assert!(g.release().await.expect("release after the move"));
}

/// A waiter on a cluster listens on the posting's sharded channel while it waits, and
/// stops listening (SUNSUBSCRIBE) a linger after.
async fn a_sharded_wait(url: &str, monitors: &[Monitor]) {
    let a = manager(url).await;
    let b = manager(url).await;
    let k = key("sharded");
    let g = a
        .acquire(&k, &AcquireOptions::new())
        .await
        .expect("acquire");
    let (b2, k2) = (b.clone(), k.clone());
    let waiter = tokio::spawn(async move {
        b2.acquire(&k2, &AcquireOptions::new().timeout(Duration::from_secs(10)))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(g.release().await.expect("release"));
    drop(
        waiter
            .await
            .expect("join")
            .expect("the waiter gets the lock"),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !monitors
        .iter()
        .any(|m| m.commands().contains("sunsubscribe"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no SUNSUBSCRIBE after the wait"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster() {
    let c = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    for n in &c.nodes {
        load_acl(|args| {
            let _: String = n.cmd(args);
        });
    }
    let monitors: Vec<Monitor> = c.master_ports().into_iter().map(Monitor::start).collect();
    let url = acl::with_credentials(&c.url(), "bidlock", PASSWORD);
    every_operation(&url, || {
        for p in c.master_ports() {
            let _: String = c.node(p).cmd(&["SCRIPT", "FLUSH"]);
        }
    })
    .await;
    let m = manager(&url).await;
    across_a_slot_migration(&c, &m).await;
    m.close().await;
    a_sharded_wait(&url, &monitors).await;
    let mut seen = BTreeSet::new();
    for mon in &monitors {
        seen.extend(mon.commands());
    }
    seen.retain(|c| !KIT.contains(&c.as_str()));
    assert_uses(&seen, CLUSTER_USES, "cluster");
}
