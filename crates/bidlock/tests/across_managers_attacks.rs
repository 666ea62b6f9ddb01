//! Attacks on what managers of one store promise each other (README "Guarantees", "Waiting
//! and handover", docs/HANDOVER.md): fair handover across managers, loss told at once when
//! another manager's operator action removes a lock, a given holder id's later acquisition
//! left alone by an earlier lapsed one, sections apart and tokens in order over several
//! managers. Written by a fresh-context adversarial review; a failing test here shows a
//! hole; each says which promise it attacks and the history it drives.
//!
//! - `a_waiter_that_arrived_before_its_manager_learnt_the_store_queues_is_not_overtaken`:
//!   fair handover across managers. Two waiters of a fresh manager arrive back to back
//!   (the second before the first's answer taught the manager that the store queues);
//!   a waiter of another manager arrives after both. It must be served after both.
//! - `given_holder_id_used_twice_a_lapsed_release_touches_nothing`,
//!   `given_holder_id_used_twice_a_lapsed_extend_leaves_the_later_alone`: a lease of a
//!   holder id of the caller's that is known lost must not release, nor shorten, a later
//!   acquisition under the same id (memory and Redis).
//! - `memory_a_force_release_through_another_manager_is_noticed_at_once`: loss is
//!   reported at once when a force release names the key (in-memory store, Notices).
//! - `tokens_stay_above_a_batch_after_the_counter_is_rolled_back_to_before_it`: tokens
//!   never go back, also when one script issued many tokens (a batch) and the counter is
//!   rolled back to its value before that batch.
//! - `a_timed_out_queued_waiter_leaves_nothing_that_blocks_the_next_client`: a waiter that
//!   timed out is told so only once its place is gone: a release right after hands the
//!   lock to nobody dead.
//! - `memory_a_cleanup_through_another_manager_is_noticed_at_once`,
//!   `a_release_by_holder_id_through_another_manager_is_noticed_at_once`: as the force
//!   release (the second on memory and Redis).
//! - `random_sequences_keep_exclusion_and_token_order`: random API sequences over three
//!   managers of one store (memory and Redis), seed printed, `BIDLOCK_ACROSS_MANAGERS_SEED`
//!   replays.
//! - `handover_with_late_grants_slow_commands_and_timeouts_keeps_the_invariants`: the
//!   checker over four managers behind faults, then a key census.
//! - `a_fault_on_subscribers_leaves_the_command_connection_alone`: the test kit's fault
//!   proxy, which the handover tests rely on, against the connect-time ACL check.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bidlock::{AcquireOptions, BidLockManager};
use bidlock_testkit::RedisServer;

use common::{key, no_polling_manager, queue_len, redis_manager, until, wait_for, Fx};

on_both_backends!(
    given_holder_id_used_twice_a_lapsed_release_touches_nothing,
    given_holder_id_used_twice_a_lapsed_extend_leaves_the_later_alone,
    random_sequences_keep_exclusion_and_token_order,
    a_release_by_holder_id_through_another_manager_is_noticed_at_once,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_arrived_before_its_manager_learnt_the_store_queues_is_not_overtaken() {
    let s = RedisServer::start();
    let h = no_polling_manager(&s.url()).await;
    // A fresh manager with the default backoff: it has not yet seen the store queue.
    let m1 = redis_manager(&s.url()).await;
    let m2 = no_polling_manager(&s.url()).await;
    let p = "fifo-before-learning";
    let k = key(p);
    let g = h.acquire(&k, &AcquireOptions::new()).await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let t0 = tokio::time::Instant::now();
    let spawn_waiter = |m: &BidLockManager, name: &'static str| {
        let (m, k, order) = (m.clone(), k.clone(), order.clone());
        tokio::spawn(async move {
            let g = m
                .acquire(&k, &wait_for(Duration::from_secs(20)))
                .await
                .unwrap();
            order.lock().unwrap().push(name);
            let seen = format!("{name}: {} at {:?}", g.holder(), t0.elapsed());
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(g.release().await.unwrap());
            seen
        })
    };
    // A and B call acquire back to back, before M1 has any answer from Redis.
    let a = spawn_waiter(&m1, "A (M1, first)");
    let b = spawn_waiter(&m1, "B (M1, second)");
    // Both of M1's waiters join Redis' queue on arrival, although the second called
    // acquire before M1 had any answer (it did not yet know that the store queues).
    // Arrival is when a try reaches Redis: C is spawned once both are there.
    until(Duration::from_secs(5), "M1's waiters to queue", || {
        queue_len(&s, p) >= 2
    })
    .await;
    let c = spawn_waiter(&m2, "C (M2, third)");
    until(Duration::from_secs(5), "all three to queue", || {
        queue_len(&s, p) == 3
    })
    .await;
    let queued: Vec<String> = s.cmd(&["ZRANGE", &common::queue_of(p), "0", "-1", "WITHSCORES"]);
    let entries: Vec<String> = s.cmd(&["HGETALL", &common::waiters_of(p)]);
    let released_at = t0.elapsed();
    assert!(g.release().await.unwrap());
    let mut seen = Vec::new();
    for t in [a, b, c] {
        seen.push(t.await.unwrap());
    }
    let order = order.lock().unwrap().clone();
    // A and B were spawned back to back; either may reach M1's local queue first, but
    // both called acquire before C was spawned: C must be served last.
    assert_eq!(
        order.last(),
        Some(&"C (M2, third)"),
        "queue {queued:?}, entries {entries:?}, released at {released_at:?}, served: {seen:?}; \
         C called acquire after both waiters of M1 but was served before one of them: \
         not first come, first served across managers"
    );
}

