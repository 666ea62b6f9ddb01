//! The nemesis's faults on Redis and the network: pauses, proxy latency, drops and
//! partitions, and the data-losing ones — restart without persistence, an AOF that lost
//! its unsynced second, an old RDB restored, a failover to a replica that missed writes.
//! Each proves it took effect: the server stopped answering, the proxy stalled, or the
//! fencing counter came back lower than it was (rolled back, not deleted).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bidlock_testkit::{Fault as ProxyFault, RedisServer};

use super::history::{Fault, Harm};
use super::nemesis::Action;
use super::round::Round;
use super::topology::{ping, Servers, Topology};

fn fault(what: &str, harm: Harm, start: Instant) -> Fault {
    Fault::new(what, harm, start)
}

/// Runs `f` on the single server, off the async threads (kill and restart block). Not
/// an `async fn`: the closure must not be held across an await (it would make the
/// nemesis future not `Send`).
fn on_server<T: Send + 'static>(
    topo: &Arc<Topology>,
    f: impl FnOnce(&mut RedisServer) -> T + Send + 'static,
) -> impl std::future::Future<Output = Option<T>> {
    let servers = topo.servers.clone();
    let task = tokio::task::spawn_blocking(move || match &mut *servers.lock().unwrap() {
        Servers::Single(s) => Some(f(s)),
        Servers::Sentinel(_) => None,
    });
    async move { task.await.ok().flatten() }
}

fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> impl std::future::Future<Output = T> {
    let task = tokio::task::spawn_blocking(f);
    async move { task.await.expect("blocking task") }
}

pub async fn act(r: &Round, topo: &Arc<Topology>, a: Action) -> Fault {
    match a {
        Action::PauseRedis(d) => pause(topo, d).await,
        Action::Latency(lat, d) => latency(topo, lat, d).await,
        Action::DropConnections | Action::HalfClose => drops(topo, a),
        Action::Partition(d) => partition(topo, d).await,
        Action::RestartEmpty => restart_empty(r, topo).await,
        Action::AofCrash => aof_crash(topo).await,
        Action::RdbRollback(gap) => rdb_rollback(topo, gap).await,
        Action::Failover(lag) => failover(topo, lag).await,
        other => {
            let mut f = fault("unknown", Harm::Benign, Instant::now());
            f.detail = format!("{other:?} is not a server fault");
            f
        }
    }
}

async fn pause(topo: &Arc<Topology>, d: Duration) -> Fault {
    let start = Instant::now();
    let paused = on_server(topo, |s| s.pause()).await.unwrap_or(false);
    let t = topo.clone();
    let silent = blocking(move || !t.answers()).await;
    tokio::time::sleep(d.saturating_sub(start.elapsed())).await;
    on_server(topo, |s| s.resume()).await;
    let mut f = fault("SIGSTOP redis-server", Harm::Benign, start);
    f.effective = paused && silent;
    f.detail = format!("{d:?}; stopped: {paused}, PING timed out: {silent}");
    f
}

fn proxy_port(topo: &Topology) -> u16 {
    topo.proxy
        .as_ref()
        .map_or(0, bidlock_testkit::FaultProxy::port)
}

async fn latency(topo: &Arc<Topology>, lat: Duration, d: Duration) -> Fault {
    let start = Instant::now();
    if let Some(p) = &topo.proxy {
        p.set(ProxyFault::Latency(lat));
    }
    let port = proxy_port(topo);
    let took = blocking(move || {
        let t = Instant::now();
        ping(port, Duration::from_secs(3)).then(|| t.elapsed())
    })
    .await;
    tokio::time::sleep(d.saturating_sub(start.elapsed())).await;
    if let Some(p) = &topo.proxy {
        p.set(ProxyFault::None);
    }
    let mut f = fault("proxy latency", Harm::Benign, start);
    f.effective = took.is_some_and(|t| t >= lat);
    f.detail = format!("{lat:?} per chunk for {d:?}; a PING took {took:?}");
    f
}

fn drops(topo: &Topology, a: Action) -> Fault {
    let start = Instant::now();
    let (what, n) = match (&topo.proxy, a) {
        (Some(p), Action::HalfClose) => ("proxy half-close", p.half_close()),
        (Some(p), _) => ("proxy drop connections", p.drop_connections()),
        (None, _) => ("proxy drop connections", 0),
    };
    let mut f = fault(what, Harm::Benign, start);
    f.effective = n > 0;
    f.detail = format!("{n} connections");
    f
}

async fn partition(topo: &Arc<Topology>, d: Duration) -> Fault {
    let start = Instant::now();
    if let Some(p) = &topo.proxy {
        p.set(ProxyFault::Blackhole);
    }
    let port = proxy_port(topo);
    let stalled = blocking(move || !ping(port, Duration::from_millis(150))).await;
    tokio::time::sleep(d.saturating_sub(start.elapsed())).await;
    if let Some(p) = &topo.proxy {
        p.set(ProxyFault::None);
    }
    let mut f = fault("proxy partition", Harm::Benign, start);
    f.effective = stalled;
    f.detail = format!("{d:?}; a PING through the proxy timed out: {stalled}");
    f
}

/// Writes a marker key straight to the server: if it is gone after the fault, the fault
/// lost (or rolled back) the writes made after that moment. The fencing counter cannot
/// prove it: with tokens above the server clock it never comes back lower.
async fn mark(topo: &Arc<Topology>) -> Option<String> {
    let t = topo.clone();
    let name = format!("chaos:marker:{}", super::history::wall_us());
    blocking(move || {
        let mut c = t.direct()?;
        // With a ttl: the key census at the round's end allows none without one but the
        // fencing counter.
        let ok: redis::RedisResult<()> = redis::cmd("SET")
            .arg(&name)
            .arg(1)
            .arg("PX")
            .arg(600_000)
            .query(&mut c);
        ok.ok().map(|()| name)
    })
    .await
}

