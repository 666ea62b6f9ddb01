//! A bidding agent fleet in one process: several instances (each its own manager, as
//! separate processes would be) poll a fake marketplace for new postings, decide, and bid
//! through `bid_once` with the fencing token. The fake marketplace refuses stale tokens
//! and counts duplicate bids (there must be none).
//!
//! ```sh
//! cargo run --example agent                                  # in-memory locks
//! REDIS_URL=redis://127.0.0.1:6379/0 cargo run --example agent -- --seconds 10
//! ```
//!
//! Exits 1 if any posting got two bids.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bidlock::{AcquireOptions, BidLockManager, Config, FencingToken, LockKey};

/// A posting on the fake marketplace.
#[derive(Debug, Clone)]
struct Posting {
    id: String,
    budget: u32,
}

/// Why the marketplace refused a bid.
#[derive(Debug, thiserror::Error)]
enum BidError {
    #[error("stale fencing token {0} (the marketplace saw a newer one)")]
    StaleToken(u64),
    #[error("marketplace busy, try later")]
    Busy,
}

/// The marketplace: a feed of postings and a bid API that checks fencing tokens.
#[derive(Default)]
struct Marketplace {
    postings: Mutex<Vec<Posting>>,
    highest_token: Mutex<HashMap<String, u64>>,
    bids: Mutex<HashMap<String, Vec<String>>>,
    refused_stale: AtomicU64,
}

impl Marketplace {
    fn publish(&self, p: Posting) {
        self.postings.lock().unwrap().push(p);
    }

    /// The newest postings (what an agent's poll returns).
    fn poll(&self, since: usize) -> Vec<Posting> {
        let all = self.postings.lock().unwrap();
        all.get(since..).map(<[_]>::to_vec).unwrap_or_default()
    }

    /// Places a bid. Refuses a token lower than one already seen for the posting, as a
    /// real marketplace (or a bid service in front of it) should.
    async fn bid(&self, posting: &str, agent: &str, token: FencingToken) -> Result<(), BidError> {
        tokio::time::sleep(Duration::from_millis(2)).await; // the API call
        if rand_percent() < 2 {
            return Err(BidError::Busy);
        }
        {
            let mut highest = self.highest_token.lock().unwrap();
            let h = highest.entry(posting.to_owned()).or_insert(0);
            if token.get() < *h {
                self.refused_stale.fetch_add(1, Relaxed);
                return Err(BidError::StaleToken(token.get()));
            }
            *h = token.get();
        }
        self.bids
            .lock()
            .unwrap()
            .entry(posting.to_owned())
            .or_default()
            .push(agent.to_owned());
        Ok(())
    }
}

fn rand_percent() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    (RandomState::new().hash_one(std::time::Instant::now()) % 100) as u32
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,agent=info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let instances = arg("--instances", 3);
    let tasks = arg("--tasks", 4);
    let seconds = arg("--seconds", 5);
    let market = Arc::new(Marketplace::default());

    // The feed: a new posting every 2 ms until the run ends.
    let feed = {
        let market = market.clone();
        tokio::spawn(async move {
            for i in 0.. {
                market.publish(Posting {
                    id: format!("job_{i}"),
                    budget: 50 + (i * 37) % 500,
                });
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    // The environment decides the backend, exactly as in production.
    let config = Config::from_env()?;
    let mut agents = Vec::new();
    let placed = Arc::new(AtomicU64::new(0));
    let skipped = Arc::new(AtomicU64::new(0));
    let first = BidLockManager::new(config.clone()).await?;
    for instance in 0..instances {
        // In-memory locks exclude only the tasks of one store: without Redis, the
        // instances share the first manager, as tasks of one process would.
        let manager = if instance == 0 || first.backend() == bidlock::Backend::Memory {
            first.clone()
        } else {
            BidLockManager::new(config.clone()).await?
        };
        tracing::info!(target: "agent", instance, backend = %manager.backend(), "instance up");
        for task in 0..tasks {
            let (manager, market, placed, skipped) = (
                manager.clone(),
                market.clone(),
                placed.clone(),
                skipped.clone(),
            );
            let name = format!("agent-{instance}.{task}");
            agents.push(tokio::spawn(async move {
                let mut seen = 0;
                let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
                while tokio::time::Instant::now() < deadline {
                    let new = market.poll(seen);
                    seen += new.len();
                    for posting in new {
                        // Decide: only postings worth it.
                        if posting.budget < 100 {
                            continue;
                        }
                        let Ok(key) = LockKey::new("fakemarket", &posting.id) else { continue };
                        let opts = AcquireOptions::new().timeout(Duration::from_secs(5));
                        let outcome = manager
                            .bid_once(&key, &opts, |lease| {
                                let (market, name, id) = (market.clone(), name.clone(), posting.id.clone());
                                async move { market.bid(&id, &name, lease.fencing_token()).await }
                            })
                            .await;
                        match outcome {
                            Ok(bidlock::BidOutcome::Placed(()) | bidlock::BidOutcome::Unrecorded { .. }) => {
                                placed.fetch_add(1, Relaxed);
                            }
                            Ok(bidlock::BidOutcome::Failed(e)) => tracing::debug!(target: "agent", %name, posting = %posting.id, error = %e, "bid refused; another instance may retry"),
                            Err(e) if e.is_already_done() || e.is_timeout() => {
                                skipped.fetch_add(1, Relaxed);
                            }
                            Err(e) => tracing::warn!(target: "agent", %name, error = %e, "lock error"),
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
        }
    }
    for a in agents {
        a.await?;
    }
    feed.abort();
    let bids = market.bids.lock().unwrap().clone();
    let duplicates: usize = bids.values().map(|v| v.len().saturating_sub(1)).sum();
    println!(
        "agent: {} instances x {} tasks for {} s: {} bids placed on {} postings, {} skipped (already done / busy), {} stale tokens refused, {} duplicates",
        instances,
        tasks,
        seconds,
        placed.load(Relaxed),
        bids.len(),
        skipped.load(Relaxed),
        market.refused_stale.load(Relaxed),
        duplicates
    );
    if duplicates > 0 {
        std::process::exit(1);
    }
    Ok(())
}
