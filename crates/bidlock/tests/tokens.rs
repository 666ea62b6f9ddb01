//! Guarantee: **tokens never go back** (docs/GUARANTEES.md). Each acquire's fencing
//! token is above every token issued before it for the prefix (per posting on a
//! cluster), even after the counter was deleted or rolled back, as long as the server
//! clock does not step back by more than the time between two acquires.
//!
//! - `tokens_strictly_increase_across_holders_and_managers`: each round a fresh manager
//!   (a restarted instance) acquires; its token must be above the last one.
//! - `paused_holder_loses_to_a_higher_token`: a holder stalls past its ttl while another
//!   takes over; a marketplace that keeps the highest token refuses the stale bid.
//! - `tokens_keep_increasing_after_the_counter_is_rolled_back`,
//!   `redlock_tokens_keep_increasing_after_every_counter_is_rolled_back`: the counter is
//!   set back (what an AOF `everysec` crash, an RDB restore or a lagging replica leaves);
//!   the next token must still be higher.
//! - `memory_tokens_are_above_the_wall_clock`: the memory store follows the same hybrid
//!   clock, so its tokens start above the wall clock.
//! - `batched_tries_get_distinct_increasing_tokens_and_exclude_each_other`: group commit
//!   sends many tries in one script call; a token issued twice or out of order inside a
//!   batch, or two tries of one key both winning, fails the test; and the counter, written
//!   once per script call, must end at the highest token issued.
//!
//! Redlock's token order under data loss and clock skew is attacked in `redlock_tokens.rs`.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bidlock::{AcquireOptions, Backend, BidLockManager, Config, FencingToken, LockKey};
use bidlock_testkit::RedisServer;

use common::{key, redis_manager_with_timeout, token_of, Fx};

/// A marketplace-side guard: refuses a bid whose token is lower than one already seen
/// for the posting.
#[derive(Default)]
struct Ledger {
    highest: Mutex<HashMap<String, u64>>,
    accepted: AtomicUsize,
    refused: AtomicUsize,
}

impl Ledger {
    fn bid(&self, posting: &str, token: FencingToken) -> bool {
        let mut h = self.highest.lock().unwrap();
        let seen = h.entry(posting.to_owned()).or_insert(0);
        if token.get() < *seen {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return false;
        }
        *seen = token.get();
        self.accepted.fetch_add(1, Ordering::SeqCst);
        true
    }
}

fn wall_clock_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

on_both_backends!(
    tokens_strictly_increase_across_holders_and_managers,
    paused_holder_loses_to_a_higher_token,
);

