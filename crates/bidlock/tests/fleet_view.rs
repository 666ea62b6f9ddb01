//! The fleet view (docs/OPERATING.md): `status`, `locks`, `stats` and `cleanup_all` show
//! (and remove) what the store holds, posting by posting.
//!
//! - `status_and_locks_listing`, `cleanup_all_removes_every_lock`: on memory and on Redis.
//! - `a_waited_for_posting_counts_once_by_marker_or_queue`: a posting with a wait marker,
//!   a handoff queue or both counts once; names of other prefixes do not count.
//! - `redlock_shows_what_a_majority_agrees_on`: Redlock combines the nodes' views as a
//!   majority agrees, and fails closed without one.

mod common;

use std::time::{Duration, Instant};

use bidlock::{AcquireOptions, Backend, BidLockManager, Config, LockKey};
use bidlock_testkit::RedisServer;

use common::{key, Fx};

fn lock_key(m: &str, p: &str) -> LockKey {
    LockKey::new(m, p).unwrap()
}

async fn manager(urls: &[String]) -> BidLockManager {
    let cfg = Config::builder()
        .backend(Backend::Redis)
        .redis_urls(urls.iter().cloned())
        .response_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    BidLockManager::new(cfg).await.unwrap()
}

/// Waits (bounded) until `name` exists on `s`: the readiness signal of a queued waiter.
async fn until_exists(s: &RedisServer, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.cmd::<i64>(&["EXISTS", name]) == 0 {
        assert!(Instant::now() < deadline, "{name} never appeared");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

on_both_backends!(status_and_locks_listing, cleanup_all_removes_every_lock);

async fn status_and_locks_listing(fx: Fx) {
    let g = fx
        .manager
        .acquire(
            &key("s1"),
            &AcquireOptions::new()
                .holder("h1")
                .ttl(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    let other = LockKey::new("freelancer", "x:y *?").unwrap();
    let g2 = fx
        .manager
        .acquire(&other, &AcquireOptions::new())
        .await
        .unwrap();
    let st = fx.manager.status(&key("s1")).await.unwrap();
    assert_eq!(st.redis_key, fx.lock_key(&key("s1")));
    assert_eq!(st.holder.as_deref(), Some("h1"));
    let left = st.ttl_left_ms.unwrap();
    assert!(left > 50_000 && left <= 60_000, "{left}");
    let all = fx.manager.locks(None).await.unwrap();
    assert_eq!(all.len(), 2);
    let up = fx.manager.locks(Some("upwork")).await.unwrap();
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].holder, "h1");
    let fl = fx.manager.locks(Some("freelancer")).await.unwrap();
    assert_eq!(fl[0].posting, "x:y *?");
    drop((g, g2));
}

async fn cleanup_all_removes_every_lock(fx: Fx) {
    let mut guards = Vec::new();
    for i in 0..7 {
        guards.push(
            fx.manager
                .acquire(&key(&format!("c{i}")), &AcquireOptions::new())
                .await
                .unwrap(),
        );
    }
    assert_eq!(fx.manager.locks(None).await.unwrap().len(), 7);
    assert_eq!(fx.manager.cleanup_all().await.unwrap(), 7);
    assert!(fx.manager.locks(None).await.unwrap().is_empty());
    assert_eq!(fx.manager.cleanup_all().await.unwrap(), 0);
    // Every key can be taken again at once.
    for i in 0..7 {
        let g = fx
            .manager
            .try_acquire(&key(&format!("c{i}")), &AcquireOptions::new())
            .await
            .unwrap();
        drop(g);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waited_for_posting_counts_once_by_marker_or_queue() {
    let s = RedisServer::start();
    let m = manager(&[s.url()]).await;
    let opts = AcquireOptions::new().ttl(Duration::from_secs(30));
    let held = m.acquire(&lock_key("upwork", "p"), &opts).await.unwrap();
    let waiter = tokio::spawn({
        let m = m.clone();
        let opts = opts.clone().timeout(Duration::from_secs(30));
        async move {
            m.acquire(&lock_key("upwork", "p"), &opts)
                .await?
                .release()
                .await
        }
    });
    until_exists(&s, "bid_lock_queue:upwork:p").await;
    assert_eq!(s.cmd::<i64>(&["EXISTS", "bid_lock_wait:upwork:p"]), 1);
    // Both a marker and a queue: one posting.
    let st = m.stats().await.unwrap();
    assert_eq!((st.locks, st.waiting), (1, 1), "{st:?}");
    // The queue alone still says someone waits.
    let _: i64 = s.cmd(&["DEL", "bid_lock_wait:upwork:p"]);
    assert_eq!(m.stats().await.unwrap().waiting, 1);
    // A marker alone too (a waiter that only watches, as a Redlock node's).
    let _: () = s.cmd(&["SET", "bid_lock_wait:fiverr:q", "1", "PX", "60000"]);
    let st = m.stats().await.unwrap();
    assert_eq!(st.waiting, 2);
    assert_eq!(st.by_marketplace["fiverr"].waiting, 1);
    // Another prefix's names, and names that are no posting, are not ours.
    for name in [
        "staging:upwork:x",
        "staging_done:upwork:x",
        "staging_wait:upwork:x",
        "bid_lock_wait:nocolon",
        "bid_done:bad marketplace:x",
    ] {
        let _: () = s.cmd(&["SET", name, "1", "PX", "60000"]);
    }
    let st = m.stats().await.unwrap();
    assert_eq!((st.locks, st.waiting, st.done_records), (1, 2, 0), "{st:?}");
    held.release().await.unwrap();
    assert!(
        waiter.await.unwrap().unwrap(),
        "the waiter got it and released it"
    );
    let st = m.stats().await.unwrap();
    assert_eq!(
        (st.locks, st.waiting),
        (0, 1),
        "only the foreign-made marker: {st:?}"
    );
    // Every handover key of the prefix is counted: the foreign-made marker, and the
    // waiters' hash that keeps the last grant until it expires.
    let ours: Vec<String> = s.cmd(&["KEYS", "bid_lock_[wq]*"]);
    let ours = ours.iter().filter(|k| !k.contains("nocolon")).count();
    assert_eq!(st.handoff_keys, ours as u64, "{st:?}");
    let fence: String = s.cmd(&["GET", "bid_lock_fence"]);
    assert_eq!(st.fence, Some(fence.parse().unwrap()));
    m.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_shows_what_a_majority_agrees_on() {
    let mut servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let m = manager(&urls).await;
    let opts = AcquireOptions::new().ttl(Duration::from_secs(30));
    let _held = m.acquire(&lock_key("upwork", "a"), &opts).await.unwrap();
    // A lock on one node only is nobody's; a record on any node stops every bid.
    let _: () = servers[0].cmd(&["SET", "bid_lock:upwork:minority", "h", "PX", "60000"]);
    let _: () = servers[1].cmd(&["SET", "bid_done:fiverr:r", "1 h", "PX", "60000"]);
    let _: () = servers[2].cmd(&["SET", "bid_lock_fence", "99999999999999999"]);
    let st = m.stats().await.unwrap();
    assert_eq!((st.locks, st.done_records), (1, 1), "{st:?}");
    assert_eq!(st.by_marketplace["upwork"].locks, 1);
    assert_eq!(st.by_marketplace["fiverr"].done_records, 1);
    assert_eq!(
        st.fence,
        Some(99_999_999_999_999_999),
        "the highest counter"
    );
    // One node down: the other two still agree.
    servers[2].kill();
    let st = m.stats().await.unwrap();
    assert_eq!(st.locks, 1, "{st:?}");
    // Two down: no majority, an error rather than a partial picture.
    servers[1].kill();
    let err = m.stats().await.unwrap_err();
    assert!(err.to_string().contains("no quorum"), "{err}");
}
