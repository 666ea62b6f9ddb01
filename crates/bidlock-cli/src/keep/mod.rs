//! `bidlock __keep`: the keeper process between `bidlock run` and its command, so that
//! the command never outlives `run` unsupervised.
//!
//! `run` holds the lock; the keeper starts the command and stays its parent. Why a
//! process of its own, rather than the parent-death signal on the command alone or `run`
//! as a subreaper:
//!
//! - `PR_SET_PDEATHSIG` on the command kills the command when `run` dies, but not what
//!   the command started (the signal is not inherited across fork), and setting it needs
//!   code between fork and exec in `run`'s multi-threaded process.
//! - `run` as a child subreaper keeps orphaned grandchildren below `run`, but when `run`
//!   itself is killed they go to init, still running.
//!
//! The keeper combines both, outside the reach of what kills `run`: it asks for a
//! parent-death signal for itself (then checks `getppid`, in case `run` died before
//! that), and it is a child subreaper, so every process the command starts stays below
//! the keeper even if its parent exits or it calls `setsid`. It is its own process
//! group's leader, with the command in that group, so `timeout -s KILL` or a terminal's
//! signals (sent to `run`'s group) do not reach it. When `run` dies — SIGKILL, the OOM
//! killer, systemd's `KillMode=process` — the keeper SIGKILLs the command's whole tree
//! at once and exits. When the command ends normally, or `run` asks because the lock is
//! lost, everything left below the keeper gets SIGTERM, then SIGKILL after the grace
//! period, before `run` releases the lock or records completion. SIGINT, SIGTERM and
//! SIGHUP that reach `run` are passed to the command's group; the keeper ignores them and
//! the command decides.
//!
//! Outside the promise: processes the command has others start (`systemd-run`, `at`, a
//! daemon it asks over a socket, a container engine), which are not its descendants; and
//! a kill of both `run` and its keeper at once (`pkill -KILL bidlock` matches both).

mod spawn;
pub(crate) mod tree;

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use clap::Args;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::prctl;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{getpid, getppid, Pid};

use crate::exit;

/// The signal the kernel sends the keeper when `run` dies (`PR_SET_PDEATHSIG`).
const PARENT_DIED: Signal = Signal::SIGUSR1;
/// The signal `run` sends its keeper when the lock is lost: stop the command's tree.
pub(crate) const STOP: Signal = Signal::SIGUSR2;
/// How long the last round of SIGKILLs may take to empty the tree.
const KILL_PATIENCE: Duration = Duration::from_secs(5);

/// The keeper's arguments (`run` passes them; not for people).
#[derive(Debug, Args)]
pub(crate) struct KeepArgs {
    /// The pid of the `bidlock run` that started this keeper.
    #[arg(long)]
    parent: i32,
    /// Seconds between SIGTERM and SIGKILL when the command's tree is stopped.
    #[arg(long, value_parser = crate::seconds)]
    grace: Duration,
    /// The command and its arguments.
    #[arg(last = true, required = true, num_args = 1..)]
    command: Vec<String>,
}

/// What woke the keeper.
enum Event {
    /// A child changed state (reap).
    Child,
    /// `run` is gone: kill everything now.
    ParentDied,
    /// `run` asks to stop the command (the lock was lost).
    Stop,
    /// Anything else (SIGINT or SIGTERM that `run` sent the whole group: the command
    /// decides what to do with them).
    Other,
}

struct Keeper {
    parent: Pid,
    me: Pid,
    signals: SignalFd,
    command: Pid,
    status: Option<u8>,
    grace: Duration,
}

/// Tells `run` the command was stopped while it ran, whatever code it exited with then (a
/// command may exit 0 on SIGTERM without having done its work): the keeper dies of
/// [`STOP`], the signal `run` asked with (blocked until now, its action the default:
/// terminate). Nothing else makes the keeper die of it.
fn report_stopped() {
    let _ = SigSet::from(STOP).thread_unblock();
    let _ = nix::sys::signal::raise(STOP);
}

/// Runs the keeper; its exit code is the command's (128 + n when a signal ended it). When
/// `run` asked it to stop a command that was still running, it dies of [`STOP`] instead.
pub(crate) fn keep(args: KeepArgs) -> u8 {
    match Keeper::start(&args) {
        Ok(keeper) => keeper.run(),
        Err(code) => code,
    }
}

fn setup_failed(e: Errno) -> u8 {
    eprintln!("bidlock: cannot set up the command's keeper: {e}");
    exit::FAILURE
}

