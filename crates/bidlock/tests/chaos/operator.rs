//! What an operator does to locks: force releases (library and CLI), `cleanup_all`,
//! releases by holder id without force (library `release(key, holder)` and `bidlock
//! release M P --holder X`), and the cleanup of another application whose prefix must
//! not reach this one's keys. Each proves it took effect (a lock was removed).

use std::time::{Duration, Instant};

use bidlock::{BidLockManager, Holder};

use super::history::{Fault, Harm};
use super::round::Round;
use super::topology::Topology;

fn fault(what: &str, harm: Harm, start: Instant, keys: Option<Vec<String>>) -> Fault {
    let mut f = Fault::new(what, harm, start);
    f.keys = keys;
    f.hit = Some((start, f.end));
    f
}

pub async fn force_release(r: &Round, admin: &BidLockManager, k: usize) -> Fault {
    let key = &r.operated()[target(r, k).await];
    let start = Instant::now();
    let res = admin.force_release(key).await;
    let keys = Some(vec![r.redis_key(key)]);
    let mut f = fault("force_release", Harm::Operator, start, keys);
    f.effective = matches!(res, Ok(true));
    f.detail = format!("{res:?}");
    f
}

pub async fn cleanup_all(admin: &BidLockManager) -> Fault {
    let start = Instant::now();
    let res = cleanup(admin.clone()).await;
    let mut f = fault("cleanup_all", Harm::Operator, start, None);
    f.effective = matches!(res, Ok(n) if n > 0);
    f.detail = format!("{res:?}");
    f
}

/// The key to release (an index into [`Round::operated`]): one held now by a lease
/// renewed less often than a release must be noticed, when one turns up within a second
/// (the release then tests loss notification, not the next renewal); else `planned`.
async fn target(r: &Round, planned: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(1);
    let keys = r.operated();
    let names: Vec<String> = keys.iter().map(|k| r.redis_key(k)).collect();
    while Instant::now() < deadline {
        if let Some(key) = r.reg.slowly_renewed_key(&names) {
            if let Some(i) = names.iter().position(|k| *k == key) {
                return i;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    planned % keys.len()
}

/// `bidlock release M P` with `args` (`--force`, or `--holder X`), as an operator
/// would run it: straight to Redis. The exit code, and the fault it makes.
async fn cli_release(r: &Round, topo: &Topology, k: usize, args: &[&str], what: &str) -> Fault {
    let key = &r.operated()[k];
    let start = Instant::now();
    let out = tokio::process::Command::new(&r.bin)
        .args(["--redis-url", &topo.admin_url, "release"])
        .args([key.marketplace(), key.posting()])
        .args(args)
        .env_remove("REDIS_URL")
        .output()
        .await;
    let mut f = fault(what, Harm::Operator, start, Some(vec![r.redis_key(key)]));
    let code = out.as_ref().ok().and_then(|o| o.status.code());
    f.effective = code == Some(0);
    f.detail = format!("exit {code:?}");
    f
}

pub async fn cli_force(r: &Round, topo: &Topology, k: usize) -> Fault {
    let k = target(r, k).await;
    cli_release(r, topo, k, &["--force"], "bidlock release --force").await
}

/// Who Redis shows holding key `k` now (straight from the server).
async fn holder_of(r: &Round, topo: &std::sync::Arc<Topology>, k: usize) -> Option<String> {
    let (t, key) = (topo.clone(), r.redis_key(&r.operated()[k]));
    tokio::task::spawn_blocking(move || {
        let mut c = t.direct()?;
        redis::cmd("GET")
            .arg(key)
            .query::<Option<String>>(&mut c)
            .ok()?
    })
    .await
    .ok()
    .flatten()
}

/// A release by holder id, without force, of whoever Redis shows holding a key (a
/// slowly renewed lease's key when one turns up): through the library (`cli` false) or
/// `bidlock release M P --holder X`. The holder must learn within a second
/// (docs/GUARANTEES.md: a release of a key you hold reaches every manager as a message).
pub async fn release_holder(
    r: &Round,
    topo: &std::sync::Arc<Topology>,
    admin: &BidLockManager,
    k: usize,
    cli: bool,
) -> Fault {
    let k = target(r, k).await;
    let what = if cli {
        "bidlock release --holder"
    } else {
        "release(key, holder)"
    };
    let Some(holder) = holder_of(r, topo, k).await else {
        let mut f = fault(what, Harm::Operator, Instant::now(), None);
        f.detail = "the key was free".into();
        return f;
    };
    let mut f = if cli {
        cli_release(r, topo, k, &["--holder", &holder], what).await
    } else {
        let key = &r.operated()[k];
        let start = Instant::now();
        let res = admin.release(key, &Holder::new(&holder)).await;
        let keys = Some(vec![r.redis_key(key)]);
        let mut f = fault(what, Harm::Operator, start, keys);
        f.effective = matches!(res, Ok(true));
        f.detail = format!("{res:?}");
        f
    };
    f.detail = format!("holder {holder}: {}", f.detail);
    f
}

/// The prefix of another application sharing the Redis. On today's code its cleanup
/// reaches `bid_lock`'s completion records (`bid_done:*`); a prefix that could alias
/// another's keys should be refused.
pub const FOREIGN_PREFIX: &str = "bid_done";

pub async fn foreign_cleanup(topo: &Topology) -> Fault {
    let start = Instant::now();
    let cfg = bidlock::Config::builder()
        .backend(bidlock::Backend::Redis)
        .redis_url(&topo.admin_url)
        .prefix(FOREIGN_PREFIX)
        .build();
    let what = format!("cleanup_all with prefix {FOREIGN_PREFIX}");
    let mut f = Fault::new(&what, Harm::Benign, start);
    let m = match cfg {
        Ok(cfg) => BidLockManager::new(cfg).await,
        Err(e) => Err(e.into()),
    };
    match m {
        Ok(m) => {
            let res = cleanup(m.clone()).await;
            m.close().await;
            f.effective = matches!(res, Ok(n) if n > 0);
            f.detail = format!("removed {res:?} keys");
        }
        Err(e) => f.detail = format!("refused: {e}"),
    }
    f.end = Instant::now();
    f
}

/// `cleanup_all` on a thread of its own: its future (an async closure over SCAN
/// batches) is not provably `Send` for every lifetime, so it cannot be awaited inside a
/// spawned task that borrows the manager.
async fn cleanup(admin: BidLockManager) -> Result<u64, bidlock::Error> {
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(admin.cleanup_all()))
        .await
        .unwrap_or_else(|e| panic!("cleanup task: {e}"))
}
