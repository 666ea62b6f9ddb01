//! One connection type for both topologies: a single server's [`ConnectionManager`] or a
//! cluster's [`ClusterConnection`] (which follows `MOVED`/`ASK`, failovers and slot
//! migrations). Both run the same scripts and commands; the store does not care which.

use futures_util::FutureExt;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Arg, Cmd, ErrorKind, RedisFuture, RedisResult, ServerErrorKind, Value};

use super::scripts::source_of;

/// A connection to one server or to a cluster; cheap to clone (both are multiplexed).
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => cluster_command(c, cmd).boxed(),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Runs `cmd` on the cluster. A node without one of our scripts (a new node, a promoted
/// replica, a `SCRIPT FLUSH`) answers `EVALSHA` with `NOSCRIPT`; the script then goes to
/// that same node by `EVAL`, which also caches it there. The default — `SCRIPT LOAD` sent
/// to every node — would fail whenever any node is unreachable.
async fn cluster_command(c: &mut ClusterConnection, cmd: &Cmd) -> RedisResult<Value> {
    match c.req_packed_command(cmd).await {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => match as_eval(cmd) {
            Some(eval) => c.req_packed_command(&eval).await,
            None => Err(e),
        },
        other => other,
    }
}

/// `EVALSHA sha n keys... args...` as `EVAL source n keys... args...`, for our scripts.
fn as_eval(cmd: &Cmd) -> Option<Cmd> {
    let mut args = cmd.args_iter().map(|a| match a {
        Arg::Simple(bytes) => Some(bytes),
        _ => None,
    });
    let name = args.next()??;
    if !name.eq_ignore_ascii_case(b"EVALSHA") {
        return None;
    }
    let source = source_of(args.next()??)?;
    let mut eval = redis::cmd("EVAL");
    eval.arg(source);
    for a in args {
        eval.arg(a?);
    }
    Some(eval)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::redis::scripts::RELEASE;

    #[test]
    fn evalsha_of_our_scripts_becomes_eval_with_the_same_keys_and_args() {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(RELEASE.get_hash())
            .arg(2)
            .arg("k1")
            .arg("k2")
            .arg("h");
        let eval = as_eval(&cmd).unwrap();
        let args: Vec<Vec<u8>> = eval
            .args_iter()
            .map(|a| match a {
                Arg::Simple(b) => b.to_vec(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(args[0], b"EVAL");
        assert!(String::from_utf8_lossy(&args[1]).contains("local function next_token"));
        assert_eq!(
            &args[2..],
            &[b"2".to_vec(), b"k1".to_vec(), b"k2".to_vec(), b"h".to_vec()]
        );
        let mut other = redis::cmd("EVALSHA");
        other.arg("0000").arg(0);
        assert!(as_eval(&other).is_none());
        assert!(as_eval(&redis::cmd("GET")).is_none());
    }
}
