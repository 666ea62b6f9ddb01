//! `bidlock run`: hold a posting's lock, with renewal, while a command runs. The command
//! runs under a keeper process (`crate::keep`) so that it never outlives `run`.

mod keeper;

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use bidlock::{AcquireOptions, BidLockManager, LockGuard, LockKey, LockStatus};
use clap::Args;
use nix::sys::signal::Signal as NixSignal;
use tokio::signal::unix::{signal, Signal, SignalKind};

use self::keeper::Keeper;
use crate::exit::{self, CliError};
use crate::output::human_duration;
use crate::{lock_key, Global};

/// How long past the grace period `run` waits for the keeper before killing the
/// command's group itself.
const STOP_MARGIN: Duration = Duration::from_secs(2);

/// What `--wait 0` says when the lock is held: it did not wait, so no wait time.
const NO_WAIT: &str = "not acquired (--wait 0 tries once and does not wait)";

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Marketplace id ([A-Za-z0-9_.-]{1,64}).
    marketplace: String,
    /// Posting id (1-512 bytes, no control characters).
    posting: String,
    /// Seconds to wait for the lock; 0 tries once.
    #[arg(long, default_value = "0", value_parser = crate::seconds, value_name = "S",
          allow_negative_numbers = true)]
    wait: Duration,
    /// Lock ttl in seconds, 0.01 to 30 days (renewed every ttl/3 while the command runs).
    #[arg(long, value_parser = crate::ttl, value_name = "S", allow_negative_numbers = true)]
    ttl: Option<Duration>,
    /// Holder id to store (default: generated, host:pid:random:n).
    #[arg(long, value_name = "ID")]
    holder: Option<String>,
    /// Record completion when the command exits 0; later runs exit 76 at once. Exit 0
    /// recorded; 78 recorded, but the lock was lost before the command finished; 77 lock
    /// lost and 79 record failed: not recorded.
    #[arg(long)]
    once: bool,
    /// Seconds between SIGTERM and SIGKILL when the command's processes are stopped (the
    /// lock was lost, or the command ended and left some running).
    #[arg(long, default_value = "10", value_parser = crate::seconds, value_name = "S",
          allow_negative_numbers = true)]
    grace: Duration,
    /// Print nothing when the lock is busy and `run` starts waiting.
    #[arg(short, long)]
    quiet: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, num_args = 1.., value_name = "CMD")]
    command: Vec<String>,
}

fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c & 0xff).unwrap_or(exit::FAILURE),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(exit::FAILURE),
        _ => exit::FAILURE,
    }
}

/// Takes the lock; with a wait, one try first, so that a busy lock is announced (who
/// holds it, for how long) before the silence of waiting.
async fn acquire(
    m: &BidLockManager,
    key: &LockKey,
    opts: &AcquireOptions,
    wait: Duration,
    quiet: bool,
) -> Result<LockGuard, CliError> {
    if wait.is_zero() || quiet {
        return m.acquire(key, opts).await.map_err(|e| match e {
            bidlock::Error::NotAcquired { key, holder, .. } if wait.is_zero() => {
                let message = match holder {
                    Some(h) => format!("lock {key} is held by {h}; {NO_WAIT}"),
                    None => format!("lock {key} is held; {NO_WAIT}"),
                };
                CliError::new(exit::NOT_ACQUIRED, message)
            }
            e => e.into(),
        });
    }
    let start = Instant::now();
    let holder = match m.try_acquire(key, opts).await {
        Ok(guard) => return Ok(guard),
        Err(bidlock::Error::NotAcquired { holder, .. }) => holder,
        Err(e) => return Err(e.into()),
    };
    // The holder's ttl, and its name if the try did not see it; a failed look is no
    // reason not to wait.
    let status = m.status(key).await.ok();
    let holder = status
        .as_ref()
        .and_then(|s| s.holder.clone())
        .or(holder)
        .unwrap_or_else(|| "another holder".to_owned());
    let ttl = status
        .and_then(|s| s.ttl_left_ms)
        .map(|ms| {
            format!(
                ", {} left on its ttl",
                human_duration(Duration::from_millis(ms))
            )
        })
        .unwrap_or_default();
    eprintln!(
        "bidlock: {} is held by {holder}{ttl}; waiting up to {}",
        m.config().redis_key(key),
        human_duration(wait)
    );
    let rest = wait.saturating_sub(start.elapsed());
    Ok(m.acquire(key, &opts.clone().timeout(rest)).await?)
}

pub(crate) async fn run(g: &Global, args: RunArgs) -> Result<u8, CliError> {
    let key = lock_key(&args.marketplace, &args.posting)?;
    if args.holder.as_deref() == Some("") {
        return Err(CliError::usage("--holder must not be empty"));
    }
    // Connecting may not take longer than the caller is willing to wait for the lock.
    let m = g.manager_within(true, args.wait).await?;
    let mut opts = AcquireOptions::new()
        .timeout(args.wait)
        .check_done(args.once);
    if let Some(ttl) = args.ttl {
        opts = opts.ttl(ttl);
    }
    if let Some(h) = &args.holder {
        opts = opts.holder(h.as_str());
    }
    // Not acquired in time (75) and already done (76) are errors with their own codes.
    let guard = acquire(&m, &key, &opts, args.wait, args.quiet).await?;
    let redis_key = m.config().redis_key(&key);
    if !args.once {
        say_if_recorded(&m, &key, &redis_key).await;
    }
    let env = vec![
        ("BIDLOCK_KEY", redis_key.clone()),
        ("BIDLOCK_HOLDER", guard.holder().as_str().to_owned()),
        ("BIDLOCK_FENCE", guard.fencing_token().to_string()),
        ("BIDLOCK_MARKETPLACE", key.marketplace().to_owned()),
        ("BIDLOCK_POSTING", key.posting().to_owned()),
    ];
    let signals = Signals::install()?;
    let mut keeper = match Keeper::start(&args.command, env, args.grace).await {
        Ok(k) => k,
        Err(e) => {
            let _ = guard.release().await;
            return Err(e);
        }
    };
    let Some(status) = supervise(&mut keeper, signals, &guard, args.grace, &redis_key).await else {
        drop(guard);
        return Ok(exit::LOCK_LOST);
    };
    let code = match status {
        Ok(s) => exit_code(s),
        Err(e) => {
            eprintln!("bidlock: waiting for the command failed: {e}");
            exit::FAILURE
        }
    };
    finish(guard, args.once, code, &redis_key).await
}

