//! A contention workload that records every critical section, and a checker that proves
//! no two sections on one key overlapped while both leases were valid, that fencing
//! tokens increase in holding order, and that `lost()` itself (not only `is_lost()`,
//! which turns true at the deadline without telling anyone) resolved no later than the
//! lease's end plus [`LOSS_SLACK`]. Figures are written for RELIABILITY.md.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bidlock::{AcquireOptions, BidLockManager, LockKey};

/// How late `lost()` may resolve after the lease's end: the keeper's timer on a loaded
/// machine.
pub const LOSS_SLACK: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct Section {
    pub key: usize,
    pub instance: usize,
    pub start: Instant,
    pub end: Instant,
    /// `expires_at()` when the section ended (its last confirmed lease).
    pub valid_until: Option<Instant>,
    pub token: u64,
    /// When `lost()` resolved during the section.
    pub lost_at: Option<Instant>,
    /// `is_lost()` at the end (true at the deadline even when nobody was told).
    pub lost_flag: bool,
}

impl Section {
    /// When the section stopped counting as protected: its end, or earlier when its
    /// lease ran out or was reported lost first.
    pub fn effective_end(&self) -> Instant {
        let mut end = self.end;
        if let Some(v) = self.valid_until {
            end = end.min(v);
        }
        if let Some(l) = self.lost_at {
            end = end.min(l);
        }
        end
    }

    /// The section ran past its lease (the work went on after `valid_until`).
    pub fn outlived_lease(&self) -> Option<Duration> {
        let v = self.valid_until?;
        (self.end > v + LOSS_SLACK).then(|| self.end - v)
    }

    /// The lease ended while the section ran, and `lost()` had not said so by the lease's
    /// end plus the slack (or at all).
    pub fn loss_reported_late(&self) -> bool {
        let Some(v) = self.valid_until else {
            return false;
        };
        let due = v + LOSS_SLACK;
        self.end > due && self.lost_at.is_none_or(|l| l > due)
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Outcomes {
    pub sections: u64,
    pub not_acquired: u64,
    pub errors: u64,
    /// Sections whose holder was told by `lost()`.
    pub lost: u64,
    /// Sections that ended with `is_lost()` true but `lost()` never resolved.
    pub lost_flag_only: u64,
    pub late_loss_reports: u64,
    pub max_loss_report_delay_ms: Option<u64>,
    pub kept_working_after_lease: u64,
    pub max_work_past_lease_ms: Option<u64>,
    pub unsafe_overlaps: u64,
    pub token_order_violations: u64,
    pub recovery_ms: Option<u64>,
    pub first_error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Workload {
    pub keys: usize,
    pub tasks_per_instance: usize,
    pub duration: Duration,
    pub hold: Duration,
    /// Every 6th section of a task holds this long (past the ttl, kept by renewal).
    pub long_hold: Duration,
    pub ttl: Duration,
    pub wait: Duration,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            keys: 4,
            tasks_per_instance: 4,
            duration: Duration::from_secs(5),
            hold: Duration::from_millis(15),
            long_hold: Duration::from_secs(3),
            ttl: Duration::from_secs(1),
            wait: Duration::from_millis(500),
        }
    }
}

#[derive(Default)]
pub struct Recorder {
    pub sections: Mutex<Vec<Section>>,
    pub outcomes: Mutex<Outcomes>,
    /// Sections started so far: a readiness signal for the fault injector.
    pub started: AtomicU64,
    /// Long sections (kept by renewal past the ttl) in progress now.
    pub long_holding: AtomicU64,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::default()
    }