/// A lease of the holder id "shared-id" that ran out (no renewal), then a later
/// acquisition of the same id through another manager, with a long ttl.
async fn lapsed_and_later(fx: &Fx) -> (bidlock::LockGuard, bidlock::LockGuard, BidLockManager) {
    let other = fx.instance().await;
    let k = key(&format!("given-twice-{}", common::unique_prefix()));
    let short = AcquireOptions::new()
        .holder("shared-id")
        .renew(false)
        .ttl(Duration::from_millis(200));
    let first = fx.manager.acquire(&k, &short).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(first.is_lost(), "a lease past its ttl without renewal");
    let long = AcquireOptions::new()
        .holder("shared-id")
        .ttl(Duration::from_secs(30))
        .timeout(Duration::from_secs(5));
    let second = other.acquire(&k, &long).await.unwrap();
    (first, second, other)
}

/// The later acquisition must still be the only holder, for most of its 30 s.
async fn later_is_intact(fx: &Fx, second: &bidlock::LockGuard, other: &BidLockManager, what: &str) {
    let k = second.key().clone();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let st = other.status(&k).await.unwrap();
    let third = fx.manager.try_acquire(&k, &AcquireOptions::new()).await;
    assert!(
        third.is_err() && st.ttl_left_ms.unwrap_or(0) > 20_000,
        "the later acquisition of the id was cut short by a lapsed lease ({what}): status \
         {st:?}; a third holder got in: {}, while the later holder says lost: {}",
        third.is_ok(),
        second.is_lost()
    );
}

/// README "No orphans": once a lease of a holder id of your own is lost, release() does
/// not touch the lock (it may be a later acquisition's).
async fn given_holder_id_used_twice_a_lapsed_release_touches_nothing(fx: Fx) {
    let (first, second, other) = lapsed_and_later(&fx).await;
    let released = first.release().await;
    later_is_intact(&fx, &second, &other, &format!("release: {released:?}")).await;
    assert!(second.release().await.unwrap());
}

