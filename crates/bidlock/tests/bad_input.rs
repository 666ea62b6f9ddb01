//! Guarantee: **bad input is a typed error naming what was wrong, never a panic, and
//! changes nothing** (docs/GUARANTEES.md). The same for any misuse a caller can reach.
//!
//! - `keys_validate_exactly_and_round_trip`, `env_config_never_panics_and_names_the_variable`,
//!   `urls_never_panic_and_never_show_the_password` (property tests): any string in gives
//!   a key, a configuration or a typed error, never a panic, and no error shows a password.
//! - `invalid_input_is_rejected_before_the_backend`, `ttl_too_short_is_rejected`: refused
//!   before anything reaches the store.
//! - `hostile_ids_are_stored_verbatim_or_refused`: glob characters, the prefix itself,
//!   bidi controls and 512-byte ids.
//! - `a_very_long_timeout_or_ttl_is_an_error_not_a_panic`: a wait or ttl that would
//!   overflow `Instant + Duration`. (Review of the issue-12 fixes, R6.)
//! - `a_redis_guard_dropped_outside_a_runtime_does_not_panic`: `Drop` without a tokio
//!   runtime. (Review of the issue-12 fixes, R7.)

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bidlock::{
    AcquireOptions, Backend, BidLockManager, Config, ConfigBuilder, InvalidKey, LockKey,
    RedisTarget, ENV_VARS,
};
use bidlock_testkit::keys::{Names, DEFAULT_PREFIX};
use bidlock_testkit::RedisServer;
use proptest::prelude::*;

use common::{key, memory_config, redis_manager_with_timeout, valid_marketplace, Fx};

fn valid_posting(p: &str) -> bool {
    (1..=512).contains(&p.len()) && !p.chars().any(char::is_control)
}

fn id_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_.-]{0,70}",
        ".{0,80}",
        "[a-z:*?\\[\\]\\\\ \\n\\t\u{0}\u{7f}\u{85}é日]{0,20}",
        proptest::collection::vec(any::<char>(), 0..600).prop_map(|v| v.into_iter().collect()),
    ]
}

on_both_backends!(
    invalid_input_is_rejected_before_the_backend,
    ttl_too_short_is_rejected,
);

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn keys_validate_exactly_and_round_trip(m in id_like(), p in id_like()) {
            let r = LockKey::new(&m, &p);
            prop_assert_eq!(r.is_ok(), valid_marketplace(&m) && valid_posting(&p), "{:?} {:?} -> {:?}", m, p, r);
            match r {
                Ok(k) => {
                    // The library names the lock as docs/REDIS.md says, in both layouts,
                    // and the name gives the ids back.
                    let ids = Some((m.clone(), p.clone()));
                    let ks = Names::default();
                    prop_assert_eq!(Config::default().redis_key(&k), ks.lock(&k));
                    prop_assert_eq!(ks.parse_lock(&ks.lock(&k)), ids.clone());
                    let cluster = Names::cluster(DEFAULT_PREFIX);
                    let on_cluster = Config::builder()
                        .redis_url("redis+cluster://127.0.0.1:7000")
                        .build()
                        .unwrap();
                    prop_assert_eq!(on_cluster.redis_key(&k), cluster.lock(&k));
                    prop_assert_eq!(cluster.parse_lock(&cluster.lock(&k)), ids);
                }
                Err(e) => {
                    let msg = e.to_string();
                    prop_assert!(!msg.is_empty());
                    let names_part = msg.contains("marketplace") || msg.contains("posting");
                    prop_assert!(names_part, "{}", msg);
                    if !valid_marketplace(&m) {
                        let is_marketplace_error = matches!(
                            e,
                            InvalidKey::EmptyMarketplace
                                | InvalidKey::MarketplaceTooLong { .. }
                                | InvalidKey::MarketplaceChar { .. }
                        );
                        prop_assert!(is_marketplace_error);
                    }
                }
            }
        }

    #[test]
    fn env_config_never_panics_and_names_the_variable(
            values in proptest::collection::vec((0..ENV_VARS.len(), ".{0,40}"), 0..6)
        ) {
            let map: HashMap<String, String> = values
                .into_iter()
                .map(|(i, v)| (ENV_VARS[i].to_owned(), v))
                .collect();
            match ConfigBuilder::from_lookup(|k| map.get(k).cloned()).and_then(|b| b.build()) {
                Ok(c) => prop_assert!(c.ttl().as_millis() >= 10),
                Err(e) => {
                    let msg = e.to_string();
                    let named = ENV_VARS.iter().any(|v| msg.contains(v));
                    prop_assert!(named, "{}", msg);
                    if let Some(pw) = map.get("REDIS_PASSWORD") {
                        if pw.len() > 3 {
                            prop_assert!(!msg.contains(pw.as_str()) || map.values().filter(|v| v.contains(pw.as_str())).count() > 1);
                        }
                    }
                }
            }
        }

    #[test]
    fn urls_never_panic_and_never_show_the_password(
            scheme in prop_oneof!["redis", "rediss", "http", "", "redis+unix", "redis+cluster", "rediss+cluster"],
            user in "[a-z]{0,5}",
            pw in "[A-Za-z0-9]{4,12}",
            host in prop_oneof!["127.0.0.1", "localhost", "", "[::1]", "h:st"],
            rest in ".{0,12}",
        ) {
            let url = format!("{scheme}://{user}:{pw}@{host}{rest}");
            match RedisTarget::from_url(&url) {
                Ok(t) => {
                    let shown = format!("{t} {t:?}");
                    prop_assert!(!shown.contains(&format!(":{pw}@")), "{}", shown);
                }
                Err(e) => {
                    let shown = format!("{e} {e:?}");
                    prop_assert!(!shown.contains(&format!(":{pw}@")), "{}", shown);
                }
            }
        }
}

