//! Random sequences against superseding within one manager: acquires, tries, extends,
//! drops and releases over three managers, with generated and given ids, while an operator
//! force-releases, cleans up and releases by holder id; no two sections of one manager on
//! a key unlost at once, none across managers without an operator action since the older
//! acquire.

use std::time::Duration;

use bidlock::{AcquireOptions, BidLockManager};
use bidlock_testkit::RedisServer;
use tokio::time::Instant;

use super::common::{self, key};

/// A small seeded generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// A section told held: its manager, key, when its acquire was sent, and its lease.
struct Section {
    id: u64,
    manager: usize,
    key: usize,
    sent: Instant,
    lease: bidlock::Lease,
}

/// One operator action: on which key (`None`: every key), what, and when it ended.
struct Action {
    key: Option<usize>,
    what: &'static str,
    ended: Option<Instant>,
}

#[derive(Default)]
struct Book {
    next: u64,
    live: Vec<Section>,
    /// Operator actions, begun and ended (or running).
    actions: Vec<Action>,
    violations: Vec<String>,
    held: u64,
}

impl Book {
    /// The operator actions on key `k` that had not ended when `since` came (running
    /// then, or begun later): each may have reached Redis after an acquire sent at
    /// `since`. One that ended before had its answer, so Redis ran it before that acquire.
    fn touching_since(&self, k: usize, since: Instant) -> impl Iterator<Item = &Action> {
        self.actions
            .iter()
            .filter(move |a| a.key.is_none_or(|x| x == k) && a.ended.is_none_or(|e| e >= since))
    }

    /// The last operator action on key `k` that ended before `since`, for a violation's
    /// message: what it was and how long before `since` it ended.
    fn last_before(&self, k: usize, since: Instant) -> String {
        self.actions
            .iter()
            .filter(|a| a.key.is_none_or(|x| x == k))
            .filter_map(|a| a.ended.filter(|e| *e < since).map(|e| (a.what, e)))
            .max_by_key(|(_, e)| *e)
            .map_or("none".to_owned(), |(what, e)| {
                format!("{what}, over {} ms before", (since - e).as_millis())
            })
    }
}

/// Checks a section just told held against every other live one on its key: within one
/// manager, another holder id's section must be said lost by then (9e147fd, whatever the
/// operator did); across managers, one of the two must be lost unless an operator action
/// on the key was running or began after the older one's acquire was sent (the stated
/// operator limit; an action begun before that send can still land in Redis after it:
/// counting actions from their start only made the test fail now and then, CI seed
/// 1796693548019224895, "... no operator action since").
fn enter(
    book: &std::sync::Mutex<Book>,
    manager: usize,
    k: usize,
    sent: Instant,
    lease: &bidlock::Lease,
) -> u64 {
    let mut b = book.lock().unwrap();
    b.held += 1;
    let mut found = Vec::new();
    for o in b.live.iter().filter(|o| o.key == k) {
        if o.lease.holder() == lease.holder() || o.lease.is_lost() || lease.is_lost() {
            continue;
        }
        if o.manager == manager {
            found.push(format!(
                "manager {manager} key {k}: section told held (token {}) while section {} \
                 of the same manager (token {}) is not lost",
                lease.fencing_token(),
                o.id,
                o.lease.fencing_token()
            ));
        } else if b.touching_since(k, o.sent.min(sent)).next().is_none() {
            let older_sent = o.sent.min(sent);
            found.push(format!(
                "key {k}: manager {manager} told held (token {}) while manager {}'s \
                 section {} (token {}) is not lost, no operator action since; relative to \
                 the older acquire's send, the newer was sent at {} ms and told held at +{} \
                 ms; the last operator action on the key: {}",
                lease.fencing_token(),
                o.manager,
                o.id,
                o.lease.fencing_token(),
                sent.saturating_duration_since(older_sent).as_millis(),
                older_sent.elapsed().as_millis(),
                b.last_before(k, older_sent)
            ));
        }
    }
    b.violations.extend(found);
    b.next += 1;
    let id = b.next;
    b.live.push(Section {
        id,
        manager,
        key: k,
        sent,
        lease: lease.clone(),
    });
    id
}

fn leave(book: &std::sync::Mutex<Book>, id: u64) {
    book.lock().unwrap().live.retain(|s| s.id != id);
}

