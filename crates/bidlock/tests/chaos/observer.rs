//! The observer: a thread (`watch.rs`) that reads every lock key (GET + PTTL) about once
//! a millisecond straight from the server, bypassing proxies, and records who Redis says
//! holds what; every few readings it also reads the handoff keys (wait marker, queue,
//! waiters and the last grant). At each reading it asks every live lease whose holder
//! Redis no longer shows whether it still claims the lock (`!is_lost()` and
//! `expires_at()` in the future): a client told "held" after the server stopped holding
//! it for that client is caught in the act, on one monotonic clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bidlock::{Lease, LockKey};
use bidlock_testkit::keys::Names as KeyNames;

use super::history::{History, Who};
use super::watch::Watch;

/// A lease some client holds right now, as the client registered it.
pub(super) struct Live {
    who: Who,
    /// Renewed less often than a forced release must be noticed (ttl/3 > 1 s).
    slow_renewal: bool,
    /// Until when the client means to hold it.
    until: Option<Instant>,
    pub(super) key: String,
    pub(super) holder: String,
    pub(super) lease: Lease,
    pub(super) registered_at: Instant,
    lost_at: Arc<Mutex<Option<Instant>>>,
    watcher: tokio::task::JoinHandle<()>,
}

/// The leases clients hold now. A client registers right after it is told "held" and
/// unregisters before it lets go (release, drop, completion), so a lease here is one the
/// client believes it holds.
#[derive(Default)]
pub struct Registry {
    pub(super) live: Mutex<HashMap<u64, Live>>,
}

impl Registry {
    /// Registers `lease` of section `id`; a watcher notes when `lost()` resolves (unless
    /// [`Registry::note_losses_on`] saw the loss first).
    pub fn register(&self, id: u64, who: Who, key: &str, lease: &Lease, ttl: Duration) {
        let lost_at = Arc::new(Mutex::new(None));
        let (l2, la) = (lease.clone(), lost_at.clone());
        let watcher = tokio::spawn(async move {
            l2.lost().await;
            la.lock().unwrap().get_or_insert(Instant::now());
        });
        let live = Live {
            who,
            slow_renewal: ttl > Duration::from_secs(3),
            until: None,
            key: key.to_owned(),
            holder: lease.holder().as_str().to_owned(),
            lease: lease.clone(),
            registered_at: Instant::now(),
            lost_at,
            watcher,
        };
        self.live.lock().unwrap().insert(id, live);
    }

    /// A section on `key` is about to record that it was told "held" (call it before
    /// taking that time): every lease registered on `key` that says lost now was lost
    /// before, and its loss is stamped now if its watcher has not stamped it yet. The
    /// watcher is a task of its own: it may wake from `lost()` after the new section has
    /// recorded "held", though the loss was marked before (within one manager, the
    /// library marks a lease lost when the store gives the key to another of its
    /// sections, before that section's acquire returns), and the checker would see the
    /// two valid at once (seed 1119661168, round 62, forced-release: "+0 ms").
    pub fn note_losses_on(&self, key: &str) {
        let now = Instant::now();
        let live = self.live.lock().unwrap();
        for l in live.values().filter(|l| l.key == key && l.lease.is_lost()) {
            l.lost_at.lock().unwrap().get_or_insert(now);
        }
    }

    /// The key of a lease held now whose renewals come less often than a forced release
    /// must be noticed: where a forced release tests loss notification, not renewal.
    pub fn slowly_renewed_key(&self, among: &[String]) -> Option<String> {
        let later = Instant::now() + Duration::from_millis(1500);
        let live = self.live.lock().unwrap();
        live.values()
            .find(|l| {
                l.slow_renewal && l.until.is_some_and(|u| u > later) && among.contains(&l.key)
            })
            .map(|l| l.key.clone())
    }

    /// Section `id` means to hold its lock until `until`.
    pub fn holds_until(&self, id: u64, until: Instant) {
        if let Some(l) = self.live.lock().unwrap().get_mut(&id) {
            l.until = Some(until);
        }
    }

    /// How many leases instance `inst` holds now.
    pub fn count_for(&self, inst: u8) -> usize {
        let live = self.live.lock().unwrap();
        live.values()
            .filter(|l| matches!(l.who, Who::Lib { inst: i, .. } if i == inst))
            .count()
    }

    /// The client lets go of section `id`; returns when `lost()` had resolved.
    pub fn unregister(&self, id: u64) -> Option<Instant> {
        let live = self.live.lock().unwrap().remove(&id)?;
        live.watcher.abort();
        let at = *live.lost_at.lock().unwrap();
        at
    }
}

