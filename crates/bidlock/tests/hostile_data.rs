//! Junk in bidlock's keys (another application, a bad migration, a person with
//! redis-cli) is an error that names the key and what is wrong in it, or (in a queue or
//! a waiters' hash) is cleared so the lock goes on: never a panic, never a lease told
//! "held" that Redis does not hold, never a posting left locked without saying so
//! (issue 26). A property test writes random junk into random keys between random
//! operations; deterministic tests pin each key kind.

mod common;

use std::time::Duration;

use bidlock::{AcquireOptions, BidLockManager, Error, LockGuard, LockKey};
use bidlock_testkit::RedisServer;
use proptest::prelude::*;

use common::{Fx, Which};

const POSTINGS: [&str; 2] = ["a", "b"];

fn key(p: &str) -> LockKey {
    LockKey::new("junk", p).unwrap()
}

/// Every name bidlock uses for posting `p` (single-server layout, default prefix).
fn names(p: &str) -> Vec<String> {
    vec![
        format!("bid_lock:junk:{p}"),
        format!("bid_done:junk:{p}"),
        format!("bid_lock_wait:junk:{p}"),
        format!("bid_lock_queue:junk:{p}"),
        format!("bid_lock_waiters:junk:{p}"),
        "bid_lock_fence".to_owned(),
    ]
}

/// Junk a key can hold: every Redis kind, a string that is nothing bidlock writes, a
/// value without a ttl.
#[derive(Debug, Clone)]
enum Junk {
    Text(&'static str),
    Hash,
    List,
    Set,
    Zset,
    Deleted,
}

fn write_junk(s: &RedisServer, name: &str, junk: &Junk) {
    let _: i64 = s.cmd(&["DEL", name]);
    match junk {
        Junk::Text(v) => s.cmd::<()>(&["SET", name, v]),
        Junk::Hash => s.cmd::<()>(&["HSET", name, "", "x y z"]),
        Junk::List => s.cmd::<()>(&["RPUSH", name, "junk"]),
        Junk::Set => s.cmd::<()>(&["SADD", name, "junk"]),
        Junk::Zset => s.cmd::<()>(&["ZADD", name, "1", "junk"]),
        Junk::Deleted => {}
    }
}

#[derive(Debug, Clone)]
enum Op {
    Acquire(usize),
    Wait(usize),
    Release,
    Complete,
    Extend,
    Status(usize),
    ForceRelease(usize),
    Junk(usize, usize, Junk),
}

fn junk() -> impl Strategy<Value = Junk> {
    prop_oneof![
        Just(Junk::Text("junk")),
        Just(Junk::Text("12 holder")),
        Just(Junk::Text("-5")),
        Just(Junk::Hash),
        Just(Junk::List),
        Just(Junk::Set),
        Just(Junk::Zset),
        Just(Junk::Deleted),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..2usize).prop_map(Op::Acquire),
        1 => (0..2usize).prop_map(Op::Wait),
        2 => Just(Op::Release),
        1 => Just(Op::Complete),
        1 => Just(Op::Extend),
        1 => (0..2usize).prop_map(Op::Status),
        1 => (0..2usize).prop_map(Op::ForceRelease),
        4 => (0..2usize, 0..6usize, junk()).prop_map(|(p, n, j)| Op::Junk(p, n, j)),
    ]
}

/// An error from an operation must be one of: junk named by key (one of the posting's
/// names), "not acquired" / "already done" / "lost" (contention or junk that took the
/// lock's place), never a backend failure on a healthy server.
fn check_error(e: &Error, p: &str) {
    match e {
        Error::WrongType { key, found } => {
            assert!(names(p).contains(key), "names another key: {e}");
            assert!(found.starts_with("holds"), "{e}");
            assert!(e.to_string().contains(key.as_str()), "{e}");
        }
        e if e.is_not_acquired() || e.is_already_done() || e.is_lost() => {}
        e => panic!("unexpected error for junk: {e:?}"),
    }
}

struct Run {
    s: RedisServer,
    m: BidLockManager,
    held: Option<(usize, LockGuard)>,
}

