//! The nemesis: a seeded plan of faults for the round's class, carried out against the
//! real servers, proxy and processes. Every fault records when it began and healed, and
//! whether it was shown to take effect (a command failed, a process was stopped, a
//! counter came back lower): a fault that hit nothing proves nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bidlock::BidLockManager;
use bidlock_testkit::process::{all_stopped, signal_with_children, Signal};
use rand::rngs::StdRng;
use rand::RngExt;

use super::history::{Fault, Harm};
use super::round::Round;
use super::server_faults;
use super::topology::Topology;
use super::FaultClass;

/// One thing the nemesis does.
#[derive(Debug, Clone, Copy)]
pub enum Action {
    /// Close an instance's manager under its guards and put a new one in its place.
    Close(u8),
    /// `force_release` of a hot key from an operator's manager.
    ForceRelease(usize),
    /// `cleanup_all` from an operator's manager.
    Cleanup,
    /// `bidlock release --force` of a hot key.
    CliForce(usize),
    /// `cleanup_all` by an operator of another application whose prefix is `bid_done`:
    /// it must not touch this prefix's locks or completion records.
    ForeignCleanup,
    /// SIGSTOP a `bidlock run` holder (and its command) for this long.
    FreezeHolder(Duration),
    /// SIGSTOP redis-server for this long.
    PauseRedis(Duration),
    /// Proxy latency (per chunk) for a while.
    Latency(Duration, Duration),
    DropConnections,
    HalfClose,
    /// Proxy blackhole for this long.
    Partition(Duration),
    /// SIGKILL and restart without persistence.
    RestartEmpty,
    /// SIGKILL and restart losing the AOF's last second (appendfsync everysec).
    AofCrash,
    /// SAVE, keep writing for this long, SIGKILL, restore the old RDB, restart.
    RdbRollback(Duration),
    /// Cut the replica off, keep writing for this long, kill the master: the sentinels
    /// promote the replica that missed those writes.
    Failover(Duration),
}

#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub at: Duration,
    pub action: Action,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// A repeating fault of the class, and how long it lasts.
fn draw(class: FaultClass, rng: &mut StdRng) -> (Action, f64) {
    let d = |rng: &mut StdRng, lo: f64, hi: f64| rng.random_range(lo..hi);
    match class {
        FaultClass::ForcedRelease => match rng.random_range(0..7) {
            0 | 1 => (Action::ForceRelease(rng.random_range(0..3)), 0.0),
            2 | 3 => (Action::Cleanup, 0.0),
            4 | 5 => (Action::CliForce(rng.random_range(0..3)), 0.1),
            _ => (Action::ForeignCleanup, 0.1),
        },
        FaultClass::HolderFreeze => {
            let t = d(rng, 1.2, 5.0);
            (Action::FreezeHolder(secs(t)), t)
        }
        FaultClass::RedisPause => {
            let t = d(rng, 0.2, 2.5);
            (Action::PauseRedis(secs(t)), t)
        }
        FaultClass::Latency => {
            let (lat, t) = (d(rng, 0.02, 0.25), d(rng, 0.5, 2.0));
            (Action::Latency(secs(lat), secs(t)), t)
        }
        FaultClass::Drops if rng.random_bool(0.6) => (Action::DropConnections, 0.0),
        FaultClass::Drops => (Action::HalfClose, 0.0),
        FaultClass::Partition => {
            let t = d(rng, 0.2, 2.5);
            (Action::Partition(secs(t)), t)
        }
        FaultClass::RestartNoPersistence => (Action::RestartEmpty, 1.5),
        FaultClass::AofEverysecCrash => (Action::AofCrash, 1.5),
        FaultClass::RdbRollback => {
            let gap = d(rng, 0.8, 1.8);
            (Action::RdbRollback(secs(gap)), gap + 1.0)
        }
        FaultClass::LaggingFailover => {
            let lag = d(rng, 0.8, 1.5);
            (Action::Failover(secs(lag)), 30.0)
        }
        FaultClass::Calm => (Action::Close(0), 0.0),
    }
}

