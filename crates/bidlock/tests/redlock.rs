//! Redlock over real redis-server processes: survives a minority of nodes failing,
//! fails closed without a majority, recovers, keeps its fencing promise, and two clients
//! cut off from different minorities never both hold.

mod common;

use std::time::Duration;

use bidlock::{AcquireOptions, Backend, BidLockManager, Config, LockKey};
use bidlock_testkit::{Fault, FaultProxy, RedisServer};
use common::checker::{check, contend, Workload};

fn key(p: &str) -> LockKey {
    LockKey::new("upwork", p).unwrap()
}

async fn redlock(urls: &[String]) -> BidLockManager {
    let cfg = Config::builder()
        .backend(Backend::Redis)
        .redis_urls(urls.iter().cloned())
        .response_timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    BidLockManager::new(cfg).await.unwrap()
}

fn start(n: usize) -> (Vec<RedisServer>, Vec<String>) {
    let servers: Vec<RedisServer> = (0..n).map(|_| RedisServer::start()).collect();
    let urls = servers.iter().map(RedisServer::url).collect();
    (servers, urls)
}

async fn survives_minority(n: usize) {
    let (mut servers, urls) = start(n);
    let m = redlock(&urls).await;
    assert!(m.location().starts_with("redlock["));
    let g = m.acquire(&key("a"), &AcquireOptions::new()).await.unwrap();
    // The lock is on every node, as the original layout (the acquire returned once a
    // majority had it; the others' copies land a moment later).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    for s in &servers {
        while s
            .cmd::<Option<String>>(&["GET", "bid_lock:upwork:a"])
            .as_deref()
            != Some(g.holder().as_str())
        {
            assert!(
                std::time::Instant::now() < deadline,
                "a node never took the lock"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let t1 = g.fencing_token();
    // The lease is shorter than the ttl by the drift allowance and the time it took.
    let left = g
        .lease()
        .expires_at()
        .unwrap()
        .saturating_duration_since(std::time::Instant::now());
    assert!(
        left < Duration::from_secs(300) - Duration::from_secs(3),
        "{left:?}"
    );
    assert!(g.release().await.unwrap());
    // Kill a minority: still acquires, tokens still increase.
    let minority = (n - 1) / 2;
    for s in servers.iter_mut().take(minority) {
        s.kill();
    }
    let g = m
        .acquire(
            &key("a"),
            &AcquireOptions::new().timeout(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    assert!(g.fencing_token() > t1);
    // A second instance is excluded.
    let other = redlock(&urls).await;
    assert!(other
        .try_acquire(&key("a"), &AcquireOptions::new())
        .await
        .unwrap_err()
        .is_not_acquired());
    assert!(g.release().await.unwrap());
    assert!(other
        .try_acquire(&key("a"), &AcquireOptions::new())
        .await
        .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_survive_one_down() {
    survives_minority(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_survive_two_down() {
    survives_minority(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_majority_down_fails_closed_and_recovers() {
    let (mut servers, urls) = start(3);
    let m = redlock(&urls).await;
    let g = m
        .acquire(
            &key("b"),
            &AcquireOptions::new().ttl(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    let t1 = g.fencing_token();
    servers[0].kill();
    servers[1].kill();
    // The held lease cannot be renewed by a majority: reported lost before it runs out.
    tokio::time::timeout(Duration::from_secs(3), g.lost())
        .await
        .expect("not told lost");
    drop(g);
    for _ in 0..5 {
        let err = m
            .acquire(&key("c"), &AcquireOptions::new().no_wait())
            .await
            .unwrap_err();
        assert!(err.is_backend() && err.is_retryable(), "{err}");
        assert!(err.to_string().contains("no quorum"), "{err}");
    }
    // Nothing was left behind on the live node.
    let left: Option<String> = servers[2].cmd(&["GET", "bid_lock:upwork:c"]);
    assert_eq!(left, None);
    assert!(!m.health_check().await);
    servers[0].restart();
    servers[1].restart();
    let g = common::acquire_eventually(
        &m,
        &key("c"),
        &AcquireOptions::new().no_wait(),
        Duration::from_secs(15),
    )
    .await;
    // Two nodes lost their data; the third kept its counter, and the counters re-seed
    // from the clock: the token still increases.
    assert!(g.fencing_token() > t1);
    assert!(m.health_check().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_increase_in_holding_order_across_node_failures() {
    let (mut servers, urls) = start(3);
    let a = redlock(&urls).await;
    let b = redlock(&urls).await;
    let mut last = 0;
    for round in 0..12 {
        if round == 4 {
            // The node that issued the highest token so far dies.
            let highest = servers
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    (
                        s.cmd::<Option<u64>>(&["GET", "bid_lock_fence"])
                            .unwrap_or(0),
                        i,
                    )
                })
                .max()
                .unwrap()
                .1;
            servers[highest].kill();
        }
        let m = if round % 2 == 0 { &a } else { &b };
        let g = m
            .acquire(
                &key("fence"),
                &AcquireOptions::new().timeout(Duration::from_secs(5)),
            )
            .await
            .unwrap();
        let t = g.fencing_token().get();
        assert!(t > last, "round {round}: {t} <= {last}");
        last = t;
        g.release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cut_off_from_different_minorities_never_both_hold() {
    let (servers, _) = start(3);
    let proxies = [
        FaultProxy::start(servers[0].port()).await,
        FaultProxy::start(servers[1].port()).await,
        FaultProxy::start(servers[2].port()).await,
    ];
    // Client A reaches nodes 0 and 1 directly and node 2 through a proxy; client B reaches
    // node 0 through a proxy and nodes 1 and 2 directly.
    let a_urls = vec![servers[0].url(), servers[1].url(), proxies[2].url()];
    let b_urls = vec![proxies[0].url(), servers[1].url(), servers[2].url()];
    let a = redlock(&a_urls).await;
    let b = redlock(&b_urls).await;
    let work = tokio::spawn(contend(
        vec![a, b],
        Workload {
            keys: 2,
            tasks_per_instance: 3,
            duration: Duration::from_secs(4),
            ..Workload::default()
        },
    ));
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Partition: A loses node 2, B loses node 0. Each still sees a majority (node 1 is
    // shared), so they contend through node 1 and never both hold.
    proxies[2].set(Fault::Blackhole);
    proxies[0].set(Fault::Blackhole);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxies[2].set(Fault::None);
    proxies[0].set(Fault::None);
    let healed = std::time::Instant::now();
    let o = check(&work.await.unwrap(), Some(healed));
    assert_eq!(o.unsafe_overlaps, 0, "{o:?}");
    assert_eq!(o.token_order_violations, 0, "{o:?}");
    assert!(o.sections > 10, "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_are_refused_with_a_clear_error() {
    let (_servers, urls) = start(2);
    let cfg = Config::builder()
        .backend(Backend::Redis)
        .redis_urls(urls)
        .build()
        .unwrap();
    let err = BidLockManager::new(cfg).await.unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    assert!(err.to_string().contains("at least 3"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_and_completion_need_a_majority() {
    let (mut servers, urls) = start(3);
    let m = redlock(&urls).await;
    let released = m
        .acquire(&key("maj-release"), &AcquireOptions::new())
        .await
        .unwrap();
    let completed = m
        .acquire(&key("maj-complete"), &AcquireOptions::new())
        .await
        .unwrap();
    let holder = released.holder().clone();
    servers[0].kill();
    servers[1].kill();
    // One node of three cannot release or record: an error, never "done".
    let e = m.release(&key("maj-release"), &holder).await.unwrap_err();
    assert!(matches!(e, bidlock::Error::NoQuorum { .. }), "{e}");
    let e = released.release().await.unwrap_err();
    assert!(matches!(e, bidlock::Error::NoQuorum { .. }), "{e}");
    let e = completed.complete().await.unwrap_err();
    assert!(matches!(e, bidlock::Error::NoQuorum { .. }), "{e}");
    // With a majority back, both work again.
    servers[0].restart();
    let g = common::acquire_eventually(
        &m,
        &key("maj-after"),
        &AcquireOptions::new(),
        Duration::from_secs(10),
    )
    .await;
    assert!(g.complete().await.unwrap());
    assert!(m.is_done(&key("maj-after")).await.unwrap());
}
