//! Property tests: any string in, a key or a typed error out, never a panic; the same
//! for configuration from the environment and Redis URLs.

use std::collections::HashMap;

use bidlock::{ConfigBuilder, InvalidKey, KeySpace, Layout, LockKey, RedisTarget, ENV_VARS};
use proptest::prelude::*;

/// The rules, restated independently of the implementation.
fn valid_marketplace(m: &str) -> bool {
    (1..=64).contains(&m.len())
        && m.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

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

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn keys_validate_exactly_and_round_trip(m in id_like(), p in id_like()) {
        let r = LockKey::new(&m, &p);
        prop_assert_eq!(r.is_ok(), valid_marketplace(&m) && valid_posting(&p), "{:?} {:?} -> {:?}", m, p, r);
        match r {
            Ok(k) => {
                let ks = KeySpace::default();
                prop_assert_eq!(ks.parse_lock_key(&ks.lock_key(&k)), Some(k.clone()));
                prop_assert!(ks.lock_key(&k).starts_with("bid_lock:"));
                let cluster = KeySpace::default().with_layout(Layout::Cluster);
                prop_assert_eq!(cluster.parse_lock_key(&cluster.lock_key(&k)), Some(k.clone()));
                let tagged = cluster.lock_key(&k).starts_with("bid_lock:{");
                prop_assert!(tagged);
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
    fn distinct_pairs_never_share_a_redis_key(a in "[a-z:]{1,6}", b in "[a-z:]{1,6}", c in "[a-z:]{1,6}", d in "[a-z:]{1,6}") {
        if let (Ok(k1), Ok(k2)) = (LockKey::new(&a, &b), LockKey::new(&c, &d)) {
            let ks = KeySpace::default();
            prop_assert_eq!(k1 == k2, ks.lock_key(&k1) == ks.lock_key(&k2));
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

    #[test]
    fn prefixes_validate(p in prop_oneof![".{0,70}".boxed(), adversarial_prefix().boxed()]) {
        let ok = KeySpace::new(&p).is_ok();
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
        let (Ok(a), Ok(b)) = (KeySpace::new(&p), KeySpace::new(&q)) else {
            return Ok(());
        };
        let (a, b) = (a.with_layout(la), b.with_layout(lb));
        if p == q {
            return Ok(());
        }
        let keys: Vec<LockKey> = ["m", "done", "wait", "bid_lock", "x_done"]
            .iter()
            .map(|m| LockKey::new(*m, &post).unwrap())
            .collect();
        let names = |ks: &KeySpace| -> Vec<String> {
            let mut v = vec![ks.fence_key()];
            for k in &keys {
                v.extend([
                    ks.lock_key(k),
                    ks.done_key(k),
                    ks.wait_key(k),
                    ks.queue_key(k),
                    ks.waiters_key(k),
                    ks.fence_key_of(k),
                ]);
            }
            v
        };
        let channels = |ks: &KeySpace| -> Vec<String> {
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
        for pattern in [a.scan_pattern(None), a.done_pattern(), a.wait_pattern()] {
            let head = pattern.strip_suffix('*').unwrap();
            for n in &nb {
                prop_assert!(!n.starts_with(head), "{}'s pattern {} matches {}'s {}", p, pattern, q, n);
            }
        }
    }
}

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

fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![Just(Layout::Classic), Just(Layout::Cluster)]
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
