//! Redlock survives any minority down, also for a holder that took the lock after a
//! release that missed a node (issue 21): H1's release reaches A and B but not C (a
//! partition); C keeps H1's copy, so H2 holds on A and B only, and when A then goes down
//! H2 is told it lost the lock although only a minority is down.
//!
//! A release that reached a majority but not every node is retried on the nodes it
//! missed, for a generated holder id, until they answer or the lock's ttl has passed; so
//! once the partition heals, C is free again and the next holder takes all three. What
//! remains: a holder id of the caller's is never released in the background (it may be
//! held by a later acquisition), and a holder that acquires before the retry lands holds
//! on a bare majority until its lock is next acquired.

use std::time::{Duration, Instant};

use bidlock::{AcquireOptions, Backend, BidLockManager, Config, Error, LockKey};
use bidlock_testkit::{Fault, FaultProxy, RedisServer};

fn key() -> LockKey {
    LockKey::new("upwork", "missed").unwrap()
}

const LOCK: &str = "bid_lock:upwork:missed";

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

/// Three nodes; H1 reaches C through a proxy, H2 reaches every node directly.
struct Setup {
    servers: Vec<RedisServer>,
    c_for_h1: FaultProxy,
    h1: BidLockManager,
    h2: BidLockManager,
}

async fn setup() -> Setup {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let c_for_h1 = FaultProxy::start(servers[2].port()).await;
    let h1 = redlock(&[servers[0].url(), servers[1].url(), c_for_h1.url()]).await;
    let h2 = redlock(&servers.iter().map(RedisServer::url).collect::<Vec<_>>()).await;
    let s = Setup {
        servers,
        c_for_h1,
        h1,
        h2,
    };
    // Load the scripts on every node first: a try decided before a node's script reload
    // is done never takes that node (what the given-id case below needs to see there).
    let warm = LockKey::new("upwork", "warm").unwrap();
    let g = s.h1.acquire(&warm, &AcquireOptions::new()).await.unwrap();
    s.until(|s| {
        s.servers[2]
            .cmd::<Option<String>>(&["GET", "bid_lock:upwork:warm"])
            .is_some()
    })
    .await;
    assert!(g.release().await.unwrap());
    s
}

impl Setup {
    /// Waits (up to 5 s) until `f` holds.
    async fn until(&self, f: impl Fn(&Setup) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !f(self) {
            assert!(Instant::now() < deadline, "timed out");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn holder_on(&self, node: usize) -> Option<String> {
        self.servers[node].cmd(&["GET", LOCK])
    }

    /// H1 takes the lock on every node, then releases it while C is cut off from H1: the
    /// release reaches A and B (a majority: released), and its bytes to C are lost.
    async fn release_missing_c(&self, opts: &AcquireOptions) -> String {
        let g1 = self.h1.acquire(&key(), opts).await.unwrap();
        let h1 = g1.holder().as_str().to_owned();
        // The acquire was decided by the first two nodes to answer; C's copy may land a
        // moment later.
        self.until(|s| s.holder_on(2).as_deref() == Some(h1.as_str()))
            .await;
        self.c_for_h1.set(Fault::Blackhole);
        assert!(g1.release().await.unwrap(), "a majority released");
        assert_eq!(self.holder_on(2).as_deref(), Some(h1.as_str()));
        h1
    }

    /// The partition heals; what H1 sent into it is gone.
    fn heal(&self) {
        self.c_for_h1.drop_connections();
        self.c_for_h1.set(Fault::None);
    }

    /// H2 takes the lock; node A is killed; H2 renews once. Returns whether H2 kept it.
    async fn h2_renews_with_a_down(&mut self) -> Result<(), Error> {
        let g2 = self
            .h2
            .acquire(&key(), &AcquireOptions::new().no_wait())
            .await
            .unwrap();
        self.servers[0].kill();
        let renewed = g2.extend(Duration::from_secs(300)).await;
        assert_eq!(renewed.is_err(), g2.is_lost());
        renewed
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_never_reaches_a_node_leaves_the_next_holder_one_failure_from_losing() {
    let mut s = setup().await;
    let h1 = s.release_missing_c(&AcquireOptions::new()).await;
    // The partition lasts: C keeps H1's copy, H2 holds on A and B only.
    let renewed = s.h2_renews_with_a_down().await;
    assert_eq!(s.holder_on(2), Some(h1));
    let e = renewed.unwrap_err();
    assert!(matches!(e, Error::LockLost { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_missed_a_node_is_retried_there_so_the_next_holder_survives_a_minority_down()
{
    let mut s = setup().await;
    s.release_missing_c(&AcquireOptions::new()).await;
    s.heal();
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.holder_on(2).is_some() {
        assert!(
            Instant::now() < deadline,
            "H1's release never reached C after the partition healed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.h2_renews_with_a_down()
        .await
        .expect("H2 holds on B and C, a majority, with only A down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_release_of_a_given_holder_id_is_never_retried_in_the_background() {
    let s = setup().await;
    let h1 = s
        .release_missing_c(&AcquireOptions::new().holder("instance-1"))
        .await;
    s.heal();
    // Several retry periods: the copy stays until its ttl (the id may hold a later
    // acquisition by then).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.holder_on(2), Some(h1));
}
