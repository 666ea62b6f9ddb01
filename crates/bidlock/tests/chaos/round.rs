//! One round: fresh servers shaped for a fault class, the observer, library instances,
//! process holders and the nemesis for a bounded time; then a calm sweep over the
//! postings, and the checks over what was recorded. Nothing outlives the round but its
//! figures and violations.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bidlock::LockKey;
use bidlock_testkit::keys::Names as KeyNames;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::checks::{self, Extras, Violation};
use super::clients::{self, Slot};
use super::figures::Figures;
use super::history::History;
use super::observer::{self, Names, Registry};
use super::procs::{self, Board};
use super::topology::Topology;
use super::{census, client_bids, monitor, nemesis, report, FaultClass};

pub const INSTANCES: u8 = 3;
pub const TASKS_PER_INSTANCE: u8 = 3;
pub const PROCESS_DRIVERS: u8 = 2;
pub const HOT_KEYS: usize = 3;
pub const POSTINGS: usize = 8;
/// Keys where cancelled acquires with given ids meet holders of those ids (batch class).
pub const GIVEN_KEYS: usize = 2;

/// What every part of a round shares.
pub struct Round {
    pub class: FaultClass,
    pub index: usize,
    pub seed: u64,
    /// Contended lock keys.
    pub hot: Vec<LockKey>,
    /// Postings for `bid_once` and `run --once`.
    pub postings: Vec<LockKey>,
    /// Keys of a class's own tasks (`pressure.rs`): where the batch class's cancelled
    /// acquires with given ids meet holders of those ids, or the key a lone holder keeps
    /// for the holder-release class (empty otherwise).
    pub extra_keys: Vec<LockKey>,
    /// Holder ids given by callers, each shared by several tasks and processes.
    pub given: Vec<String>,
    pub url: String,
    pub hist: Arc<History>,
    pub reg: Arc<Registry>,
    pub board: Arc<Board>,
    pub slots: Vec<Arc<Slot>>,
    /// The Redis names of the default prefix (docs/REDIS.md's layout).
    pub keys: KeyNames,
    pub bin: PathBuf,
    pub started: Instant,
    /// Clients start nothing new after this.
    pub stop_at: Instant,
}

impl Round {
    pub fn redis_key(&self, k: &LockKey) -> String {
        self.keys.lock(k)
    }

    /// The keys an operator acts on: the hot keys, then the class's own.
    pub fn operated(&self) -> Vec<LockKey> {
        self.hot.iter().chain(&self.extra_keys).cloned().collect()
    }
}

/// A round's outcome.
pub struct Outcome {
    pub class: FaultClass,
    pub figures: Figures,
    pub violations: Vec<Violation>,
    /// The history around each violation, printed when the run fails.
    pub histories: String,
}

fn keys(prefix: &str, n: usize) -> Vec<LockKey> {
    (0..n)
        .map(|i| LockKey::new("chaos", format!("{prefix}{i}")).expect("key"))
        .collect()
}

/// The round's shared state, with its clients connected; clients start nothing before
/// `started`.
async fn setup(
    index: usize,
    class: FaultClass,
    len: Duration,
    seed: u64,
    bin: &Path,
    topo: &Topology,
) -> Arc<Round> {
    let hist = Arc::new(History::default());
    hist.clock.anchor();
    let mut slots = Vec::new();
    for i in 0..INSTANCES {
        slots.push(Slot::start(i, &topo.url_for(i), &hist).await);
    }
    let started = Instant::now();
    Arc::new(Round {
        class,
        index,
        seed,
        hot: keys("hot", HOT_KEYS),
        postings: keys(&format!("r{index}-p"), POSTINGS),
        extra_keys: match class {
            FaultClass::BatchLatency => keys(&format!("r{index}-g"), GIVEN_KEYS),
            FaultClass::HolderRelease => keys(&format!("r{index}-q"), 1),
            _ => Vec::new(),
        },
        given: vec![format!("given-{index}-a"), format!("given-{index}-b")],
        url: topo.url.clone(),
        hist,
        reg: Arc::default(),
        board: Arc::default(),
        slots,
        keys: KeyNames::default(),
        bin: bin.to_owned(),
        started,
        stop_at: started + len,
    })
}

