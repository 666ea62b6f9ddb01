//! A contention workload that records every critical section, and a checker that proves
//! no two sections on one key overlapped while both leases were valid and that fencing
//! tokens increase in holding order. Figures are written for RELIABILITY.md.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bidlock::{AcquireOptions, BidLockManager, LockKey};

#[derive(Debug, Clone)]
pub struct Section {
    pub key: usize,
    pub instance: usize,
    pub start: Instant,
    pub end: Instant,
    pub valid_until: Option<Instant>,
    pub token: u64,
    pub lost: bool,
}

impl Section {
    /// When the section stopped counting as protected: its end, or earlier when its
    /// lease ran out first.
    pub fn effective_end(&self) -> Instant {
        match self.valid_until {
            Some(v) if v < self.end => v,
            _ => self.end,
        }
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Outcomes {
    pub sections: u64,
    pub not_acquired: u64,
    pub errors: u64,
    pub lost: u64,
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

pub struct Recorder {
    pub sections: Mutex<Vec<Section>>,
    pub outcomes: Mutex<Outcomes>,
}

/// Runs the workload on `managers` (one per instance) until `w.duration` has passed.
pub async fn contend(managers: Vec<BidLockManager>, w: Workload) -> Arc<Recorder> {
    let rec = Arc::new(Recorder {
        sections: Mutex::new(Vec::new()),
        outcomes: Mutex::new(Outcomes::default()),
    });
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
                    let key_ix = i % w.keys;
                    let key = LockKey::new("rel", format!("hot{key_ix}")).unwrap();
                    let opts = AcquireOptions::new().timeout(w.wait).ttl(w.ttl);
                    match m.acquire(&key, &opts).await {
                        Ok(g) => {
                            let start = Instant::now();
                            let lost = g.lost();
                            held += 1;
                            // Offset by task: with a fair queue the tasks move in step, and all long holds at once
                            // would measure the workload, not the fault.
                            let hold = if (held + t) % 6 == 5 {
                                w.long_hold
                            } else {
                                w.hold
                            };
                            tokio::select! {
                                _ = tokio::time::sleep(hold) => {}
                                _ = lost => {}
                            }
                            let end = Instant::now();
                            let s = Section {
                                key: key_ix,
                                instance,
                                start,
                                end,
                                valid_until: g.lease().expires_at(),
                                token: g.fencing_token().get(),
                                lost: g.is_lost(),
                            };
                            // Bounded: a release against a dead server must not hang the run.
                            let _ = tokio::time::timeout(Duration::from_secs(2), g.release()).await;
                            rec.sections.lock().unwrap().push(s);
                        }
                        Err(e) => {
                            {
                                let mut o = rec.outcomes.lock().unwrap();
                                if e.is_timeout() {
                                    o.not_acquired += 1;
                                } else {
                                    o.errors += 1;
                                    o.first_error.get_or_insert_with(|| e.to_string());
                                }
                            }
                            if !e.is_timeout() {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    rec
}

/// Checks the recorded sections; `healed_at` is when the fault ended (for recovery time).
pub fn check(rec: &Recorder, healed_at: Option<Instant>) -> Outcomes {
    let mut sections = rec.sections.lock().unwrap().clone();
    let mut o = rec.outcomes.lock().unwrap().clone();
    o.sections = sections.len() as u64;
    o.lost = sections.iter().filter(|s| s.lost).count() as u64;
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
/// default target/reliability).
pub fn report(name: &str, description: &str, told: &str, o: &Outcomes) {
    let doc = serde_json::json!({
        "fault": name,
        "description": description,
        "holders_told": told,
        "outcomes": o,
    });
    bidlock_testkit::write_report(name, &format!("{doc:#}"));
}
