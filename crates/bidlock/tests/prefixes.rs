//! Guarantee: **prefixes are namespaces** (docs/GUARANTEES.md). No prefix can see, wait
//! on or delete another's keys, in either key layout; keys are unambiguous.
//!
//! - `prefixes_validate`, `no_prefix_reaches_another_prefixs_keys` (property tests):
//!   prefixes built to collide (other prefixes' heads with derived suffixes); a valid one
//!   must never share a name, a channel or a SCAN pattern's match with another.
//! - `distinct_pairs_never_share_a_redis_key` (property test): `a:b` + `c` against `a` +
//!   `b:c`.
//! - `no_other_prefix_can_see_or_delete_the_default_prefixs_records`: every other prefix
//!   runs `cleanup` and lists; the default prefix's completion record must survive.
//! - `cleanup_touches_only_its_own_prefix`: another prefix's locks and foreign keys stay.

mod common;

use std::time::Duration;

use bidlock::{AcquireOptions, Backend, BidLockManager, Config, LockKey};
use bidlock_testkit::keys::Names;
use bidlock_testkit::RedisServer;
use proptest::prelude::*;

use common::{key, redis_manager_with_timeout, server_config, valid_marketplace, Fx, Which};

/// The prefix rule, restated: an id, not ending in a derived name's suffix, and not `bid`
/// (whose records would be the default prefix's `bid_done`).
fn valid_prefix(p: &str) -> bool {
    valid_marketplace(p)
        && ![
            "_done",
            "_wait",
            "_queue",
            "_waiters",
            "_fence",
            "_released",
            "_grants",
        ]
        .iter()
        .any(|s| p.ends_with(s))
        && p != "bid"
}

/// Whether a prefix is in the cluster layout.
fn layout() -> impl Strategy<Value = bool> {
    any::<bool>()
}

/// Whether the library takes `prefix`.
fn accepted(prefix: &str) -> bool {
    Config::builder().prefix(prefix).build().is_ok()
}

