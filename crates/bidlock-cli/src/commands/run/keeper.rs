//! `run`'s side of the keeper process (see `crate::keep`): start it with the command,
//! pass signals on, ask it to stop the command, and learn how it ended.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::ExitStatus;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{getpid, Pid};
use tokio::sync::oneshot;

use crate::exit::{self, CliError};

/// The running keeper, leader of the command's process group.
pub(super) struct Keeper {
    pid: Pid,
    exited: oneshot::Receiver<io::Result<ExitStatus>>,
    status: Option<io::Result<ExitStatus>>,
}

/// This very binary, even if the file was replaced since (an upgrade while `run` runs):
/// the keeper must speak the same arguments.
fn this_program() -> std::path::PathBuf {
    let proc_exe = std::path::Path::new("/proc/self/exe");
    if proc_exe.exists() {
        return proc_exe.to_owned();
    }
    std::env::current_exe().unwrap_or_else(|_| "bidlock".into())
}

impl Keeper {
    /// Starts the keeper, which starts `command` with `env` added.
    pub(super) async fn start(
        command: &[String],
        env: Vec<(&'static str, String)>,
        grace: Duration,
    ) -> Result<Keeper, CliError> {
        let mut cmd = std::process::Command::new(this_program());
        cmd.arg0("bidlock")
            .arg("__keep")
            .arg("--parent")
            .arg(getpid().to_string())
            .arg("--grace")
            .arg(grace.as_secs_f64().to_string())
            .arg("--")
            .args(command)
            .envs(env)
            .process_group(0);
        let (started_tx, started) = oneshot::channel();
        let (exited_tx, exited) = oneshot::channel();
        let cannot =
            |e: io::Error| CliError::new(exit::FAILURE, format!("cannot start the command: {e}"));
        std::thread::Builder::new()
            .name("bidlock-keeper".into())
            .spawn(move || watch(cmd, started_tx, exited_tx))
            .map_err(cannot)?;
        let pid = started
            .await
            .map_err(|_| cannot(io::Error::other("the keeper thread ended")))?
            .map_err(cannot)?;
        Ok(Keeper {
            pid,
            exited,
            status: None,
        })
    }

    /// Sends `sig` to the command's process group (the keeper ignores it).
    pub(super) fn forward(&self, sig: Signal) {
        let _ = kill(Pid::from_raw(-self.pid.as_raw()), sig);
    }

    /// Asks the keeper to stop the command's whole tree (SIGTERM, SIGKILL after the
    /// grace period).
    pub(super) fn stop(&self) {
        let _ = kill(self.pid, crate::keep::STOP);
    }

    /// SIGKILL to everything below the keeper (also what left the group with `setsid`),
    /// then to the command's process group, keeper included: for a keeper that does not
    /// answer, and so cannot do it.
    pub(super) fn kill_tree(&self) {
        crate::keep::tree::signal_descendants(self.pid, Signal::SIGKILL);
        self.forward(Signal::SIGKILL);
    }

    /// Waits until the keeper has ended: its exit code is the command's.
    pub(super) async fn wait(&mut self) -> io::Result<ExitStatus> {
        if self.status.is_none() {
            let status = (&mut self.exited)
                .await
                .unwrap_or_else(|_| Err(io::Error::other("the keeper thread ended")));
            self.status = Some(status);
        }
        match &self.status {
            Some(Ok(s)) => Ok(*s),
            Some(Err(e)) => Err(io::Error::new(e.kind(), e.to_string())),
            None => Err(io::Error::other("the keeper's status is unknown")),
        }
    }

    /// Whether the keeper has ended, asked of the kernel rather than of the thread that
    /// waits for it (which may not have run yet, say right after `run` was resumed
    /// from SIGSTOP): ended but not reaped, or reaped already.
    pub(super) fn has_ended(&self) -> bool {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(self.pid), flags) {
            Ok(WaitStatus::StillAlive) => false,
            Ok(_) | Err(Errno::ECHILD) => true,
            Err(_) => false,
        }
    }
}

/// Forks the keeper and waits for it, on a thread of its own: the kernel sends the
/// parent-death signal when the *thread* that forked a process ends, so the forking
/// thread must live as long as the keeper. If the keeper is killed (it dies of no signal
/// otherwise, but of `STOP` when it stopped the command as asked), the command's group is killed while the keeper's pid, which names
/// the group, cannot be reused yet (the keeper is not reaped before).
fn watch(
    mut cmd: std::process::Command,
    started: oneshot::Sender<io::Result<Pid>>,
    exited: oneshot::Sender<io::Result<ExitStatus>>,
) {
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let _ = started.send(Ok(pid));
    let ended = waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT);
    // Dying of STOP is how the keeper reports a command it stopped (`crate::keep`).
    if let Ok(WaitStatus::Signaled(_, sig, _)) = ended.as_ref().map(|s| *s) {
        if sig == crate::keep::STOP {
            let _ = exited.send(child.wait());
            return;
        }
        eprintln!(
            "bidlock: the command's keeper was killed ({sig}); killing the command's process group"
        );
        let _ = kill(Pid::from_raw(-pid.as_raw()), Signal::SIGKILL);
    }
    let _ = exited.send(child.wait());
}
