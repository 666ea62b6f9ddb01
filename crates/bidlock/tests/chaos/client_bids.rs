//! Bids from library clients: `bid_once` with closures that fail, succeed or take long
//! (past a short lease without renewal), and the calm sweep after the faults that makes
//! every posting run; each records the call, the closure's section and the verdict.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bidlock::{BidLockManager, LockKey};
use rand::rngs::StdRng;
use rand::RngExt;

use super::adapter::{self, Told};
use super::clients::{note_acquire_error, Draw, Open};
use super::history::{BidRun, Kind, Section, Verdict, Who};
use super::round::Round;

/// How a bid closure behaves.
#[derive(Debug, Clone, Copy)]
enum Bid {
    Succeeds(Duration),
    Fails(Duration),
}

pub async fn bid(r: &Round, m: &BidLockManager, who: Who, rng: &mut StdRng) {
    let mut d = Draw::new(r, &r.postings, rng);
    d.wait = Duration::from_millis(rng.random_range(0..1000));
    d.holder = d.holder.filter(|_| rng.random_bool(0.5));
    let behaviour = match rng.random_range(0..100) {
        0..45 => Bid::Succeeds(Duration::from_millis(rng.random_range(5..40))),
        45..70 => Bid::Fails(Duration::from_millis(rng.random_range(5..40))),
        _ => {
            // A bid that takes long: half the time past a short lease without renewal.
            if rng.random_bool(0.5) {
                d.renew = false;
                d.ttl = Duration::from_millis(rng.random_range(300..800));
            }
            Bid::Succeeds(Duration::from_millis(rng.random_range(400..1600)))
        }
    };
    run_bid(r, m, who, &d, behaviour).await;
}

/// What a bid closure did: start, end, whether it succeeded, its section.
type Ran = (Instant, Instant, bool, u64);

/// Runs one `bid_once` and records the call, the closure's section and the verdict.
async fn run_bid(r: &Round, m: &BidLockManager, who: Who, d: &Draw, behaviour: Bid) {
    let key = r.redis_key(&d.key);
    let ran: Arc<Mutex<Option<Ran>>> = Arc::default();
    let (ran2, ttl, renew, given) = (ran.clone(), d.ttl, d.renew, d.holder.is_some());
    let (hist, reg, k2) = (r.hist.clone(), r.reg.clone(), key.clone());
    let called_at = Instant::now();
    let closure = move |lease: bidlock::Lease| async move {
        // Leases the acquire marked lost before it returned are stamped lost first.
        reg.note_losses_on(&k2);
        let start = Instant::now();
        let id = hist.next_id();
        reg.register(id, who, &k2, &lease, ttl);
        let expires_at_start = lease.expires_at();
        let (ok, dur) = match behaviour {
            Bid::Succeeds(t) => (true, t),
            Bid::Fails(t) => (false, t),
        };
        tokio::time::sleep(dur).await;
        let end = Instant::now();
        let lost_at = reg.unregister(id);
        hist.section(Section {
            id,
            who,
            kind: Kind::Bid,
            key: k2,
            holder: lease.holder().as_str().to_owned(),
            given,
            token: lease.fencing_token().get(),
            ttl,
            renew_ttl: ttl,
            renew,
            called_at,
            acquired_at: start,
            expires_at_start,
            work_end: end,
            final_expires: lease.expires_at(),
            lost_at,
            lost_flag_at_end: lease.is_lost(),
            notes: Vec::new(),
            ending: if ok {
                "closure Ok".into()
            } else {
                "closure Err".into()
            },
        });
        *ran2.lock().unwrap() = Some((start, end, ok, id));
        if ok {
            Ok(lease.fencing_token().get())
        } else {
            Err("bid declined".to_owned())
        }
    };
    let limit = d.wait + Duration::from_secs(8);
    let told = tokio::time::timeout(limit, adapter::bid_once(m, &d.key, &d.opts(), closure)).await;
    let verdict = verdict(r, told);
    let ran = *ran.lock().unwrap();
    r.hist.bid(BidRun {
        who,
        key,
        returned_at: Instant::now(),
        ran: ran.map(|(s, e, ok, _)| (s, e, ok)),
        verdict,
        section: ran.map(|(_, _, _, id)| id),
    });
}

fn verdict(r: &Round, told: Result<Told, tokio::time::error::Elapsed>) -> Verdict {
    match told {
        Ok(Told::Placed) => {
            r.hist.count("bid.placed");
            Verdict::Placed
        }
        Ok(Told::PlacedAfterLoss) => {
            r.hist.count("bid.placed_after_loss");
            Verdict::PlacedAfterLoss
        }
        Ok(Told::Failed) => {
            r.hist.count("bid.failed");
            Verdict::Failed
        }
        Ok(Told::Unrecorded(e)) => {
            r.hist.count("bid.unrecorded");
            Verdict::Unrecorded {
                lost: e.is_lost(),
                error: e.to_string(),
            }
        }
        Ok(Told::NotRun(e)) => {
            note_acquire_error(r, "bid", &e);
            Verdict::NotRun { why: e.to_string() }
        }
        Err(_) => {
            r.hist
                .error("bid", &"no answer in time (cancelled by the checker)");
            Verdict::Unrecorded {
                lost: false,
                error: "cancelled by the checker".into(),
            }
        }
    }
}

/// After the faults: every posting is bid once more, with time to spare, so each one
/// has run at least once (or says it already has), and a fresh key is taken (the system
/// recovered). A manager may need one failed call to find a new master, so
/// backend errors are retried within the wait.
pub async fn sweep(r: &Arc<Round>, m: &BidLockManager) {
    let mut tasks = Vec::new();
    for key in r.postings.clone() {
        let (r, m) = (r.clone(), m.clone());
        tasks.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let d = Draw::calm(key.clone());
                run_bid(&r, &m, Who::Sweep, &d, Bid::Succeeds(Duration::from_millis(5))).await;
                let last = r.hist.bids.lock().unwrap().iter().rev().find(|b| b.who == Who::Sweep && b.key == r.redis_key(&key)).map(|b| b.verdict.clone());
                let retry = matches!(&last, Some(Verdict::NotRun { why }) if !why.contains("already handled"));
                if !retry || Instant::now() >= deadline {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    // Recovery on a key of its own: the hot keys may rightly stay held for a ttl (a
    // given holder id is not released in the background).
    let fresh = LockKey::new("chaos", format!("recovered-r{}", r.index)).expect("key");
    let (r2, m2) = (r.clone(), m.clone());
    tasks.push(tokio::spawn(
        async move { sweep_key(&r2, &m2, fresh).await },
    ));
    for t in tasks {
        let _ = t.await;
    }
}

async fn sweep_key(r: &Round, m: &BidLockManager, key: LockKey) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = Draw::calm(key.clone());
        let called_at = Instant::now();
        match m.acquire(&d.key, &d.opts()).await {
            Ok(g) => {
                let open = Open::begin(r, Who::Sweep, &d, &g, called_at);
                return open.end(r, &d, g, true).await;
            }
            Err(e) if e.is_backend() && Instant::now() < deadline => {
                r.hist.count("sweep.retry");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return note_acquire_error(r, "sweep", &e),
        }
    }
}
