//! The HTTP side of the service: `/metrics` (Prometheus text), `/ready` (the managers
//! are up and their backend answers) and `/live` (the process serves requests; never
//! depends on Redis, so a Redis outage takes pods out of rotation without restarting
//! them).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bidlock::BidLockManager;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::exposition::{self, AgentCounters};
use crate::market::Marketplace;
use crate::outcome::backend_answers;

/// How long `/ready` waits for the backend's answer (probes time out at 2 s or more).
const READY_WITHIN: Duration = Duration::from_secs(1);

/// What the handlers read.
#[derive(Debug)]
pub(crate) struct Status {
    managers: OnceLock<Vec<BidLockManager>>,
    stopping: AtomicBool,
    pub(crate) counters: Arc<AgentCounters>,
    pub(crate) market: Arc<Marketplace>,
}

impl Status {
    pub(crate) fn new(counters: Arc<AgentCounters>, market: Arc<Marketplace>) -> Status {
        Status {
            managers: OnceLock::new(),
            stopping: AtomicBool::new(false),
            counters,
            market,
        }
    }

    /// The managers are connected: `/ready` starts asking their backend.
    pub(crate) fn set_managers(&self, managers: Vec<BidLockManager>) {
        let _ = self.managers.set(managers);
    }

    /// The agent is stopping: `/ready` says so, so no new traffic is sent its way.
    pub(crate) fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    fn managers(&self) -> &[BidLockManager] {
        self.managers.get().map(Vec::as_slice).unwrap_or_default()
    }
}

/// Serves the endpoints on `listener` until `shutdown`.
pub(crate) fn serve(
    listener: TcpListener,
    status: Arc<Status>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/ready", get(ready))
        .route("/live", get(live))
        .with_state(status);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "metrics server failed");
        }
    })
}

async fn metrics(State(status): State<Arc<Status>>) -> impl IntoResponse {
    let body = exposition::render(
        status.managers(),
        status.counters.snapshot(),
        status.market.stats(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

async fn ready(State(status): State<Arc<Status>>) -> (StatusCode, String) {
    if status.stopping.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n".to_owned());
    }
    let Some(managers) = status.managers.get() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "connecting to the lock backend\n".to_owned(),
        );
    };
    for m in managers {
        if let Err(why) = backend_answers(m, READY_WITHIN).await {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            );
        }
    }
    (StatusCode::OK, "ready\n".to_owned())
}

async fn live() -> &'static str {
    "alive\n"
}