/// One holder's time in a key, as the observer saw it.
#[derive(Debug, Clone)]
pub struct Tenure {
    pub key: String,
    pub holder: String,
    pub first_seen: Instant,
    pub last_seen: Instant,
    /// PTTL at `last_seen`, in ms.
    pub last_pttl_ms: i64,
    /// The first reading that showed the key free or held by someone else.
    pub gone_seen: Option<Instant>,
    /// The token of the grant that handed this holder the lock (the waiters hash's last
    /// grant named it while it held): a handover, not a try of its own.
    pub granted: Option<u64>,
    /// The latest expiry the readings showed (reading time + PTTL).
    pub peak_expiry: Option<Instant>,
    /// Readings whose expiry was more than [`EXPIRY_DROP`] earlier than an earlier
    /// reading's: (the reading before, the reading, by how much). A shortening extend, or
    /// data loss that rolled an acknowledged extend back.
    pub expiry_drops: Vec<(Instant, Instant, Duration)>,
}

/// An expiry that moves back by more than this between readings moved back for real
/// (a reading's own delay is a few ms).
pub const EXPIRY_DROP: Duration = Duration::from_millis(30);

impl Tenure {
    /// When the server's expiry would have ended it, as of the last reading.
    pub fn predicted_expiry(&self) -> Option<Instant> {
        u64::try_from(self.last_pttl_ms)
            .ok()
            .map(|ms| self.last_seen + Duration::from_millis(ms))
    }

    /// It ended by its ttl running out (not deleted or handed over before).
    pub fn expired(&self) -> bool {
        match (self.gone_seen, self.predicted_expiry()) {
            (Some(g), Some(pe)) => pe <= g + Duration::from_millis(2),
            _ => false,
        }
    }
}

/// A grant the waiters hash recorded (its `''` field): the lock handed to `holder`.
#[derive(Debug, Clone)]
pub struct Grant {
    pub key: String,
    pub holder: String,
    pub token: u64,
    /// The first reading that showed it.
    pub seen_at: Instant,
}

/// A lease that claimed to hold its lock after Redis stopped holding it for that holder.
#[derive(Debug, Clone)]
pub struct Claim {
    pub section: u64,
    pub key: String,
    pub holder: String,
    /// The reading that first showed the key not held by this holder.
    pub gone_seen: Instant,
    /// The holder's last tenure of this key, when the observer saw one.
    pub tenure: Option<Tenure>,
    /// Who Redis showed instead.
    pub now_held_by: Option<String>,
    pub first_claim: Instant,
    pub last_claim: Instant,
    /// The lease's `expires_at()` at the first claim.
    pub expires_at: Option<Instant>,
}

/// What the observer saw in one round.
#[derive(Debug, Default)]
pub struct ObserverLog {
    pub tenures: Vec<Tenure>,
    pub claims: Vec<Claim>,
    pub polls: u64,
    pub failed_polls: u64,
    /// The longest time between two successful readings while the server answered
    /// (outages excluded), in µs.
    pub max_gap_us: u64,
    /// Grants as the waiters hashes recorded them.
    pub grants: Vec<Grant>,
    /// Handoff keys (wait marker, queue, waiters) seen without a ttl: name, first seen.
    pub no_ttl: Vec<(String, Instant)>,
    /// Readings of the handoff keys.
    pub handoff_polls: u64,
}

/// The running observer.
pub struct Observer {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<ObserverLog>,
}

/// The Redis names of one watched posting.
#[derive(Debug, Clone)]
pub struct Names {
    pub lock: String,
    pub marker: String,
    pub queue: String,
    pub waiters: String,
}

impl Names {
    pub fn of(keys: &KeyNames, k: &LockKey) -> Names {
        Names {
            lock: keys.lock(k),
            marker: keys.wait(k),
            queue: keys.queue(k),
            waiters: keys.waiters(k),
        }
    }
}

/// Starts watching `keys` on the server at `127.0.0.1:port` (the port may change: a
/// failover moves it).
pub fn start(
    port: Arc<AtomicU16>,
    keys: Vec<Names>,
    reg: Arc<Registry>,
    hist: Arc<History>,
) -> Observer {
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut w = Watch::new(keys, reg, hist);
        w.run(&port, &s2);
        w.finish()
    });
    Observer { stop, handle }
}

impl Observer {
    pub fn stop(self) -> ObserverLog {
        self.stop.store(true, Ordering::Release);
        self.handle.join().expect("observer thread")
    }
}
