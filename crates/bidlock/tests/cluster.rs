//! Redis Cluster: every operation against a real six-node cluster (three masters, three
//! replicas) that the tests start on loopback and share. Contention over postings on
//! every master, `bid_once`, postings with braces, `locks` and `cleanup` over every
//! master, sharded pub/sub wake-ups, and the errors for a URL of the wrong kind.
//! Resharding and a killed master are in `cluster_faults.rs` (each needs its own cluster).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bidlock::{
    AcquireOptions, Backend, BidLockManager, BidOutcome, Config, ConfigBuilder, LockKey,
    RetryPolicy, Topology,
};
use bidlock_testkit::keys::Names;
use bidlock_testkit::{RedisCluster, RedisServer, ServerOptions};
use common::checker::{self, Workload};

/// The cluster of this test binary: started by the first test that needs it, stopped
/// when the last one running lets go of it.
async fn cluster() -> Arc<RedisCluster> {
    static SHARED: Mutex<Weak<RedisCluster>> = Mutex::new(Weak::new());
    tokio::task::spawn_blocking(|| {
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = shared.upgrade() {
            return c;
        }
        let c = Arc::new(RedisCluster::start());
        *shared = Arc::downgrade(&c);
        c
    })
    .await
    .unwrap()
}

fn config(c: &RedisCluster) -> ConfigBuilder {
    Config::builder()
        .backend(Backend::Redis)
        .redis_url(c.url())
        .response_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(2))
}

async fn manager(
    c: &RedisCluster,
    f: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
) -> BidLockManager {
    BidLockManager::new(f(config(c)).build().unwrap())
        .await
        .unwrap()
}

fn key(m: &str, p: &str) -> LockKey {
    LockKey::new(m, p).unwrap()
}

/// The cluster names of `m`'s prefix, as docs/REDIS.md states them.
fn names(m: &BidLockManager) -> Names {
    Names::cluster(m.config().key_prefix())
}

