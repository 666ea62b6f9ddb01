//! The one place that reads the library's answers: what `bid_once` returned, and
//! whether the backend is healthy.

use std::time::Duration;

use bidlock::{BidLockManager, BidOutcome, Error};

use crate::market::BidError;

/// What one bid attempt came to, as the agent counts it.
#[derive(Debug)]
pub(crate) enum Bid {
    /// The marketplace took the bid and the completion record is written.
    Placed,
    /// The marketplace took the bid and the record is written, but the lease had lapsed
    /// before: another holder may have bid meanwhile (the marketplace's fencing check
    /// decides).
    PlacedAfterLoss,
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

/// Reads what `bid_once` returned.
pub(crate) fn classify(result: Result<BidOutcome<(), BidError>, Error>) -> Bid {
    match result {
        Ok(BidOutcome::Placed(())) => Bid::Placed,
        Ok(BidOutcome::PlacedAfterLoss(())) => Bid::PlacedAfterLoss,
        Ok(BidOutcome::Unrecorded { error, .. }) => Bid::Unrecorded(error),
        Ok(BidOutcome::Failed(refused)) => Bid::Refused(refused),
        Err(e) if e.is_already_done() || e.is_not_acquired() => Bid::Skipped,
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
            "{} did not answer within {} ms",
            manager.location(),
            within.as_millis()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_classified() {
        assert!(matches!(classify(Ok(BidOutcome::Placed(()))), Bid::Placed));
        assert!(matches!(
            classify(Ok(BidOutcome::PlacedAfterLoss(()))),
            Bid::PlacedAfterLoss
        ));
        assert!(matches!(
            classify(Ok(BidOutcome::Failed(BidError::Busy))),
            Bid::Refused(BidError::Busy)
        ));
        assert!(matches!(classify(Err(Error::Closed)), Bid::Failed(_)));
        assert!(matches!(
            classify(Ok(BidOutcome::Unrecorded {
                value: (),
                error: Error::Closed
            })),
            Bid::Unrecorded(_)
        ));
        let done = Error::AlreadyDone {
            key: "bid_lock:m:p".into(),
        };
        assert!(matches!(classify(Err(done)), Bid::Skipped));
    }
}
