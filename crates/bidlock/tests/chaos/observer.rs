//! The observer: a thread that reads every lock key (GET + PTTL) about once a millisecond
//! straight from the server, bypassing proxies, and records who Redis says holds what.
//! At each reading it also asks every live lease whose holder Redis no longer shows
//! whether it still claims the lock (`!is_lost()` and `expires_at()` in the future): a
//! client told "held" after the server stopped holding it for that client is caught
//! in the act, on one monotonic clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bidlock::Lease;

use super::history::{History, Who};

/// A lease some client holds right now, as the client registered it.
struct Live {
    who: Who,
    /// Renewed less often than a forced release must be noticed (ttl/3 > 1 s).
    slow_renewal: bool,
    /// Until when the client means to hold it.
    until: Option<Instant>,
    key: String,
    holder: String,
    lease: Lease,
    registered_at: Instant,
    lost_at: Arc<Mutex<Option<Instant>>>,
    watcher: tokio::task::JoinHandle<()>,
}

/// The leases clients hold now. A client registers right after it is told "held" and
/// unregisters before it lets go (release, drop, completion), so a lease here is one the
/// client believes it holds.
#[derive(Default)]
pub struct Registry {
    live: Mutex<HashMap<u64, Live>>,
}

impl Registry {
    /// Registers `lease` of section `id`; a watcher notes when `lost()` resolves.
    pub fn register(&self, id: u64, who: Who, key: &str, lease: &Lease, ttl: Duration) {
        let lost_at = Arc::new(Mutex::new(None));
        let (l2, la) = (lease.clone(), lost_at.clone());
        let watcher = tokio::spawn(async move {
            l2.lost().await;
            *la.lock().unwrap() = Some(Instant::now());
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
}

impl Tenure {
    /// When the server's expiry would have ended it, as of the last reading.
    pub fn predicted_expiry(&self) -> Option<Instant> {
        u64::try_from(self.last_pttl_ms)
            .ok()
            .map(|ms| self.last_seen + Duration::from_millis(ms))
    }
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
}

/// The running observer.
pub struct Observer {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<ObserverLog>,
}

/// Starts watching `keys` on the server at `127.0.0.1:port` (the port may change: a
/// failover moves it).
pub fn start(
    port: Arc<AtomicU16>,
    keys: Vec<String>,
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

struct Watch {
    keys: Vec<String>,
    index: HashMap<String, usize>,
    open: Vec<Option<Tenure>>,
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

impl Watch {
    fn new(keys: Vec<String>, reg: Arc<Registry>, hist: Arc<History>) -> Watch {
        let index = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), i))
            .collect();
        Watch {
            open: vec![None; keys.len()],
            keys,
            index,
            active: HashMap::new(),
            reg,
            hist,
            log: ObserverLog::default(),
        }
    }

    fn run(&mut self, port: &AtomicU16, stop: &AtomicBool) {
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
            let read = conn.as_mut().map(|(_, c)| self.read(c));
            let t1 = Instant::now();
            match read {
                Some(Ok(values)) => {
                    if let Some(prev) = last_ok {
                        let gap = u64::try_from(t1.duration_since(prev).as_micros()).unwrap_or(0);
                        self.log.max_gap_us = self.log.max_gap_us.max(gap);
                    }
                    last_ok = Some(t1);
                    self.log.polls += 1;
                    self.update(&values, t1);
                    self.check_claims(&values, t0);
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

    fn read(&self, c: &mut redis::Connection) -> redis::RedisResult<Vec<(Option<String>, i64)>> {
        let mut pipe = redis::pipe();
        for k in &self.keys {
            pipe.cmd("GET").arg(k).cmd("PTTL").arg(k);
        }
        pipe.query(c)
    }

    fn update(&mut self, values: &[(Option<String>, i64)], t1: Instant) {
        for (i, (v, pttl)) in values.iter().enumerate() {
            let same = match (&self.open[i], v) {
                (Some(t), Some(h)) => t.holder == *h,
                (None, None) => true,
                _ => false,
            };
            if same {
                if let Some(t) = self.open[i].as_mut() {
                    t.last_seen = t1;
                    t.last_pttl_ms = *pttl;
                }
                continue;
            }
            if let Some(mut t) = self.open[i].take() {
                t.gone_seen = Some(t1);
                self.log.tenures.push(t);
            }
            self.open[i] = v.as_ref().map(|h| Tenure {
                key: self.keys[i].clone(),
                holder: h.clone(),
                first_seen: t1,
                last_seen: t1,
                last_pttl_ms: *pttl,
                gone_seen: None,
            });
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

    fn check_claims(&mut self, values: &[(Option<String>, i64)], t0: Instant) {
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

    fn finish(mut self) -> ObserverLog {
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