    /// Waits until at least `n` sections have started and a long one is in progress (so
    /// a fault injected now lands on a lock held across it), for at most `limit`.
    pub async fn running(&self, n: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.started.load(Ordering::Acquire) < n
            || self.long_holding.load(Ordering::Acquire) == 0
        {
            assert!(
                Instant::now() < deadline,
                "the workload did not get going within {limit:?}: {} sections started",
                self.started.load(Ordering::Acquire)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until `n` more sections started than `since`, for at most `limit`.
    pub async fn progressed(&self, since: u64, n: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.started.load(Ordering::Acquire) < since + n {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

/// Runs the workload on `managers` (one per instance) until `w.duration` has passed.
pub async fn contend(managers: Vec<BidLockManager>, w: Workload) -> Arc<Recorder> {
    let rec = Recorder::new();
    contend_into(rec.clone(), managers, w).await;
    rec
}

/// As [`contend`], recording into `rec` (which the caller watches for readiness).
pub async fn contend_into(rec: Arc<Recorder>, managers: Vec<BidLockManager>, w: Workload) {
    let deadline = Instant::now() + w.duration;
    let mut tasks = Vec::new();
    for (instance, m) in managers.into_iter().enumerate() {
        for t in 0..w.tasks_per_instance {
            let (m, rec, w) = (m.clone(), rec.clone(), w.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = t;
                let mut held = 0usize;
                while Instant::now() < deadline {
                    i += 1;
                    held += usize::from(one(&rec, &m, &w, instance, i, held + t).await);
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// One acquire and, when it succeeds, one section. Returns whether it held.
async fn one(
    rec: &Recorder,
    m: &BidLockManager,
    w: &Workload,
    instance: usize,
    i: usize,
    // Sections held so far, offset by task: with a fair queue the tasks move in step, and
    // all long holds at once would measure the workload, not the fault.
    held: usize,
) -> bool {
    let key_ix = i % w.keys;
    let key = LockKey::new("rel", format!("hot{key_ix}")).unwrap();
    let opts = AcquireOptions::new().timeout(w.wait).ttl(w.ttl);
    match m.acquire(&key, &opts).await {
        Ok(g) => {
            let start = Instant::now();
            rec.started.fetch_add(1, Ordering::AcqRel);
            let long = held % 6 == 5;
            let hold = if long { w.long_hold } else { w.hold };
            rec.long_holding
                .fetch_add(u64::from(long), Ordering::AcqRel);
            let lost_at = tokio::select! {
                _ = tokio::time::sleep(hold) => None,
                _ = g.lost() => Some(Instant::now()),
            };
            let s = Section {
                key: key_ix,
                instance,
                start,
                end: Instant::now(),
                valid_until: g.lease().expires_at(),
                token: g.fencing_token().get(),
                lost_at,
                lost_flag: g.is_lost(),
            };
            rec.long_holding
                .fetch_sub(u64::from(long), Ordering::AcqRel);
            // Bounded: a release against a dead server must not hang the run.
            let _ = tokio::time::timeout(Duration::from_secs(2), g.release()).await;
            rec.sections.lock().unwrap().push(s);
            true
        }
        Err(e) => {
            {
                let mut o = rec.outcomes.lock().unwrap();
                if e.is_not_acquired() {
                    o.not_acquired += 1;
                } else {
                    o.errors += 1;
                    o.first_error.get_or_insert_with(|| e.to_string());
                }
            }
            if !e.is_not_acquired() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            false
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Checks the recorded sections; `healed_at` is when the fault ended (for recovery time).
pub fn check(rec: &Recorder, healed_at: Option<Instant>) -> Outcomes {
    let mut sections = rec.sections.lock().unwrap().clone();
    let mut o = rec.outcomes.lock().unwrap().clone();
    o.sections = sections.len() as u64;
    o.lost = sections.iter().filter(|s| s.lost_at.is_some()).count() as u64;
    o.lost_flag_only = sections
        .iter()
        .filter(|s| s.lost_flag && s.lost_at.is_none())
        .count() as u64;
    o.late_loss_reports = sections.iter().filter(|s| s.loss_reported_late()).count() as u64;
    o.max_loss_report_delay_ms = sections
        .iter()
        .filter_map(|s| Some(ms(s.lost_at?.saturating_duration_since(s.valid_until?))))
        .max();
    o.kept_working_after_lease = sections
        .iter()
        .filter(|s| s.outlived_lease().is_some())
        .count() as u64;
    o.max_work_past_lease_ms = sections
        .iter()
        .filter_map(|s| s.outlived_lease().map(ms))
        .max();
    sections.sort_by_key(|s| (s.key, s.start));
    for w in sections.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if a.key != b.key {
            continue;
        }
        if a.effective_end() > b.start {
            o.unsafe_overlaps += 1;
        }
        if b.token <= a.token {
            o.token_order_violations += 1;
        }
    }
    if let Some(h) = healed_at {
        o.recovery_ms = sections
            .iter()
            .filter(|s| s.start >= h)
            .map(|s| s.start.duration_since(h).as_millis() as u64)
            .min();
    }
    o
}

/// Writes one fault's figures for RELIABILITY.md (directory from BIDLOCK_REPORT_DIR,
/// default target/reliability), with the workload they were measured under.
pub fn report(name: &str, description: &str, told: &str, o: &Outcomes, w: &Workload) {
    let doc = serde_json::json!({
        "fault": name,
        "description": description,
        "holders_told": told,
        "workload": {
            "keys": w.keys,
            "tasks_per_instance": w.tasks_per_instance,
            "seconds": w.duration.as_secs_f64(),
            "hold_ms": ms(w.hold),
            "long_hold_ms": ms(w.long_hold),
            "ttl_ms": ms(w.ttl),
            "wait_ms": ms(w.wait),
            "loss_slack_ms": ms(LOSS_SLACK),
        },
        "outcomes": o,
    });
    bidlock_testkit::write_report(name, &format!("{doc:#}"));
}
