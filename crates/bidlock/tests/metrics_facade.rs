//! With the `metrics` feature, every counter and the wait histogram reach the `metrics`
//! facade, labelled by backend and marketplace and never by posting.
#![cfg(feature = "metrics")]

use bidlock::{AcquireOptions, BidLockManager, LockKey};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[test]
fn counters_and_wait_histogram_reach_the_facade() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let m = BidLockManager::memory();
            let k = LockKey::new("upwork", "job_1").unwrap();
            let g = m.acquire(&k, &AcquireOptions::new()).await.unwrap();
            assert!(m.try_acquire(&k, &AcquireOptions::new()).await.is_err());
            g.release().await.unwrap();
        });
    });
    let snap = snapshotter.snapshot().into_vec();
    let mut seen = std::collections::HashMap::new();
    for (key, _, _, value) in snap {
        let labels: Vec<(String, String)> = key
            .key()
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        assert!(
            labels.iter().all(|(k, _)| k != "posting"),
            "posting must never be a label"
        );
        assert!(
            labels.contains(&("backend".to_owned(), "memory".to_owned())),
            "{labels:?}"
        );
        assert!(
            labels.contains(&("marketplace".to_owned(), "upwork".to_owned())),
            "{labels:?}"
        );
        let v = match value {
            DebugValue::Counter(c) => c as f64,
            DebugValue::Histogram(h) => h.len() as f64,
            DebugValue::Gauge(g) => g.into_inner(),
        };
        seen.insert(key.key().name().to_owned(), v);
    }
    assert_eq!(seen["bidlock_lock_attempts_total"], 2.0);
    assert_eq!(seen["bidlock_lock_successes_total"], 1.0);
    assert_eq!(seen["bidlock_lock_conflicts_total"], 1.0);
    assert_eq!(seen["bidlock_lock_timeouts_total"], 1.0);
    assert_eq!(seen["bidlock_releases_total"], 1.0);
    assert_eq!(seen["bidlock_wait_seconds"], 1.0);
}
