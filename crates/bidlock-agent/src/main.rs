//! `bidlock-agent`: a bidding agent service on bidlock. See `bidlock-agent --help`.
//!
//! ```sh
//! cargo run --release -p bidlock-agent -- --metrics-addr 127.0.0.1:9464   # memory locks (no Redis configured)
//! REDIS_URL=redis://127.0.0.1:6379/0 USE_REDIS_LOCKS=true \
//!   cargo run --release -p bidlock-agent -- --instances 3 --seconds 10
//! ```

#![forbid(unsafe_code)]

mod args;
mod exposition;
mod fleet;
mod market;
mod outcome;
/// The CLI's parser of durations in seconds, so that both read `2.5` and refuse `-1` alike.
#[path = "../../bidlock-cli/src/seconds.rs"]
mod seconds;
mod service;
mod summary;

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bidlock::Config;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::args::Args;
use crate::market::Marketplace;
use crate::service::Status;
use crate::summary::Summary;

/// Completion records outlive a posting's bidding window by this much.
const RECORD_MARGIN: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let args = Args::parse(); // --help exits 0, a bad flag or value exits 2
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,bidlock_agent=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(1, &format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(run(args))
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("bidlock-agent: {message}");
    ExitCode::from(code)
}

/// Why the agent stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Signal,
    Deadline,
}

async fn run(args: Args) -> ExitCode {
    // Signals first, so a SIGTERM during start-up is a clean stop, not a kill.
    let stop = CancellationToken::new();
    let stopper = match watch_for_stop(args.seconds, stop.clone()) {
        Ok(handle) => handle,
        Err(e) => {
            return fail(
                1,
                &format!("cannot install the SIGTERM/SIGINT handlers: {e}"),
            )
        }
    };
    // The environment exactly as the library reads it, with the rule every demo of this
    // repository follows (`bidlock simulate` too): Redis only when one is configured, so
    // the agent never writes into a Redis it merely happens to find. The records'
    // retention is the agent's: a closed posting cannot be bid on, so its record need
    // not outlive it.
    let config = match bidlock::ConfigBuilder::from_env().and_then(|b| {
        b.without_default_redis()
            .done_retention(args.posting_open + RECORD_MARGIN)
            .build()
    }) {
        Ok(c) => c,
        Err(e) => return fail(2, &e.to_string()),
    };
    let market = Arc::new(Marketplace::new(
        args.posting_open,
        Duration::from_millis(args.bid_latency_ms),
    ));
    let status = Arc::new(Status::new(Arc::default(), market));
    let http_stop = CancellationToken::new();
    let http = match args.metrics_addr {
        Some(addr) => match start_http(addr, status.clone(), http_stop.clone()).await {
            Ok(handle) => Some(handle),
            Err(e) => return fail(1, &e),
        },
        None => None,
    };
    let code = bid_until_stopped(&args, &config, &stop, stopper, &status).await;
    http_stop.cancel();
    if let Some(http) = http {
        let _ = tokio::time::timeout(Duration::from_millis(500), http).await;
    }
    code
}

/// Connects, bids until `stop`, drains and closes, and prints the summary.
async fn bid_until_stopped(
    args: &Args,
    config: &Config,
    stop: &CancellationToken,
    stopper: JoinHandle<StopReason>,
    status: &Status,
) -> ExitCode {
    let started = Instant::now();
    let market = status.market.clone();
    let feed = tokio::spawn(market::run_feed(market.clone(), args.rate, stop.clone()));
    let managers = match fleet::connect_all(config, args.instances, stop).await {
        Ok(Some(m)) => m,
        Ok(None) => {
            feed.abort();
            return match stopper.await.unwrap_or(StopReason::Signal) {
                StopReason::Signal => ExitCode::SUCCESS,
                StopReason::Deadline => fail(69, "the lock backend never answered; no bids placed"),
            };
        }
        Err(e) => return fail(if e.is_invalid_input() { 2 } else { 1 }, &e.to_string()),
    };
    status.set_managers(managers.clone());
    let crew = fleet::Crew {
        market: market.clone(),
        counters: status.counters.clone(),
        stop: stop.clone(),
    };
    let tasks = fleet::start(&managers, args.instances, args.tasks, &crew);

    stop.cancelled().await;
    status.set_stopping();
    fleet::drain(tasks, args.grace).await;
    fleet::close_all(&managers).await;
    feed.abort();
    let bids = status.counters.snapshot();
    let report = Summary::new(args, &managers, started.elapsed(), bids, market.stats());
    report.print(args.json);
    if report.duplicates() > 0 {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// Cancels `stop` on SIGTERM, SIGINT or after `deadline`, and says which it was.
fn watch_for_stop(
    deadline: Option<Duration>,
    stop: CancellationToken,
) -> std::io::Result<JoinHandle<StopReason>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::spawn(async move {
        let reason = tokio::select! {
            _ = term.recv() => StopReason::Signal,
            _ = int.recv() => StopReason::Signal,
            () = sleep_or_forever(deadline) => StopReason::Deadline,
        };
        tracing::info!(
            ?reason,
            "stopping: no new postings; running bids may finish"
        );
        stop.cancel();
        reason
    }))
}

/// Binds the metrics address and serves it; prints the bound address (port 0 picks one).
async fn start_http(
    addr: SocketAddr,
    status: Arc<Status>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, String> {
    let cannot = |e: std::io::Error| format!("cannot listen on {addr}: {e}");
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(cannot)?;
    let local = listener.local_addr().map_err(cannot)?;
    println!("bidlock-agent: serving http://{local}/metrics, /ready and /live");
    let _ = std::io::stdout().flush();
    Ok(service::serve(listener, status, shutdown))
}

async fn sleep_or_forever(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