impl Run {
    fn lock_holder(&self, p: usize) -> Option<String> {
        let name = format!("bid_lock:junk:{}", POSTINGS[p]);
        match self.s.cmd::<String>(&["TYPE", &name]).as_str() {
            "string" => self.s.cmd(&["GET", &name]),
            _ => None,
        }
    }

    async fn acquire(&mut self, p: usize, wait: Duration) {
        let opts = AcquireOptions::new()
            .timeout(wait)
            .ttl(Duration::from_secs(30));
        match self.m.acquire(&key(POSTINGS[p]), &opts).await {
            Ok(g) => {
                // Told "held": Redis shows it, now.
                assert_eq!(
                    self.lock_holder(p).as_deref(),
                    Some(g.holder().as_str()),
                    "told held while Redis shows another"
                );
                if let Some((_, old)) = self.held.replace((p, g)) {
                    let _ = old.release().await;
                }
            }
            Err(e) => check_error(&e, POSTINGS[p]),
        }
    }

    /// Lets go of the held lock; afterwards it is not ours in Redis, or the call said why.
    async fn let_go(&mut self, complete: bool) {
        let Some((p, g)) = self.held.take() else {
            return;
        };
        let holder = g.holder().clone();
        let result = if complete {
            g.complete().await
        } else {
            g.release().await
        };
        match result {
            Ok(_) => assert_ne!(
                self.lock_holder(p).as_deref(),
                Some(holder.as_str()),
                "said released, still locked"
            ),
            Err(e) => check_error(&e, POSTINGS[p]),
        }
    }

