//! What a store learns about keys from outside (release messages, reconnects), delivered
//! to the parts of the manager that care: local waiters may try again, and a lease this
//! manager holds on the key is checked at once instead of at its next renewal.

use std::sync::Arc;

use crate::keeper::LeaseKeeper;
use crate::key::LockKey;
use crate::waiters::WaitQueues;

#[derive(Debug)]
pub(crate) struct Notices {
    queues: Arc<WaitQueues>,
    keeper: Arc<LeaseKeeper>,
}

impl Notices {
    pub(crate) fn new(queues: Arc<WaitQueues>, keeper: Arc<LeaseKeeper>) -> Notices {
        Notices { queues, keeper }
    }

    /// Someone released, completed, cleaned up or force-released `key`.
    pub(crate) fn released(&self, key: &LockKey) {
        self.queues.signal(key);
        self.keeper.check(key);
    }

    /// Messages may have been missed (the subscriber reconnected, the master moved):
    /// every waiter looks again and every held lease is checked.
    pub(crate) fn all(&self) {
        self.queues.signal_all();
        self.keeper.check_all();
    }
}
