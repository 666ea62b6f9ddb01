//! Attacks on the guarantees (docs/GUARANTEES.md, docs/HANDOVER.md) where the fast paths
//! could skip them: the fencing counter written once per script (`hlc_flush`), release's
//! one-EXISTS fast path, batched renewals (`renew.lua` with many items), the keeper that
//! sleeps while idle, a manager's belief that the store queues (`StoreQueues`), and the ACL
//! model those scripts must stay inside. Written by a fresh-context adversarial review; a
//! failing test here shows a hole.
//!
//! - `a_batch_with_a_junk_item_and_a_grant_leaves_the_counter_at_its_highest_token`:
//!   tokens never go back. One script call takes many locks, one item meets junk (a hash
//!   in its lock key) and one hands a freed lock to a queued waiter of another manager;
//!   the counter must then hold the highest token issued, and after it is rolled back
//!   (SET lower) the next token must still be above all of them.
//! - `tokens_stay_above_a_batch_with_a_grant_after_restoring_an_older_snapshot`: the same
//!   with the counter restored from a snapshot taken before the batch.
//! - `batched_renewals_never_shorten_nor_extend_a_lock_that_is_not_the_holders`: a keeper
//!   round renewing held, stolen, lost, junk and longer-than-asked locks together.
//! - `a_short_lease_after_a_quiet_long_one_is_renewed_in_time`: the idle keeper sleeps
//!   the long lease's renewal interval; a 100 ms lease taken then must still be renewed.
//! - `a_batch_of_releases_still_hands_over_and_publishes_past_the_fast_path`: releases in
//!   one call, one with a queue whose marker is gone, one with a marker and no queue.
//! - `every_command_a_script_sends_on_a_key_kind_is_one_needs_rs_lists_for_it`: the ACL
//!   model (`acl/needs.rs`, asked per key kind by `health`) against what MONITOR shows
//!   the scripts send on each kind of key, over the fast paths, a handover and junk.
//! - `a_user_whose_per_kind_permissions_health_approves_can_take_a_lock`: the same as a
//!   deployment: a Redis user that grants each key kind exactly what needs.rs lists for
//!   it (ACL selectors) is approved by `health`, so the lock path must work under it.
//! - `a_renewal_that_fails_waits_its_pause_before_trying_again`: not a stated promise but
//!   the keeper's own rule (renewal.rs: a failed renewal is retried after ttl/10, at
//!   least 5 ms): a renewal refused for junk in the lock key is retried in a busy loop.
//! - (in `fast_paths_attacks/store_queues.rs`) fair handover (first come, first served
//!   across managers) against the manager's belief that the store queues:
//!   - `a_stay_try_that_finds_its_place_gone_does_not_unteach_that_the_store_queues`: a
//!     queued waiter whose place was cleared (junk in the queue key, deleted by the next
//!     script) is answered "held, not queued"; its manager must not conclude that the
//!     store does not queue, or a waiter arriving meanwhile waits only locally and one of
//!     another manager overtakes it.
//!   - `a_waiter_skipped_as_dead_after_a_stall_does_not_unteach_that_the_store_queues`:
//!     the same without junk: a waiter whose link stalled past its entry's life is skipped
//!     by a release; its late stay-try is answered "not queued".

#[path = "fast_paths_attacks/batch_setup.rs"]
mod batch_setup;
mod common;
#[path = "fast_paths_attacks/store_queues.rs"]
mod store_queues;

use std::collections::HashSet;
use std::time::Duration;

use batch_setup::batch_with_junk_and_grant;
use bidlock::{AcquireOptions, BidLockManager};
use bidlock_testkit::acl::Monitor;
use bidlock_testkit::RedisServer;

use common::{
    holder_in_redis, key, lock_of, no_polling_manager, queue_len, redis_manager, until, wait_for,
};

const FENCE: &str = "bid_lock_fence";

fn counter(s: &RedisServer) -> u64 {
    let v: String = s.cmd(&["GET", FENCE]);
    v.parse().unwrap()
}

/// How many `EVALSHA` lines `mon` saw that name every one of `names`.
fn evalsha_lines(mon: &Monitor, names: &[&str]) -> usize {
    mon.lines()
        .iter()
        .filter(|l| l.contains("EVALSHA") && names.iter().all(|n| l.contains(&format!("\"{n}\""))))
        .count()
}