/// The nemesis, library clients and process holders, until all are done. Returns when
/// the faults had healed and the clients had stopped.
async fn drive(
    round: &Arc<Round>,
    topo: &Arc<Topology>,
    admin: &bidlock::BidLockManager,
    len: Duration,
) -> Instant {
    let mut rng = StdRng::seed_from_u64(round.seed);
    let plan = nemesis::plan(round.class, len, INSTANCES, &mut rng);
    let nem = tokio::spawn(nemesis::run(
        round.clone(),
        topo.clone(),
        admin.clone(),
        plan,
    ));
    let mut workers = clients::spawn(round, TASKS_PER_INSTANCE);
    workers.extend(procs::spawn(round, PROCESS_DRIVERS, &round.bin));
    let _ = tokio::time::timeout(Duration::from_secs(60), nem).await;
    for w in workers {
        if tokio::time::timeout(Duration::from_secs(20), w)
            .await
            .is_err()
        {
            round.hist.error(
                "checker",
                &"a client did not finish within 20 s of the round's end",
            );
        }
    }
    Instant::now()
}

/// The census of the server's keys, the script calls `MONITOR` saw, and what the
/// instances' own links held back.
async fn extras(round: &Round, topo: &Arc<Topology>, mon: Option<monitor::Monitor>) -> Extras {
    let port = topo.observed.load(std::sync::atomic::Ordering::Acquire);
    let keys = round.keys.clone();
    let census = tokio::task::spawn_blocking(move || census::take(port, &keys))
        .await
        .ok();
    let calls = match mon {
        Some(m) => tokio::task::spawn_blocking(move || m.stop()).await.ok(),
        None => None,
    };
    let link_held = topo
        .links
        .iter()
        .map(|p| p.traffic())
        .fold((0, 0), |(a, s), t| {
            use bidlock_testkit::{Direction, Role};
            let all: u64 = t.held.iter().flatten().sum();
            (a + all, s + t.held(Role::Subscribers, Direction::ToClient))
        });
    Extras {
        census,
        calls,
        link_held,
    }
}

pub async fn run(index: usize, class: FaultClass, len: Duration, seed: u64, bin: &Path) -> Outcome {
    let wall = Instant::now();
    let topo = Arc::new(Topology::start(class, INSTANCES).await);
    if class == FaultClass::HolderRelease {
        // Slow links all round: an operator's release lands while replies are on their way.
        // Below 80 ms each way: a manager's subscriber (a connect and two SUBSCRIBEs, one
        // after another) must still connect within the 500 ms connect timeout (see
        // notices.rs::a_forced_release_reaches_a_holder_whose_link_is_slow for what happens
        // above that).
        let mut rng = StdRng::seed_from_u64(seed ^ 0x11ab);
        for p in &topo.links {
            let ms = rng.random_range(20..70);
            p.set(bidlock_testkit::Fault::Delay(Duration::from_millis(ms)));
        }
    }
    let round = setup(index, class, len, seed, bin, &topo).await;
    let watched: Vec<Names> = round
        .hot
        .iter()
        .chain(&round.postings)
        .chain(&round.extra_keys)
        .map(|k| Names::of(&round.keys, k))
        .collect();
    let mon = (class == FaultClass::BatchLatency)
        .then(|| {
            let port = topo.observed.load(std::sync::atomic::Ordering::Acquire);
            monitor::start(port, format!("{}:", round.keys.prefix))
        })
        .flatten();
    let obs = observer::start(
        topo.observed.clone(),
        watched,
        round.reg.clone(),
        round.hist.clone(),
    );
    let admin = clients::connect(&clients::config(&topo.admin_url), Duration::from_secs(10))
        .await
        .expect("operator's manager");
    let healed_at = drive(&round, &topo, &admin, len).await;

    client_bids::sweep(&round, &admin).await;
    admin.close().await;
    for s in &round.slots {
        s.close().await;
    }
    let log = obs.stop();
    let extras = extras(&round, &topo, mon).await;
    let (mut figures, violations) = checks::check(&round, &log, &extras, healed_at);
    figures.wall_secs = wall.elapsed().as_secs_f64();
    let histories = report::histories(&round, &log, &violations);
    if !violations.is_empty() {
        let logs = topo.logs();
        let tail: Vec<&str> = logs.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        eprintln!(
            "round {index} ({}) server log tail:\n{}",
            class.name(),
            tail.join("\n")
        );
    }
    let topo = Arc::try_unwrap(topo).ok();
    let _ = tokio::task::spawn_blocking(move || drop(topo)).await;
    Outcome {
        class,
        figures,
        violations,
        histories,
    }
}
