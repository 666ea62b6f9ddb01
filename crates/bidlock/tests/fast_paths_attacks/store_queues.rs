//! Attacks on `StoreQueues` (inner.rs), a manager's belief that the store queues, against
//! fair handover: first come, first served across managers. A try that asked to stay
//! queued and is answered "held, not queued" (its place was cleared) must not make its
//! manager conclude that the store does not queue.

use std::time::Duration;

use bidlock::{AcquireOptions, BidLockManager};
use bidlock_testkit::{Direction, Fault, FaultProxy, RedisServer, Role};

use super::common::queue_len;
use super::common::{key, lock_of, no_polling_manager, until, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stay_try_that_finds_its_place_gone_does_not_unteach_that_the_store_queues() {
    let s = RedisServer::start();
    let proxy = FaultProxy::start(s.port()).await;
    let h = no_polling_manager(&s.url()).await;
    let m1 = no_polling_manager(&proxy.url()).await;
    let m2 = no_polling_manager(&s.url()).await;
    let p = "stay-unteaches";
    let k = key(p);
    let g = h.acquire(&k, &AcquireOptions::new()).await.unwrap();
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let t0 = tokio::time::Instant::now();
    let spawn_waiter = |m: &BidLockManager, name: &'static str| {
        let (m, k, order) = (m.clone(), k.clone(), order.clone());
        tokio::spawn(async move {
            let g = m
                .acquire(&k, &wait_for(Duration::from_secs(30)))
                .await
                .unwrap();
            order
                .lock()
                .unwrap()
                .push(format!("{name} at {:?}", t0.elapsed()));
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(g.release().await.unwrap());
        })
    };
    // A (M1) queues in Redis: M1 has learnt that the store queues.
    let a = spawn_waiter(&m1, "A");
    until(Duration::from_secs(5), "A to queue", || {
        queue_len(&s, p) == 1
    })
    .await;
    // Junk in the queue key (rule 7: deleted by the next script, the lock goes on), and
    // M1's replies slowed down (its requests are not).
    let _: () = s.cmd(&["SET", &super::common::queue_of(p), "junk"]);
    proxy.set_for(
        Role::Commands,
        Some(Direction::ToClient),
        Fault::Delay(Duration::from_millis(800)),
    );
    // A release message for the key: A tries to stay queued, finds its place gone, and
    // joins again as a fresh id (that try reaches Redis at once; its answer comes late).
    let _: i64 = s.cmd(&["PUBLISH", "bid_lock_released", &lock_of(p)]);
    until(Duration::from_secs(5), "A to queue again", || {
        queue_len(&s, p) == 1
    })
    .await;
    // B (M1) arrives now, C (M2) clearly after it.
    let b = spawn_waiter(&m1, "B");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = spawn_waiter(&m2, "C");
    until(Duration::from_secs(5), "C to queue", || {
        queue_len(&s, p) >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    proxy.set(Fault::None);
    let queued_before_release = queue_len(&s, p);
    assert!(g.release().await.unwrap());
    for t in [a, b, c] {
        tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .unwrap()
            .unwrap();
    }
    let order = order.lock().unwrap().clone();
    let names: Vec<&str> = order.iter().map(|o| &o[..1]).collect();
    assert_eq!(
        names,
        ["A", "B", "C"],
        "B called acquire before C but was served after it; order {order:?}, {queued_before_release} queued in Redis at the release"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_skipped_as_dead_after_a_stall_does_not_unteach_that_the_store_queues() {
    let s = RedisServer::start();
    let proxy = FaultProxy::start(s.port()).await;
    let h = no_polling_manager(&s.url()).await;
    let m1 = no_polling_manager(&proxy.url()).await;
    let m2 = no_polling_manager(&s.url()).await;
    let p = "stall-unteaches";
    let k = key(p);
    let g = h.acquire(&k, &AcquireOptions::new()).await.unwrap();
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let t0 = tokio::time::Instant::now();
    let spawn_waiter = |m: &BidLockManager, name: &'static str, hold: Duration| {
        let (m, k, order) = (m.clone(), k.clone(), order.clone());
        tokio::spawn(async move {
            let g = m
                .acquire(&k, &wait_for(Duration::from_secs(30)))
                .await
                .unwrap();
            order
                .lock()
                .unwrap()
                .push(format!("{name} at {:?}", t0.elapsed()));
            tokio::time::sleep(hold).await;
            assert!(g.release().await.unwrap());
        })
    };
    let short = Duration::from_millis(20);
    // A (M1) queues; then M1's requests stall past its entry's life (1.5 s by default).
    let a = spawn_waiter(&m1, "A", short);
    until(Duration::from_secs(5), "A to queue", || {
        queue_len(&s, p) == 1
    })
    .await;
    proxy.set_for(Role::Commands, Some(Direction::ToServer), Fault::Blackhole);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    // C (M2) queues behind A's dead entry; the release skips A and hands C the lock.
    let c = spawn_waiter(&m2, "C", Duration::from_millis(2500));
    until(Duration::from_secs(5), "C to queue", || {
        queue_len(&s, p) == 2
    })
    .await;
    assert!(g.release().await.unwrap());
    until(Duration::from_secs(5), "C to be handed the lock", || {
        queue_len(&s, p) == 0
    })
    .await;
    // The stall ends (A's late stay-try reaches Redis: "not queued"); M1's replies slow.
    proxy.set_for(
        Role::Commands,
        Some(Direction::ToClient),
        Fault::Delay(Duration::from_millis(800)),
    );
    proxy.set_for(Role::Commands, Some(Direction::ToServer), Fault::None);
    until(Duration::from_secs(5), "A to queue again", || {
        queue_len(&s, p) == 1
    })
    .await;
    // B (M1) arrives now, D (M2) clearly after it.
    let b = spawn_waiter(&m1, "B", short);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let d = spawn_waiter(&m2, "D", short);
    until(Duration::from_secs(5), "D to queue", || {
        queue_len(&s, p) >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    proxy.set(Fault::None);
    for t in [c, a, b, d] {
        tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .unwrap()
            .unwrap();
    }
    let order = order.lock().unwrap().clone();
    let names: Vec<&str> = order.iter().map(|o| &o[..1]).collect();
    assert_eq!(
        names,
        ["C", "A", "B", "D"],
        "B called acquire before D but was served after it; order {order:?}"
    );
}
