//! The observer's thread: reads every watched lock (GET + PTTL) about once a millisecond,
//! and every [`HANDOFF_EVERY`] readings its handoff keys (PTTL of the wait marker, queue
//! and waiters, and the waiters hash's last grant); turns the readings into tenures and
//! grants, and catches leases that claim a lock Redis no longer shows for them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::history::History;
use super::observer::{Claim, Grant, Names, ObserverLog, Registry, Tenure, EXPIRY_DROP};

/// Handoff keys are read every this many readings (they change less often than locks,
/// and a key without a ttl stays so).
const HANDOFF_EVERY: u64 = 10;

/// One reading of a lock: holder and PTTL.
type LockReading = (Option<String>, i64);
/// One reading of a posting's handoff keys: PTTL of marker, queue, waiters; last grant.
type HandoffReading = (i64, i64, i64, Option<String>);

pub(super) struct Watch {
    keys: Vec<Names>,
    index: HashMap<String, usize>,
    open: Vec<Option<Tenure>>,
    /// The last grant each waiters hash showed.
    last_grant: Vec<Option<String>>,
    no_ttl_seen: HashSet<String>,
    active: HashMap<u64, Claim>,
    reg: Arc<Registry>,
    hist: Arc<History>,
    log: ObserverLog,
}

fn connect(port: u16) -> Option<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).ok()?;
    let c = client
        .get_connection_with_timeout(Duration::from_millis(100))
        .ok()?;
    c.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
    c.set_write_timeout(Some(Duration::from_millis(200))).ok()?;
    Some(c)
}

/// `"holder token"` (the waiters hash's `''` field) as (holder, token).
fn parse_grant(v: &str) -> Option<(&str, u64)> {
    let (h, t) = v.rsplit_once(' ')?;
    Some((h, t.parse().ok()?))
}