impl Keeper {
    /// Takes the signals it waits for, becomes a subreaper with a parent-death signal,
    /// and starts the command. `Err`: the exit code (the command did not start).
    fn start(args: &KeepArgs) -> Result<Keeper, u8> {
        let parent = Pid::from_raw(args.parent);
        let mut mask = SigSet::empty();
        for sig in [
            Signal::SIGCHLD,
            PARENT_DIED,
            STOP,
            Signal::SIGINT,
            Signal::SIGTERM,
            // When `run` is gone this group is orphaned, and a stopped member would bring
            // SIGHUP: the keeper must live to finish its work.
            Signal::SIGHUP,
        ] {
            mask.add(sig);
        }
        // Single-threaded here, so the mask covers the whole process; the command starts
        // with an empty mask (`spawn`).
        mask.thread_block().map_err(setup_failed)?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC).map_err(setup_failed)?;
        let _ = prctl::set_name(c"bidlock-keeper");
        prctl::set_child_subreaper(true).map_err(setup_failed)?;
        prctl::set_pdeathsig(PARENT_DIED).map_err(setup_failed)?;
        if getppid() != parent {
            eprintln!("bidlock: run ended before its command started; not starting it");
            return Err(exit::FAILURE);
        }
        let command = spawn::spawn(&args.command).map_err(|why| {
            let program = args.command.first().map_or("", String::as_str);
            eprintln!("bidlock: cannot run {program:?}: {why}");
            exit::CANNOT_EXECUTE
        })?;
        Ok(Keeper {
            parent,
            me: getpid(),
            signals,
            command,
            status: None,
            grace: args.grace,
        })
    }

    fn run(mut self) -> u8 {
        let mut stopped = false;
        while self.status.is_none() {
            match self.next_event(None) {
                Some(Event::Child) => {
                    self.reap();
                }
                Some(Event::ParentDied) => {
                    self.kill_all();
                    return exit::FAILURE;
                }
                Some(Event::Stop) => {
                    // The command may have ended before the stop came (its SIGCHLD still
                    // queued behind it): then it finished on its own, and its code counts.
                    self.reap();
                    stopped = self.status.is_none();
                    break;
                }
                Some(Event::Other) | None => {}
            }
        }
        // The command ended (or the lock was lost): whatever is left below it ends too,
        // before `run` releases the lock.
        self.stop_all();
        if stopped {
            report_stopped();
        }
        self.status.unwrap_or(exit::FAILURE)
    }

    /// The next signal, or `None` when `timeout` passed first.
    fn next_event(&self, timeout: Option<Duration>) -> Option<Event> {
        let timeout = match timeout {
            Some(t) => PollTimeout::try_from(t).unwrap_or(PollTimeout::MAX),
            None => PollTimeout::NONE,
        };
        let mut fds = [PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(n) if n > 0 => {}
            _ => return None,
        }
        let info = self.signals.read_signal().ok()??;
        let signo = i32::try_from(info.ssi_signo).unwrap_or(0);
        Some(match Signal::try_from(signo) {
            Ok(Signal::SIGCHLD) => Event::Child,
            // The signal also comes when the *thread* that forked the keeper ends while
            // `run` lives on: only a new parent means `run` is gone.
            Ok(PARENT_DIED) if getppid() != self.parent => Event::ParentDied,
            Ok(STOP) if i32::try_from(info.ssi_pid).ok() == Some(self.parent.as_raw()) => {
                Event::Stop
            }
            _ => Event::Other,
        })
    }

    /// Reaps every child that ended, noting the command's status. False once no child
    /// is left.
    fn reap(&mut self) -> bool {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => return true,
                Ok(WaitStatus::Exited(pid, code)) if pid == self.command => {
                    self.status = Some(u8::try_from(code & 0xff).unwrap_or(exit::FAILURE));
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == self.command => {
                    self.status = Some(u8::try_from(128 + sig as i32).unwrap_or(exit::FAILURE));
                }
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => return false,
            }
        }
    }

    /// SIGTERM to everything below the keeper, up to the grace period to end, then
    /// SIGKILL to what is left.
    fn stop_all(&mut self) {
        if tree::signal_descendants(self.me, Signal::SIGTERM) > 0 {
            let deadline = Instant::now() + self.grace;
            while self.reap() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                if let Some(Event::ParentDied) = self.next_event(Some(left)) {
                    break;
                }
            }
        }
        self.kill_all();
    }

    /// SIGKILL to everything below the keeper until nothing is left: a process forked
    /// meanwhile is found in the next round (it comes to this subreaper when its parent
    /// dies).
    fn kill_all(&mut self) {
        let deadline = Instant::now() + KILL_PATIENCE;
        loop {
            tree::signal_descendants(self.me, Signal::SIGKILL);
            if !self.reap() {
                return;
            }
            if Instant::now() >= deadline {
                eprintln!("bidlock: processes of the command survive SIGKILL; leaving them");
                return;
            }
            let _ = self.next_event(Some(Duration::from_millis(10)));
        }
    }
}
