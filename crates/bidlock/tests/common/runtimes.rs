//! Runtimes built by hand, for tests of what a manager does across runtimes (a sync
//! wrapper's current-thread runtime beside the application's), and a way to poll a
//! future once, standing for a task that is descheduled between polls.

use std::future::Future;
use std::task::Poll;

use bidlock::{AcquireOptions, BidLockManager};
use tokio::runtime::{Builder, Runtime};

/// A current-thread runtime: it runs only inside its own `block_on` calls.
pub fn current_thread() -> Runtime {
    Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}

/// A multi-thread runtime of two workers (the machine's cores in CI).
pub fn multi_thread() -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a multi-thread runtime")
}

/// Polls `fut` once with the current task's waker.
pub async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut *fut).poll(cx))).await
}

/// A sync wrapper's first use of `m`: one lease of `posting` taken and released inside
/// `rt`, so `m`'s lease keeper task starts in `rt`, which (a current-thread runtime) then
/// runs only when driven again.
pub fn start_keeper_in(rt: &Runtime, m: &BidLockManager, posting: &str) {
    rt.block_on(async {
        let g = m
            .acquire(&super::key(posting), &AcquireOptions::new())
            .await
            .unwrap();
        assert!(g.release().await.unwrap());
    });
}