async fn tokens_strictly_increase_across_holders_and_managers(fx: Fx) {
    let mut last: Option<FencingToken> = None;
    for round in 0..3 {
        // A fresh manager each round: a restarted instance.
        let m = fx.instance().await;
        for i in 0..20 {
            let k = key(&format!("t{}", i % 4));
            let g = m.acquire(&k, &AcquireOptions::new()).await.unwrap();
            let t = g.fencing_token();
            assert!(
                last.is_none_or(|l| t > l),
                "round {round} key {k}: {t} after {last:?}"
            );
            last = Some(t);
            g.release().await.unwrap();
        }
    }
    // Concurrent acquirers on many keys never see the same token twice.
    let seen = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let mut tasks = Vec::new();
    for t in 0..16 {
        let m = fx.instance().await;
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let g = m
                    .acquire(
                        &key(&format!("c{}", (t + i) % 8)),
                        &AcquireOptions::new().timeout(Duration::from_secs(30)),
                    )
                    .await
                    .unwrap();
                assert!(seen.lock().unwrap().insert(g.fencing_token()));
                g.release().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(seen.lock().unwrap().len(), 16 * 25);
}

async fn paused_holder_loses_to_a_higher_token(fx: Fx) {
    let k = key("paused");
    let ledger = Ledger::default();
    // The first holder "pauses": no renewal, and it sleeps past its ttl.
    let first = fx
        .manager
        .acquire(
            &k,
            &AcquireOptions::new()
                .ttl(Duration::from_millis(300))
                .renew(false),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let other = fx.instance().await;
    let second = other.acquire(&k, &AcquireOptions::new()).await.unwrap();
    assert!(second.fencing_token() > first.fencing_token());
    assert!(ledger.bid("paused", second.fencing_token()));
    // The paused holder wakes up and bids late: refused by the token check.
    assert!(first.is_lost());
    assert!(!ledger.bid("paused", first.fencing_token()));
    assert_eq!(ledger.refused.load(Ordering::SeqCst), 1);
    assert!(!first.release().await.unwrap());
    assert!(second.release().await.unwrap());
}

/// Tokens never go back when the counter is rolled back (not just deleted).
#[tokio::test]
async fn tokens_keep_increasing_after_the_counter_is_rolled_back() {
    let s = RedisServer::start();
    let m = redis_manager_with_timeout(&s.url(), Duration::from_secs(2)).await;
    let k = key("rollback");
    let before = token_of(&m, &k).await;
    // What an AOF everysec crash, an RDB restore or a lagging replica leaves behind.
    let _: () = s.cmd(&["SET", "bid_lock_fence", "5"]);
    let after = token_of(&m, &k).await;
    assert!(after > before, "token went back: {before} then {after}");
    let _: () = s.cmd(&["SET", "bid_lock_fence", &(before - 1000).to_string()]);
    assert!(token_of(&m, &k).await > after);
}

#[tokio::test]
async fn redlock_tokens_keep_increasing_after_every_counter_is_rolled_back() {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let cfg = Config::builder()
        .backend(Backend::Redis)
        .redis_urls(servers.iter().map(RedisServer::url))
        .build()
        .unwrap();
    let m = BidLockManager::new(cfg).await.unwrap();
    let k = key("redlock-rollback");
    let before = token_of(&m, &k).await;
    for s in &servers {
        let _: () = s.cmd(&["SET", "bid_lock_fence", "5"]);
    }
    let after = token_of(&m, &k).await;
    assert!(after > before, "token went back: {before} then {after}");
}

#[tokio::test]
async fn memory_tokens_are_above_the_wall_clock() {
    let m = BidLockManager::new(
        common::base_config(common::Which::Memory, None)
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let now = wall_clock_us();
    let t = token_of(&m, &key("clock")).await;
    assert!(t >= now, "token {t} below the clock {now}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_tries_get_distinct_increasing_tokens_and_exclude_each_other() {
    let s = RedisServer::start();
    let m = common::redis_manager(&s.url()).await;
    let calls_before = m.metrics().backend_calls;
    let tokens = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    // 64 tasks: half on their own posting, half on four shared ones (tries of one key
    // land in one batch).
    for t in 0..64u32 {
        let (m, tokens) = (m.clone(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            let posting = if t % 2 == 0 {
                format!("own-{t}")
            } else {
                format!("shared-{}", t % 4)
            };
            let key = LockKey::new("upwork", posting).unwrap();
            for _ in 0..50 {
                if let Ok(g) = m.try_acquire(&key, &AcquireOptions::new()).await {
                    // Pushed while held: per key, the order of pushes is that of sections.
                    let token = g.fencing_token().get();
                    tokens.lock().unwrap().push((key.clone(), token));
                    assert!(g.release().await.unwrap(), "release of a held lock");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let tokens = tokens.lock().unwrap().clone();
    let ops = 2 * tokens.len() as u64;
    let calls = m.metrics().backend_calls - calls_before;
    let distinct: HashSet<u64> = tokens.iter().map(|(_, t)| *t).collect();
    assert_eq!(distinct.len(), tokens.len(), "a token was issued twice");
    assert!(tokens.len() > 1000, "{} sections", tokens.len());
    // Per key, in the order the sections happened, tokens only go up.
    let mut by_key: std::collections::HashMap<LockKey, Vec<u64>> = Default::default();
    for (k, t) in &tokens {
        by_key.entry(k.clone()).or_default().push(*t);
    }
    for (k, ts) in by_key {
        assert!(ts.windows(2).all(|w| w[0] < w[1]), "{k}: {ts:?}");
    }
    assert!(
        calls < ops,
        "no batching happened: {calls} script calls for {ops} operations"
    );
    assert_eq!(
        s.cmd::<i64>(&["DBSIZE"]),
        1,
        "only the fencing counter is left"
    );
    // A script writes the counter once, with the last token it issued: it must end at
    // the highest token any batch handed out, never below it.
    let highest = distinct.iter().max().copied().unwrap_or(0);
    let counter: String = s.cmd(&["GET", "bid_lock_fence"]);
    assert_eq!(
        counter.parse::<u64>().unwrap(),
        highest,
        "the counter after the last batch"
    );
}
