//! The randomized checker (in the spirit of Jepsen's lock tests): library instances and
//! `bidlock run` processes contend for a few keys while a seeded nemesis injects one
//! class of faults per round, and a checker proves from the clients' own records and an
//! observer's readings of Redis that the promises held: tokens increase in holding
//! order, valid leases never overlap, nobody is told "held" after Redis stopped holding
//! the lock for them and no lock is removed under a holder, loss is reported on time,
//! every posting is bid at least once and twice only after the caller was told, no
//! cancelled acquire leaves its lock behind, and every key but the fencing counter has a
//! ttl. A history that breaks one of these passes only by a rule of `excuses.rs`, each
//! standing for a limit docs/GUARANTEES.md states, with the deterministic test that shows it.
//!
//! Profiles: the default (short, under 90 s) runs every fault class once;
//! `BIDLOCK_CHAOS_SECS=1200` runs rounds for that long (`scripts/reliability.sh --long`).
//! `BIDLOCK_CHAOS_SEED=<n>` replays a run's schedule; `BIDLOCK_CHAOS_CLASSES=a,b` runs
//! only those classes. The `bidlock` binary must be built (`cargo build -p bidlock-cli`).

mod adapter;
mod causes;
mod census;
mod check_bids;
mod check_keys;
mod check_leases;
mod checks;
mod client_bids;
mod clients;
mod excuses;
mod figures;
mod history;
mod link_faults;
mod monitor;
mod nemesis;
mod observer;
mod operator;
mod pressure;
mod procs;
mod report;
mod round;
mod server_faults;
mod topology;
mod watch;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

use figures::Figures;
use history::Harm;

/// One kind of fault per round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultClass {
    Calm,
    ForcedRelease,
    HolderFreeze,
    RedisPause,
    Latency,
    Drops,
    Partition,
    RestartNoPersistence,
    AofEverysecCrash,
    RdbRollback,
    LaggingFailover,
    BatchLatency,
    GrantHoldBack,
    HolderRelease,
}

