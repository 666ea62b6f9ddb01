//! Library clients: instances (separate managers, as separate processes would be) whose
//! tasks run random API sequences — acquire with random waits, ttls, renewal and holder
//! ids (given ids shared between tasks), extend longer and shorter, release or drop,
//! acquires cancelled mid-flight, and `bid_once` (`client_bids.rs`) — and record what
//! they were told.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bidlock::{AcquireOptions, Backend, BidLockManager, Config, Error, LockGuard, LockKey};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::history::{History, Kind, Section, Who};
use super::round::Round;

/// Lock ttls the clients pick from: short ones lapse under faults and with renewal off,
/// long ones (≥ 3 s) renew less often than a forced release must be noticed (1 s).
pub const TTLS_MS: [u64; 6] = [300, 600, 1000, 2000, 3000, 4500];

/// One library instance: the manager in use now. `close()` replaces it with a new one.
pub struct Slot {
    pub inst: u8,
    cfg: Config,
    current: Mutex<BidLockManager>,
}

pub fn config(url: &str) -> Config {
    Config::builder()
        .backend(Backend::Redis)
        .redis_url(url)
        .response_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .build()
        .expect("config")
}

/// Connects a manager, retrying while the backend is away (a restart, a failover).
pub async fn connect(cfg: &Config, limit: Duration) -> Option<BidLockManager> {
    let deadline = Instant::now() + limit;
    loop {
        match BidLockManager::new(cfg.clone()).await {
            Ok(m) => return Some(m),
            Err(e) if e.is_backend() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => return None,
        }
    }
}

/// The generated holder ids of `m` all start with this (`host:pid:random`).
pub fn holder_base(m: &BidLockManager) -> String {
    let h = m.new_holder();
    let s = h.as_str();
    s.rsplit_once(':').map_or(s, |(b, _)| b).to_owned()
}

impl Slot {
    pub async fn start(inst: u8, url: &str, hist: &History) -> Arc<Slot> {
        let cfg = config(url);
        let m = connect(&cfg, Duration::from_secs(10))
            .await
            .expect("instance connects");
        hist.holder_bases
            .lock()
            .unwrap()
            .push((inst, holder_base(&m)));
        Arc::new(Slot {
            inst,
            cfg,
            current: Mutex::new(m),
        })
    }

    pub fn get(&self) -> BidLockManager {
        self.current.lock().unwrap().clone()
    }

    /// Puts a new manager in place and closes the old one under its tasks' guards.
    /// Returns when the close began and ended, or `None` when no new manager could
    /// connect (the old one then stays).
    pub async fn replace(&self, round: &Round) -> Option<(Instant, Instant)> {
        let new = connect(&self.cfg, Duration::from_secs(3)).await?;
        round
            .hist
            .holder_bases
            .lock()
            .unwrap()
            .push((self.inst, holder_base(&new)));
        let old = std::mem::replace(&mut *self.current.lock().unwrap(), new);
        let start = Instant::now();
        old.close().await;
        Some((start, Instant::now()))
    }

    pub async fn close(&self) {
        let m = self.get();
        m.close().await;
    }
}

/// Spawns `tasks` tasks on every instance.
pub fn spawn(round: &Arc<Round>, tasks: u8) -> Vec<tokio::task::JoinHandle<()>> {
    let mut v = Vec::new();
    for slot in &round.slots {
        for t in 0..tasks {
            let (r, inst) = (round.clone(), slot.inst);
            let seed = round.seed ^ (u64::from(inst) << 40) ^ (u64::from(t) << 32);
            v.push(tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed);
                task(&r, Who::Lib { inst, task: t }, &mut rng).await;
            }));
        }
    }
    v.extend(super::pressure::spawn(round));
    let (r, seed) = (round.clone(), round.seed ^ 0x10f6);
    v.push(tokio::spawn(async move {
        let mut rng = StdRng::seed_from_u64(seed);
        long_holds(
            &r,
            Who::Lib {
                inst: 0,
                task: tasks,
            },
            &mut rng,
        )
        .await;
    }));
    v
}