impl Watch {
    pub(super) fn new(keys: Vec<Names>, reg: Arc<Registry>, hist: Arc<History>) -> Watch {
        let index = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.lock.clone(), i))
            .collect();
        Watch {
            open: vec![None; keys.len()],
            last_grant: vec![None; keys.len()],
            no_ttl_seen: HashSet::new(),
            keys,
            index,
            active: HashMap::new(),
            reg,
            hist,
            log: ObserverLog::default(),
        }
    }

    pub(super) fn run(&mut self, port: &AtomicU16, stop: &AtomicBool) {
        let mut conn: Option<(u16, redis::Connection)> = None;
        let mut last_ok: Option<Instant> = None;
        let mut last_anchor = Instant::now();
        while !stop.load(Ordering::Acquire) {
            let p = port.load(Ordering::Acquire);
            if conn.as_ref().is_none_or(|(cp, _)| *cp != p) {
                conn = connect(p).map(|c| (p, c));
                if conn.is_none() {
                    last_ok = None;
                    std::thread::sleep(Duration::from_millis(3));
                    continue;
                }
            }
            let t0 = Instant::now();
            let handoff = self.log.polls.is_multiple_of(HANDOFF_EVERY);
            let read = conn.as_mut().map(|(_, c)| self.read(c, handoff));
            let t1 = Instant::now();
            match read {
                Some(Ok((locks, handoffs))) => {
                    if let Some(prev) = last_ok {
                        let gap = u64::try_from(t1.duration_since(prev).as_micros()).unwrap_or(0);
                        self.log.max_gap_us = self.log.max_gap_us.max(gap);
                    }
                    last_ok = Some(t1);
                    self.log.polls += 1;
                    self.update(&locks, t1);
                    if let Some(h) = handoffs {
                        self.log.handoff_polls += 1;
                        self.handoffs(&h, t1);
                    }
                    self.check_claims(&locks, t0);
                }
                _ => {
                    self.log.failed_polls += 1;
                    last_ok = None;
                    conn = None;
                }
            }
            if last_anchor.elapsed() > Duration::from_secs(1) {
                self.hist.clock.anchor();
                last_anchor = Instant::now();
            }
            let next = t0 + Duration::from_millis(1);
            if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
    }

    fn read(
        &self,
        c: &mut redis::Connection,
        handoff: bool,
    ) -> redis::RedisResult<(Vec<LockReading>, Option<Vec<HandoffReading>>)> {
        let mut pipe = redis::pipe();
        for k in &self.keys {
            pipe.cmd("GET").arg(&k.lock).cmd("PTTL").arg(&k.lock);
        }
        let locks: Vec<LockReading> = pipe.query(c)?;
        if !handoff {
            return Ok((locks, None));
        }
        let mut pipe = redis::pipe();
        for k in &self.keys {
            pipe.cmd("PTTL").arg(&k.marker);
            pipe.cmd("PTTL").arg(&k.queue);
            pipe.cmd("PTTL").arg(&k.waiters);
            pipe.cmd("HGET").arg(&k.waiters).arg("");
        }
        let h: Vec<HandoffReading> = pipe.query(c)?;
        Ok((locks, Some(h)))
    }

    fn update(&mut self, values: &[LockReading], t1: Instant) {
        for (i, (v, pttl)) in values.iter().enumerate() {
            let same = match (&self.open[i], v) {
                (Some(t), Some(h)) => t.holder == *h,
                (None, None) => true,
                _ => false,
            };
            if same {
                if let Some(t) = self.open[i].as_mut() {
                    follow_expiry(t, t1, *pttl);
                    t.last_seen = t1;
                    t.last_pttl_ms = *pttl;
                }
                continue;
            }
            if let Some(mut t) = self.open[i].take() {
                t.gone_seen = Some(t1);
                self.log.tenures.push(t);
            }
            let granted = self.last_grant[i]
                .as_deref()
                .and_then(parse_grant)
                .filter(|(h, _)| Some(*h) == v.as_deref())
                .map(|(_, t)| t);
            self.open[i] = v.as_ref().map(|h| Tenure {
                key: self.keys[i].lock.clone(),
                holder: h.clone(),
                first_seen: t1,
                last_seen: t1,
                last_pttl_ms: *pttl,
                gone_seen: None,
                granted,
                peak_expiry: expiry(t1, *pttl),
                expiry_drops: Vec::new(),
            });
        }
    }

    /// Records grants and handoff keys without a ttl.
    fn handoffs(&mut self, values: &[HandoffReading], t1: Instant) {
        for (i, (marker, queue, waiters, grant)) in values.iter().enumerate() {
            let names = [
                (&self.keys[i].marker, *marker),
                (&self.keys[i].queue, *queue),
                (&self.keys[i].waiters, *waiters),
            ];
            for (name, pttl) in names {
                if pttl == -1 && self.no_ttl_seen.insert(name.clone()) {
                    self.log.no_ttl.push((name.clone(), t1));
                }
            }
            if *grant == self.last_grant[i] {
                continue;
            }
            self.last_grant[i].clone_from(grant);
            let Some((holder, token)) = grant.as_deref().and_then(parse_grant) else {
                continue;
            };
            self.log.grants.push(Grant {
                key: self.keys[i].lock.clone(),
                holder: holder.to_owned(),
                token,
                seen_at: t1,
            });
            if let Some(t) = self.open[i].as_mut().filter(|t| t.holder == holder) {
                t.granted.get_or_insert(token);
            }
        }
    }

    /// The holder's last closed tenure of `key`.
    fn last_tenure(&self, key: &str, holder: &str) -> Option<Tenure> {
        self.log
            .tenures
            .iter()
            .rev()
            .take(64)
            .find(|t| t.key == key && t.holder == holder)
            .cloned()
    }

    fn check_claims(&mut self, values: &[LockReading], t0: Instant) {
        let mut seen = Vec::new();
        let mut fresh = Vec::new();
        {
            let live = self.reg.live.lock().unwrap();
            for (id, l) in live.iter() {
                let Some(&i) = self.index.get(&l.key) else {
                    continue;
                };
                // A lease registered after this reading was sent may not show in it yet.
                if l.registered_at >= t0 || values[i].0.as_deref() == Some(l.holder.as_str()) {
                    continue;
                }
                let now = Instant::now();
                let expires = l.lease.expires_at();
                let claiming = !l.lease.is_lost() && expires.is_none_or(|e| e > now);
                if !claiming {
                    continue;
                }
                seen.push(*id);
                if let Some(c) = self.active.get_mut(id) {
                    c.last_claim = now;
                } else {
                    fresh.push((
                        *id,
                        l.key.clone(),
                        l.holder.clone(),
                        values[i].0.clone(),
                        now,
                        expires,
                    ));
                }
            }
        }
        for (id, key, holder, now_held_by, now, expires_at) in fresh {
            let tenure = self.last_tenure(&key, &holder);
            let gone_seen = tenure.as_ref().and_then(|t| t.gone_seen).unwrap_or(now);
            self.active.insert(
                id,
                Claim {
                    section: id,
                    key,
                    holder,
                    gone_seen,
                    tenure,
                    now_held_by,
                    first_claim: now,
                    last_claim: now,
                    expires_at,
                },
            );
        }
        let ended: Vec<u64> = self
            .active
            .keys()
            .filter(|id| !seen.contains(id))
            .copied()
            .collect();
        for id in ended {
            if let Some(c) = self.active.remove(&id) {
                self.log.claims.push(c);
            }
        }
    }

    pub(super) fn finish(mut self) -> ObserverLog {
        let now = Instant::now();
        for t in self.open.iter_mut().filter_map(Option::take) {
            let mut t = t;
            t.last_seen = t.last_seen.min(now);
            self.log.tenures.push(t);
        }
        self.log.claims.extend(self.active.drain().map(|(_, c)| c));
        self.log
    }
}

fn expiry(at: Instant, pttl: i64) -> Option<Instant> {
    u64::try_from(pttl)
        .ok()
        .map(|ms| at + Duration::from_millis(ms))
}

/// Notes a reading's expiry on its tenure: the peak, and a drop well below it.
fn follow_expiry(t: &mut Tenure, at: Instant, pttl: i64) {
    let Some(e) = expiry(at, pttl) else {
        return;
    };
    match t.peak_expiry {
        Some(peak) if e + EXPIRY_DROP < peak => {
            t.expiry_drops.push((t.last_seen, at, peak - e));
            t.peak_expiry = Some(e);
        }
        Some(peak) if e <= peak => {}
        _ => t.peak_expiry = Some(e),
    }
}
