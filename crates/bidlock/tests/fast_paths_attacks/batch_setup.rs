//! The set-up of the two batch attacks: one script call of many tries in which one item
//! meets junk and one hands a freed lock to a waiter of another manager.

use std::time::Duration;

use bidlock::{AcquireOptions, BidLockManager};
use bidlock_testkit::acl::Monitor;
use bidlock_testkit::RedisServer;

use super::common::{key, lock_of, no_polling_manager, until, wait_for};
use super::{evalsha_lines, try_all};

/// One script call of many tries on `m` in which one item meets junk (a hash in its lock
/// key) and one hands a freed lock to a waiter of another manager queued in Redis
/// (acquire.lua -> hand_to). Returns every token handed out, the guards kept. How the
/// tries group into batches depends on timing (a loaded machine sends more of them
/// alone), so the set-up is tried again, with new postings, until they share a call.
pub async fn batch_with_junk_and_grant(
    s: &RedisServer,
    m: &BidLockManager,
    round: u32,
) -> (Vec<u64>, Vec<bidlock::LockGuard>) {
    let (mut tokens, mut kept) = (Vec::new(), Vec::new());
    for attempt in 0..6 {
        let (formed, t, held) = batch_attempt(s, m, &format!("{round}-{attempt}")).await;
        tokens.extend(t);
        kept.extend(held);
        if formed {
            return (tokens, kept);
        }
    }
    panic!("set-up: in 6 attempts the junk item and the grant never went in one script call");
}

/// One try of [`batch_with_junk_and_grant`]'s set-up; `formed`: the junk item and the
/// grant went in one script call.
async fn batch_attempt(
    s: &RedisServer,
    m: &BidLockManager,
    round: &str,
) -> (bool, Vec<u64>, Vec<bidlock::LockGuard>) {
    let h = no_polling_manager(&s.url()).await;
    let w = no_polling_manager(&s.url()).await;
    let (granted, junk) = (format!("granted-{round}"), format!("junk-{round}"));
    let g0 = h
        .acquire(&key(&granted), &AcquireOptions::new())
        .await
        .unwrap();
    let waiter = {
        let (w, k) = (w.clone(), key(&granted));
        tokio::spawn(async move { w.acquire(&k, &wait_for(Duration::from_secs(20))).await })
    };
    until(Duration::from_secs(5), "the waiter to queue", || {
        super::common::queue_len(s, &granted) == 1
    })
    .await;
    // Its holder's lock vanishes (a foreign DEL: no message); the next try hands it over.
    let _: i64 = s.cmd(&["DEL", &lock_of(&granted)]);
    let _: i64 = s.cmd(&["HSET", &lock_of(&junk), "f", "v"]);
    let mut postings: Vec<String> = (0..40).map(|i| format!("batch-{round}-{i}")).collect();
    postings.insert(10, junk.clone());
    postings.insert(20, granted.clone());
    let mon = Monitor::start(s.port());
    let (mut held, failed) = try_all(m, &postings).await;
    assert!(failed >= 1, "the junk item must be refused");
    // The first try goes alone; the others wait for it and go together.
    let one = [
        lock_of(&junk),
        lock_of(&granted),
        lock_of(&format!("batch-{round}-5")),
    ];
    let one: Vec<&str> = one.iter().map(String::as_str).collect();
    // MONITOR's lines arrive on their own thread: give them a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut formed = evalsha_lines(&mon, &one) >= 1;
    while !formed && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
        formed = evalsha_lines(&mon, &one) >= 1;
    }
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the queued waiter is served")
        .unwrap()
        .unwrap();
    held.push(got);
    drop(g0);
    (
        formed,
        held.iter().map(|g| g.fencing_token().get()).collect(),
        held,
    )
}