/// Whether the marker survived (`None`: it could not be asked).
async fn survived(topo: &Arc<Topology>, marker: Option<String>) -> Option<bool> {
    let (t, name) = (topo.clone(), marker?);
    blocking(move || {
        let mut c = t.direct()?;
        redis::cmd("EXISTS").arg(&name).query::<bool>(&mut c).ok()
    })
    .await
}

async fn fence(topo: &Arc<Topology>) -> Option<u64> {
    let t = topo.clone();
    blocking(move || t.fence()).await
}

/// Waits (at most `limit`) until the counter moved past `from`: writes happened that
/// the fault can lose.
async fn writes_after(topo: &Arc<Topology>, from: Option<u64>, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && fence(topo).await <= from.map(|f| f + 2) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn restart_empty(r: &Round, topo: &Arc<Topology>) -> Fault {
    let keys: Vec<String> = r.hot.iter().map(|k| r.redis_key(k)).collect();
    let t = topo.clone();
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline
        && !blocking({
            let (t, k) = (t.clone(), keys.clone());
            move || t.any_held(&k)
        })
        .await
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = fence(topo).await;
    let marker = mark(topo).await;
    let start = Instant::now();
    let up = on_server(topo, |s| {
        s.restart();
        s.is_running()
    })
    .await
    .unwrap_or(false);
    let back = Instant::now();
    let kept = survived(topo, marker).await;
    let after = fence(topo).await;
    let mut f = fault("kill -9 + restart, no persistence", Harm::DataLoss, start);
    f.hit = Some((start, back));
    f.effective = up && kept == Some(false);
    f.detail = format!("marker kept: {kept:?}; fence {before:?} -> {after:?}");
    f
}

async fn aof_crash(topo: &Arc<Topology>) -> Fault {
    // Sample the file for over a second, then crash losing what came after the sample
    // taken one second before the crash.
    let mut samples = Vec::new();
    let first = Instant::now();
    while first.elapsed() < Duration::from_millis(1300) {
        if let Some(len) = on_server(topo, |s| s.aof_tail_len()).await {
            samples.push((Instant::now(), len));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cutoff = Instant::now() - Duration::from_secs(1);
    let (synced_at, keep) = samples
        .iter()
        .rev()
        .find(|(t, _)| *t <= cutoff)
        .copied()
        .unwrap_or((first, 0));
    let before = fence(topo).await;
    let marker = mark(topo).await;
    let crash = Instant::now();
    let cut = on_server(topo, move |s| s.crash_losing_aof_tail(keep))
        .await
        .unwrap_or(0);
    let back = Instant::now();
    let kept = survived(topo, marker).await;
    let after = fence(topo).await;
    let mut f = fault(
        "kill -9, AOF everysec loses its last second",
        Harm::DataLoss,
        synced_at,
    );
    f.hit = Some((crash, back));
    f.effective = cut > 0 && kept == Some(false);
    f.detail = format!("cut {cut} bytes; marker kept: {kept:?}; fence {before:?} -> {after:?}");
    f
}

async fn rdb_rollback(topo: &Arc<Topology>, gap: Duration) -> Fault {
    let Some(snap) = on_server(topo, |s| s.snapshot()).await else {
        return fault("RDB rollback", Harm::DataLoss, Instant::now());
    };
    let at_snap = fence(topo).await;
    let marker = mark(topo).await;
    tokio::time::sleep(gap).await;
    writes_after(topo, at_snap, Duration::from_secs(2)).await;
    let before = fence(topo).await;
    let taken = snap.taken_at;
    let kill = Instant::now();
    on_server(topo, move |s| s.restore_snapshot(&snap)).await;
    let back = Instant::now();
    let kept = survived(topo, marker).await;
    let after = fence(topo).await;
    let mut f = fault("kill -9, restore an older RDB", Harm::DataLoss, taken);
    f.hit = Some((kill, back));
    f.effective = kept == Some(false);
    f.detail = format!("marker written after SAVE kept: {kept:?}; fence at SAVE {at_snap:?}, before the kill {before:?}, after {after:?}");
    f
}

async fn failover(topo: &Arc<Topology>, lag: Duration) -> Fault {
    let servers = topo.servers.clone();
    let cut = blocking(move || match &*servers.lock().unwrap() {
        Servers::Sentinel(c) => c.cut_replication(),
        Servers::Single(_) => false,
    })
    .await;
    let start = Instant::now();
    let at_cut = fence(topo).await;
    let marker = mark(topo).await;
    tokio::time::sleep(lag).await;
    writes_after(topo, at_cut, Duration::from_secs(2)).await;
    let before = fence(topo).await;
    let servers = topo.servers.clone();
    let kill = Instant::now();
    let promoted = blocking(move || match &mut *servers.lock().unwrap() {
        Servers::Sentinel(c) => {
            let old = c.kill_master()?;
            c.wait_new_master(old, Duration::from_secs(30))
        }
        Servers::Single(_) => None,
    })
    .await;
    if let Some(p) = promoted {
        topo.observed.store(p, Ordering::Release);
    }
    let back = Instant::now();
    let kept = survived(topo, marker).await;
    let after = fence(topo).await;
    let mut f = fault(
        "failover to a replica cut off from the master",
        Harm::DataLoss,
        start,
    );
    f.hit = Some((kill, back));
    f.effective = cut && promoted.is_some() && kept == Some(false);
    f.detail = format!("replica cut: {cut}; marker written after the cut kept: {kept:?}; fence at cut {at_cut:?}, master's last {before:?}, new master's {after:?}");
    f
}