/// The same history with `extend` instead of `release`: an exact extend of a lease known
/// lost (is_lost() is true before the call) sets the ttl of whatever lock Redis holds
/// under the id, here a later acquisition by another manager, which is not told. A third
/// acquirer then gets in while that holder still says "held": two holders.
async fn given_holder_id_used_twice_a_lapsed_extend_leaves_the_later_alone(fx: Fx) {
    let (first, second, other) = lapsed_and_later(&fx).await;
    let extended = first.extend(Duration::from_millis(20)).await;
    later_is_intact(&fx, &second, &other, &format!("extend: {extended:?}")).await;
    assert!(second.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_force_release_through_another_manager_is_noticed_at_once() {
    let prefix = common::unique_prefix();
    let a = BidLockManager::new(common::memory_config(&prefix))
        .await
        .unwrap();
    let b = BidLockManager::new(common::memory_config(&prefix))
        .await
        .unwrap();
    let k = key("forced-memory");
    // Renewal every 20 s: only the notice can tell the holder within the wait below.
    let g = a
        .acquire(&k, &AcquireOptions::new().ttl(Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(b.force_release(&k).await.unwrap());
    // Another holder takes the freed lock at once.
    let g2 = b.try_acquire(&k, &AcquireOptions::new()).await.unwrap();
    assert!(g2.fencing_token().get() > g.fencing_token().get());
    let told = tokio::time::timeout(Duration::from_secs(5), g.lost()).await;
    assert!(
        told.is_ok(),
        "the first holder was not told of the force release within 5 s (its renewal is \
         due at 20 s): two guards say held, the first {} and the second {}",
        !g.is_lost(),
        !g2.is_lost()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_stay_above_a_batch_after_the_counter_is_rolled_back_to_before_it() {
    let s = RedisServer::start();
    let m = redis_manager(&s.url()).await;
    let warm = common::token_of(&m, &key("warm")).await;
    let before: String = s.cmd(&["GET", "bid_lock_fence"]);
    assert_eq!(before, warm.to_string());
    // Many acquires at once: all but the first few go as one script (a batch), whose
    // tokens count on from one clock reading.
    let opts = AcquireOptions::new().ttl(Duration::from_secs(60)).no_wait();
    let futs = (0..3000).map(|i| {
        let (m, opts) = (m.clone(), opts.clone());
        async move { m.acquire(&key(&format!("batch-{i}")), &opts).await.unwrap() }
    });
    let guards = futures_util::future::join_all(futs).await;
    let top = guards
        .iter()
        .map(|g| g.fencing_token().get())
        .max()
        .unwrap();
    // The counter is rolled back to before the batch (an RDB restore, a lagging replica).
    let _: () = s.cmd(&["SET", "bid_lock_fence", &before]);
    let after = common::token_of(&m, &key("after-rollback")).await;
    assert!(
        after > top,
        "token {after} after the rollback is not above the batch's {top}"
    );
    drop(guards);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_queued_waiter_leaves_nothing_that_blocks_the_next_client() {
    let s = RedisServer::start();
    let (h, w, c) = (
        no_polling_manager(&s.url()).await,
        no_polling_manager(&s.url()).await,
        no_polling_manager(&s.url()).await,
    );
    let p = "timed-out-waiter";
    let k = key(p);
    for round in 0..5 {
        let g = h.acquire(&k, &AcquireOptions::new()).await.unwrap();
        let err = w
            .acquire(&k, &wait_for(Duration::from_millis(150 + 40 * round)))
            .await
            .unwrap_err();
        assert!(err.is_not_acquired(), "{err}");
        // Told "not acquired": its place must be gone, so this release frees the lock.
        assert!(g.release().await.unwrap());
        assert_eq!(
            queue_len(&s, p),
            0,
            "round {round}: the waiter is still queued"
        );
        let g = c
            .try_acquire(&k, &AcquireOptions::new())
            .await
            .unwrap_or_else(|e| panic!("round {round}: lock given to a departed waiter: {e}"));
        assert!(g.release().await.unwrap());
    }
}

/// README "Guarantees": loss is reported "at once when a release, `cleanup` or `release
/// --force` message names the key". An operator's release by holder id
/// (`BidLockManager::release`) through another manager frees the lock; a third party
/// takes it; the first holder (ttl 60 s: renewal due at 20 s) must say lost well before.
async fn a_release_by_holder_id_through_another_manager_is_noticed_at_once(fx: Fx) {
    let operator = fx.instance().await;
    let k = key(&format!("operator-release-{}", common::unique_prefix()));
    let g = fx
        .manager
        .acquire(&k, &AcquireOptions::new().ttl(Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(operator.release(&k, g.holder()).await.unwrap());
    let g2 = operator
        .try_acquire(&k, &AcquireOptions::new())
        .await
        .unwrap();
    let told = tokio::time::timeout(Duration::from_secs(5), g.lost()).await;
    assert!(
        told.is_ok(),
        "the holder was not told of an operator's release by its holder id within 5 s: two \
         guards say held, the first {} and the second {}",
        !g.is_lost(),
        !g2.is_lost()
    );
}

/// The same hole through `cleanup`: every manager of the prefix must be told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_cleanup_through_another_manager_is_noticed_at_once() {
    let prefix = common::unique_prefix();
    let a = BidLockManager::new(common::memory_config(&prefix))
        .await
        .unwrap();
    let b = BidLockManager::new(common::memory_config(&prefix))
        .await
        .unwrap();
    let k = key("cleaned-memory");
    let g = a
        .acquire(&k, &AcquireOptions::new().ttl(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(b.cleanup_all().await.unwrap(), 1);
    let g2 = b.try_acquire(&k, &AcquireOptions::new()).await.unwrap();
    let told = tokio::time::timeout(Duration::from_secs(5), g.lost()).await;
    assert!(
        told.is_ok(),
        "the first holder was not told of the cleanup within 5 s: two guards say held, \
         the first {} and the second {}",
        !g.is_lost(),
        !g2.is_lost()
    );
}

/// A small deterministic generator (xorshift), so a failing sequence can be replayed
/// with `BIDLOCK_ACROSS_MANAGERS_SEED`.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Random API sequences over three managers of one store and three keys, one call at a
/// time: acquires with short ttls (renewing or not, waiting or not), acquires cancelled
/// mid-wait, releases, drops, shorter and longer extends, pauses. After every call: per
/// key at most one guard that does not say lost, and tokens per key increase in the
/// order acquires returned. Holder ids are generated (a holder id of one's own and
/// operator removals have tests of their own above).
async fn random_sequences_keep_exclusion_and_token_order(fx: Fx) {
    let seed = std::env::var("BIDLOCK_ACROSS_MANAGERS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64 | 1)
        });
    eprintln!("BIDLOCK_ACROSS_MANAGERS_SEED={seed}");
    let mut rng = Rng(seed);
    let managers = [fx.manager.clone(), fx.instance().await, fx.instance().await];
    let keys: Vec<_> = (0..3)
        .map(|i| key(&format!("random-{}-{i}", common::unique_prefix())))
        .collect();
    let mut guards: Vec<bidlock::LockGuard> = Vec::new();
    let mut last_token = [0u64; 3];
    let mut history = Vec::new();
    let end = tokio::time::Instant::now() + Duration::from_secs(8);
    for step in 0..600 {
        if tokio::time::Instant::now() > end {
            break;
        }
        let (m, ki) = (rng.below(3) as usize, rng.below(3) as usize);
        let ttl = Duration::from_millis([30, 100, 1000][rng.below(3) as usize]);
        let renew = rng.below(2) == 0;
        let op = rng.below(7);
        let opts = AcquireOptions::new().ttl(ttl).renew(renew);
        match op {
            0 | 1 => {
                let wait = Duration::from_millis([0, 60][rng.below(2) as usize]);
                let got = managers[m].acquire(&keys[ki], &opts.timeout(wait)).await;
                if let Ok(g) = got {
                    let t = g.fencing_token().get();
                    history.push(format!("{step}: m{m} k{ki} {ttl:?} renew {renew} -> {t}"));
                    assert!(
                        t > last_token[ki],
                        "seed {seed}: token {t} after {} on k{ki}: {history:#?}",
                        last_token[ki]
                    );
                    last_token[ki] = t;
                    guards.push(g);
                }
            }
            2 => {
                let cut = Duration::from_millis(rng.below(15));
                let waiting = opts.timeout(Duration::from_millis(200));
                let fut = managers[m].acquire(&keys[ki], &waiting);
                if let Ok(Ok(g)) = tokio::time::timeout(cut, fut).await {
                    let t = g.fencing_token().get();
                    assert!(
                        t > last_token[ki],
                        "seed {seed}: token {t} after {}",
                        last_token[ki]
                    );
                    last_token[ki] = t;
                    guards.push(g);
                }
                history.push(format!(
                    "{step}: m{m} k{ki} cancelled acquire after {cut:?}"
                ));
            }
            3 if !guards.is_empty() => {
                let g = guards.swap_remove(rng.below(guards.len() as u64) as usize);
                history.push(format!("{step}: release {}", g.fencing_token()));
                let _ = g.release().await;
            }
            4 if !guards.is_empty() => {
                let g = guards.swap_remove(rng.below(guards.len() as u64) as usize);
                history.push(format!("{step}: drop {}", g.fencing_token()));
                drop(g);
            }
            5 if !guards.is_empty() => {
                let i = rng.below(guards.len() as u64) as usize;
                let to = Duration::from_millis([20, 300][rng.below(2) as usize]);
                let r = guards[i].extend(to).await;
                history.push(format!(
                    "{step}: extend {} to {to:?}: {}",
                    guards[i].fencing_token(),
                    r.is_ok()
                ));
            }
            _ => tokio::time::sleep(Duration::from_millis(rng.below(40))).await,
        }
        for (ki, k) in keys.iter().enumerate() {
            let live: Vec<u64> = guards
                .iter()
                .filter(|g| g.key() == k && !g.is_lost())
                .map(|g| g.fencing_token().get())
                .collect();
            assert!(
                live.len() <= 1,
                "seed {seed}, step {step}: two guards of k{ki} say held: {live:?}; {history:#?}"
            );
        }
    }
}

/// Handover under late messages and slow commands: four managers on one Redis, one
/// whose pub/sub messages arrive 400 ms late (meant: its waiters find their grants by
/// the try that keeps their place; as the test kit stands, see
/// `a_fault_on_subscribers_leaves_the_command_connection_alone`, its command replies are
/// 400 ms late too, so most of its acquires end "unavailable"), one whose commands take
/// 20 ms each way, one fresh manager with the default backoff; waits of 300 ms so that
/// waiters often time out while queued. The checker's invariants: no two valid leases
/// overlap, tokens in holding order, loss reported by the deadline; and afterwards no key
/// without a ttl but the fencing counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_with_late_grants_slow_commands_and_timeouts_keeps_the_invariants() {
    use bidlock_testkit::{Direction, Fault, FaultProxy, Role};
    let s = RedisServer::start();
    let late = FaultProxy::start(s.port()).await;
    let slow = FaultProxy::start(s.port()).await;
    let managers = vec![
        no_polling_manager(&s.url()).await,
        redis_manager(&s.url()).await,
        redis_manager(&late.url()).await,
        redis_manager(&slow.url()).await,
    ];
    late.set_for(
        Role::Subscribers,
        Some(Direction::ToClient),
        Fault::Delay(Duration::from_millis(400)),
    );
    slow.set_for(
        Role::Commands,
        None,
        Fault::Delay(Duration::from_millis(20)),
    );
    let w = common::checker::Workload {
        keys: 2,
        tasks_per_instance: 3,
        duration: Duration::from_secs(6),
        hold: Duration::from_millis(5),
        long_hold: Duration::from_millis(1500),
        ttl: Duration::from_secs(1),
        wait: Duration::from_millis(300),
    };
    let rec = common::checker::contend(managers, w).await;
    let o = common::checker::check(&rec, None);
    assert_eq!(o.unsafe_overlaps, 0, "{o:?}");
    assert_eq!(o.token_order_violations, 0, "{o:?}");
    assert_eq!(o.late_loss_reports, 0, "{o:?}");
    assert!(o.sections > 20, "too little happened: {o:?}");
    eprintln!("{o:?}");
    // No key without a ttl but the fencing counter (records are not written here).
    let keys: Vec<String> = s.cmd(&["KEYS", "*"]);
    let forever: Vec<&String> = keys
        .iter()
        .filter(|k| k.as_str() != "bid_lock_fence" && s.cmd::<i64>(&["PTTL", k]) == -1)
        .collect();
    assert!(
        forever.is_empty(),
        "keys without a ttl: {forever:?} of {keys:?}"
    );
}

/// Not a library promise but the test kit's: a fault on `Role::Subscribers` holds back
/// pub/sub messages "while its commands flow" (proxy.rs), which the handover tests rely
/// on. The connect-time ACL check (backend/redis/acl/) sends the words `subscribe` and
/// `ssubscribe` on the command connection, so the proxy counts that connection as a
/// subscriber from then on and delays its replies too: here every uncontended acquire
/// through the proxy waits out its 300 ms and fails with "unavailable".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_on_subscribers_leaves_the_command_connection_alone() {
    use bidlock_testkit::{Direction, Fault, FaultProxy, Role};
    let s = RedisServer::start();
    let late = FaultProxy::start(s.port()).await;
    let m = redis_manager(&late.url()).await;
    late.set_for(
        Role::Subscribers,
        Some(Direction::ToClient),
        Fault::Delay(Duration::from_millis(400)),
    );
    let k = key("subscriber-fault-only");
    let got = m.acquire(&k, &wait_for(Duration::from_millis(300))).await;
    let t = late.traffic();
    assert!(
        got.is_ok(),
        "an uncontended acquire failed while only pub/sub messages were delayed: {:?}; \
         command chunks to the server {}, subscriber chunks to the server {}",
        got.err(),
        t.chunks(Role::Commands, Direction::ToServer),
        t.chunks(Role::Subscribers, Direction::ToServer)
    );
}