impl FaultClass {
    pub const ALL: [FaultClass; 14] = [
        FaultClass::Calm,
        FaultClass::ForcedRelease,
        FaultClass::HolderFreeze,
        FaultClass::RedisPause,
        FaultClass::Latency,
        FaultClass::Drops,
        FaultClass::Partition,
        FaultClass::RestartNoPersistence,
        FaultClass::AofEverysecCrash,
        FaultClass::RdbRollback,
        FaultClass::LaggingFailover,
        FaultClass::BatchLatency,
        FaultClass::GrantHoldBack,
        FaultClass::HolderRelease,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultClass::Calm => "calm",
            FaultClass::ForcedRelease => "forced-release",
            FaultClass::HolderFreeze => "holder-sigstop",
            FaultClass::RedisPause => "redis-sigstop",
            FaultClass::Latency => "proxy-latency",
            FaultClass::Drops => "proxy-drops",
            FaultClass::Partition => "proxy-partition",
            FaultClass::RestartNoPersistence => "restart-no-persistence",
            FaultClass::AofEverysecCrash => "aof-everysec-crash",
            FaultClass::RdbRollback => "rdb-rollback",
            FaultClass::LaggingFailover => "failover-lagging-replica",
            FaultClass::BatchLatency => "batch-latency-cancel",
            FaultClass::GrantHoldBack => "grant-hold-back",
            FaultClass::HolderRelease => "holder-release",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            FaultClass::Calm => "no injected fault: only the clients' own chaos (cancelled acquires, extends, drops, closed managers)",
            FaultClass::ForcedRelease => "force_release, cleanup_all and `bidlock release --force` on held keys, 0.2-1 s apart; now and then `cleanup_all` by another application with prefix `bid_done`",
            FaultClass::HolderFreeze => "SIGSTOP of a `bidlock run` holder and its command for 1.2-5 s (past its ttl), then SIGCONT",
            FaultClass::RedisPause => "SIGSTOP of redis-server for 0.2-2.5 s",
            FaultClass::Latency => "proxy adds 20-250 ms per chunk for 0.5-2 s",
            FaultClass::Drops => "proxy closes or half-closes every connection",
            FaultClass::Partition => "proxy stalls all traffic for 0.2-2.5 s (sockets open)",
            FaultClass::RestartNoPersistence => "kill -9 and restart without persistence (the data is gone)",
            FaultClass::AofEverysecCrash => "kill -9 and restart with appendfsync everysec, losing the last second of the AOF (a machine crash)",
            FaultClass::RdbRollback => "SAVE, keep writing 0.8-1.8 s, kill -9, put the old dump.rdb back, restart (data rolled back)",
            FaultClass::LaggingFailover => "cut the replica off, keep writing 0.8-1.5 s, kill the master: Sentinel promotes the replica that missed the writes",
            FaultClass::BatchLatency => "one instance's links get 150-245 ms each way (a batch's answer still arrives within the 500 ms response timeout) for 1.5-4 s while every instance runs extra tasks that keep more than 4 tries in flight (so a slow manager's tries ride in batches) and cancel acquires at random, many with a shared given holder id; the other instances wait on the same keys with the same ids",
            FaultClass::GrantHoldBack => "one instance's subscriber link stalls towards it for 0.5-3 s (grant and release messages wait) while its commands reach Redis up to 480 ms late; every instance has waiters with ttls of 300-600 ms, so grants expire held back and their waiters queue again",
            FaultClass::HolderRelease => "an operator releases the holder Redis shows for a hot key by its holder id, without force (`release(key, holder)` and `bidlock release M P --holder X`), now and then by force, 0.3-1.1 s apart, while every instance's link is 20-70 ms slow each way (so releases land while replies are on their way); one instance holds a key of its own that nobody waits for",
        }
    }

    pub fn harm(self) -> Harm {
        match self {
            FaultClass::RestartNoPersistence
            | FaultClass::AofEverysecCrash
            | FaultClass::RdbRollback
            | FaultClass::LaggingFailover => Harm::DataLoss,
            FaultClass::ForcedRelease | FaultClass::HolderRelease => Harm::Operator,
            FaultClass::HolderFreeze => Harm::Freeze,
            _ => Harm::Benign,
        }
    }

    pub fn harm_text(self) -> &'static str {
        match self.harm() {
            Harm::DataLoss => "unsafe (docs/GUARANTEES.md): Redis loses or rolls back data; overlaps allowed until the next renewal, tokens must still increase",
            Harm::Operator => "an operator breaks the lock: holders must notice within 1 s",
            Harm::Freeze => "a frozen holder's command may run past its lease on waking: only fencing protects",
            Harm::Benign => "safe: leases must stay exact",
        }
    }

    pub fn uses_proxy(self) -> bool {
        matches!(
            self,
            FaultClass::Latency | FaultClass::Drops | FaultClass::Partition
        )
    }

    /// Each library instance reaches Redis through a proxy of its own (its links can be
    /// faulted alone).
    pub fn links_per_instance(self) -> bool {
        matches!(
            self,
            FaultClass::BatchLatency | FaultClass::GrantHoldBack | FaultClass::HolderRelease
        )
    }

    fn parse(s: &str) -> Option<FaultClass> {
        FaultClass::ALL.into_iter().find(|c| c.name() == s.trim())
    }
}

