//! The one place that knows the shape of `bid_once`'s result and of `run --once`'s exit,
//! so the switch to `BidOutcome` (lead's change 1 of issue 12) is a change here only.

use std::future::Future;

use bidlock::{AcquireOptions, BidLockManager, BidOutcome, Error, Lease, LockKey};

use super::history::Verdict;

/// What `bid_once` told its caller, in the new API's terms.
#[derive(Debug)]
pub enum Told {
    /// The bid ran and its completion record is written.
    Placed,
    /// The bid ran and its record is written, but the caller was told its lease had
    /// lapsed before the bid finished (another holder may have bid meanwhile).
    PlacedAfterLoss,
    /// The bid ran but its completion was not recorded, for the reason given.
    Unrecorded(Error),
    /// The bid (the closure) failed: nothing recorded.
    Failed,
    /// The bid did not run.
    NotRun(Error),
}

/// Runs `bid_once` and says what the caller was told.
pub async fn bid_once<F, Fut>(
    m: &BidLockManager,
    key: &LockKey,
    opts: &AcquireOptions,
    f: F,
) -> Told
where
    F: FnOnce(Lease) -> Fut,
    Fut: Future<Output = Result<u64, String>>,
{
    match m.bid_once(key, opts, f).await {
        Ok(BidOutcome::Placed(_)) => Told::Placed,
        Ok(BidOutcome::PlacedAfterLoss(_)) => Told::PlacedAfterLoss,
        Ok(BidOutcome::Unrecorded { error, .. }) => Told::Unrecorded(error),
        Ok(BidOutcome::Failed(_)) => Told::Failed,
        Err(e) => Told::NotRun(e),
    }
}

/// What a `bidlock run --once` process told its caller once its command finished (its
/// `end` line printed): exit 0, recorded; exit 77 with "recorded, but the lock was lost",
/// recorded too (issue 12: once the bid ran, the record is written whoever holds the
/// lock); exit 77 "completion not recorded", the old behaviour (the record dropped
/// because the lock had lapsed); anything else (69: Redis unreachable), not recorded.
pub fn once_exit(code: Option<i32>, stderr: &str) -> Verdict {
    let error = format!("exit {code:?}: {}", stderr.trim());
    // One meaning per code under --once: 0 and 78 recorded; 77 (lock lost, the command
    // stopped) and 79 (the record failed) not recorded; anything else, nothing ran or
    // nothing was recorded.
    match code {
        Some(0) => Verdict::Placed,
        Some(78) => Verdict::PlacedAfterLoss,
        Some(77) => Verdict::Unrecorded { lost: true, error },
        _ => Verdict::Unrecorded { lost: false, error },
    }
}
