//! A real redis-server at the address auto-detection tries by default (127.0.0.1:6379),
//! without touching this machine's port 6379: the server and the program under test
//! run in a network namespace of their own (`unshare -rn`: a user and a network
//! namespace, no privileges needed where user namespaces are enabled). Shared by the
//! CLI's and the agent's tests (`#[path]`).

#![allow(dead_code)]

use std::process::{Command, Output, Stdio};

/// Brings loopback up, starts redis-server on 6379, runs "$@", writes the server's
/// DBSIZE afterwards to $1 and exits with the program's code.
const SCRIPT: &str = r#"
set -u
keys=$1; shift
ip link set lo up || exit 90
dir=$(mktemp -d)
redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
  --daemonize yes --logfile "$dir/redis.log" || exit 91
trap 'redis-cli -p 6379 shutdown nosave >/dev/null 2>&1; rm -rf "$dir"' EXIT
for _ in $(seq 200); do redis-cli -p 6379 ping >/dev/null 2>&1 && break; sleep 0.05; done
redis-cli -p 6379 ping >/dev/null 2>&1 || exit 92
"$@"
code=$?
redis-cli -p 6379 dbsize > "$keys"
exit $code
"#;

/// Whether this machine can make a user and network namespace.
pub fn available() -> bool {
    Command::new("unshare")
        .args(["-rn", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `cmd` (its program, arguments and environment) next to a real Redis at
/// 127.0.0.1:6379 in a network namespace of its own; returns its output and how many
/// keys that Redis holds afterwards.
pub fn beside_redis_at_the_default_address(cmd: &Command) -> (Output, u64) {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("dbsize");
    let mut wrapped = Command::new("unshare");
    wrapped
        .args(["-rn", "bash", "-c", SCRIPT, "bash"])
        .arg(&keys)
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(Stdio::null());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    let out = wrapped.output().expect("run unshare");
    let code = out.status.code();
    assert!(
        !matches!(code, Some(90..=92)),
        "the namespace's Redis did not start ({code:?}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = std::fs::read_to_string(&keys)
        .unwrap_or_else(|e| panic!("no DBSIZE ({e}): {}", String::from_utf8_lossy(&out.stderr)))
        .trim()
        .parse()
        .unwrap();
    (out, n)
}