/// Prefixes built to collide: stems that are other prefixes' heads, with derived suffixes.
fn adversarial_prefix() -> impl Strategy<Value = String> {
    (
        prop_oneof!["bid", "bid_lock", "a", "x_y", "bid_done", "[a-z_]{1,6}"],
        prop_oneof![
            "",
            "_lock",
            "_done",
            "_wait",
            "_fence",
            "_released",
            "_queue",
            "_lock_wait"
        ],
    )
        .prop_map(|(stem, suffix)| format!("{stem}{suffix}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn prefixes_validate(p in prop_oneof![".{0,70}".boxed(), adversarial_prefix().boxed()]) {
            let ok = accepted(&p);
            prop_assert_eq!(ok, valid_prefix(&p), "{:?}", p);
        }

    /// In either layout (one server, or a cluster with hash-tagged names, per-posting
    /// counters and channels), and across layouts, no two prefixes share a name, a channel
    /// or a SCAN pattern's match. Postings may contain braces.
    #[test]
    fn no_prefix_reaches_another_prefixs_keys(
            p in adversarial_prefix(),
            q in adversarial_prefix(),
            post in "[a-z:_{}]{1,12}",
            la in layout(),
            lb in layout(),
        ) {
            if !accepted(&p) || !accepted(&q) {
                return Ok(());
            }
            let a = Names { prefix: p.clone(), cluster: la };
            let b = Names { prefix: q.clone(), cluster: lb };
            if p == q {
                return Ok(());
            }
            let keys: Vec<LockKey> = ["m", "done", "wait", "bid_lock", "x_done"]
                .iter()
                .map(|m| LockKey::new(*m, &post).unwrap())
                .collect();
            let names = |ks: &Names| -> Vec<String> {
                let mut v = vec![ks.fence()];
                for k in &keys {
                    v.extend([
                        ks.lock(k),
                        ks.done(k),
                        ks.wait(k),
                        ks.queue(k),
                        ks.waiters(k),
                        ks.fence_of(k),
                    ]);
                }
                v
            };
            // The library writes where the documented names say.
            let lib = Config::builder().prefix(&p).build().unwrap();
            prop_assert_eq!(lib.redis_key(&keys[0]), Names::classic(&p).lock(&keys[0]));
            prop_assert_eq!(lib.done_redis_key(&keys[0]), Names::classic(&p).done(&keys[0]));
            let channels = |ks: &Names| -> Vec<String> {
                keys.iter().map(|k| ks.release_channel_of(k)).collect()
            };
            let (na, nb) = (names(&a), names(&b));
            for n in &na {
                prop_assert!(!nb.contains(n), "{} and {} share {}", p, q, n);
            }
            let cb = channels(&b);
            for ch in channels(&a) {
                prop_assert!(!cb.contains(&ch), "{} and {} share the channel {}", p, q, ch);
            }
            prop_assert_ne!(a.release_channel(), b.release_channel());
            // SCAN patterns are `head:*` (`head:{*` on a cluster) with no other glob
            // character: a name matches when it starts with what precedes the `*`.
            for pattern in [a.lock_pattern(), a.done_pattern(), a.wait_pattern()] {
                let head = pattern.strip_suffix('*').unwrap();
                for n in &nb {
                    prop_assert!(!n.starts_with(head), "{}'s pattern {} matches {}'s {}", p, pattern, q, n);
                }
            }
        }

    #[test]
    fn distinct_pairs_never_share_a_redis_key(a in "[a-z:]{1,6}", b in "[a-z:]{1,6}", c in "[a-z:]{1,6}", d in "[a-z:]{1,6}") {
            if let (Ok(k1), Ok(k2)) = (LockKey::new(&a, &b), LockKey::new(&c, &d)) {
                let c = Config::default();
                prop_assert_eq!(k1 == k2, c.redis_key(&k1) == c.redis_key(&k2));
            }
        }
}

/// The record of the default prefix survives every other prefix.
#[tokio::test]
async fn no_other_prefix_can_see_or_delete_the_default_prefixs_records() {
    let s = RedisServer::start();
    let m = redis_manager_with_timeout(&s.url(), Duration::from_secs(2)).await;
    let k = key("records");
    let out = m
        .bid_once(&k, &AcquireOptions::new(), |_| async { Ok::<_, ()>(()) })
        .await
        .unwrap();
    assert!(out.is_recorded());
    for prefix in ["bid_done", "bid", "bid_lock_wait"] {
        let err = Config::builder()
            .backend(Backend::Redis)
            .redis_url(s.url())
            .prefix(prefix)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains(prefix), "{err}");
    }
    let other = Config::builder()
        .backend(Backend::Redis)
        .redis_url(s.url())
        .prefix("bid_lock2")
        .build()
        .unwrap();
    let other = BidLockManager::new(other).await.unwrap();
    other.cleanup_all().await.unwrap();
    assert!(other.locks(None).await.unwrap().is_empty());
    assert!(m.is_done(&k).await.unwrap());
}

#[tokio::test]
async fn cleanup_touches_only_its_own_prefix() {
    let fx = Fx::new(Which::Redis).await;
    let s = fx.server();
    for k in [
        "bid_lockx:a:b",
        "other:upwork:1",
        "bid_done:upwork:9",
        "bid_lock_fence_backup",
        "staging_lock:upwork:1",
    ] {
        let _: () = s.cmd(&["SET", k, "keep"]);
    }
    let staging = BidLockManager::new(server_config(s).prefix("staging_lock").build().unwrap())
        .await
        .unwrap();
    let gs = staging.acquire(&key("1"), &AcquireOptions::new()).await;
    assert!(
        gs.unwrap_err().is_not_acquired(),
        "staging_lock:upwork:1 is held by the foreign 'keep'"
    );
    for i in 0..1200 {
        let _: () = s.cmd(&[
            "SET",
            &format!("bid_lock:upwork:bulk{i}"),
            "h",
            "PX",
            "60000",
        ]);
    }
    // SCAN in batches removes all 1200, and nothing else.
    assert_eq!(fx.manager.cleanup_all().await.unwrap(), 1200);
    let left: Vec<String> = s.cmd(&["KEYS", "*"]);
    let mut left: Vec<_> = left.into_iter().filter(|k| k != "bid_lock_fence").collect();
    left.sort();
    assert_eq!(
        left,
        vec![
            "bid_done:upwork:9",
            "bid_lock_fence_backup",
            "bid_lockx:a:b",
            "other:upwork:1",
            "staging_lock:upwork:1",
            // The staging acquire found the foreign lock held: its expiring wait marker.
            "staging_lock_wait:upwork:1"
        ]
    );
}
