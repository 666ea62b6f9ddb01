//! Client behaviours that some classes add to every instance, to reach what they aim at.
//!
//! `batch-latency-cancel`: fillers that keep a manager's tries and releases in flight on
//! keys of their own (a call goes alone only while fewer than 4 of its kind are in
//! flight, so behind a slow link the rest ride in batches), cancellers whose acquires of
//! a few keys ride in those batches and are cancelled at any point up to well after Redis
//! ran them (most with a shared given holder id and a short ttl), and holders of those
//! given ids with long ttls on the same keys: the locks a background release of a given
//! id would remove.
//!
//! `grant-hold-back`: waiters with generated ids and short ttls (grant ttls of 300-600
//! ms) that queue for a handover on the hot keys.
//!
//! `holder-release`: a lone holder on a key of its own, renewed every 1.5 s, that an
//! operator releases by holder id while nobody waits for it.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use bidlock::LockKey;

use super::clients::{acquire_cancelled_after, hold_with, Draw};
use super::history::Who;
use super::round::Round;
use super::FaultClass;

/// Extra tasks per instance, by kind (numbered after the ordinary tasks).
const FILLERS: u8 = 10;
const CANCELLERS: u8 = 4;
const GIVEN_HOLDERS: u8 = 2;
const WAITERS: u8 = 3;
/// Task numbers of the extra tasks start here.
const FIRST: u8 = 10;

/// Spawns the class's extra tasks on every instance (none for most classes).
pub fn spawn(round: &Arc<Round>) -> Vec<tokio::task::JoinHandle<()>> {
    let kinds: Vec<(u8, Kind)> = match round.class {
        FaultClass::BatchLatency => vec![
            (FILLERS, Kind::Filler),
            (CANCELLERS, Kind::Canceller),
            (GIVEN_HOLDERS, Kind::GivenHolder),
        ],
        FaultClass::GrantHoldBack => vec![(WAITERS, Kind::Waiter)],
        FaultClass::HolderRelease => vec![(1, Kind::LoneHolder)],
        _ => return Vec::new(),
    };
    let mut v = Vec::new();
    for slot in &round.slots {
        // A lone holder is alone on its key: one instance runs it.
        if round.class == FaultClass::HolderRelease && slot.inst != 1 {
            continue;
        }
        let mut task = FIRST;
        for &(n, kind) in &kinds {
            for _ in 0..n {
                let (r, inst) = (round.clone(), slot.inst);
                let who = Who::Lib { inst, task };
                let seed = round.seed ^ 0x5eed ^ (u64::from(inst) << 40) ^ (u64::from(task) << 32);
                v.push(tokio::spawn(async move {
                    let mut rng = StdRng::seed_from_u64(seed);
                    run(&r, kind, who, &mut rng).await;
                }));
                task += 1;
            }
        }
    }
    v
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Filler,
    Canceller,
    GivenHolder,
    Waiter,
    LoneHolder,
}

async fn run(r: &Round, kind: Kind, who: Who, rng: &mut StdRng) {
    let Who::Lib { inst, .. } = who else { return };
    while std::time::Instant::now() < r.stop_at {
        let m = r.slots[usize::from(inst)].get();
        match kind {
            Kind::Filler => {
                // A key of its own: never waits, so its calls are always in flight.
                let key = LockKey::new("chaos", format!("r{}-fill{inst}-{who}", r.index))
                    .expect("filler key");
                let d = Draw {
                    key,
                    ttl: Duration::from_millis(rng.random_range(1000..3000)),
                    renew: true,
                    holder: None,
                    wait: Duration::from_millis(rng.random_range(0..300)),
                };
                let hold = Duration::from_millis(rng.random_range(0..30));
                hold_with(r, &m, who, &d, hold, None, rng.random_bool(0.85)).await;
            }
            Kind::Canceller => {
                let mut d = Draw::new(r, &r.hot, rng);
                let mut release = rng.random_bool(0.5);
                if rng.random_bool(0.8) {
                    // A given id's key: a short ttl, and released when it came through
                    // (a given id left to its ttl would keep the key from the others).
                    d.key = r.extra_keys[rng.random_range(0..r.extra_keys.len())].clone();
                    d.holder = Some(r.given[rng.random_range(0..r.given.len())].clone());
                    d.ttl = Duration::from_millis([300, 300, 450][rng.random_range(0..3)]);
                    release = true;
                }
                let cancel = Duration::from_millis(rng.random_range(0..1200));
                acquire_cancelled_after(r, &m, who, &d, cancel, release).await;
            }
            Kind::GivenHolder => {
                let d = Draw {
                    key: r.extra_keys[rng.random_range(0..r.extra_keys.len())].clone(),
                    ttl: Duration::from_millis(rng.random_range(3000..4500)),
                    renew: true,
                    holder: Some(r.given[rng.random_range(0..r.given.len())].clone()),
                    wait: Duration::from_millis(rng.random_range(500..2000)),
                };
                // Always released: a dropped guard of a given id keeps the key its ttl.
                let hold = Duration::from_millis(rng.random_range(20..300));
                hold_with(r, &m, who, &d, hold, None, true).await;
                // Leave the key free a while: a canceller's try may take it then.
                tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
            }
            Kind::LoneHolder => {
                // Renewed every 1.5 s, nobody waiting: a release of this key publishes
                // nothing unless every removal does (notices; issue 20's hole 4).
                let d = Draw {
                    key: r.extra_keys[0].clone(),
                    ttl: Duration::from_millis(4500),
                    renew: true,
                    holder: rng.random_bool(0.3).then(|| r.given[0].clone()),
                    wait: Duration::from_secs(1),
                };
                let hold = Duration::from_millis(rng.random_range(1500..3500));
                hold_with(r, &m, who, &d, hold, None, true).await;
            }
            Kind::Waiter => {
                let d = Draw {
                    key: r.hot[rng.random_range(0..r.hot.len())].clone(),
                    ttl: Duration::from_millis([300, 300, 450, 600][rng.random_range(0..4)]),
                    renew: rng.random_bool(0.8),
                    holder: None,
                    wait: Duration::from_millis(rng.random_range(1000..3000)),
                };
                let hold = Duration::from_millis(rng.random_range(10..150));
                hold_with(r, &m, who, &d, hold, None, rng.random_bool(0.85)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..20))).await;
    }
}
