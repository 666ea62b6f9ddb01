//! The reliability suite: contention from three instances while one fault at a time hits
//! Redis or the network, for real, on loopback. Each test asserts that tokens increase in
//! holding order, that no two sections overlapped while both leases were valid (unless
//! Redis itself lost the lock), and that the system recovers; it writes its figures for
//! RELIABILITY.md (scripts/reliability.sh).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bidlock::{Backend, BidLockManager, Config};
use bidlock_testkit::{Fault, FaultProxy, RedisServer, ServerOptions};
use common::checker::{check, contend_into, report, Outcomes, Recorder, Workload};

async fn instances(url: &str, n: usize) -> Vec<BidLockManager> {
    let mut v = Vec::new();
    for _ in 0..n {
        let cfg = Config::builder()
            .backend(Backend::Redis)
            .redis_url(url)
            .response_timeout(Duration::from_millis(500))
            .connect_timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        v.push(BidLockManager::new(cfg).await.unwrap());
    }
    v
}

fn workload() -> Workload {
    let secs = std::env::var("BIDLOCK_FAULT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    Workload {
        duration: Duration::from_secs(secs),
        ..Workload::default()
    }
}

/// Starts the workload and returns once it demonstrably runs: sections have started and
/// one holds its lock now, so the fault lands on held locks (no sleep guesses it).
async fn start_work(managers: Vec<BidLockManager>) -> (Arc<Recorder>, tokio::task::JoinHandle<()>) {
    let rec = Recorder::new();
    let work = tokio::spawn(contend_into(rec.clone(), managers, workload()));
    rec.running(5, Duration::from_secs(10)).await;
    (rec, work)
}

/// A PING to `127.0.0.1:port` that gives up after `limit`; returns how long it took.
async fn ping(port: u16, limit: Duration) -> Option<Duration> {
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).ok()?;
        let mut c = client.get_connection_with_timeout(limit).ok()?;
        c.set_read_timeout(Some(limit)).ok()?;
        redis::cmd("PING").query::<String>(&mut c).ok()?;
        Some(start.elapsed())
    })
    .await
    .unwrap()
}

fn assert_safe(name: &str, o: &Outcomes) {
    assert_eq!(o.token_order_violations, 0, "{name}: {o:?}");
    assert_eq!(o.unsafe_overlaps, 0, "{name}: {o:?}");
    assert_eq!(
        o.late_loss_reports, 0,
        "{name}: lost() resolved late: {o:?}"
    );
    assert!(o.sections > 0, "{name}: nothing ran: {o:?}");
    assert!(
        o.recovery_ms.is_some(),
        "{name}: no section after the fault healed: {o:?}"
    );
}