/// The round's plan: the class's faults, plus (in every class) a manager closed under
/// its guards now and then.
pub fn plan(class: FaultClass, len: Duration, instances: u8, rng: &mut StdRng) -> Vec<Step> {
    let total = len.as_secs_f64();
    let mut steps = Vec::new();
    if rng.random_bool(0.7) {
        let at = secs(rng.random_range(0.2..0.8) * total);
        steps.push(Step {
            at,
            action: Action::Close(rng.random_range(0..instances)),
        });
    }
    if class == FaultClass::Calm {
        return steps;
    }
    if class == FaultClass::ForcedRelease {
        steps.push(Step {
            at: secs(rng.random_range(0.5..0.7) * total),
            action: Action::ForeignCleanup,
        });
    }
    let mut t = rng.random_range(0.3..1.0);
    let room = if class.harm() == Harm::DataLoss {
        2.0
    } else {
        0.4
    };
    while t < total - room
        || steps
            .iter()
            .all(|s| matches!(s.action, Action::Close(_) | Action::ForeignCleanup))
    {
        let (action, dur) = draw(class, rng);
        steps.push(Step {
            at: secs(t),
            action,
        });
        t += dur + rng.random_range(0.2..1.0);
        if class.harm() == Harm::DataLoss {
            t += rng.random_range(0.8..2.0);
        }
    }
    steps.sort_by_key(|s| s.at);
    steps
}

/// Carries out the plan; returns when every step is done (faults healed).
pub async fn run(r: Arc<Round>, topo: Arc<Topology>, admin: BidLockManager, plan: Vec<Step>) {
    let (closes, faults): (Vec<Step>, Vec<Step>) = plan
        .into_iter()
        .partition(|s| matches!(s.action, Action::Close(_)));
    let r2 = r.clone();
    let closer = tokio::spawn(async move {
        for s in closes {
            tokio::time::sleep_until((r2.started + s.at).into()).await;
            if let Action::Close(i) = s.action {
                close(&r2, i).await;
            }
        }
    });
    for s in faults {
        tokio::time::sleep_until((r.started + s.at).into()).await;
        let f = act(&r, &topo, &admin, s.action).await;
        r.hist.fault(f);
    }
    let _ = closer.await;
}

async fn close(r: &Round, inst: u8) {
    let slot = &r.slots[usize::from(inst)];
    let held = r.reg.count_for(inst);
    let Some((start, end)) = slot.replace(r).await else {
        return r.hist.count("nemesis.close_skipped");
    };
    r.hist.fault(Fault {
        what: format!("close lib{inst}"),
        harm: Harm::Benign,
        start,
        end,
        keys: None,
        inst: Some(inst),
        effective: true,
        detail: format!("{held} leases registered at close"),
    });
}

fn fault(what: &str, harm: Harm, start: Instant, keys: Option<Vec<String>>) -> Fault {
    Fault {
        what: what.to_owned(),
        harm,
        start,
        end: Instant::now(),
        keys,
        inst: None,
        effective: false,
        detail: String::new(),
    }
}

async fn act(r: &Round, topo: &Arc<Topology>, admin: &BidLockManager, a: Action) -> Fault {
    match a {
        Action::ForceRelease(k) => {
            let k = target(r, k).await;
            let start = Instant::now();
            let res = admin.force_release(&r.hot[k]).await;
            let mut f = fault(
                "force_release",
                Harm::Operator,
                start,
                Some(vec![r.redis_key(&r.hot[k])]),
            );
            f.effective = matches!(res, Ok(true));
            f.detail = format!("{res:?}");
            f
        }
        Action::Cleanup => {
            let start = Instant::now();
            let res = cleanup(admin.clone()).await;
            let mut f = fault("cleanup_all", Harm::Operator, start, None);
            f.effective = matches!(res, Ok(n) if n > 0);
            f.detail = format!("{res:?}");
            f
        }
        Action::CliForce(k) => cli_force(r, topo, k).await,
        Action::ForeignCleanup => foreign_cleanup(topo).await,
        Action::FreezeHolder(d) => freeze_holder(r, d).await,
        other => server_faults::act(r, topo, other).await,
    }
}

