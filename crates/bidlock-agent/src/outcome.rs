//! The one place that reads the library's answers whose shape is changing: what
//! `bid_once` returned and whether the backend is healthy. When `bid_once` returns
//! `BidOutcome` and the manager gains `health()`, only this file changes.

use std::time::Duration;

use bidlock::{BidLockManager, Error};

use crate::market::BidError;

/// What one bid attempt came to, as the agent counts it.
#[derive(Debug)]
pub(crate) enum Bid {
    /// The marketplace took the bid and the completion record is written.
    Placed,
    /// The marketplace took the bid but no completion record was written: another
    /// instance may bid on this posting again.
    Unrecorded(Error),
    /// The marketplace refused the bid; nothing recorded, another instance may try.
    Refused(BidError),
    /// Not run: the posting was already handled, or another instance kept the lock.
    Skipped,
    /// Not run: a lock error (backend down, manager closed, ...).
    Failed(Error),
    /// Not run: the agent was stopping while this bid still waited for its lock.
    Interrupted,
}

/// Reads what `bid_once` returned. `taken` says whether the marketplace took the bid
/// (today's `bid_once` returns `Err` both before the bid and when the record could not be
/// written after it).
pub(crate) fn classify(result: Result<Result<(), BidError>, Error>, taken: bool) -> Bid {
    match result {
        Ok(Ok(())) => Bid::Placed,
        Err(e) if taken => Bid::Unrecorded(e),
        Ok(Err(refused)) => Bid::Refused(refused),
        Err(e) if e.is_already_done() || e.is_timeout() => Bid::Skipped,
        Err(e) => Bid::Failed(e),
    }
}

/// Whether the backend answers within `within`: `Err` says why not.
pub(crate) async fn backend_answers(
    manager: &BidLockManager,
    within: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(within, manager.ping()).await {
        Ok(Ok(_latency)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "{} did not answer within {within:?}",
            manager.location()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_classified() {
        assert!(matches!(classify(Ok(Ok(())), true), Bid::Placed));
        assert!(matches!(
            classify(Ok(Err(BidError::Busy)), false),
            Bid::Refused(BidError::Busy)
        ));
        assert!(matches!(
            classify(Err(Error::Closed), false),
            Bid::Failed(_)
        ));
        assert!(matches!(
            classify(Err(Error::Closed), true),
            Bid::Unrecorded(_)
        ));
        let done = Error::AlreadyDone {
            key: "bid_lock:m:p".into(),
        };
        assert!(matches!(classify(Err(done), false), Bid::Skipped));
    }
}
