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
use super::topology::Topology;
use super::{link_faults, operator, server_faults, FaultClass};

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
    /// `release(key, holder)` of the holder Redis shows for a hot key, without force.
    ReleaseHolder(usize),
    /// `bidlock release M P --holder X` of the holder Redis shows, without force.
    CliReleaseHolder(usize),
    /// Instance `inst`'s links get `delay` each way for `d`.
    SlowLink {
        inst: u8,
        delay: Duration,
        d: Duration,
    },
    /// Instance `inst`'s subscriber link stalls towards it for `stall`, its commands
    /// reach Redis `cmd_delay` late meanwhile.
    HoldGrants {
        inst: u8,
        stall: Duration,
        cmd_delay: Duration,
    },
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
fn draw(class: FaultClass, instances: u8, rng: &mut StdRng) -> (Action, f64) {
    let d = |rng: &mut StdRng, lo: f64, hi: f64| rng.random_range(lo..hi);
    match class {
        FaultClass::HolderRelease => match rng.random_range(0..5) {
            0 | 1 => (Action::ReleaseHolder(rng.random_range(0..4)), 0.1),
            2 | 3 => (Action::CliReleaseHolder(rng.random_range(0..4)), 0.1),
            _ => (Action::ForceRelease(rng.random_range(0..4)), 0.1),
        },
        FaultClass::BatchLatency => {
            // Below half the response timeout (500 ms): a batch's answer still arrives.
            let (delay, t) = (d(rng, 0.15, 0.245), d(rng, 1.5, 4.0));
            let inst = rng.random_range(0..instances);
            (
                Action::SlowLink {
                    inst,
                    delay: secs(delay),
                    d: secs(t),
                },
                t,
            )
        }
        FaultClass::GrantHoldBack => {
            let stall = d(rng, 0.5, 3.0);
            let cmd_delay = if rng.random_bool(0.7) {
                d(rng, 0.1, 0.48)
            } else {
                0.0
            };
            let inst = rng.random_range(0..instances);
            (
                Action::HoldGrants {
                    inst,
                    stall: secs(stall),
                    cmd_delay: secs(cmd_delay),
                },
                stall,
            )
        }
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
        let (action, dur) = draw(class, instances, rng);
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
    let mut f = Fault::new(&format!("close lib{inst}"), Harm::Benign, start);
    f.end = end;
    f.inst = Some(inst);
    f.effective = true;
    f.detail = format!("{held} leases registered at close");
    r.hist.fault(f);
}

async fn act(r: &Round, topo: &Arc<Topology>, admin: &BidLockManager, a: Action) -> Fault {
    match a {
        Action::ForceRelease(k) => operator::force_release(r, admin, k).await,
        Action::Cleanup => operator::cleanup_all(admin).await,
        Action::CliForce(k) => operator::cli_force(r, topo, k).await,
        Action::ForeignCleanup => operator::foreign_cleanup(topo).await,
        Action::ReleaseHolder(k) => operator::release_holder(r, topo, admin, k, false).await,
        Action::CliReleaseHolder(k) => operator::release_holder(r, topo, admin, k, true).await,
        Action::FreezeHolder(d) => freeze_holder(r, d).await,
        Action::SlowLink { inst, delay, d } => link_faults::slow_link(topo, inst, delay, d).await,
        Action::HoldGrants {
            inst,
            stall,
            cmd_delay,
        } => link_faults::hold_grants(topo, inst, stall, cmd_delay).await,
        other => server_faults::act(r, topo, other).await,
    }
}

/// Freezes a `bidlock run` that holds its lock, with its command, past its ttl. Waits up
/// to 5 s for one to hold: early in a round the process drivers are still spawning their
/// first `bidlock run` (a debug build on a busy CI machine once took over 1.5 s, and the
/// round then had no effective fault, which the checker rightly reports).
async fn freeze_holder(r: &Round, d: Duration) -> Fault {
    let start = Instant::now();
    let mut found = None;
    while found.is_none() && start.elapsed() < Duration::from_secs(5) {
        found = r.board.holding();
        if found.is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let Some((n, p)) = found else {
        let mut f = Fault::new("SIGSTOP holder", Harm::Freeze, start);
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
    let mut f = Fault::new("SIGSTOP holder", Harm::Freeze, start);
    f.keys = Some(vec![p.key.clone()]);
    f.proc_n = Some(n);
    f.effective = stopped;
    f.detail = format!("proc{n} (pid {}) stopped for {d:?}", p.pid);
    f
}