/// The hot key to release by force: one held now by a lease renewed less often than a
/// forced release must be noticed, when one turns up within a second (the release then
/// tests loss notification, not the next renewal); else `planned`.
async fn target(r: &Round, planned: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(1);
    let hot: Vec<String> = r.hot.iter().map(|k| r.redis_key(k)).collect();
    while Instant::now() < deadline {
        if let Some(key) = r.reg.slowly_renewed_key(&hot) {
            if let Some(i) = r.hot.iter().position(|k| r.redis_key(k) == key) {
                return i;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    planned
}

async fn cli_force(r: &Round, topo: &Topology, k: usize) -> Fault {
    let key = &r.hot[target(r, k).await];
    let start = Instant::now();
    let out = tokio::process::Command::new(&r.bin)
        .args([
            "--redis-url",
            &topo.admin_url,
            "release",
            key.marketplace(),
            key.posting(),
            "--force",
        ])
        .env_remove("REDIS_URL")
        .output()
        .await;
    let mut f = fault(
        "bidlock release --force",
        Harm::Operator,
        start,
        Some(vec![r.redis_key(key)]),
    );
    let code = out.as_ref().ok().and_then(|o| o.status.code());
    f.effective = code == Some(0);
    f.detail = format!("exit {code:?}");
    f
}

/// The prefix of another application sharing the Redis. On today's code its cleanup
/// reaches `bid_lock`'s completion records (`bid_done:*`); a prefix that could alias
/// another's keys should be refused.
pub const FOREIGN_PREFIX: &str = "bid_done";

async fn foreign_cleanup(topo: &Topology) -> Fault {
    let start = Instant::now();
    let cfg = bidlock::Config::builder()
        .backend(bidlock::Backend::Redis)
        .redis_url(&topo.admin_url)
        .prefix(FOREIGN_PREFIX)
        .build();
    let mut f = fault(
        &format!("cleanup_all with prefix {FOREIGN_PREFIX}"),
        Harm::Benign,
        start,
        None,
    );
    let m = match cfg {
        Ok(cfg) => BidLockManager::new(cfg).await,
        Err(e) => Err(e.into()),
    };
    match m {
        Ok(m) => {
            let res = cleanup(m.clone()).await;
            m.close().await;
            f.effective = matches!(res, Ok(n) if n > 0);
            f.detail = format!("removed {res:?} keys");
        }
        Err(e) => f.detail = format!("refused: {e}"),
    }
    f.end = Instant::now();
    f
}

/// Freezes a `bidlock run` that holds its lock, with its command, past its ttl.
async fn freeze_holder(r: &Round, d: Duration) -> Fault {
    let start = Instant::now();
    let mut found = None;
    while found.is_none() && start.elapsed() < Duration::from_millis(1500) {
        found = r.board.holding();
        if found.is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let Some((n, p)) = found else {
        let mut f = fault("SIGSTOP holder", Harm::Freeze, start, None);
        f.detail = "no process holder held a lock".into();
        return f;
    };
    let start = Instant::now();
    signal_with_children(p.pid, Signal::SIGSTOP);
    let mut stopped = false;
    for _ in 0..50 {
        stopped = all_stopped(p.pid);
        if stopped {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(d).await;
    signal_with_children(p.pid, Signal::SIGCONT);
    let mut f = fault(
        "SIGSTOP holder",
        Harm::Freeze,
        start,
        Some(vec![p.key.clone()]),
    );
    f.effective = stopped;
    f.detail = format!("proc{n} (pid {}) stopped for {d:?}", p.pid);
    f
}

/// `cleanup_all` on a thread of its own: its future (an async closure over SCAN
/// batches) is not provably `Send` for every lifetime, so it cannot be awaited inside a
/// spawned task that borrows the manager.
async fn cleanup(admin: BidLockManager) -> Result<u64, bidlock::Error> {
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(admin.cleanup_all()))
        .await
        .unwrap_or_else(|e| panic!("cleanup task: {e}"))
}
