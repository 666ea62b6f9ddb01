//! The round's records, on one monotonic clock: what every client did and was told, what
//! the nemesis did (and whether it took effect), and counters. The checks read only this
//! and the observer's log.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Who acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Who {
    /// A task of a library instance (a `BidLockManager`, as a separate process would be).
    Lib { inst: u8, task: u8 },
    /// A `bidlock run` process.
    Proc { n: u32 },
    /// The calm pass after the faults that makes every posting run.
    Sweep,
}

impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Who::Lib { inst, task } => write!(f, "lib{inst}.{task}"),
            Who::Proc { n } => write!(f, "proc{n}"),
            Who::Sweep => f.write_str("sweep"),
        }
    }
}

/// What kind of critical section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `acquire` → work (watching `lost()`) → release / drop.
    Hold,
    /// The closure of `bid_once` (does not watch `lost()`: a bid takes the time it takes).
    Bid,
    /// The command of a `bidlock run` (stopped by `run` when the lock is lost).
    Proc,
}

/// One critical section: from the moment the client was told "held" until it let go.
#[derive(Debug, Clone)]
pub struct Section {
    pub id: u64,
    pub who: Who,
    pub kind: Kind,
    /// The lock's Redis key.
    pub key: String,
    pub holder: String,
    /// The holder id was given by the caller (not generated per acquisition).
    pub given: bool,
    pub token: u64,
    pub ttl: Duration,
    /// The ttl renewals followed at the end (the last extend's, else `ttl`): a loss
    /// is noticed at the next renewal, a third of this.
    pub renew_ttl: Duration,
    pub renew: bool,
    /// When the client asked (the acquire call, or the process spawn).
    pub called_at: Instant,
    /// When the client was told "held".
    pub acquired_at: Instant,
    /// `expires_at()` right after the acquire returned.
    pub expires_at_start: Option<Instant>,
    /// When the client stopped working under the lock (before letting go).
    pub work_end: Instant,
    /// `expires_at()` when the work ended.
    pub final_expires: Option<Instant>,
    /// When `lost()` resolved, if it did while the section ran.
    pub lost_at: Option<Instant>,
    /// `is_lost()` when the work ended.
    pub lost_flag_at_end: bool,
    /// What happened meanwhile (extends, their replies), for the failure history.
    pub notes: Vec<(Instant, String)>,
    /// How the section ended (`release Ok(true)`, `drop`, `closure Ok`, exit code...).
    pub ending: String,
}

impl Section {
    /// Until when the client was entitled to believe it held the lock: the end of its
    /// work, or earlier when its lease ran out or was reported lost.
    pub fn valid_end(&self) -> Instant {
        let mut end = self.work_end;
        if let Some(e) = self.final_expires {
            end = end.min(e);
        }
        if let Some(l) = self.lost_at {
            end = end.min(l);
        }
        end.max(self.acquired_at)
    }
}

/// What `bid_once` (or `run --once`) told its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The bid ran and its completion is recorded.
    Placed,
    /// The bid ran and its record is written; the caller was told the lease had lapsed.
    PlacedAfterLoss,
    /// The bid ran but no record was written; `lost` when the reason given was a lost
    /// lock rather than an unreachable backend.
    Unrecorded { lost: bool, error: String },
    /// The closure failed: nothing recorded.
    Failed,
    /// Not run: already done, not acquired, backend error, closed.
    NotRun { why: String },
}

/// One `bid_once` call (or `run --once` process) on a posting.
#[derive(Debug, Clone)]
pub struct BidRun {
    pub who: Who,
    /// The posting's lock key.
    pub key: String,
    pub returned_at: Instant,
    /// When the bid itself ran (closure start, end) and whether it succeeded.
    pub ran: Option<(Instant, Instant, bool)>,
    pub verdict: Verdict,
    pub section: Option<u64>,
}

/// How a fault relates to lock safety.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Harm {
    /// Nothing Redis holds is lost; leases must stay exact.
    Benign,
    /// Redis loses or rolls back data (restart without persistence, AOF tail, RDB
    /// restore, failover to a lagging replica): a second holder may start before the
    /// first learns at its next renewal; tokens must still increase.
    DataLoss,
    /// An operator deletes locks (`force_release`, `cleanup_all`, `release --force`):
    /// the holder must notice within [`super::checks::FORCED_NOTICE`].
    Operator,
    /// A holder process is frozen: its command may run on after its lease when it
    /// thaws (only fencing protects then).
    Freeze,
}

