//! Redis Cluster under faults, each on a cluster of its own: slots that hold live locks
//! move to another master while clients contend, and a master dies (`kill -9`) and its
//! replica takes over. Exclusion holds, tokens keep increasing per posting, and a
//! holder is either kept or told its lock is lost, never silently both.

mod common;

use std::time::{Duration, Instant};

use bidlock::{AcquireOptions, Backend, BidLockManager, Config, LockKey};
use bidlock_testkit::keys::{Names, DEFAULT_PREFIX};
use bidlock_testkit::RedisCluster;
use common::checker::{self, Workload};

async fn start() -> RedisCluster {
    tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap()
}

async fn manager(c: &RedisCluster) -> BidLockManager {
    let cfg = Config::builder()
        .backend(Backend::Redis)
        .redis_url(c.url())
        .response_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    BidLockManager::new(cfg).await.unwrap()
}

/// The default prefix's cluster names, as docs/REDIS.md states them.
fn names() -> Names {
    Names::cluster(DEFAULT_PREFIX)
}

/// A posting of `marketplace` whose names share a slot with `key`'s (a lock held across
/// the move of that slot).
fn same_slot_posting(marketplace: &str, key: &LockKey) -> LockKey {
    use redis::cluster_routing::Slot;
    let ks = names();
    let slot = Slot::for_key(ks.lock(key));
    (0..1_000_000)
        .map(|i| LockKey::new(marketplace, format!("pin{i}")).unwrap())
        .find(|k| Slot::for_key(ks.lock(k)) == slot)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_slots_that_hold_live_locks_while_clients_contend() {
    let c = start().await;
    let mut managers = Vec::new();
    for _ in 0..3 {
        managers.push(manager(&c).await);
    }
    let w = Workload {
        keys: 3,
        tasks_per_instance: 3,
        duration: Duration::from_secs(7),
        hold: Duration::from_millis(10),
        long_hold: Duration::from_millis(800),
        ttl: Duration::from_secs(1),
        wait: Duration::from_secs(1),
    };
    let contended: Vec<LockKey> = (0..w.keys)
        .map(|i| LockKey::new("rel", format!("hot{i}")).unwrap())
        .collect();
    // A lock held (and renewed) across the move of its slot.
    let pinned = same_slot_posting("pinned", &contended[0]);
    let pin = managers[0]
        .acquire(&pinned, &AcquireOptions::new().ttl(Duration::from_secs(2)))
        .await
        .unwrap();
    let pin_token = pin.fencing_token();
    let run = tokio::spawn(checker::contend(managers.clone(), w));
    let deadline = Instant::now() + Duration::from_secs(10);
    while managers
        .iter()
        .map(|m| m.metrics().lock_successes)
        .sum::<u64>()
        < 20
    {
        assert!(Instant::now() < deadline, "the contention never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ks = names();
    let slots: Vec<u16> = contended.iter().map(|k| c.slot_of(&ks.lock(k))).collect();
    let (c, moves) = tokio::task::spawn_blocking(move || {
        let mut moves = Vec::new();
        for slot in slots {
            let from = c.master_of_slot(slot);
            let live: i64 = c
                .node(from)
                .cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]);
            let to = *c.master_ports().iter().find(|p| **p != from).unwrap();
            let moved = c.migrate_slot(slot, to, Duration::from_millis(150));
            moves.push((slot, from, to, live, moved));
        }
        (c, moves)
    })
    .await
    .unwrap();
    let rec = run.await.unwrap();
    let o = checker::check(&rec, None);
    eprintln!("resharding: moves (slot, from, to, keys before, keys moved) {moves:?}; {o:?}");
    assert_eq!(o.unsafe_overlaps, 0, "{o:?}");
    assert_eq!(o.token_order_violations, 0, "{o:?}");
    assert!(o.sections >= 30, "too little happened: {o:?}");
    for ((slot, _, to, live, moved), k) in moves.iter().zip(&contended) {
        assert!(*live > 0 && *moved > 0, "slot {slot} held no keys");
        assert_eq!(c.master_of_key(&ks.lock(k)), *to);
    }
    // The pinned lock moved with its slot and was kept: renewed on its new master.
    assert!(!pin.is_lost(), "{:?}", pin.lease().lost_reason());
    let name = ks.lock(&pinned);
    let holder: String = c.cmd_for_key(&name, &["GET", &name]);
    assert_eq!(holder, pin.holder().as_str());
    assert!(pin.release().await.unwrap());
    // Tokens of the moved postings keep increasing after the move.
    let after = managers[1]
        .acquire(&pinned, &AcquireOptions::new())
        .await
        .unwrap();
    assert!(after.fencing_token() > pin_token);
    assert!(after.release().await.unwrap());
    a_waiter_follows_its_channel_when_the_slot_moves(&c, &managers[0]).await;
    for m in managers {
        m.close().await;
    }
}

/// How many clients of `port` listen on `channel`.
fn listeners(c: &RedisCluster, port: u16, channel: &str) -> i64 {
    let reply: Vec<redis::Value> = c.node(port).cmd(&["PUBSUB", "SHARDNUMSUB", channel]);
    match reply.get(1) {
        Some(redis::Value::Int(n)) => *n,
        other => panic!("PUBSUB SHARDNUMSUB: {other:?}"),
    }
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "{what} not seen within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A waiter subscribed before its slot moves is unsubscribed by the server, subscribes
/// again on the new master, and is woken there by the release message (its retry policy
/// sleeps 30 s, so only the message explains a quick wake).
async fn a_waiter_follows_its_channel_when_the_slot_moves(
    c: &RedisCluster,
    holder: &BidLockManager,
) {
    let cfg = Config::builder()
        .backend(Backend::Redis)
        .redis_url(c.url())
        .retry(common::no_polling())
        .build()
        .unwrap();
    let waiter = BidLockManager::new(cfg).await.unwrap();
    let k = LockKey::new("moving", "job").unwrap();
    let ks = names();
    let (lock, channel) = (ks.lock(&k), ks.release_channel_of(&k));
    let g = holder
        .acquire(&k, &AcquireOptions::new().ttl(Duration::from_secs(60)))
        .await
        .unwrap();
    let task = {
        let (w, k) = (waiter.clone(), k.clone());
        tokio::spawn(async move {
            w.acquire(&k, &AcquireOptions::new().timeout(Duration::from_secs(25)))
                .await
        })
    };
    let from = c.master_of_key(&lock);
    wait_for("the subscription", || listeners(c, from, &channel) == 1).await;
    let to = *c.master_ports().iter().find(|p| **p != from).unwrap();
    let moved = c.migrate_slot(c.slot_of(&lock), to, Duration::ZERO);
    assert!(moved >= 2, "the lock and its marker moved: {moved}");
    wait_for("the subscription on the new master", || {
        listeners(c, to, &channel) == 1
    })
    .await;
    let released = Instant::now();
    assert!(g.release().await.unwrap());
    let g2 = task.await.unwrap().unwrap();
    let took = released.elapsed();
    assert!(took < Duration::from_secs(5), "woken after {took:?}");
    assert!(g2.release().await.unwrap());
    waiter.close().await;
}

/// Waits until `g` is told it is lost, or a renewal sent after `healed` succeeded (its
/// deadline moved past `healed` plus most of the ttl). `true`: kept.
async fn kept_or_told(g: &bidlock::LockGuard, healed: Instant, ttl: Duration) -> bool {
    let deadline = Instant::now() + ttl + Duration::from_secs(5);
    loop {
        if g.is_lost() {
            return false;
        }
        if g.lease()
            .expires_at()
            .is_some_and(|e| e > healed + ttl.mul_f64(0.9))
        {
            return true;
        }
        assert!(
            Instant::now() < deadline,
            "{} neither renewed nor lost",
            g.key()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_fails_over_and_holders_are_kept_or_told() {
    let mut c = start().await;
    let (a, b) = (manager(&c).await, manager(&c).await);
    let ks = names();
    let victim = c.master_ports()[0];
    let on_victim: Vec<LockKey> = (0..200)
        .map(|i| LockKey::new("kill", format!("p{i}")).unwrap())
        .filter(|k| c.master_of_key(&ks.lock(k)) == victim)
        .take(4)
        .collect();
    assert_eq!(on_victim.len(), 4);
    // Long enough that the replicated locks outlive the failover (renewals meanwhile fail).
    let ttl = Duration::from_secs(15);
    let opts = AcquireOptions::new().ttl(ttl);
    let mut guards = Vec::new();
    for k in &on_victim[..3] {
        guards.push(a.acquire(k, &opts).await.unwrap());
    }
    c.wait_replicated(victim);
    // The last one right before the kill, with the replica paused and its link cut: it
    // never reaches the replica, which is promoted without it (kill_master resumes it).
    for r in c.replicas_of(victim) {
        c.node(r).pause();
    }
    let cut: i64 = c.node(victim).cmd(&["CLIENT", "KILL", "TYPE", "replica"]);
    assert_eq!(cut, 1);
    guards.push(a.acquire(&on_victim[3], &opts).await.unwrap());
    let (c, promoted) = tokio::task::spawn_blocking(move || {
        let p = c.kill_master(victim);
        (c, p)
    })
    .await
    .unwrap();
    let healed = Instant::now();
    assert_ne!(promoted, victim);
    assert!(c.master_ports().contains(&promoted));
    let mut kept = 0;
    for g in &guards {
        let name = ks.lock(g.key());
        let on_new: Option<String> = c.node(promoted).cmd(&["GET", &name]);
        if kept_or_told(g, healed, ttl).await {
            kept += 1;
            // Kept: the new master has it, and nobody else can take it.
            assert_eq!(on_new.as_deref(), Some(g.holder().as_str()), "{name}");
            let other = b.try_acquire(g.key(), &AcquireOptions::new()).await;
            assert!(other.unwrap_err().is_not_acquired(), "{name} held twice");
        } else {
            // Told: the new master does not have it under our name; the next holder's
            // token is higher.
            assert_ne!(
                on_new.as_deref(),
                Some(g.holder().as_str()),
                "{name} lost but held"
            );
            let next =
                common::acquire_eventually(&b, g.key(), &opts, Duration::from_secs(10)).await;
            assert!(next.fencing_token() > g.fencing_token());
        }
    }
    eprintln!(
        "killed master {victim}, {promoted} took over; {kept} of {} holders kept, the rest told",
        guards.len()
    );
    // The replicated locks survive; the one the replica never saw is reported lost.
    assert_eq!(kept, 3);
    assert!(guards[3].is_lost());
    // New locks on the failed-over slots work.
    let fresh = LockKey::new("kill", "after").unwrap();
    let g = common::acquire_eventually(&a, &fresh, &opts, Duration::from_secs(10)).await;
    assert!(g.release().await.unwrap());
    let h = a.health().await.unwrap();
    assert_eq!(
        (h.cluster_state.as_deref(), h.masters),
        (Some("ok"), Some(3)),
        "{h:?}"
    );
}

/// A waiter whose posting's slot moves keeps waiting: every try meets the half-moved slot
/// (`TRYAGAIN`: some of the script's keys are on the old master, some are not), and a
/// transient error during a wait is retried until the deadline. (Issue 21, item 5: the
/// waiter gave up with "TryAgain: Multiple keys request during rehashing of slot".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_keeps_waiting_while_its_slot_moves() {
    let c = start().await;
    let (holder, waiter) = (manager(&c).await, manager(&c).await);
    let k = LockKey::new("mig", "waited").unwrap();
    let g = holder
        .acquire(&k, &AcquireOptions::new().ttl(Duration::from_secs(60)))
        .await
        .unwrap();
    // Other keys in the slot, so that it stays half moved for a while.
    let ks = names();
    let lock = ks.lock(&k);
    let slot = c.slot_of(&lock);
    let tag = format!("{{{}:{}}}", k.marketplace(), k.posting());
    for i in 0..12 {
        let _: String = c.cmd_for_key(&lock, &["SET", &format!("filler{i}{tag}"), "x"]);
    }
    let waiting = {
        let (waiter, k) = (waiter.clone(), k.clone());
        tokio::spawn(async move {
            let opts = AcquireOptions::new().timeout(Duration::from_secs(40));
            waiter.acquire(&k, &opts).await
        })
    };
    wait_for("the waiter to try", || {
        waiter.metrics().lock_busy_tries >= 1
    })
    .await;
    let (c, to) = tokio::task::spawn_blocking(move || {
        let from = c.master_of_slot(slot);
        let to = *c.master_ports().iter().find(|p| **p != from).unwrap();
        c.migrate_slot(slot, to, Duration::from_millis(250));
        (c, to)
    })
    .await
    .unwrap();
    assert_eq!(c.master_of_slot(slot), to);
    assert!(
        !waiting.is_finished(),
        "the waiter gave up during the move: {:?}",
        waiting.await
    );
    let first = g.fencing_token();
    assert!(g.release().await.unwrap());
    let got = waiting
        .await
        .unwrap()
        .expect("the waiter did not get the lock");
    assert!(got.fencing_token() > first);
    eprintln!("waiter metrics across the move: {:?}", waiter.metrics());
    assert!(got.release().await.unwrap());
}
