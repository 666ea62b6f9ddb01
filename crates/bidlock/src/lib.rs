//! Distributed bid locks for marketplace bidding agents.
//!
//! bidlock keeps the instances of a bidding agent from bidding twice on the same
//! posting: one lock per `(marketplace_id, posting_id)`, held in Redis (shared by the
//! fleet) or in process memory (the fallback when no Redis is configured).
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), bidlock::Error> {
//! use std::time::Duration;
//! use bidlock::{AcquireOptions, BidOutcome, LockKey};
//!
//! // Redis when REDIS_URL / REDIS_HOST point at one that answers, else memory.
//! let manager = bidlock::connect().await?;
//! let key = LockKey::new("upwork", "job_123")?;
//! let opts = AcquireOptions::new().timeout(Duration::from_secs(10));
//!
//! // At most one bid per posting, across the fleet and over time.
//! let outcome = manager
//!     .bid_once(&key, &opts, |lease| async move {
//!         // place_bid("job_123", "upwork", lease.fencing_token()).await
//!         Ok::<_, std::io::Error>(lease.fencing_token())
//!     })
//!     .await;
//! match outcome {
//!     Ok(BidOutcome::Placed(token)) => println!("bid placed with fencing token {token}"),
//!     Ok(BidOutcome::PlacedAfterLoss(token)) => {
//!         println!("bid {token} placed and recorded, but the lease had lapsed: compare tokens")
//!     }
//!     Ok(BidOutcome::Unrecorded { value, error }) => {
//!         println!("bid {value} placed, but not recorded ({error}): another instance may bid again")
//!     }
//!     Ok(BidOutcome::Failed(bid_error)) => println!("bid failed, another instance may retry: {bid_error}"),
//!     Err(e) if e.is_already_done() => println!("someone already bid"),
//!     Err(e) if e.is_not_acquired() => println!("another instance is bidding"),
//!     Err(e) => return Err(e),
//! }
//! println!("{:?}", manager.metrics());
//! # Ok(()) }
//! ```
//!
//! What it gives beyond a plain lock:
//!
//! - **Fencing tokens**: every acquire returns a token greater than all before it (a
//!   hybrid logical clock: above the last token and above the server clock in µs), so the
//!   receiver of a bid can refuse a holder that paused past its ttl.
//! - **Renewed leases**: a watchdog extends the ttl every ttl/3 while the guard lives,
//!   and reports loss ([`LockGuard::lost`]).
//! - **Exactly-once bids**: [`BidLockManager::bid_once`] records completion atomically
//!   with the release, and records a placed bid even if the lease lapsed meanwhile.
//! - **Fast, fair handover**: waiters are woken by the release (pub/sub), first come
//!   first served within a process; polling with backoff is only the safety net.
//!
//! The Redis layout is the original Python system's (`bid_lock:{marketplace}:{posting}` =
//! holder id with a `PX` ttl), so bidlock, that system and redis-py's `Lock` exclude each
//! other while they run side by side.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

mod acquire;
mod backend;
mod backoff;
mod bid;
mod clock;
mod completion;
mod config;
mod error;
mod guard;
mod health;
mod human;
mod inner;
mod keeper;
mod key;
mod keyspace;
mod lease;
mod manager;
mod metrics;
mod notices;
mod options;
mod renewal;
mod stats;
mod ttl;
mod waiters;

pub use backend::{LockInfo, LockStatus, Topology};
pub use backoff::RetryPolicy;
pub use bid::BidOutcome;
pub use config::{
    Backend, Config, ConfigBuilder, RedisTarget, DEFAULT_DETECT_TIMEOUT, DEFAULT_DONE_RETENTION,
    DEFAULT_IO_TIMEOUT, DEFAULT_REDIS_URL, DEFAULT_TTL, ENV_VARS,
};
pub use error::{ConfigError, Error};
pub use guard::LockGuard;
pub use health::Health;
pub use key::{InvalidKey, LockKey, MAX_MARKETPLACE_LEN, MAX_POSTING_LEN};
pub use lease::{FencingToken, Holder, Lease};
pub use manager::{connect, BidLockManager};
pub use metrics::MetricsSnapshot;
pub use options::{AcquireOptions, DEFAULT_WAIT};
pub use stats::{FleetStats, MarketplaceStats};
pub use ttl::Ttl;

/// The README's and every docs page's Rust examples, compiled as doctests so they cannot
/// rot (docs/RUST.md holds most of them; a page without Rust adds nothing).
#[cfg(doctest)]
#[doc = concat!(
    include_str!("../../../README.md"),
    "\n",
    include_str!("../../../docs/CLI.md"),
    "\n",
    include_str!("../../../docs/GUARANTEES.md"),
    "\n",
    include_str!("../../../docs/HANDOVER.md"),
    "\n",
    include_str!("../../../docs/MIGRATION.md"),
    "\n",
    include_str!("../../../docs/OPERATING.md"),
    "\n",
    include_str!("../../../docs/OPERATING-REDIS.md"),
    "\n",
    include_str!("../../../docs/PYTHON.md"),
    "\n",
    include_str!("../../../docs/REDIS.md"),
    "\n",
    include_str!("../../../docs/RUST.md"),
    "\n",
    include_str!("../../../docs/TROUBLESHOOTING.md"),
)]
pub struct ReadmeDoctests;