/// One injected fault (or a client-side event such as a manager closed under its guards).
#[derive(Debug, Clone)]
pub struct Fault {
    pub what: String,
    pub harm: Harm,
    pub start: Instant,
    /// When it was healed (= start for instantaneous faults).
    pub end: Instant,
    /// When it acted on Redis' data: the server down and back (data loss), or the
    /// operator's command running (`None`: it acts on no data).
    pub hit: Option<(Instant, Instant)>,
    /// The lock keys it concerns (`None`: all).
    pub keys: Option<Vec<String>>,
    /// The library instance it concerns (a manager closed under its guards).
    pub inst: Option<u8>,
    /// The library instance whose own link to Redis it slowed or stalled (`None`: every
    /// client's, or no link).
    pub link: Option<u8>,
    /// The process holder it froze.
    pub proc_n: Option<u32>,
    /// Whether it was shown to take effect (a command failed, a process was stopped...).
    pub effective: bool,
    pub detail: String,
}

impl Fault {
    /// A fault that began at `start` and ends now, not yet shown to take effect.
    pub fn new(what: &str, harm: Harm, start: Instant) -> Fault {
        Fault {
            what: what.to_owned(),
            harm,
            start,
            end: Instant::now(),
            hit: None,
            keys: None,
            inst: None,
            link: None,
            proc_n: None,
            effective: false,
            detail: String::new(),
        }
    }

    pub fn touches(&self, key: &str) -> bool {
        self.keys
            .as_ref()
            .is_none_or(|k| k.iter().any(|x| x == key))
    }

    /// Whether it acted on Redis' data at `at` (give or take `slack` after).
    pub fn hit_at(&self, at: Instant, before: Duration, after: Duration) -> bool {
        self.hit
            .is_some_and(|(a, b)| at + before >= a && at <= b + after)
    }
}

/// A pair of clock readings: converts the wall-clock stamps of process holders (bash's
/// `$EPOCHREALTIME`) to the monotonic clock, re-anchored as the run goes so a slewing
/// wall clock cannot drift far.
#[derive(Debug, Default)]
pub struct WallClock {
    anchors: Mutex<Vec<(u64, Instant)>>,
}

pub fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl WallClock {
    pub fn anchor(&self) {
        let (w, m) = (wall_us(), Instant::now());
        let mut a = self.anchors.lock().unwrap();
        if a.last()
            .is_none_or(|(_, last)| m.duration_since(*last) > Duration::from_millis(500))
        {
            a.push((w, m));
        }
    }

    /// The monotonic instant of a wall-clock stamp in µs since the epoch.
    pub fn to_instant(&self, wall: u64) -> Option<Instant> {
        let a = self.anchors.lock().unwrap();
        let i = a.partition_point(|(w, _)| *w <= wall).saturating_sub(1);
        let (w, m) = *a.get(i)?;
        if wall >= w {
            m.checked_add(Duration::from_micros(wall - w))
        } else {
            m.checked_sub(Duration::from_micros(w - wall))
        }
    }
}

/// Everything one round recorded.
#[derive(Debug, Default)]
pub struct History {
    next_id: AtomicU64,
    pub sections: Mutex<Vec<Section>>,
    pub bids: Mutex<Vec<BidRun>>,
    pub faults: Mutex<Vec<Fault>>,
    pub counts: Mutex<BTreeMap<String, u64>>,
    pub errors: Mutex<Vec<(Instant, String)>>,
    /// Holder-id prefixes of the library instances' generated ids (`host:pid:random`),
    /// with the instance each manager served.
    pub holder_bases: Mutex<Vec<(u8, String)>>,
    pub clock: WallClock,
}

impl History {
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn count(&self, what: &str) {
        *self
            .counts
            .lock()
            .unwrap()
            .entry(what.to_owned())
            .or_default() += 1;
    }

    pub fn get(&self, what: &str) -> u64 {
        self.counts.lock().unwrap().get(what).copied().unwrap_or(0)
    }

    /// Counts a typed error from an operation and keeps the first few texts.
    pub fn error(&self, op: &str, e: &dyn std::fmt::Display) {
        self.count(&format!("{op}.error"));
        self.count("errors");
        let mut errs = self.errors.lock().unwrap();
        if errs.len() < 20 {
            errs.push((Instant::now(), format!("{op}: {e}")));
        }
    }

    pub fn section(&self, s: Section) {
        self.sections.lock().unwrap().push(s);
    }

    pub fn bid(&self, b: BidRun) {
        self.bids.lock().unwrap().push(b);
    }

    pub fn fault(&self, f: Fault) {
        self.faults.lock().unwrap().push(f);
    }
}
