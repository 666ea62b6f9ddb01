//! Starts the command from the keeper in a clean signal state: the keeper blocks the
//! signals it reads through its signalfd and Rust ignores SIGPIPE, and a child inherits
//! both across exec (std's `Command` resets SIGPIPE but not the mask), so the command is
//! started with `posix_spawn`, an empty mask and default dispositions.

use std::ffi::CString;
use std::os::unix::ffi::OsStringExt;

use nix::errno::Errno;
use nix::spawn::{posix_spawnp, PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Pid;

/// The signals the keeper blocks or Rust ignores, set back to their defaults.
const DEFAULTS: [Signal; 7] = [
    Signal::SIGPIPE,
    Signal::SIGCHLD,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
];

/// `KEY=VALUE` for every variable of this process.
fn environment() -> Vec<CString> {
    std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut entry = k.into_vec();
            entry.push(b'=');
            entry.extend(v.into_vec());
            CString::new(entry).ok()
        })
        .collect()
}

/// Starts `command` (looked up in `PATH` like a shell does) in the keeper's process
/// group, with this process's environment and standard streams.
///
/// # Errors
///
/// Why it could not be started (not found, not executable, ...).
pub(crate) fn spawn(command: &[String]) -> Result<Pid, String> {
    let args: Vec<CString> = command
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| "an argument holds a NUL byte".to_owned())?;
    let program = args.first().ok_or("no command given")?;
    let setup = |e: Errno| format!("cannot prepare its start: {}", e.desc());
    let mut attr = PosixSpawnAttr::init().map_err(setup)?;
    attr.set_sigmask(&SigSet::empty()).map_err(setup)?;
    let mut defaults = SigSet::empty();
    for sig in DEFAULTS {
        defaults.add(sig);
    }
    attr.set_sigdefault(&defaults).map_err(setup)?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )
    .map_err(setup)?;
    let actions = PosixSpawnFileActions::init().map_err(setup)?;
    posix_spawnp(program, &actions, &attr, &args, &environment()).map_err(|e| e.desc().to_owned())
}