    async fn step(&mut self, op: Op) {
        match op {
            Op::Acquire(p) => self.acquire(p, Duration::ZERO).await,
            Op::Wait(p) => self.acquire(p, Duration::from_millis(150)).await,
            Op::Release => self.let_go(false).await,
            Op::Complete => self.let_go(true).await,
            Op::Extend => {
                if let Some((p, g)) = &self.held {
                    if let Err(e) = g.extend(Duration::from_secs(30)).await {
                        check_error(&e, POSTINGS[*p]);
                    }
                }
            }
            Op::Status(p) => {
                if let Err(e) = self.m.status(&key(POSTINGS[p])).await {
                    check_error(&e, POSTINGS[p]);
                }
            }
            Op::ForceRelease(p) => {
                if let Err(e) = self.m.force_release(&key(POSTINGS[p])).await {
                    check_error(&e, POSTINGS[p]);
                }
            }
            Op::Junk(p, n, j) => write_junk(&self.s, &names(POSTINGS[p])[n], &j),
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_junk_between_random_operations(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = runtime();
        rt.block_on(async {
            let s = RedisServer::start();
            let m = common::redis_manager_with_timeout(&s.url(), Duration::from_secs(2)).await;
            let mut run = Run { s, m, held: None };
            for op in ops {
                run.step(op).await;
            }
            run.let_go(false).await;
            // At the end nothing of ours holds a posting: each can be taken, or the
            // refusal says why (junk named by key, or a junk "holder" that never expires).
            let opts = AcquireOptions::new().no_wait();
            for p in POSTINGS {
                match run.m.acquire(&key(p), &opts).await {
                    Ok(g) => {
                        let _ = g.release().await;
                    }
                    Err(Error::NotAcquired { holder, never_expires, .. }) => {
                        let holder = holder.unwrap_or_default();
                        assert!(
                            never_expires && ["junk", "12 holder", "-5"].contains(&holder.as_str()),
                            "posting {p} stayed locked by {holder} without saying why"
                        );
                    }
                    Err(e) => check_error(&e, p),
                }
            }
        });
    }
}

/// Each key kind, pinned: what junk in it does to an acquire and a release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_kind_with_junk_is_named_or_cleared() {
    let s = RedisServer::start();
    let m = common::redis_manager_with_timeout(&s.url(), Duration::from_secs(2)).await;
    let opts = AcquireOptions::new().no_wait();
    // The lock, the record and the counter: refused by name, nothing written.
    for (name, junk, says) in [
        (
            "bid_lock:junk:a",
            Junk::Hash,
            "holds a Redis hash, not a lock",
        ),
        (
            "bid_done:junk:a",
            Junk::List,
            "holds a Redis list, not a completion record",
        ),
        (
            "bid_lock_fence",
            Junk::Hash,
            "holds a Redis hash, not a fencing counter",
        ),
        (
            "bid_lock_fence",
            Junk::Text("junk"),
            "holds \"junk\", not a fencing counter",
        ),
    ] {
        let _: () = s.cmd(&["FLUSHALL"]);
        write_junk(&s, name, &junk);
        let e = m.acquire(&key("a"), &opts).await.unwrap_err();
        assert!(
            matches!(&e, Error::WrongType { key, found } if key == name && found == says),
            "{name}: {e}"
        );
        let keys: Vec<String> = s.cmd(&["KEYS", "*"]);
        assert_eq!(keys, vec![name.to_owned()], "something was written");
    }
    // The queue, the waiters' hash and the marker: cleared, and the lock goes on.
    for name in [
        "bid_lock_queue:junk:a",
        "bid_lock_waiters:junk:a",
        "bid_lock_wait:junk:a",
    ] {
        for junk in [Junk::Text("junk"), Junk::Hash, Junk::List, Junk::Zset] {
            let _: () = s.cmd(&["FLUSHALL"]);
            write_junk(&s, name, &junk);
            let g = m.acquire(&key("a"), &opts).await.unwrap();
            write_junk(&s, name, &junk);
            assert!(g.release().await.unwrap(), "{name} {junk:?}");
            let left: Option<String> = s.cmd(&["GET", "bid_lock:junk:a"]);
            assert_eq!(left, None, "{name} {junk:?}: the posting stayed locked");
        }
    }
}

/// The case an operator found by hand: a string in the waiters' hash's name while a
/// waiter queues and the holder releases. The lock goes to the waiter or is freed, never
/// stays locked for its ttl, and nothing blames the lock's key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_string_in_the_waiters_hash_does_not_keep_the_posting_locked() {
    let s = RedisServer::start();
    let (a, b) = (
        common::redis_manager_with_timeout(&s.url(), Duration::from_secs(2)).await,
        common::redis_manager_with_timeout(&s.url(), Duration::from_secs(2)).await,
    );
    let k = key("p4");
    let g = a.acquire(&k, &AcquireOptions::new()).await.unwrap();
    let _: () = s.cmd(&["SET", "bid_lock_waiters:junk:p4", "junk"]);
    let waiter = tokio::spawn(async move {
        b.acquire(&k, &AcquireOptions::new().timeout(Duration::from_secs(10)))
            .await
    });
    common::until(Duration::from_secs(5), "the waiter to queue", || {
        s.cmd::<i64>(&["EXISTS", "bid_lock_queue:junk:p4"]) == 1
    })
    .await;
    let _: () = s.cmd(&["SET", "bid_lock_waiters:junk:p4", "junk again"]);
    assert!(g.release().await.unwrap());
    let g2 = waiter.await.unwrap().unwrap();
    assert!(g2.release().await.unwrap());
    let left: Option<String> = s.cmd(&["GET", "bid_lock:junk:p4"]);
    assert_eq!(left, None);
}

#[tokio::test]
async fn a_key_of_another_type_is_never_overwritten() {
    let fx = Fx::new(Which::Redis).await;
    let s = fx.server();
    let _: i64 = s.cmd(&["HSET", "bid_lock:upwork:hash", "field", "value"]);
    let err = fx
        .manager
        .try_acquire(&common::key("hash"), &AcquireOptions::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("hash"), "{err}");
    assert!(!err.is_not_acquired());
    let err = fx
        .manager
        .release(&common::key("hash"), &"x".into())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a lock"), "{err}");
    let err = fx
        .manager
        .force_release(&common::key("hash"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a lock"), "{err}");
    assert!(fx.manager.status(&common::key("hash")).await.is_err());
    // Listing skips it, cleanup leaves it.
    assert!(fx.manager.locks(None).await.unwrap().is_empty());
    assert_eq!(fx.manager.cleanup_all().await.unwrap(), 0);
    let v: String = s.cmd(&["HGET", "bid_lock:upwork:hash", "field"]);
    assert_eq!(v, "value");
}
