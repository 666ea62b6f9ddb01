//! The fake marketplace: a feed of postings, and a bid API that refuses stale fencing
//! tokens and counts duplicate bids, as a real marketplace (or a bid service in front of
//! one) should.
//!
//! Postings are named after wall-clock slots (`job_{unix_ms / (1000 / rate)}`), so
//! replicas on different machines publish the same postings at the same time and race
//! for them through the shared locks, as agents watching one real marketplace would. A
//! posting closes `open_for` after it was published; its state is then dropped, which
//! keeps a long-running service's memory bounded.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A posting on the fake marketplace.
#[derive(Debug, Clone)]
pub(crate) struct Posting {
    pub(crate) id: String,
    pub(crate) budget: u32,
}

/// Why the marketplace refused a bid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BidError {
    #[error("stale fencing token {0} (the marketplace saw a newer one)")]
    StaleToken(u64),
    #[error("marketplace busy, try later")]
    Busy,
    #[error("posting closed")]
    Closed,
}

/// What the marketplace saw, for the summary and the metrics.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct MarketStats {
    pub(crate) published: u64,
    pub(crate) accepted: u64,
    pub(crate) postings_bid: u64,
    pub(crate) duplicates: u64,
    pub(crate) refused_stale: u64,
    pub(crate) refused_busy: u64,
    pub(crate) refused_closed: u64,
}

#[derive(Debug, Default)]
struct Bidding {
    highest_token: u64,
    bids: u32,
}

#[derive(Debug, Default)]
struct Book {
    /// Open postings in publishing order, with when they were published.
    feed: VecDeque<(Instant, Posting)>,
    /// Sequence number of `feed[0]`: readers keep a cursor into the feed.
    first_seq: u64,
    open: HashMap<String, Bidding>,
    stats: MarketStats,
}

/// The marketplace, shared by every bidding task of the process.
#[derive(Debug)]
pub(crate) struct Marketplace {
    book: Mutex<Book>,
    open_for: Duration,
    latency: Duration,
}

impl Marketplace {
    pub(crate) fn new(open_for: Duration, latency: Duration) -> Marketplace {
        Marketplace {
            book: Mutex::new(Book::default()),
            open_for,
            latency,
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        // A panicking bidder cannot leave the book half-updated: every change is one
        // statement group under the lock, so the data is still consistent.
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes a posting and closes those that were open for long enough.
    pub(crate) fn publish(&self, posting: Posting) {
        let now = Instant::now();
        let mut book = self.book();
        while let Some((at, _)) = book.feed.front() {
            if now.duration_since(*at) < self.open_for {
                break;
            }
            if let Some((_, closed)) = book.feed.pop_front() {
                book.open.remove(&closed.id);
                book.first_seq += 1;
            }
        }
        book.open.insert(posting.id.clone(), Bidding::default());
        book.feed.push_back((now, posting));
        book.stats.published += 1;
    }

    /// The postings published since `cursor` (what an agent's poll returns), moving the
    /// cursor past them. Postings that closed before this reader saw them are skipped
    /// and their number returned as the second value.
    pub(crate) fn poll(&self, cursor: &mut u64) -> (Vec<Posting>, u64) {
        let book = self.book();
        let missed = book.first_seq.saturating_sub(*cursor);
        let start = (*cursor).max(book.first_seq);
        let skip = usize::try_from(start - book.first_seq).unwrap_or(usize::MAX);
        let new: Vec<Posting> = book
            .feed
            .iter()
            .skip(skip)
            .map(|(_, p)| p.clone())
            .collect();
        *cursor = start + new.len() as u64;
        (new, missed)
    }

    /// Places a bid carrying the lock's fencing token. Refuses a token lower than one
    /// already seen for the posting.
    pub(crate) async fn bid(&self, posting: &str, token: u64) -> Result<(), BidError> {
        tokio::time::sleep(self.latency).await; // the API call
        let busy = rand_percent() < 2;
        let mut book = self.book();
        let book = &mut *book;
        let Some(bidding) = book.open.get_mut(posting) else {
            book.stats.refused_closed += 1;
            return Err(BidError::Closed);
        };
        if busy {
            book.stats.refused_busy += 1;
            return Err(BidError::Busy);
        }
        if token < bidding.highest_token {
            book.stats.refused_stale += 1;
            return Err(BidError::StaleToken(token));
        }
        bidding.highest_token = token;
        bidding.bids += 1;
        book.stats.accepted += 1;
        if bidding.bids == 1 {
            book.stats.postings_bid += 1;
        } else {
            book.stats.duplicates += 1;
        }
        Ok(())
    }

    pub(crate) fn stats(&self) -> MarketStats {
        self.book().stats
    }
}

fn rand_percent() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    (RandomState::new().hash_one(std::time::Instant::now()) % 100) as u32
}

/// The posting of wall-clock slot `slot`.
fn posting_of_slot(slot: u64) -> Posting {
    Posting {
        id: format!("job_{slot}"),
        budget: 50 + u32::try_from(slot.wrapping_mul(37) % 500).unwrap_or(0),
    }
}

fn current_slot(slot_ms: u64) -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    u64::try_from(ms).unwrap_or(u64::MAX) / slot_ms.max(1)
}

