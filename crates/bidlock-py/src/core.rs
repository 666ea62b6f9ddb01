//! `Core`: one bidlock manager as the Python side sees it: its configuration, the
//! connection made on first use, the locks held for `acquire_lock` callers, and the
//! process's registry of open managers (closed at interpreter exit).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bidlock::{AcquireOptions, BidLockManager, Config, ConfigBuilder, Error, Holder, LockKey};

use crate::held::HeldLocks;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// Every manager still alive, so interpreter exit can close them.
static LIVE: Mutex<Vec<Weak<Core>>> = Mutex::new(Vec::new());

/// Closes every open manager of the process (interpreter exit): their locks are released.
pub(crate) async fn close_all() {
    let open: Vec<Arc<Core>> = LIVE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .filter_map(|w| w.upgrade())
        .collect();
    futures_util::future::join_all(open.iter().map(|c| c.close())).await;
}

/// One manager of the Python package.
pub(crate) struct Core {
    pub(crate) id: u64,
    pub(crate) config: Config,
    /// Whether a Redis address was configured (not auto-detection's default one): a
    /// fallback to memory is then worth a `RuntimeWarning`.
    redis_configured: bool,
    manager: tokio::sync::OnceCell<BidLockManager>,
    held: Mutex<HeldLocks>,
    closed: AtomicBool,
    fallback_warned: AtomicBool,
}

impl Core {
    /// A manager of `builder`'s configuration; it connects on first use.
    pub(crate) fn new(builder: ConfigBuilder) -> Result<Arc<Core>, bidlock::ConfigError> {
        let redis_configured = builder.redis_configured();
        let core = Arc::new(Core {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            config: builder.build()?,
            redis_configured,
            manager: tokio::sync::OnceCell::new(),
            held: Mutex::default(),
            closed: AtomicBool::new(false),
            fallback_warned: AtomicBool::new(false),
        });
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|w| w.strong_count() > 0);
        live.push(Arc::downgrade(&core));
        drop(live);
        Ok(core)
    }

    /// The connected manager, connecting on first use (again after a failed attempt).
    pub(crate) async fn manager(&self) -> Result<&BidLockManager, Error> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        match self.manager.get() {
            Some(m) => Ok(m),
            None => self.connect().await,
        }
    }

    /// Connecting is a large future (several kilobytes) needed once: boxed, so that every
    /// operation's own future stays small (it is built on the event loop's thread).
    fn connect(&self) -> Pin<Box<dyn Future<Output = Result<&BidLockManager, Error>> + Send + '_>> {
        Box::pin(
            self.manager
                .get_or_try_init(|| BidLockManager::new(self.config.clone())),
        )
    }

    /// The manager if it connected already.
    pub(crate) fn connected(&self) -> Option<&BidLockManager> {
        self.manager.get()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The warning for a configured Redis that auto-detection replaced with memory, once
    /// per manager.
    pub(crate) fn take_fallback_warning(&self) -> Option<String> {
        let manager = self.manager.get()?;
        if !manager.is_fallback()
            || !self.redis_configured
            || self.fallback_warned.swap(true, Ordering::AcqRel)
        {
            return None;
        }
        let targets: Vec<String> = self
            .config
            .redis_targets()
            .iter()
            .map(ToString::to_string)
            .collect();
        Some(format!(
            "Redis at {} could not be reached: bidlock fell back to in-process memory locks, \
             which exclude only this process (the `bidlock` logger says why). Set \
             USE_REDIS_LOCKS=true to make an unreachable Redis an error instead.",
            targets.join(", ")
        ))
    }

    fn held(&self) -> MutexGuard<'_, HeldLocks> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lock's Redis key.
    pub(crate) fn lock_key(&self, key: &LockKey) -> String {
        self.config.redis_key(key)
    }

    /// The guide's `acquire_lock`: true when taken (kept in the table), false when the
    /// wait ran out.
    pub(crate) async fn acquire_held(
        &self,
        key: LockKey,
        opts: AcquireOptions,
    ) -> Result<bool, Error> {
        let manager = self.manager().await?;
        match manager.acquire(&key, &opts).await {
            Ok(guard) => {
                let mut dropped = Vec::new();
                self.held().insert(guard, &mut dropped);
                // Dropped (released in the background) outside the table's lock.
                drop(dropped);
                Ok(true)
            }
            Err(e) if e.is_not_acquired() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The guide's `release_lock`.
    pub(crate) async fn release_held(
        &self,
        key: LockKey,
        holder: Option<Holder>,
    ) -> Result<bool, Error> {
        let taken = self.held().take(&key, holder.as_ref());
        match (taken, holder) {
            (Some(guard), _) => guard.release().await,
            // Not taken through this manager: the guide's release by holder id.
            (None, Some(h)) => self.manager().await?.release(&key, &h).await,
            (None, None) => Ok(false),
        }
    }

    /// Releases what this manager holds and stops it; a second call does nothing.
    pub(crate) async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let guards = self.held().drain();
        for guard in guards {
            if let Err(e) = guard.release().await {
                tracing::warn!(target: "bidlock::python", error = %e, "release at close failed; the lock expires after its ttl");
            }
        }
        if let Some(m) = self.manager.get() {
            m.close().await;
        }
    }
}