/// Kill and restart Redis at once. Without persistence the restart loses the lock of a
/// holder whose lease is still valid, so a second holder can start while the first has
/// not yet learned (it learns at its next renewal): overlaps are counted, not forbidden,
/// and the fencing token of the later holder is always higher.
async fn kill_and_restart(aof: bool) -> Outcomes {
    let server = RedisServer::start_with(ServerOptions {
        aof,
        ..Default::default()
    });
    let port = server.port();
    let managers = instances(&server.url(), 3).await;
    let (rec, work) = start_work(managers).await;
    // A marker proves what the restart kept: the fencing counter cannot (tokens stay
    // above the server clock whether or not it survived).
    let _: () = server.cmd(&["SET", "marker", "1"]);
    let mut server = tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.kill();
        server
    })
    .await
    .unwrap();
    assert!(
        ping(port, Duration::from_millis(200)).await.is_none(),
        "redis-server answered after SIGKILL"
    );
    server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .unwrap();
    let healed = Instant::now();
    let kept: bool = server.cmd(&["EXISTS", "marker"]);
    assert_eq!(
        kept, aof,
        "the restart kept data: {kept} (AOF always: {aof})"
    );
    work.await.unwrap();
    drop(server);
    check(&rec, Some(healed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_without_persistence() {
    let o = kill_and_restart(false).await;
    report(
        "restart-no-persistence",
        "SIGKILL redis-server mid-run and start it again at once, no persistence",
        "commands in flight: error; holders: lost at their next renewal (lock gone)",
        &o,
        &workload(),
    );
    assert_eq!(o.token_order_violations, 0, "{o:?}");
    assert_eq!(o.late_loss_reports, 0, "{o:?}");
    assert!(o.recovery_ms.is_some(), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_with_aof_always() {
    let o = kill_and_restart(true).await;
    report(
        "restart-aof-always",
        "SIGKILL redis-server mid-run and start it again at once, appendfsync always",
        "commands in flight: error; holders keep their locks (restored from the AOF) or are told lost",
        &o,
        &workload(),
    );
    assert_safe("restart-aof-always", &o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_with_sigstop() {
    let server = RedisServer::start();
    let managers = instances(&server.url(), 3).await;
    let (rec, work) = start_work(managers).await;
    assert!(server.pause(), "SIGSTOP did not stop redis-server");
    assert!(
        ping(server.port(), Duration::from_millis(200))
            .await
            .is_none(),
        "a stopped server answered"
    );
    tokio::time::sleep(Duration::from_millis(2000)).await;
    server.resume();
    let healed = Instant::now();
    work.await.unwrap();
    let o = check(&rec, Some(healed));
    report(
        "sigstop-2s",
        "SIGSTOP redis-server for 2 s (response timeout 0.5 s, ttl 1 s)",
        "acquires: timeout error; holders: lost when the lease ran out unrenewed",
        &o,
        &workload(),
    );
    assert_safe("sigstop", &o);
    assert!(o.errors > 0 && o.lost > 0, "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_busy_with_debug_sleep() {
    let server = RedisServer::start();
    let managers = instances(&server.url(), 3).await;
    let (rec, work) = start_work(managers).await;
    let mut c = server.client();
    let sleeper = tokio::task::spawn_blocking(move || {
        let _: redis::RedisResult<()> = redis::cmd("DEBUG").arg("SLEEP").arg(2).query(&mut c);
    });
    // The fault took effect: another connection's PING goes unanswered.
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut stalled = false;
    while !stalled && Instant::now() < deadline {
        stalled = ping(server.port(), Duration::from_millis(150))
            .await
            .is_none();
    }
    assert!(stalled, "DEBUG SLEEP did not block the server");
    sleeper.await.unwrap();
    let healed = Instant::now();
    work.await.unwrap();
    let o = check(&rec, Some(healed));
    report(
        "debug-sleep-2s",
        "DEBUG SLEEP 2: the server blocks for 2 s",
        "acquires: timeout error; holders: lost when the lease ran out unrenewed",
        &o,
        &workload(),
    );
    assert_safe("debug-sleep", &o);
    assert!(o.lost > 0, "{o:?}");
}

/// Runs the workload through a proxy; `drive` injects the fault and returns whether it
/// took effect.
async fn through_proxy(
    name: &str,
    description: &str,
    told: &str,
    drive: impl AsyncFnOnce(&FaultProxy) -> bool,
) -> Outcomes {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.port()).await;
    let managers = instances(&proxy.url(), 3).await;
    let (rec, work) = start_work(managers).await;
    let effective = drive(&proxy).await;
    proxy.set(Fault::None);
    let healed = Instant::now();
    assert!(effective, "{name}: the fault did not take effect");
    work.await.unwrap();
    let o = check(&rec, Some(healed));
    report(name, description, told, &o, &workload());
    assert_safe(name, &o);
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_latency() {
    through_proxy(
        "latency-100ms",
        "proxy adds 100 ms to every chunk in both directions for 2 s",
        "slower acquires and renewals; leases kept (renewal every ttl/3 has room)",
        async |p| {
            let start = Instant::now();
            p.set(Fault::Latency(Duration::from_millis(100)));
            let took = ping(p.port(), Duration::from_secs(3)).await;
            tokio::time::sleep(Duration::from_secs(2).saturating_sub(start.elapsed())).await;
            took.is_some_and(|t| t >= Duration::from_millis(100))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_dropped() {
    let o = through_proxy(
        "connections-dropped",
        "proxy closes every connection 6 times, 300 ms apart",
        "commands in flight: connection error, which a waiting acquire retries until its deadline; the client reconnects by itself",
        async |p| {
            let mut dropped = 0;
            for _ in 0..6 {
                dropped += p.drop_connections();
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            dropped > 0
        },
    )
    .await;
    assert!(o.sections > 0, "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_blackhole() {
    let o = through_proxy(
        "blackhole-2s",
        "proxy stalls all traffic for 2 s, sockets open; buffered bytes arrive late (a partition)",
        "acquires: timeout error; holders: lost when the lease ran out unrenewed",
        async |p| {
            let start = Instant::now();
            p.set(Fault::Blackhole);
            let stalled = ping(p.port(), Duration::from_millis(200)).await.is_none();
            tokio::time::sleep(Duration::from_secs(2).saturating_sub(start.elapsed())).await;
            stalled
        },
    )
    .await;
    assert!(o.errors > 0 && o.lost > 0, "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_half_closed() {
    through_proxy(
        "half-close",
        "proxy half-closes every connection (client sees EOF) 4 times, 400 ms apart",
        "commands in flight: connection error; the client reconnects by itself",
        async |p| {
            let mut closed = 0;
            for _ in 0..4 {
                closed += p.half_close();
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            closed > 0
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_and_client_kill() {
    let server = RedisServer::start();
    let managers = instances(&server.url(), 3).await;
    let (rec, work) = start_work(managers).await;
    let mut c = server.client();
    let killed = tokio::task::spawn_blocking(move || {
        let mut killed = 0;
        for i in 0..12 {
            match i % 3 {
                0 => {
                    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut c).unwrap();
                }
                1 => {
                    killed += redis::cmd("CLIENT")
                        .arg("KILL")
                        .arg("TYPE")
                        .arg("normal")
                        .arg("SKIPME")
                        .arg("yes")
                        .query::<u64>(&mut c)
                        .unwrap();
                }
                _ => {
                    killed += redis::cmd("CLIENT")
                        .arg("KILL")
                        .arg("TYPE")
                        .arg("pubsub")
                        .query::<u64>(&mut c)
                        .unwrap();
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        killed
    })
    .await
    .unwrap();
    assert!(killed > 0, "CLIENT KILL found no client to kill");
    let healed = Instant::now();
    work.await.unwrap();
    let o = check(&rec, Some(healed));
    report(
        "script-flush-client-kill",
        "SCRIPT FLUSH, CLIENT KILL TYPE normal and TYPE pubsub, 12 times 200 ms apart",
        "SCRIPT FLUSH: nothing (scripts reload on NOSCRIPT); CLIENT KILL: connection error, reconnect",
        &o,
        &workload(),
    );
    assert_safe("script-flush-client-kill", &o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_at_maxmemory_refuses_writes() {
    let server = RedisServer::start();
    let managers = instances(&server.url(), 3).await;
    let (rec, work) = start_work(managers).await;
    let used: String = server.cmd(&["INFO", "memory"]);
    let used: u64 = used
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    let _: () = server.cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    let _: () = server.cmd(&["CONFIG", "SET", "maxmemory", &(used / 2).to_string()]);
    // The fault took effect: a write is refused.
    let mut probe = server.client();
    let refused: redis::RedisResult<()> = redis::cmd("SET").arg("probe").arg("x").query(&mut probe);
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("OOM")),
        "a write was not refused at maxmemory: {refused:?}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _: () = server.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    let healed = Instant::now();
    work.await.unwrap();
    let o = check(&rec, Some(healed));
    report(
        "maxmemory-noeviction",
        "maxmemory below use with noeviction for 1.5 s: every write script is refused (OOM)",
        "acquires: error (OOM, never acquired); holders keep their leases: PEXPIRE and DEL are allowed at maxmemory",
        &o,
        &workload(),
    );
    assert_safe("maxmemory", &o);
    assert!(o.errors > 0, "{o:?}");
    assert!(
        o.first_error.as_deref().unwrap_or("").contains("OOM"),
        "{o:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_self_signed_certificate() {
    let server = RedisServer::start_with(ServerOptions {
        tls: true,
        ..Default::default()
    });
    // Verification on: a self-signed certificate is refused, with a clear error.
    let strict = Config::builder()
        .backend(Backend::Redis)
        .redis_url(server.url())
        .build()
        .unwrap();
    let err = BidLockManager::new(strict).await.unwrap_err();
    assert!(err.is_backend(), "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "lock backend rediss://127.0.0.1:{}",
            server.port()
        )),
        "{err}"
    );
    // Trusting the test's own CA (REDIS_TLS_CA_CERT in the environment form): locks
    // work over TLS.
    let env = std::collections::HashMap::from([
        ("REDIS_URL", server.url()),
        ("REDIS_TLS_CA_CERT", server.ca_cert().display().to_string()),
        ("USE_REDIS_LOCKS", "true".to_owned()),
    ]);
    let cfg = bidlock::ConfigBuilder::from_lookup(|k| env.get(k).cloned())
        .unwrap()
        .build()
        .unwrap();
    let m = BidLockManager::new(cfg).await.unwrap();
    assert!(m.location().starts_with("rediss://"));
    let k = bidlock::LockKey::new("tls", "p").unwrap();
    let g = m
        .acquire(&k, &bidlock::AcquireOptions::new())
        .await
        .unwrap();
    assert!(g.release().await.unwrap());
}