async fn invalid_input_is_rejected_before_the_backend(fx: Fx) {
    let err = fx.manager.locks(Some("bad:market")).await.unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    assert!(err.to_string().contains("marketplace id"), "{err}");
    for (m, p) in [("", "p"), ("a b", "p"), ("m", ""), ("m", "a\u{7}b")] {
        assert!(LockKey::new(m, p).is_err());
    }
    assert_eq!(fx.manager.metrics().lock_attempts, 0);
}

async fn ttl_too_short_is_rejected(fx: Fx) {
    let err = fx
        .manager
        .acquire(
            &key("short"),
            &AcquireOptions::new().ttl(Duration::from_millis(1)),
        )
        .await
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    assert!(fx
        .manager
        .status(&key("short"))
        .await
        .unwrap()
        .holder
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_ids_are_stored_verbatim_or_refused() {
    let server = RedisServer::start();
    let m = common::redis_manager(&server.url()).await;
    let hostile = [
        "*",
        "?",
        "[a-z]",
        "bid_lock",
        "bid_lock:upwork:x",
        "\u{202e}evil",
        "日本語",
        "a b",
        "\\",
        "%s%n",
        &"x".repeat(512),
    ];
    let mut guards = Vec::new();
    for p in hostile {
        let k = LockKey::new("upwork", p).unwrap();
        guards.push(
            m.acquire(&k, &AcquireOptions::new().no_wait())
                .await
                .unwrap(),
        );
    }
    // Each is its own lock; glob characters in postings match nothing extra.
    let listed = m.locks(Some("upwork")).await.unwrap();
    assert_eq!(listed.len(), hostile.len());
    for p in hostile {
        let st = m.status(&LockKey::new("upwork", p).unwrap()).await.unwrap();
        assert!(st.holder.is_some(), "{p:?}");
    }
    for (m_id, p) in [
        ("up work", "p"),
        ("u*", "p"),
        ("", "p"),
        ("m", "a\nb"),
        ("m", "\u{0}"),
        ("m", ""),
    ] {
        assert!(LockKey::new(m_id, p).is_err(), "{m_id:?} {p:?}");
    }
    assert!(LockKey::new("m", "x".repeat(513)).is_err());
    assert!(LockKey::new("m".repeat(65), "p").is_err());
    drop(guards);
}

/// Caller-reachable panics: a long wait or ttl must not overflow `Instant + Duration`.
#[tokio::test]
async fn a_very_long_timeout_or_ttl_is_an_error_not_a_panic() {
    let m = BidLockManager::new(memory_config("il_overflow"))
        .await
        .unwrap();
    let cases = [
        (
            "timeout(Duration::MAX)",
            AcquireOptions::new().timeout(Duration::MAX),
        ),
        (
            "ttl(u64::MAX s)",
            AcquireOptions::new().ttl(Duration::from_secs(u64::MAX)),
        ),
    ];
    let mut panicked = Vec::new();
    for (i, (what, opts)) in cases.into_iter().enumerate() {
        let (m, k) = (m.clone(), key(&format!("overflow{i}")));
        let r = tokio::spawn(async move { m.acquire(&k, &opts).await.map(drop) }).await;
        if let Err(e) = r {
            assert!(e.is_panic());
            panicked.push(what);
        }
    }
    // A retention far beyond any use is refused up front, naming the setting...
    let e = Config::builder()
        .backend(Backend::Memory)
        .done_retention(Duration::MAX)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("done_retention"), "{e}");
    // ...and the longest accepted one records a bid without overflowing.
    let cfg = Config::builder()
        .backend(Backend::Memory)
        .prefix("il_overflow_rec")
        .done_retention(Duration::from_secs(3650 * 24 * 3600))
        .build()
        .unwrap();
    let m = BidLockManager::new(cfg).await.unwrap();
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r = {
        let ran = ran.clone();
        tokio::spawn(async move {
            m.bid_once(
                &key("overflow-done"),
                &AcquireOptions::new(),
                |_| async move {
                    ran.store(true, std::sync::atomic::Ordering::SeqCst);
                    Ok::<_, ()>(())
                },
            )
            .await
            .map(|o| o.is_recorded())
        })
        .await
    };
    if r.is_err() {
        panicked.push("done_retention(Duration::MAX), after the bid ran");
    }
    assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
    assert!(panicked.is_empty(), "panicked for {panicked:?}");
}

/// A guard's background release polls the release once before looking for a runtime.
/// For a Redis guard that first poll reaches redis-rs's response timeout, which needs the
/// tokio time driver: a guard dropped outside a runtime must log "the lock expires after
/// its ttl", not panic in `Drop`.
#[test]
fn a_redis_guard_dropped_outside_a_runtime_does_not_panic() {
    let s = RedisServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (m, g) = rt.block_on(async {
        let m = redis_manager_with_timeout(&s.url(), Duration::from_secs(2)).await;
        let g = m
            .acquire(&key("outside-runtime"), &AcquireOptions::new())
            .await
            .unwrap();
        (m, g)
    });
    // No runtime entered on this thread (a guard kept in a struct dropped after
    // `block_on`, or sent to a plain thread).
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(g)));
    let _enter = rt.enter();
    drop(m);
    assert!(
        dropped.is_ok(),
        "dropping a Redis guard outside a tokio runtime panicked"
    );
}