/// The masters that serve the lock keys of these postings (default prefix).
fn masters_of(c: &RedisCluster, keys: &[LockKey]) -> BTreeSet<u16> {
    let ks = Names::cluster(bidlock_testkit::keys::DEFAULT_PREFIX);
    keys.iter().map(|k| c.master_of_key(&ks.lock(k))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contention_over_postings_on_every_master() {
    let c = cluster().await;
    let w = Workload {
        keys: 12,
        tasks_per_instance: 4,
        duration: Duration::from_secs(4),
        long_hold: Duration::from_millis(1500),
        ..Workload::default()
    };
    let mut managers = Vec::new();
    for _ in 0..3 {
        managers.push(manager(&c, |b| b).await);
    }
    assert_eq!(managers[0].topology(), Topology::Cluster { masters: 3 });
    let rec = checker::contend(managers.clone(), w).await;
    let o = checker::check(&rec, None);
    eprintln!("cluster contention: {o:?}");
    assert_eq!(o.unsafe_overlaps, 0, "{o:?}");
    assert_eq!(o.token_order_violations, 0, "{o:?}");
    assert_eq!(o.errors, 0, "{o:?}");
    assert!(o.sections >= 50, "too little happened: {o:?}");
    let used: Vec<LockKey> = {
        let sections = rec.sections.lock().unwrap();
        let ix: BTreeSet<usize> = sections.iter().map(|s| s.key).collect();
        ix.into_iter()
            .map(|i| key("rel", &format!("hot{i}")))
            .collect()
    };
    assert_eq!(
        masters_of(&c, &used).len(),
        3,
        "the contended postings must cover every master"
    );
    // Each posting has its own counter, in its own slot, kept beyond the lock's ttl.
    let ks = names(&managers[0]);
    for k in &used {
        let fence = ks.fence_of(k);
        let pttl: i64 = c.cmd_for_key(&fence, &["PTTL", &fence]);
        assert!(pttl > 23 * 3600 * 1000, "{fence}: {pttl}");
        assert_eq!(c.slot_of(&fence), c.slot_of(&ks.lock(k)));
    }
    for m in managers {
        m.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bid_once_runs_each_posting_exactly_once() {
    let c = cluster().await;
    let postings: Vec<LockKey> = (0..12).map(|i| key("once", &format!("p{i}"))).collect();
    assert_eq!(masters_of(&c, &postings).len(), 3);
    let runs: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let m = manager(&c, |b| b.done_retention(Duration::from_secs(120))).await;
        for t in 0..4 {
            let (m, runs, postings) = (m.clone(), runs.clone(), postings.clone());
            tasks.push(tokio::spawn(async move {
                let opts = AcquireOptions::new().timeout(Duration::from_secs(10));
                let (mut placed, mut done) = (0, 0);
                for i in 0..postings.len() {
                    let k = &postings[(i + t * 3) % postings.len()];
                    let runs = runs.clone();
                    let out = m
                        .bid_once(k, &opts, |lease| async move {
                            let p = lease.key().posting().to_owned();
                            *runs.lock().unwrap().entry(p).or_default() += 1;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            Ok::<_, std::io::Error>(())
                        })
                        .await;
                    match out {
                        Ok(BidOutcome::Placed(())) => placed += 1,
                        Err(e) if e.is_already_done() => done += 1,
                        other => panic!("{k}: {other:?}"),
                    }
                }
                (placed, done)
            }));
        }
    }
    let mut placed = 0;
    for t in tasks {
        placed += t.await.unwrap().0;
    }
    let runs = runs.lock().unwrap().clone();
    assert_eq!(placed, postings.len());
    assert_eq!(runs.len(), postings.len());
    assert!(runs.values().all(|n| *n == 1), "{runs:?}");
}

/// Redis hashes the text after the first `{` up to the next `}`; postings with braces
/// must still keep every name in one slot (a script touching two slots fails with
/// CROSSSLOT), and parse back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postings_with_braces_keep_every_name_in_one_slot() {
    let c = cluster().await;
    let (a, b) = (manager(&c, |b| b).await, manager(&c, |b| b).await);
    let ks = names(&a);
    assert_eq!(a.config().redis_key(&key("brace", "x")), ks.lock("brace:x"));
    for posting in ["a}b", "{x}", "}{", "job:{1}", "{}", "}"] {
        let k = key("brace", posting);
        let g = a.acquire(&k, &AcquireOptions::new()).await.unwrap();
        // A refused try leaves a wait marker; completion writes the record and publishes.
        assert!(b
            .try_acquire(&k, &AcquireOptions::new())
            .await
            .unwrap_err()
            .is_not_acquired());
        let names = [
            ks.lock(&k),
            ks.done(&k),
            ks.wait(&k),
            ks.fence_of(&k),
            ks.release_channel_of(&k),
        ];
        let slots: BTreeSet<u16> = names.iter().map(|n| c.slot_of(n)).collect();
        assert_eq!(slots.len(), 1, "{posting:?}: {names:?} in slots {slots:?}");
        let locks = b.locks(Some("brace")).await.unwrap();
        assert!(locks.iter().any(|l| l.posting == posting), "{locks:?}");
        let record = format!("{} {}", g.fencing_token(), g.holder());
        assert!(g.complete().await.unwrap());
        let st = b.status(&k).await.unwrap();
        assert!(st.holder.is_none(), "{st:?}");
        assert_eq!(st.done.as_deref(), Some(record.as_str()));
        let done: String = c.cmd_for_key(&names[1], &["GET", &names[1]]);
        assert_eq!(done, record);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_works_on_a_cluster() {
    let c = cluster().await;
    let m = manager(&c, |b| b.prefix("ops")).await;
    let h = m.health().await.unwrap();
    assert_eq!(
        (h.cluster_state.as_deref(), h.masters),
        (Some("ok"), Some(3)),
        "{h:?}"
    );
    assert_eq!(h.maxmemory_policy.as_deref(), Some("noeviction"));
    assert!(
        h.location.starts_with("redis+cluster://127.0.0.1:"),
        "{h:?}"
    );
    // Scripts reach nodes that lost them (SCRIPT FLUSH everywhere).
    for port in c.master_ports() {
        let _: String = c.node(port).cmd(&["SCRIPT", "FLUSH"]);
    }
    let k = key("ops", "job_1");
    let opts = AcquireOptions::new().ttl(Duration::from_millis(600));
    let g = m.acquire(&k, &opts).await.unwrap();
    // Renewals go through the cluster (the deadline moves on); extend sets a ttl exactly.
    let first = g.lease().expires_at().unwrap();
    wait_for("two renewals", Duration::from_secs(10), || {
        g.is_lost()
            || g.lease()
                .expires_at()
                .is_some_and(|e| e > first + Duration::from_millis(350))
    })
    .await;
    assert!(!g.is_lost(), "{:?}", g.lease().lost_reason());
    g.extend(Duration::from_secs(30)).await.unwrap();
    let lock = names(&m).lock(&k);
    let pttl: i64 = c.cmd_for_key(&lock, &["PTTL", &lock]);
    assert!(pttl > 20_000, "{pttl}");
    let st = m.status(&k).await.unwrap();
    assert_eq!(st.holder.as_deref(), Some(g.holder().as_str()));
    assert!(!m.release(&k, &"someone-else".into()).await.unwrap());
    assert!(m.release(&k, g.holder()).await.unwrap());
    drop(g);
    let g = m.acquire(&k, &AcquireOptions::new()).await.unwrap();
    assert!(m.force_release(&k).await.unwrap());
    assert!(m.status(&k).await.unwrap().holder.is_none());
    drop(g);
    let g = m.acquire(&k, &AcquireOptions::new()).await.unwrap();
    assert!(g.complete().await.unwrap());
    assert!(m.is_done(&k).await.unwrap());
    assert!(m
        .acquire(&k, &AcquireOptions::new())
        .await
        .unwrap_err()
        .is_already_done());
    assert!(m.clear_done(&k).await.unwrap());
    let g = m.acquire(&k, &AcquireOptions::new()).await.unwrap();
    assert!(g.release().await.unwrap());
    // A key of another type at a lock's name is refused, never overwritten.
    let foreign = key("ops", "foreign");
    let name = names(&m).lock(&foreign);
    let _: i64 = c.cmd_for_key(&name, &["HSET", &name, "f", "v"]);
    assert!(m
        .acquire(&foreign, &AcquireOptions::new().no_wait())
        .await
        .is_err());
    assert!(m.force_release(&foreign).await.is_err());
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_and_cleanup_see_every_master() {
    let c = cluster().await;
    let (a, b) = (
        manager(&c, |b| b.prefix("lc")).await,
        manager(&c, |b| b.prefix("lc")).await,
    );
    let postings: Vec<LockKey> = (0..30)
        .map(|i| key(if i % 2 == 0 { "m1" } else { "m2" }, &format!("p{i}")))
        .collect();
    let ks = names(&a);
    let on: BTreeSet<u16> = postings
        .iter()
        .map(|k| c.master_of_key(&ks.lock(k)))
        .collect();
    assert_eq!(on.len(), 3, "the locks must live on every master");
    let opts = AcquireOptions::new().ttl(Duration::from_secs(60));
    let mut guards = Vec::new();
    for k in &postings {
        guards.push(a.acquire(k, &opts).await.unwrap());
    }
    // Another prefix's locks are not ours.
    let other = manager(&c, |b| b.prefix("lc_other")).await;
    let foreign = other.acquire(&postings[0], &opts).await.unwrap();
    let listed = b.locks(None).await.unwrap();
    assert_eq!(listed.len(), postings.len(), "{listed:?}");
    for (l, g) in listed.iter().zip(sorted_by_key(&ks, &guards)) {
        assert_eq!(l.redis_key, ks.lock(g.key()));
        assert_eq!(l.holder, g.holder().as_str());
        assert!(l.ttl_left_ms.is_some_and(|t| t > 50_000));
    }
    assert_eq!(b.locks(Some("m2")).await.unwrap().len(), 15);
    assert_eq!(b.cleanup_all().await.unwrap(), postings.len() as u64);
    assert!(b.locks(None).await.unwrap().is_empty());
    for k in &postings {
        assert!(b.status(k).await.unwrap().holder.is_none());
    }
    assert_eq!(other.locks(None).await.unwrap().len(), 1);
    assert!(foreign.release().await.unwrap());
    drop(guards);
}

fn sorted_by_key<'a>(ks: &Names, guards: &'a [bidlock::LockGuard]) -> Vec<&'a bidlock::LockGuard> {
    let mut v: Vec<&bidlock::LockGuard> = guards.iter().collect();
    v.sort_by_key(|g| ks.lock(g.key()));
    v
}

/// How many clients of the posting's master listen on its release channel.
fn listeners(c: &RedisCluster, channel: &str) -> i64 {
    let reply: Vec<redis::Value> = c.cmd_for_key(channel, &["PUBSUB", "SHARDNUMSUB", channel]);
    match reply.get(1) {
        Some(redis::Value::Int(n)) => *n,
        other => panic!("PUBSUB SHARDNUMSUB: {other:?}"),
    }
}

async fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "{what} not seen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A waiter whose retry policy sleeps 30 s is woken within a few seconds: only the
/// sharded message can explain it. A manager subscribes only while it has waiters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_message_wakes_a_waiter_and_channels_are_dropped_when_nobody_waits() {
    let c = cluster().await;
    let holder = manager(&c, |b| b).await;
    let slow = RetryPolicy::new(Duration::from_secs(30), 1.0, Duration::from_secs(30));
    let waiter = manager(&c, |b| b.retry(slow)).await;
    let k = key("wake", "job_1");
    let channel = names(&holder).release_channel_of(&k);
    let long = AcquireOptions::new().ttl(Duration::from_secs(60));
    let g = holder.acquire(&k, &long).await.unwrap();
    assert_eq!(listeners(&c, &channel), 0, "nobody waits yet");
    let task = {
        let (w, k) = (waiter.clone(), k.clone());
        tokio::spawn(async move {
            w.acquire(&k, &AcquireOptions::new().timeout(Duration::from_secs(25)))
                .await
        })
    };
    wait_for("the waiter's subscription", Duration::from_secs(10), || {
        listeners(&c, &channel) == 1
    })
    .await;
    let released = Instant::now();
    assert!(g.release().await.unwrap());
    let g2 = task.await.unwrap().unwrap();
    let took = released.elapsed();
    assert!(took < Duration::from_secs(5), "woken after {took:?}");
    assert!(g2.release().await.unwrap());
    // With a short backoff and response timeout the linger is short: once nobody waits,
    // the channel is dropped.
    let quick = RetryPolicy::new(Duration::from_millis(50), 2.0, Duration::from_millis(200));
    let w2 = manager(&c, |b| {
        b.retry(quick).response_timeout(Duration::from_millis(800))
    })
    .await;
    let k = key("wake", "job_2");
    let channel = names(&holder).release_channel_of(&k);
    let g = holder.acquire(&k, &long).await.unwrap();
    let t = {
        let (w2, k) = (w2.clone(), k.clone());
        tokio::spawn(async move { w2.acquire(&k, &AcquireOptions::new()).await })
    };
    wait_for("a subscription", Duration::from_secs(10), || {
        listeners(&c, &channel) == 1
    })
    .await;
    assert!(g.release().await.unwrap());
    let g3 = t.await.unwrap().unwrap();
    assert!(g3.release().await.unwrap());
    wait_for("the channel dropped", Duration::from_secs(15), || {
        listeners(&c, &channel) == 0
    })
    .await;
    eprintln!("sharded wake-up after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_of_the_wrong_kind_is_a_clear_error() {
    let c = cluster().await;
    // A single-server URL pointed at a cluster node: named, with the URL to use instead,
    // and no quiet fallback to memory.
    let node = &c.nodes[0];
    for backend in [Backend::Redis, Backend::Auto] {
        let cfg = Config::builder().backend(backend).redis_url(node.url());
        let e = BidLockManager::new(cfg.build().unwrap()).await.unwrap_err();
        let msg = e.to_string();
        assert!(e.is_invalid_input(), "{msg}");
        assert!(msg.contains(&node.url()), "{msg}");
        assert!(msg.contains("cluster_enabled:1"), "{msg}");
        assert!(
            msg.contains(&format!("redis+cluster://{}", node.addr())),
            "{msg}"
        );
    }
    // A cluster URL pointed at a single server (with a password that must not show).
    let single = tokio::task::spawn_blocking(|| {
        RedisServer::start_with(ServerOptions {
            password: Some("s3cret-pw".into()),
            ..ServerOptions::default()
        })
    })
    .await
    .unwrap();
    let url = format!("redis+cluster://:s3cret-pw@127.0.0.1:{}", single.port());
    let cfg = Config::builder().backend(Backend::Redis).redis_url(&url);
    let e = BidLockManager::new(cfg.build().unwrap()).await.unwrap_err();
    let msg = format!("{e} {e:?}");
    assert!(e.is_invalid_input(), "{msg}");
    assert!(!msg.contains("s3cret-pw"), "{msg}");
    assert!(
        msg.contains(&format!("redis+cluster://:***@127.0.0.1:{}", single.port())),
        "{msg}"
    );
    assert!(msg.contains("not a Redis Cluster node"), "{msg}");
    assert!(
        msg.contains(&format!("redis://127.0.0.1:{}", single.port())),
        "{msg}"
    );
}
