//! Processes seen from `/proc`: freeze a holder together with what it started, tell
//! whether a signal took effect, and read this process's memory use.

use nix::sys::signal::kill;
use nix::unistd::Pid;

pub use nix::sys::signal::Signal;

/// The state letter of a process (`R`, `S`, `T` stopped, `Z`...), `None` when it is gone.
pub fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: the state follows the last ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// The parent of a process, from `/proc`.
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The direct children of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| parent(*p) == Some(pid))
        .collect()
}

fn signal_one(pid: u32, group: bool, sig: Signal) {
    if let Ok(p) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(if group { -p } else { p }), sig);
    }
}

/// Sends `sig` to `pid` and to the process group of each of its children. `bidlock run`
/// starts its command in a group of its own, so this reaches the command and everything
/// the command started (a frozen holder is frozen whole).
pub fn signal_with_children(pid: u32, sig: Signal) {
    let kids = children(pid);
    signal_one(pid, false, sig);
    for c in kids {
        signal_one(c, true, sig);
    }
}

/// Whether `pid` and all its children are stopped (state `T`): proof that a SIGSTOP took
/// effect. False when `pid` is gone.
pub fn all_stopped(pid: u32) -> bool {
    state(pid) == Some('T') && children(pid).iter().all(|c| state(*c) == Some('T'))
}

/// This process's resident set size in KiB (`VmRSS` in `/proc/self/status`).
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
