//! A process's descendants, read from `/proc`, and signals to all of them at once.
//!
//! The keeper is a child subreaper, so everything its command starts stays below it even
//! when an intermediate process exits or calls `setsid`: the descendants found here are
//! the command's whole tree, whatever process group or session each is in.

use std::collections::HashMap;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// `(parent, state)` of a process from its `/proc/PID/stat` line; `None` when it is gone.
fn parent_and_state(stat: &str) -> Option<(i32, char)> {
    // The command name is in parentheses and may hold spaces or ')': the fields
    // follow the last ')'.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((parent, state))
}

/// Every live (not zombie) process, by parent.
fn children_by_parent() -> HashMap<i32, Vec<i32>> {
    let mut by_parent: HashMap<i32, Vec<i32>> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return by_parent;
    };
    for entry in dir.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((parent, state)) = parent_and_state(&stat) {
            // A zombie is dead already and its children were reparented: skip it.
            if state != 'Z' {
                by_parent.entry(parent).or_default().push(pid);
            }
        }
    }
    by_parent
}

/// The live descendants of `root` (not `root` itself), parents before children.
pub(crate) fn descendants(root: Pid) -> Vec<Pid> {
    let by_parent = children_by_parent();
    let mut found = Vec::new();
    let mut next = vec![root.as_raw()];
    while let Some(p) = next.pop() {
        for &c in by_parent.get(&p).map(Vec::as_slice).unwrap_or_default() {
            found.push(Pid::from_raw(c));
            next.push(c);
        }
    }
    found
}

/// Sends `sig` to every live descendant of `root`; how many there were.
pub(crate) fn signal_descendants(root: Pid, sig: Signal) -> usize {
    let all = descendants(root);
    for pid in &all {
        // Gone meanwhile is fine: that is what we want.
        let _ = kill(*pid, sig);
    }
    all.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_are_read() {
        assert_eq!(
            parent_and_state("42 (a b) c)) S 7 42 42 0 -1"),
            Some((7, 'S'))
        );
        assert_eq!(parent_and_state("9 (sh) Z 1 9 9"), Some((1, 'Z')));
        assert_eq!(parent_and_state("garbage"), None);
    }

    #[test]
    fn a_child_is_found_below_this_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let me = nix::unistd::getpid();
        let pid = Pid::from_raw(child.id() as i32);
        assert!(descendants(me).contains(&pid));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!descendants(me).contains(&pid));
    }
}