/// Tries `postings` at once on `m` (so that they go in one script call, or few); returns
/// the tokens of those taken, each lock kept held, and how many tries failed.
async fn try_all(m: &BidLockManager, postings: &[String]) -> (Vec<bidlock::LockGuard>, usize) {
    let tries = postings.iter().map(|p| {
        let (m, k) = (m.clone(), key(p));
        async move { m.try_acquire(&k, &AcquireOptions::new().renew(false)).await }
    });
    let mut held = Vec::new();
    let mut failed = 0;
    for r in futures_util::future::join_all(tries).await {
        match r {
            Ok(g) => held.push(g),
            Err(_) => failed += 1,
        }
    }
    (held, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_a_junk_item_and_a_grant_leaves_the_counter_at_its_highest_token() {
    let s = RedisServer::start();
    let m = redis_manager(&s.url()).await;
    let (tokens, _held) = batch_with_junk_and_grant(&s, &m, 0).await;
    let distinct: HashSet<u64> = tokens.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        tokens.len(),
        "a token issued twice: {tokens:?}"
    );
    let highest = *tokens.iter().max().unwrap();
    assert!(
        counter(&s) >= highest,
        "the counter {} is below a token already handed out ({highest}); tokens {tokens:?}",
        counter(&s)
    );
    // Rolled back below every token: the next ones must still be above all of them.
    let _: () = s.cmd(&["SET", FENCE, "5"]);
    let (later, _) = try_all(
        &m,
        &(0..8).map(|i| format!("later-{i}")).collect::<Vec<_>>(),
    )
    .await;
    for g in &later {
        assert!(
            g.fencing_token().get() > highest,
            "token {} after the rollback is not above {highest}",
            g.fencing_token().get()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_stay_above_a_batch_with_a_grant_after_restoring_an_older_snapshot() {
    let mut s = RedisServer::start();
    let m = redis_manager(&s.url()).await;
    let mut seen: Vec<u64> = Vec::new();
    for round in 0..3 {
        // A snapshot with the counter of before the batch; then the batch; then the
        // server comes back from that snapshot (an old backup, an RDB older than the last
        // writes). Every token after must be above every token before.
        let snap = s.snapshot();
        let (tokens, held) = batch_with_junk_and_grant(&s, &m, round).await;
        seen.extend(&tokens);
        drop(held);
        s.restore_snapshot(&snap);
        let highest = *seen.iter().max().unwrap();
        let k = key(&format!("after-restore-{round}"));
        let g = common::acquire_eventually(&m, &k, &AcquireOptions::new(), Duration::from_secs(10))
            .await;
        let t = g.fencing_token().get();
        assert!(
            t > highest,
            "round {round}: token {t} after the restore is not above {highest}"
        );
        seen.push(t);
        let _ = g.release().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_renewals_never_shorten_nor_extend_a_lock_that_is_not_the_holders() {
    let s = RedisServer::start();
    let m = redis_manager(&s.url()).await;
    let ttl = Duration::from_millis(1500);
    let names = ["held", "stolen", "lost", "junk", "long", "given"];
    let mut guards = Vec::new();
    for n in names {
        let mut o = AcquireOptions::new().ttl(ttl);
        if n == "given" {
            o = o.holder("instance-7");
        }
        guards.push(m.acquire(&key(n), &o).await.unwrap());
    }
    // Between two keeper rounds: steal one, delete one, junk one, lengthen one by hand,
    // and move the given id's lock to a holder id of someone else.
    let _: () = s.cmd(&["SET", &lock_of("stolen"), "thief", "PX", "800"]);
    let _: i64 = s.cmd(&["DEL", &lock_of("lost")]);
    let _: i64 = s.cmd(&["DEL", &lock_of("junk")]);
    let _: i64 = s.cmd(&["HSET", &lock_of("junk"), "f", "v"]);
    let _: i64 = s.cmd(&["PEXPIRE", &lock_of("long"), "60000"]);
    let _: () = s.cmd(&["SET", &lock_of("given"), "instance-8", "PX", "900"]);
    let mon = Monitor::start(s.port());
    // Three renewal rounds (every 500 ms).
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let names_of = |ps: &[&str]| ps.iter().map(|p| lock_of(p)).collect::<Vec<_>>();
    let all = names_of(&names);
    let mixed = evalsha_lines(&mon, &all.iter().map(String::as_str).collect::<Vec<_>>());
    eprintln!("renewal calls with all six items: {mixed}");
    assert_eq!(
        holder_in_redis(&s, "held").as_deref(),
        Some(guards[0].holder().as_str())
    );
    assert!(
        !guards[0].is_lost(),
        "a renewed lease is lost: {:?}",
        guards[0].lease().lost_reason()
    );
    assert!(s.cmd::<i64>(&["PTTL", &lock_of("held")]) > 0);
    for (p, who, most) in [("stolen", "thief", 800), ("given", "instance-8", 900)] {
        if let Some(v) = holder_in_redis(&s, p) {
            assert_eq!(v, who, "{p}: its holder changed");
            let left: i64 = s.cmd(&["PTTL", &lock_of(p)]);
            assert!(
                left <= most,
                "{p}: a renewal extended someone else's lock to {left} ms"
            );
        }
    }
    assert_eq!(
        holder_in_redis(&s, "lost"),
        None,
        "a lost lock was brought back"
    );
    let kind: String = s.cmd(&["TYPE", &lock_of("junk")]);
    assert_eq!(kind, "hash", "junk was overwritten");
    assert_eq!(
        s.cmd::<i64>(&["PTTL", &lock_of("junk")]),
        -1,
        "junk was given a ttl"
    );
    let long: i64 = s.cmd(&["PTTL", &lock_of("long")]);
    assert!(long > 55_000, "a renewal shortened a lock to {long} ms");
    // Each lease that is not its holder's any more is told so by its deadline.
    for g in &guards[1..4] {
        until(Duration::from_secs(3), "a lost lease to be told", || {
            g.is_lost()
        })
        .await;
    }
    until(
        Duration::from_secs(3),
        "the given id's lease to be told",
        || guards[5].is_lost(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lease_after_a_quiet_long_one_is_renewed_in_time() {
    let s = RedisServer::start();
    let m = redis_manager(&s.url()).await;
    // A long lease teaches the keeper a long idle sleep (its renewal interval: 10 s).
    let long = m
        .acquire(
            &key("long"),
            &AcquireOptions::new().ttl(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(long.release().await.unwrap());
    // Quiet: the keeper goes to its long idle sleep.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let short_ttl = Duration::from_millis(100);
    let short = m
        .acquire(&key("short"), &AcquireOptions::new().ttl(short_ttl))
        .await
        .unwrap();
    // Ten ttls: renewed all along, or the lease says it was lost.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        !short.is_lost(),
        "the 100 ms lease was not renewed in time: {:?}",
        short.lease().lost_reason()
    );
    assert_eq!(
        holder_in_redis(&s, "short").as_deref(),
        Some(short.holder().as_str())
    );
    // And with the long lease held while the short one comes.
    let long = m
        .acquire(
            &key("long"),
            &AcquireOptions::new().ttl(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let short2 = m
        .acquire(&key("short2"), &AcquireOptions::new().ttl(short_ttl))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        !short2.is_lost(),
        "second short lease lost: {:?}",
        short2.lease().lost_reason()
    );
    assert_eq!(
        holder_in_redis(&s, "short2").as_deref(),
        Some(short2.holder().as_str())
    );
    assert!(!long.is_lost());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_releases_still_hands_over_and_publishes_past_the_fast_path() {
    let s = RedisServer::start();
    let h = redis_manager(&s.url()).await;
    let w = no_polling_manager(&s.url()).await;
    let postings: Vec<String> = (0..16).map(|i| format!("rel-{i}")).collect();
    let mut held = Vec::new();
    for p in &postings {
        held.push(h.acquire(&key(p), &AcquireOptions::new()).await.unwrap());
    }
    // rel-3: a queued waiter whose wait marker is then gone (the queue outlived it).
    let queued = {
        let (w, k) = (w.clone(), key("rel-3"));
        tokio::spawn(async move { w.acquire(&k, &wait_for(Duration::from_secs(20))).await })
    };
    until(Duration::from_secs(5), "the waiter to queue", || {
        queue_len(&s, "rel-3") == 1
    })
    .await;
    let _: i64 = s.cmd(&["DEL", "bid_lock_wait:upwork:rel-3"]);
    // rel-9: a waiter with its own holder id (it does not queue: a marker only).
    let marked = {
        let (w, k) = (w.clone(), key("rel-9"));
        let o = wait_for(Duration::from_secs(20)).holder("instance-9");
        tokio::spawn(async move { w.acquire(&k, &o).await })
    };
    until(Duration::from_secs(5), "the marker", || {
        s.cmd::<i64>(&["EXISTS", "bid_lock_wait:upwork:rel-9"]) == 1
    })
    .await;
    // All released at once: one or few script calls.
    let releases = held
        .into_iter()
        .map(|g| async move { g.release().await.unwrap() });
    assert!(futures_util::future::join_all(releases)
        .await
        .into_iter()
        .all(|r| r));
    // The waiters never poll: only a grant or a message can move them on this soon.
    for (name, t) in [
        ("queued (handed over)", queued),
        ("marked (published)", marked),
    ] {
        let g = tokio::time::timeout(Duration::from_secs(3), t)
            .await
            .unwrap_or_else(|_| panic!("{name}: not woken by the release"))
            .unwrap()
            .unwrap();
        assert!(!g.is_lost(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_that_fails_waits_its_pause_before_trying_again() {
    let s = RedisServer::start();
    let m = redis_manager(&s.url()).await;
    let ttl = Duration::from_secs(3);
    let g = m
        .acquire(&key("junk"), &AcquireOptions::new().ttl(ttl))
        .await
        .unwrap();
    // Junk in its lock key (rule 7): every renewal is refused, naming it, until the lease
    // runs out (at 3 s); the keeper retries each ttl/10 = 300 ms.
    let _: i64 = s.cmd(&["DEL", &lock_of("junk")]);
    let _: i64 = s.cmd(&["HSET", &lock_of("junk"), "f", "v"]);
    let mon = Monitor::start(s.port());
    // From the first renewal (at 1 s) to 2 s: about 4 tries at that pace.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let tries = evalsha_lines(&mon, &[&lock_of("junk")]);
    assert!(
        tries <= 20,
        "{tries} renewals of one lease in one second of refusals (a retry every 300 ms: about 4)"
    );
    drop(g);
}

/// The kind of a bidlock key under the default prefix, by its head.
fn kind_of(name: &str) -> Option<&'static str> {
    let heads = [
        ("bid_lock_waiters:", "waiters"),
        ("bid_lock_queue:", "queue"),
        ("bid_lock_wait:", "marker"),
        ("bid_done:", "record"),
        ("bid_lock_fence", "counter"),
        ("bid_lock:", "lock"),
    ];
    heads
        .iter()
        .find(|(h, _)| name.starts_with(h))
        .map(|(_, k)| *k)
}

/// What `crates/bidlock/src/backend/redis/acl/needs.rs` (`key_checks`) lists per kind.
fn needs_rs_lists(kind: &str) -> &'static [&'static str] {
    match kind {
        "lock" => &["get", "set", "del", "exists", "type", "pttl", "pexpire"],
        "record" => &["get", "set", "del", "exists", "type", "pttl"],
        "marker" => &["set", "del", "exists", "pttl", "pexpire"],
        "queue" => &[
            "zadd", "zrem", "zscore", "zrange", "zcard", "exists", "type", "pttl", "pexpire", "del",
        ],
        "waiters" => &[
            "hset", "hget", "hdel", "exists", "type", "pttl", "pexpire", "del",
        ],
        "counter" => &["get", "set", "type"],
        _ => &[],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_a_script_sends_on_a_key_kind_is_one_needs_rs_lists_for_it() {
    let s = RedisServer::start();
    let mon = Monitor::start(s.port());
    let m = redis_manager(&s.url()).await;
    let w = no_polling_manager(&s.url()).await;
    // The common pair (fast paths), renewals, a handover, then junk of each kind.
    let g = m
        .acquire(
            &key("pair"),
            &AcquireOptions::new().ttl(Duration::from_millis(600)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;
    let waiter = {
        let (w, k) = (w.clone(), key("pair"));
        tokio::spawn(async move { w.acquire(&k, &wait_for(Duration::from_secs(10))).await })
    };
    until(Duration::from_secs(5), "the waiter to queue", || {
        common::queue_len(&s, "pair") == 1
    })
    .await;
    assert!(g.release().await.unwrap());
    let got = waiter.await.unwrap().unwrap();
    assert!(got.release().await.unwrap());
    let _: () = s.cmd(&["SET", &common::queue_of("q"), "junk"]);
    let _ = m
        .try_acquire(&key("q"), &AcquireOptions::new())
        .await
        .map(drop);
    let _: () = s.cmd(&["SET", "bid_done:upwork:d", "1"]);
    let _: i64 = s.cmd(&["DEL", "bid_done:upwork:d"]);
    let _: i64 = s.cmd(&["HSET", "bid_done:upwork:d", "f", "v"]);
    assert!(m
        .try_acquire(&key("d"), &AcquireOptions::new())
        .await
        .is_err());
    let _: () = s.cmd(&["SET", FENCE, "not-a-number"]);
    assert!(m
        .try_acquire(&key("c"), &AcquireOptions::new())
        .await
        .is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Every command a script ran on a key, by the key's kind.
    let mut unlisted = std::collections::BTreeSet::new();
    for line in mon.lines().iter().filter(|l| l.contains(" lua] ")) {
        let words: Vec<String> = line
            .split('"')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        let Some((cmd, args)) = words.split_first() else {
            continue;
        };
        let cmd = cmd.to_lowercase();
        let keys: &[String] = match cmd.as_str() {
            "exists" | "del" => args,
            _ => &args[..args.len().min(1)],
        };
        for k in keys {
            if let Some(kind) = kind_of(k) {
                if !needs_rs_lists(kind).contains(&cmd.as_str()) {
                    unlisted.insert(format!("{cmd} on the {kind} ({k})"));
                }
            }
        }
    }
    assert!(
        unlisted.is_empty(),
        "scripts send these on keys whose kind needs.rs does not list them for (health asks per kind): {unlisted:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_whose_per_kind_permissions_health_approves_can_take_a_lock() {
    let s = RedisServer::start();
    // Root: the keyless commands and the scripts (over every kind of key); each key
    // kind, in a selector of its own, gets what needs.rs lists for it.
    let mut rules: Vec<String> =
        "reset on ~bid_lock:* ~bid_done:* ~bid_lock_wait:* ~bid_lock_queue:* \
        ~bid_lock_waiters:* ~bid_lock_fence ~bid_lock_fence:* &bid_lock_released \
        &bid_lock_released:* &bid_lock_grants:* -@all +evalsha +script|load +time +publish \
        +subscribe +ping +info +scan"
            .split_whitespace()
            .map(str::to_owned)
            .collect();
    for (pattern, kind) in [
        ("~bid_lock:*", "lock"),
        ("~bid_done:*", "record"),
        ("~bid_lock_wait:*", "marker"),
        ("~bid_lock_queue:*", "queue"),
        ("~bid_lock_waiters:*", "waiters"),
        ("~bid_lock_fence", "counter"),
    ] {
        let cmds: Vec<String> = needs_rs_lists(kind)
            .iter()
            .map(|c| format!("+{c}"))
            .collect();
        rules.push(format!("({pattern} {})", cmds.join(" ")));
    }
    let args = bidlock_testkit::acl::setuser_args("perkind", &rules, "pw-4");
    let _: () = s.cmd(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let url = bidlock_testkit::acl::with_credentials(&s.url(), "perkind", "pw-4");
    // One selector per kind cannot run one EXISTS or DEL over several kinds: the connect must
    // say so (a missing permission named, nothing written), or the lock must work.
    let m = match BidLockManager::new(common::redis_config(&url).build().unwrap()).await {
        Ok(m) => m,
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains("NOPERM") && text.contains("together ("),
                "{text}"
            );
            return;
        }
    };
    let health = m.health().await.unwrap();
    let missing = health.missing_permissions.clone().unwrap_or_default();
    let taken = m
        .acquire(&key("perkind"), &AcquireOptions::new().no_wait())
        .await;
    assert!(
        !missing.is_empty() || taken.is_ok(),
        "health names no missing permission, yet the acquire fails: {:?}",
        taken.err()
    );
}