/// Without `--once` a completion record does not stop the command, but it is worth a
/// line: the posting was handled before.
async fn say_if_recorded(m: &BidLockManager, key: &LockKey, redis_key: &str) {
    if let Ok(LockStatus {
        done: Some(record), ..
    }) = m.status(key).await
    {
        let (token, holder) = record.split_once(' ').unwrap_or((record.as_str(), "?"));
        eprintln!(
            "bidlock: {redis_key} has a completion record (token {token}, by {holder}): the \
             posting was handled before; running the command anyway (with --once, run would \
             exit 76 without running it)"
        );
    }
}

/// SIGINT, SIGTERM and SIGHUP, caught before the command starts so that none of them
/// can end `run` before it passes them on: the command decides what they mean (a
/// terminal that closes sends SIGHUP; without this, `run` would die of it and its keeper
/// would SIGKILL the command).
struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> Result<Signals, CliError> {
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(int), Ok(term), Ok(hup)) => Ok(Signals { int, term, hup }),
            _ => Err(CliError::new(
                exit::FAILURE,
                "cannot install signal handlers",
            )),
        }
    }
}

/// Waits for the command, passing SIGINT, SIGTERM and SIGHUP on to its group. `None` when the
/// lock was lost first: the command's tree has been stopped (SIGTERM, then SIGKILL after
/// `grace`).
async fn supervise(
    keeper: &mut Keeper,
    mut signals: Signals,
    guard: &LockGuard,
    grace: Duration,
    redis_key: &str,
) -> Option<std::io::Result<ExitStatus>> {
    let lost = guard.lost();
    tokio::pin!(lost);
    loop {
        tokio::select! {
            status = keeper.wait() => return Some(status),
            _ = &mut lost => break,
            _ = signals.int.recv() => keeper.forward(NixSignal::SIGINT),
            _ = signals.term.recv() => keeper.forward(NixSignal::SIGTERM),
            _ = signals.hup.recv() => keeper.forward(NixSignal::SIGHUP),
        }
    }
    // The command may have finished just before the loss was seen: then it did its work
    // while we held the lock, and its exit decides.
    if keeper.has_ended() {
        return Some(keeper.wait().await);
    }
    eprintln!(
        "bidlock: lock {redis_key} lost ({}); stopping the command",
        guard.lease().lost_reason().unwrap_or("unknown")
    );
    keeper.stop();
    // The keeper gives the command `grace`; more than that means the keeper is stuck.
    let waited = tokio::time::timeout(grace + STOP_MARGIN, keeper.wait()).await;
    match waited.as_ref().map(|r| r.as_ref().map(|s| s.signal())) {
        // The keeper exits normally only when the command had ended before the stop
        // reached it (its exit was still on its way): it finished on its own, and its exit
        // decides, as above.
        Ok(Ok(None)) => {
            eprintln!("bidlock: the command had already finished when the loss was seen");
            return waited.ok();
        }
        // It stopped the command as asked.
        Ok(Ok(Some(sig))) if sig == crate::keep::STOP as i32 => {}
        Ok(_) => eprintln!(
            "bidlock: the command's keeper died before it said how the command ended; \
             counted as stopped (not recorded)"
        ),
        Err(_) => {
            eprintln!(
                "bidlock: the command's keeper did not answer within {:?}; killing what is \
                 left of the command; counted as stopped (not recorded)",
                grace + STOP_MARGIN
            );
            keeper.kill_tree();
            let _ = keeper.wait().await;
        }
    }
    None
}

/// After the command: records completion (`--once` and exit 0) or releases.
async fn finish(guard: LockGuard, once: bool, code: u8, redis_key: &str) -> Result<u8, CliError> {
    if once && code == 0 {
        // The command did its work: record it whoever holds the lock by now.
        return Ok(match guard.complete().await {
            Ok(true) => exit::OK,
            Ok(false) => {
                eprintln!("bidlock: completion of {redis_key} recorded, but the lock was lost before the command finished");
                exit::RECORDED_AFTER_LOSS
            }
            Err(e) => {
                eprintln!(
                    "bidlock: the command succeeded but its completion could not be recorded: {e}"
                );
                exit::UNRECORDED
            }
        });
    }
    match guard.release().await {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("bidlock: lock {redis_key} was lost while the command ran");
            return Ok(exit::LOCK_LOST);
        }
        Err(e) => eprintln!("bidlock: release failed ({e}); the lock expires after its ttl"),
    }
    Ok(if once { once_code(code) } else { code })
}

/// Under `--once` each exit code has one meaning: a command's own code that `run`
/// reserves for its outcomes becomes 1 (the command failed, nothing recorded).
fn once_code(code: u8) -> u8 {
    if exit::RUN_RESERVED.contains(&code) {
        eprintln!(
            "bidlock: the command exited {code}, a code run --once reserves for its own \
             outcomes; exiting 1 (the command failed, nothing recorded)"
        );
        exit::FAILURE
    } else {
        code
    }
}