async fn task(r: &Round, who: Who, rng: &mut StdRng) {
    let Who::Lib { inst, .. } = who else { return };
    while Instant::now() < r.stop_at {
        let m = r.slots[usize::from(inst)].get();
        match rng.random_range(0..100) {
            0..50 => hold(r, &m, who, rng).await,
            50..72 => super::client_bids::bid(r, &m, who, rng).await,
            72..86 => cancelled_acquire(r, &m, who, rng).await,
            _ => try_once(r, &m, who, rng).await,
        }
        let pause = rng.random_range(0..20);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// The options of one acquire, drawn at random.
pub struct Draw {
    pub key: LockKey,
    pub ttl: Duration,
    pub renew: bool,
    pub holder: Option<String>,
    pub wait: Duration,
}

impl Draw {
    /// After the faults: wait long enough for any lock left behind to expire.
    pub fn calm(key: LockKey) -> Draw {
        Draw {
            key,
            ttl: Duration::from_secs(3),
            renew: true,
            holder: None,
            wait: Duration::from_secs(7),
        }
    }

    pub fn new(r: &Round, keys: &[LockKey], rng: &mut StdRng) -> Draw {
        Draw {
            key: keys[rng.random_range(0..keys.len())].clone(),
            ttl: Duration::from_millis(TTLS_MS[rng.random_range(0..TTLS_MS.len())]),
            renew: rng.random_bool(0.85),
            holder: rng
                .random_bool(0.25)
                .then(|| r.given[rng.random_range(0..r.given.len())].clone()),
            wait: Duration::from_millis(rng.random_range(0..1500)),
        }
    }

    pub fn opts(&self) -> AcquireOptions {
        let o = AcquireOptions::new()
            .timeout(self.wait)
            .ttl(self.ttl)
            .renew(self.renew);
        match &self.holder {
            Some(h) => o.holder(h.as_str()),
            None => o,
        }
    }
}

pub fn note_acquire_error(r: &Round, op: &str, e: &Error) {
    if e.is_not_acquired() {
        r.hist.count(&format!("{op}.not_acquired"));
    } else if e.is_already_done() {
        r.hist.count(&format!("{op}.already_done"));
    } else if matches!(e, Error::Closed) {
        r.hist.count(&format!("{op}.closed"));
    } else {
        r.hist.error(op, e);
    }
}

/// A section's record, from its guard, once the work is over.
pub struct Open {
    id: u64,
    who: Who,
    key: String,
    draw_given: bool,
    called_at: Instant,
    acquired_at: Instant,
    expires_at_start: Option<Instant>,
    notes: Vec<(Instant, String)>,
    /// The ttl of the last extend that succeeded.
    renew_ttl: Option<Duration>,
}

impl Open {
    pub fn begin(r: &Round, who: Who, d: &Draw, g: &LockGuard, called_at: Instant) -> Open {
        let key = r.redis_key(&d.key);
        // Leases the acquire marked lost before it returned are stamped lost first.
        r.reg.note_losses_on(&key);
        let acquired_at = Instant::now();
        let id = r.hist.next_id();
        r.reg.register(id, who, &key, g.lease(), d.ttl);
        Open {
            id,
            who,
            key,
            draw_given: d.holder.is_some(),
            called_at,
            acquired_at,
            expires_at_start: g.lease().expires_at(),
            notes: Vec::new(),
            renew_ttl: None,
        }
    }

    /// The client lets go: unregister first, then release or drop.
    pub async fn end(self, r: &Round, d: &Draw, g: LockGuard, release: bool) {
        let work_end = Instant::now();
        let (final_expires, lost_flag) = (g.lease().expires_at(), g.is_lost());
        let lost_at = r.reg.unregister(self.id);
        let (holder, token) = (g.holder().as_str().to_owned(), g.fencing_token().get());
        let ending = if release {
            match tokio::time::timeout(Duration::from_secs(3), g.release()).await {
                Ok(Ok(b)) => format!("release Ok({b})"),
                Ok(Err(e)) => {
                    r.hist.error("release", &e);
                    format!("release Err({e})")
                }
                Err(_) => "release timed out (cancelled)".to_owned(),
            }
        } else {
            drop(g);
            "dropped".to_owned()
        };
        r.hist.section(Section {
            id: self.id,
            who: self.who,
            kind: Kind::Hold,
            key: self.key,
            holder,
            given: self.draw_given,
            token,
            ttl: d.ttl,
            renew_ttl: self.renew_ttl.unwrap_or(d.ttl),
            renew: d.renew,
            called_at: self.called_at,
            acquired_at: self.acquired_at,
            expires_at_start: self.expires_at_start,
            work_end,
            final_expires,
            lost_at,
            lost_flag_at_end: lost_flag,
            notes: self.notes,
            ending,
        });
    }
}

async fn hold(r: &Round, m: &BidLockManager, who: Who, rng: &mut StdRng) {
    let d = Draw::new(r, &r.hot, rng);
    let hold_for = match rng.random_range(0..10) {
        0..6 => Duration::from_millis(rng.random_range(5..60)),
        6..9 => Duration::from_millis(rng.random_range(100..900)),
        _ => Duration::from_millis(rng.random_range(1000..3500)),
    };
    let extend = if rng.random_bool(0.15) {
        Some((
            rng.random_range(0.0..0.5),
            (d.ttl * 2).min(Duration::from_secs(6)),
            "longer",
        ))
    } else if d.ttl >= Duration::from_millis(2000) && rng.random_bool(0.35) {
        Some((
            rng.random_range(0.0..0.3),
            Duration::from_millis(rng.random_range(100..400)),
            "shorter",
        ))
    } else {
        None
    };
    let release = rng.random_bool(0.65);
    hold_with(r, m, who, &d, hold_for, extend, release).await;
}

/// One section: acquire as drawn, work for `hold_for` (extending once when asked: at a
/// fraction of the hold, to a ttl), then release or drop.
pub async fn hold_with(
    r: &Round,
    m: &BidLockManager,
    who: Who,
    d: &Draw,
    hold_for: Duration,
    extend: Option<(f64, Duration, &'static str)>,
    release: bool,
) {
    let called_at = Instant::now();
    let limit = d.wait + Duration::from_secs(5);
    let g = match tokio::time::timeout(limit, m.acquire(&d.key, &d.opts())).await {
        Ok(Ok(g)) => g,
        Ok(Err(e)) => return note_acquire_error(r, "acquire", &e),
        Err(_) => return r.hist.error("acquire", &"no answer within wait + 5 s"),
    };
    r.hist.count("acquire.ok");
    let mut open = Open::begin(r, who, d, &g, called_at);
    let until = (open.acquired_at + hold_for).min(r.stop_at.max(open.acquired_at));
    r.reg.holds_until(open.id, until);
    let extend = extend.map(|(f, t, how)| (hold_for.mul_f64(f), t, how));
    open.renew_ttl = work(r, &g, until, extend, &mut open.notes).await;
    open.end(r, d, g, release).await;
}

/// A task that only holds long, on a ttl renewed less often than a forced release must
/// be noticed (4.5 s: every 1.5 s): the sections a forced release, a pause or a
/// partition most likely finds held.
async fn long_holds(r: &Round, who: Who, rng: &mut StdRng) {
    while Instant::now() < r.stop_at {
        let m = r.slots[0].get();
        let d = Draw {
            key: r.hot[rng.random_range(0..r.hot.len())].clone(),
            ttl: Duration::from_millis(4500),
            renew: true,
            holder: None,
            wait: Duration::from_secs(1),
        };
        let hold_for = Duration::from_millis(rng.random_range(1500..3000));
        hold_with(r, &m, who, &d, hold_for, None, true).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..200))).await;
    }
}