async fn random_sequences(managers: Vec<BidLockManager>, operator: BidLockManager, seed: u64) {
    use std::sync::{Arc, Mutex};
    let book = Arc::new(Mutex::new(Book::default()));
    let keys = [key("rand-0"), key("rand-1")];
    let run_for = Duration::from_secs(4);
    let t0 = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for (mi, m) in managers.iter().enumerate() {
        for w in 0..3u64 {
            let (m, book, keys) = (m.clone(), book.clone(), keys.clone());
            let mut rng = Rng(seed ^ ((mi as u64 + 1) << 32) ^ (w + 1).wrapping_mul(0x9e37_79b9));
            tasks.push(tokio::spawn(async move {
                while t0.elapsed() < run_for {
                    let k = rng.below(2) as usize;
                    let ttl = Duration::from_millis(200 + rng.below(800));
                    let mut opts = AcquireOptions::new().ttl(ttl);
                    if rng.below(4) == 0 {
                        opts = opts.renew(false);
                    }
                    // A holder id of the worker's own now and then: never shared by two
                    // sections at once, never released in the background.
                    if rng.below(4) == 0 {
                        opts = opts.holder(format!("m{mi}-w{w}"));
                    }
                    let sent = Instant::now();
                    let got = if rng.below(3) == 0 {
                        m.try_acquire(&keys[k], &opts).await
                    } else {
                        m.acquire(&keys[k], &opts.timeout(Duration::from_millis(300)))
                            .await
                    };
                    let Ok(g) = got else {
                        continue;
                    };
                    let id = enter(&book, mi, k, sent, g.lease());
                    tokio::time::sleep(Duration::from_millis(rng.below(40))).await;
                    if rng.below(4) == 0 {
                        let _ = g.extend(Duration::from_millis(300 + rng.below(500))).await;
                    }
                    tokio::time::sleep(Duration::from_millis(rng.below(20))).await;
                    leave(&book, id);
                    if rng.below(3) == 0 {
                        drop(g);
                    } else {
                        let _ = g.release().await;
                    }
                }
            }));
        }
    }
    let mut rng = Rng(seed.rotate_left(17) | 1);
    while t0.elapsed() < run_for {
        tokio::time::sleep(Duration::from_millis(30 + rng.below(120))).await;
        let k = rng.below(2) as usize;
        let what = rng.below(3);
        {
            let mut b = book.lock().unwrap();
            b.actions.push(Action {
                key: (what != 1).then_some(k),
                what: ["force_release", "cleanup_all", "release by holder id"][what as usize],
                ended: None,
            });
        }
        match what {
            0 => {
                let _ = operator.force_release(&keys[k]).await;
            }
            1 => {
                let _ = operator.cleanup_all().await;
            }
            _ => {
                let holder = operator.status(&keys[k]).await.ok().and_then(|s| s.holder);
                if let Some(h) = holder {
                    let _ = operator.release(&keys[k], &bidlock::Holder::new(h)).await;
                }
            }
        }
        // Its command may land in Redis after an acquire sent while it ran (the
        // operator's link is slow, or its task was descheduled before the send), and
        // remove that lock (the stated operator limit): only sections sent after it
        // ended are held to it.
        let ended = Instant::now();
        let mut b = book.lock().unwrap();
        if let Some(a) = b.actions.last_mut() {
            a.ended = Some(ended);
        }
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("a worker hung")
            .unwrap();
    }
    let b = book.lock().unwrap();
    assert!(b.held > 50, "setup: only {} sections held", b.held);
    assert!(
        b.violations.is_empty(),
        "seed {seed}: {} violations in {} sections: {:#?}",
        b.violations.len(),
        b.held,
        b.violations
    );
}

fn seed() -> u64 {
    std::env::var("BIDLOCK_SUPERSEDE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_random_sequences_with_an_operator_keep_each_managers_sections_apart() {
    let s = RedisServer::start();
    let mut managers = Vec::new();
    for _ in 0..3 {
        managers.push(common::redis_manager(&s.url()).await);
    }
    let operator = common::redis_manager(&s.url()).await;
    random_sequences(managers, operator, seed()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_random_sequences_with_an_operator_keep_each_managers_sections_apart() {
    let prefix = common::unique_prefix();
    let mut managers = Vec::new();
    for _ in 0..3 {
        managers.push(
            BidLockManager::new(common::memory_config(&prefix))
                .await
                .unwrap(),
        );
    }
    let operator = BidLockManager::new(common::memory_config(&prefix))
        .await
        .unwrap();
    random_sequences(managers, operator, seed()).await;
}

/// The operator's link is 30 ms slow each way: its commands land in Redis well after it
/// began them, after acquires sent meanwhile (while an action counted from its start
/// only, this failed every run with the message of the CI flake, seed
/// 1796693548019224895: "... is not lost, no operator action since").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_random_sequences_with_a_slow_operator_keep_each_managers_sections_apart() {
    let s = RedisServer::start();
    let p = bidlock_testkit::FaultProxy::start(s.port()).await;
    let mut managers = Vec::new();
    for _ in 0..3 {
        managers.push(common::redis_manager(&s.url()).await);
    }
    let operator = common::redis_manager(&p.url()).await;
    p.set(bidlock_testkit::Fault::Latency(Duration::from_millis(30)));
    random_sequences(managers, operator, seed()).await;
}