/// Publishes `rate` postings a second until `stop`.
pub(crate) async fn run_feed(
    market: std::sync::Arc<Marketplace>,
    rate: u32,
    stop: CancellationToken,
) {
    let slot_ms = (1000 / u64::from(rate.max(1))).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(slot_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last = current_slot(slot_ms).saturating_sub(1);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = current_slot(slot_ms);
        // After a stall, publish at most one second of the slots skipped.
        let from = (last + 1).max(now.saturating_sub(u64::from(rate)));
        for slot in from..=now {
            market.publish(posting_of_slot(slot));
        }
        last = last.max(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bids until the marketplace answers something other than its random "busy".
    async fn bid(m: &Marketplace, posting: &str, token: u64) -> Result<(), BidError> {
        for _ in 0..1000 {
            match m.bid(posting, token).await {
                Err(BidError::Busy) => continue,
                other => return other,
            }
        }
        panic!("busy 1000 times in a row");
    }

    #[tokio::test(start_paused = true)]
    async fn refuses_stale_tokens_and_counts_duplicates() {
        let m = Marketplace::new(Duration::from_secs(60), Duration::ZERO);
        m.publish(posting_of_slot(1));
        assert_eq!(bid(&m, "job_1", 7).await, Ok(()));
        assert_eq!(bid(&m, "job_1", 7).await, Ok(()));
        let s = m.stats();
        assert_eq!((s.accepted, s.postings_bid, s.duplicates), (2, 1, 1));
        assert_eq!(bid(&m, "job_1", 6).await, Err(BidError::StaleToken(6)));
        assert_eq!(m.stats().refused_stale, 1);
        assert_eq!(bid(&m, "job_2", 8).await, Err(BidError::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn postings_close_and_readers_skip_them() {
        let m = Marketplace::new(Duration::from_secs(10), Duration::ZERO);
        let mut cursor = 0;
        m.publish(posting_of_slot(1));
        let (new, missed) = m.poll(&mut cursor);
        assert_eq!((new.len(), missed, cursor), (1, 0, 1));
        m.publish(posting_of_slot(2));
        tokio::time::advance(Duration::from_secs(11)).await;
        m.publish(posting_of_slot(3));
        let (new, missed) = m.poll(&mut cursor);
        assert_eq!(missed, 1, "job_2 closed before this reader polled");
        assert_eq!(
            new.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            ["job_3"]
        );
        assert_eq!(m.book().open.len(), 1);
        assert_eq!(bid(&m, "job_1", 1).await, Err(BidError::Closed));
    }
}