/// Works under the lock until `until`, stopping when `lost()` resolves; extends once
/// (`at` after the start, to `ttl`) when asked. Returns the ttl of a successful extend.
async fn work(
    r: &Round,
    g: &LockGuard,
    until: Instant,
    mut extend: Option<(Duration, Duration, &'static str)>,
    notes: &mut Vec<(Instant, String)>,
) -> Option<Duration> {
    let mut extended = None;
    let start = Instant::now();
    let lost = g.lost();
    tokio::pin!(lost);
    loop {
        let next = extend.map_or(until, |(at, _, _)| (start + at).min(until));
        tokio::select! {
            _ = &mut lost => {
                notes.push((Instant::now(), format!("lost() resolved: {:?}", g.lease().lost_reason())));
                return extended;
            }
            _ = tokio::time::sleep_until(next.into()) => {}
        }
        if Instant::now() >= until {
            return extended;
        }
        let Some((_, ttl, how)) = extend.take() else {
            continue;
        };
        notes.push((Instant::now(), format!("extend {how} ({ttl:?}) sent")));
        r.hist.count("extend");
        match tokio::time::timeout(Duration::from_secs(2), g.extend(ttl)).await {
            Ok(Ok(())) => {
                extended = Some(ttl);
                notes.push((
                    Instant::now(),
                    format!("extend ok, expires_at {:?}", g.lease().expires_at()),
                ));
            }
            Ok(Err(e)) => {
                if !e.is_lost() {
                    r.hist.error("extend", &e);
                }
                notes.push((Instant::now(), format!("extend Err({e})")));
            }
            Err(_) => notes.push((Instant::now(), "extend timed out (cancelled)".to_owned())),
        }
    }
}

async fn cancelled_acquire(r: &Round, m: &BidLockManager, who: Who, rng: &mut StdRng) {
    let d = Draw::new(r, &r.hot, rng);
    let cancel_after = Duration::from_millis(rng.random_range(0..25));
    let release = rng.random_bool(0.5);
    acquire_cancelled_after(r, m, who, &d, cancel_after, release).await;
}

/// An acquire as drawn, cancelled after `cancel_after` unless it returned first (then
/// released or dropped at once).
pub async fn acquire_cancelled_after(
    r: &Round,
    m: &BidLockManager,
    who: Who,
    d: &Draw,
    cancel_after: Duration,
    release: bool,
) {
    let called_at = Instant::now();
    let opts = d.opts();
    tokio::select! {
        res = m.acquire(&d.key, &opts) => match res {
            Ok(g) => {
                r.hist.count("acquire.ok");
                let open = Open::begin(r, who, d, &g, called_at);
                open.end(r, d, g, release).await;
            }
            Err(e) => note_acquire_error(r, "acquire", &e),
        },
        _ = tokio::time::sleep(cancel_after) => {
            r.hist.count("acquire.cancelled");
            if d.holder.is_some() {
                r.hist.count("acquire.cancelled_given");
            }
        }
    }
}

async fn try_once(r: &Round, m: &BidLockManager, who: Who, rng: &mut StdRng) {
    let d = Draw::new(r, &r.hot, rng);
    let called_at = Instant::now();
    match m.try_acquire(&d.key, &d.opts()).await {
        Ok(g) => {
            r.hist.count("acquire.ok");
            let open = Open::begin(r, who, &d, &g, called_at);
            tokio::time::sleep(Duration::from_millis(5)).await;
            open.end(r, &d, g, true).await;
        }
        Err(e) => note_acquire_error(r, "try_acquire", &e),
    }
}
