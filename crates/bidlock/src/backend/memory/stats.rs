//! The census of the in-process store: its live locks and completion records, the
//! postings with waiters in this process, and the last fencing token issued.

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::MemoryStore;
use crate::stats::Census;

impl MemoryStore {
    pub(super) fn take_census(&self) -> Census {
        let now = Instant::now();
        let mut census = Census::default();
        for shard in self.shards() {
            for (key, e) in shard.locks.iter() {
                if e.live(now) {
                    census.locks.insert(key.clone(), e.holder.to_string());
                }
            }
            census.done.extend(
                shard
                    .done
                    .iter()
                    .filter(|(_, d)| now < d.expires_at)
                    .map(|(key, _)| key.clone()),
            );
        }
        census.waiting = self.core.queues.waited_keys().into_iter().collect();
        let fence = self.core.fence.load(Ordering::Acquire);
        census.fence = (fence > 0).then_some(fence);
        census
    }
}
