//! `bidlock run`: hold a posting's lock, with renewal, while a command runs.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use bidlock::{AcquireOptions, BidLockManager, LockGuard, LockKey};
use clap::Args;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::signal::unix::{signal, SignalKind};

use crate::exit::{self, CliError};
use crate::output::human_duration;
use crate::{lock_key, Global};

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
    /// Record completion when the command exits 0; later runs exit 76 at once.
    #[arg(long)]
    once: bool,
    /// Seconds between SIGTERM and SIGKILL when the lock is lost.
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

/// Signals the command's whole process group: what it started in the background stops
/// with it.
fn send(pid: Option<u32>, sig: Signal) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        let _ = kill(Pid::from_raw(-pid), sig);
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
        return Ok(m.acquire(key, opts).await?);
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
        m.config().keys().lock_key(key),
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
    let m = g.manager(true).await?;
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
    let redis_key = m.config().keys().lock_key(&key);
    let child = match spawn(&args.command, &key, &redis_key, &guard) {
        Ok(c) => c,
        Err(e) => {
            let _ = guard.release().await;
            return Err(e);
        }
    };
    let Some(status) = supervise(child, &guard, args.grace, &redis_key).await? else {
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

/// Starts the command in its own process group (so that a lost lock stops everything it
/// started), with the lock's names and token in its environment.
fn spawn(
    command: &[String],
    key: &LockKey,
    redis_key: &str,
    guard: &LockGuard,
) -> Result<Child, CliError> {
    let (program, rest) = command
        .split_first()
        .ok_or_else(|| CliError::usage("no command given after --"))?;
    tokio::process::Command::new(program)
        .args(rest)
        .env("BIDLOCK_KEY", redis_key)
        .env("BIDLOCK_HOLDER", guard.holder().as_str())
        .env("BIDLOCK_FENCE", guard.fencing_token().to_string())
        .env("BIDLOCK_MARKETPLACE", key.marketplace())
        .env("BIDLOCK_POSTING", key.posting())
        .process_group(0)
        .spawn()
        .map_err(|e| CliError::new(exit::CANNOT_EXECUTE, format!("cannot run {program:?}: {e}")))
}

/// Waits for the command, passing SIGINT and SIGTERM on to its group. `None` when the
/// lock was lost first: the command has been stopped (SIGTERM, then SIGKILL after
/// `grace`).
async fn supervise(
    mut child: Child,
    guard: &LockGuard,
    grace: Duration,
    redis_key: &str,
) -> Result<Option<std::io::Result<ExitStatus>>, CliError> {
    let pid = child.id();
    let (Ok(mut sigint), Ok(mut sigterm)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return Err(CliError::new(
            exit::FAILURE,
            "cannot install signal handlers",
        ));
    };
    let lost = guard.lost();
    tokio::pin!(lost);
    loop {
        tokio::select! {
            status = child.wait() => return Ok(Some(status)),
            _ = &mut lost => break,
            _ = sigint.recv() => send(pid, Signal::SIGINT),
            _ = sigterm.recv() => send(pid, Signal::SIGTERM),
        }
    }
    // The command may have finished just before the loss was seen: then it did its work
    // while we held the lock, and its exit decides.
    if let Ok(Some(status)) = child.try_wait() {
        return Ok(Some(Ok(status)));
    }
    eprintln!(
        "bidlock: lock {redis_key} lost ({}); stopping the command",
        guard.lease().lost_reason().unwrap_or("unknown")
    );
    send(pid, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        send(pid, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    Ok(None)
}

/// After the command: records completion (`--once` and exit 0) or releases; the command's
/// exit code, or 77 when the lock was lost meanwhile.
async fn finish(guard: LockGuard, once: bool, code: u8, redis_key: &str) -> Result<u8, CliError> {
    if once && code == 0 {
        // The command did its work: record it whoever holds the lock by now.
        return match guard.complete().await {
            Ok(true) => Ok(code),
            Ok(false) => {
                eprintln!("bidlock: completion of {redis_key} recorded, but the lock was lost before the command finished");
                Ok(exit::LOCK_LOST)
            }
            Err(e) => Err(CliError::new(
                exit::UNAVAILABLE,
                format!("the command succeeded but its completion could not be recorded: {e}"),
            )),
        };
    }
    match guard.release().await {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("bidlock: lock {redis_key} was lost before the command finished");
            return Ok(exit::LOCK_LOST);
        }
        Err(e) => eprintln!("bidlock: release failed ({e}); the lock expires after its ttl"),
    }
    Ok(code)
}
