//! What a store learns about keys from outside (release messages, reconnects, answers
//! whose caller left), delivered to the parts of the manager that care: local waiters may
//! try again, a lease this manager holds on the key is checked at once instead of at its
//! next renewal, and a lock taken for a caller that is gone is let go by the manager's one
//! rule for releases without a caller.

use std::sync::{Arc, OnceLock, Weak};

use crate::keeper::LeaseKeeper;
use crate::key::LockKey;
use crate::lease::Holder;
use crate::waiters::WaitQueues;

/// The manager's one path for letting a lock go without a caller (implemented by the
/// manager's state; a trait here so that stores need not know the manager).
pub(crate) trait LetGoUnattended: Send + Sync {
    /// Releases `holder`'s lock of `key` in the background, by the one rule (never a
    /// holder id the caller chose: `given`).
    fn let_go(self: Arc<Self>, key: &LockKey, holder: &Holder, given: bool);
}

pub(crate) struct Notices {
    queues: Arc<WaitQueues>,
    keeper: Arc<LeaseKeeper>,
    /// The manager, once assembled (the store is built before it).
    manager: OnceLock<Weak<dyn LetGoUnattended>>,
}

impl std::fmt::Debug for Notices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notices").finish_non_exhaustive()
    }
}

impl Notices {
    pub(crate) fn new(queues: Arc<WaitQueues>, keeper: Arc<LeaseKeeper>) -> Notices {
        Notices {
            queues,
            keeper,
            manager: OnceLock::new(),
        }
    }

    /// The manager these notices are for, once it exists.
    pub(crate) fn attach(&self, manager: Weak<dyn LetGoUnattended>) {
        let _ = self.manager.set(manager);
    }

    /// Someone released, completed, cleaned up or force-released `key`.
    pub(crate) fn released(&self, key: &LockKey) {
        self.queues.signal(key);
        self.keeper.check(key);
    }

    /// A removal of `key` someone else made (the in-process store): a lease held on it is
    /// checked at once (its waiters were woken by the store).
    pub(crate) fn check(&self, key: &LockKey) {
        self.keeper.check(key);
    }

    /// Every key may have changed (cleanup in the in-process store).
    pub(crate) fn check_all(&self) {
        self.keeper.check_all();
    }

    /// A release handed `key` to this manager's waiter `holder`, with fencing `token`.
    pub(crate) fn granted(&self, key: &LockKey, holder: &str, token: u64) {
        self.queues.grant(key, holder, token);
    }

    /// Messages may have been missed (the subscriber reconnected, the master moved):
    /// every waiter looks again and every held lease is checked.
    pub(crate) fn all(&self) {
        self.queues.signal_all();
        self.keeper.check_all();
    }

    /// A try whose caller left before its answer arrived took the lock or a place in the
    /// queue for `holder`: the manager lets it go, by the rule every release without a
    /// caller follows (`Inner::release_detached`).
    pub(crate) fn unclaimed(&self, key: &LockKey, holder: &Holder, given: bool) {
        if let Some(manager) = self.manager.get().and_then(Weak::upgrade) {
            manager.let_go(key, holder, given);
        }
    }
}