/// Rounds to run: (class, length).
fn schedule(
    rng: &mut StdRng,
    long: Option<Duration>,
    classes: &[FaultClass],
) -> Vec<(FaultClass, Duration)> {
    let len_for = |c: FaultClass, base: Duration| {
        if c == FaultClass::LaggingFailover {
            base.max(Duration::from_secs(8))
        } else {
            base
        }
    };
    let mut order = classes.to_vec();
    order.shuffle(rng);
    let Some(total) = long else {
        return order
            .into_iter()
            .map(|c| (c, len_for(c, Duration::from_secs(4))))
            .collect();
    };
    // Long: shuffled passes over the classes; the run stops starting rounds at `total`.
    let mut v = Vec::new();
    let mut planned = Duration::ZERO;
    while planned < total * 2 {
        order.shuffle(rng);
        for &c in &order {
            let len = len_for(c, Duration::from_secs(rng.random_range(10..25)));
            planned += len;
            v.push((c, len));
        }
    }
    v
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok())
}

fn sample(t0: Instant) -> (f64, u64, u64) {
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks() as u64;
    (
        t0.elapsed().as_secs_f64(),
        bidlock_testkit::process::rss_kib().unwrap_or(0),
        tasks,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_checker() {
    let seed = env_u64("BIDLOCK_CHAOS_SEED").unwrap_or_else(|| u64::from(rand::random::<u32>()));
    let long = env_u64("BIDLOCK_CHAOS_SECS").map(Duration::from_secs);
    let classes: Vec<FaultClass> = std::env::var("BIDLOCK_CHAOS_CLASSES")
        .map(|s| s.split(',').filter_map(FaultClass::parse).collect())
        .unwrap_or_else(|_| FaultClass::ALL.to_vec());
    let profile = long.map_or("short".to_owned(), |d| format!("long ({} s)", d.as_secs()));
    eprintln!("chaos: seed {seed} (replay: BIDLOCK_CHAOS_SEED={seed}), profile {profile}");
    let bin = procs::bidlock_bin();
    let mut rng = StdRng::seed_from_u64(seed);
    let rounds = schedule(&mut rng, long, &classes);
    let t0 = Instant::now();
    let samples = std::sync::Arc::new(std::sync::Mutex::new(vec![sample(t0)]));
    let s2 = samples.clone();
    let sampler = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            s2.lock().unwrap().push(sample(t0));
        }
    });
    let mut per_class: BTreeMap<FaultClass, (Figures, Vec<String>)> = BTreeMap::new();
    let mut failures = String::new();
    let mut violations = 0;
    let mut by_hint: BTreeMap<String, usize> = BTreeMap::new();
    for (i, (class, len)) in rounds.into_iter().enumerate() {
        if long.is_some_and(|total| t0.elapsed() >= total) {
            break;
        }
        let round_seed = seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(i as u64);
        let out = round::run(i, class, len, round_seed, &bin).await;
        eprintln!(
            "chaos: round {i} {} ({:.1} s): {} sections, {} violations",
            class.name(),
            out.figures.wall_secs,
            out.figures.sections,
            out.violations.len()
        );
        let entry = per_class.entry(out.class).or_default();
        entry.0.merge(&out.figures);
        for v in out.violations.iter().take(3) {
            if entry.1.len() < 6 {
                let text = format!("{}: {} [{}]", v.check, v.msg, v.hint);
                entry.1.push(text.replace('\n', " | "));
            }
        }
        violations += out.violations.len();
        for v in &out.violations {
            let what = v
                .hint
                .split(':')
                .next()
                .filter(|h| h.contains("hole"))
                .unwrap_or(v.check);
            *by_hint.entry(what.to_owned()).or_default() += 1;
        }
        failures.push_str(&out.histories);
    }
    sampler.abort();
    samples.lock().unwrap().push(sample(t0));
    let run = report::RunInfo {
        seed,
        profile: profile.clone(),
        seconds: t0.elapsed().as_secs_f64(),
        samples: samples.lock().unwrap().clone(),
        by_hint: by_hint.clone(),
    };
    report::write(&per_class, &run);
    assert!(
        violations == 0,
        "chaos: {violations} violations with seed {seed} (replay: BIDLOCK_CHAOS_SEED={seed}, profile {profile}); by likely cause: {by_hint:?}\n{failures}"
    );
}
