//! The permissions bidlock needs from its Redis user (what `deploy/redis/bidlock.acl`
//! grants), and the check that the connected user has them.
//!
//! One script asks Redis' own `redis.acl_check_cmd` (Redis 7+) about every command bidlock
//! sends, with a name of each kind it sends it to (a lock, a record, a channel, ...): no
//! permission is needed for that beyond running a script, and nothing is written. The
//! answers say which command, key pattern or channel the user lacks.
//!
//! A missing permission that the lock path needs (a command the scripts run, a key or
//! channel they touch) makes the connect fail, naming it: a Lua script that Redis stops
//! half-way for want of a permission would leave its first writes behind. The operator
//! commands' permissions (`scan`, `info`, `cluster|info`) are only warned about: Redis
//! refuses those commands whole, naming the command, and the lock path does not need them.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{ErrorKind, RedisError, Script, ServerErrorKind, Value};

use super::cluster::{ClusterLink, Node};
use super::RedisStore;
use crate::backend::{Missing, Permissions};
use crate::config::RedisTarget;
use crate::error::Error;
use crate::keyspace::{KeySpace, Layout};

mod needs;

use needs::{checks, purpose, Check, Pattern, OPERATOR_ONLY};

/// The check: for each `n, arg1..argn` in ARGV, 1 when the user may run that command with
/// those arguments, 0 when not, -1 when this server does not know the command.
const CHECK: &str = r"
if not redis.acl_check_cmd then
  return redis.error_reply('ERR the permission check needs Redis 7 or later (redis.acl_check_cmd)')
end
local out, i = {}, 1
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local ok, allowed = pcall(redis.acl_check_cmd, unpack(ARGV, i + 1, i + n))
  if not ok then
    out[#out + 1] = -1
  elseif allowed then
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
  i = i + n + 1
end
return out
";

static CHECK_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(CHECK));

/// The script call that asks about every check (`EVALSHA`, or `EVAL` where asked).
fn invocation(checks: &[Check]) -> redis::ScriptInvocation<'static> {
    let mut inv = CHECK_SCRIPT.prepare_invoke();
    for c in checks {
        inv.arg(c.args.len());
        for a in &c.args {
            inv.arg(a);
        }
    }
    inv
}

/// What the answers say is missing: a key or channel pattern refused whatever runs on it
/// (while those commands pass elsewhere), a command refused wherever it runs (while
/// another command passes on one of those names), else each refused pair of a command
/// and a pattern.
fn diagnose(checks: &[Check], answers: &[i64]) -> Vec<Missing> {
    let answer = |i: usize| answers.get(i).copied().unwrap_or(-1);
    let all: Vec<(usize, &Check)> = checks.iter().enumerate().collect();
    let allowed_elsewhere = |command: &str, p: &Pattern| {
        all.iter()
            .any(|(i, c)| c.command == command && c.on.as_ref() != Some(p) && answer(*i) == 1)
    };
    let mut missing = Vec::new();
    let mut explained = BTreeSet::new();
    let patterns: BTreeSet<&Pattern> = checks.iter().filter_map(|c| c.on.as_ref()).collect();
    // Single patterns first: a check on several names at once (one EXISTS over a posting's
    // names) is explained by any of its names' patterns found missing.
    let (single, together): (Vec<&Pattern>, Vec<&Pattern>) =
        patterns.into_iter().partition(|p| !p.pattern.contains(' '));
    let mut missing_patterns: BTreeSet<&str> = BTreeSet::new();
    for p in single.into_iter().chain(together) {
        let on: Vec<&(usize, &Check)> = all
            .iter()
            .filter(|(i, c)| c.on.as_ref() == Some(p) && answer(*i) >= 0)
            .collect();
        let refused = !on.is_empty() && on.iter().all(|(i, _)| answer(*i) == 0);
        if refused && p.pattern.split(' ').any(|q| missing_patterns.contains(q)) {
            explained.extend(on.iter().map(|(i, _)| *i));
            continue;
        }
        if refused && on.iter().any(|(_, c)| allowed_elsewhere(c.command, p)) {
            missing_patterns.insert(p.pattern.as_str());
            explained.extend(on.iter().map(|(i, _)| *i));
            missing.push(Missing {
                what: format!("{} {} ({})", p.kind, p.pattern, p.holds),
                lock_path: true,
            });
        }
    }
    let commands: BTreeSet<&str> = checks.iter().map(|c| c.command).collect();
    for command in commands {
        let of: Vec<usize> = all
            .iter()
            .filter(|(i, c)| c.command == command && answer(*i) >= 0 && !explained.contains(i))
            .map(|(i, _)| *i)
            .collect();
        // Refused everywhere it runs, and at least once where something else passes (or
        // with no name at all): the command is missing, not the name.
        let fine = |i: &usize| {
            checks[*i].on.as_ref().is_none_or(|p| {
                all.iter()
                    .any(|(j, c)| c.on.as_ref() == Some(p) && answer(*j) == 1)
            })
        };
        if !of.is_empty() && of.iter().all(|i| answer(*i) == 0) && of.iter().any(fine) {
            explained.extend(of);
            missing.push(Missing {
                what: format!("command '{command}' ({})", purpose(command)),
                lock_path: !OPERATOR_ONLY.contains(&command),
            });
        }
    }
    for (i, c) in &all {
        if answer(*i) == 0 && !explained.contains(i) {
            let on =
                c.on.as_ref()
                    .map_or(String::new(), |p| format!(" on {} {}", p.kind, p.pattern));
            missing.push(Missing {
                what: format!("'{}'{on}", c.command),
                lock_path: !OPERATOR_ONLY.contains(&c.command),
            });
        }
    }
    missing
}

/// Reads the script's answer.
fn answers(reply: Result<Value, RedisError>, checks: &[Check]) -> Permissions {
    match reply {
        Ok(v) => match redis::from_redis_value::<Vec<i64>>(v) {
            Ok(a) if a.len() == checks.len() => Permissions::Checked(diagnose(checks, &a)),
            _ => Permissions::Unchecked("the permission check gave an answer it should not".into()),
        },
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoPerm) => {
            // Running the check itself is refused (EVALSHA, or SCRIPT LOAD on a server
            // that lacks it): that is a missing permission too.
            let text = e.to_string();
            let command = text
                .split_once("run the '")
                .and_then(|(_, rest)| rest.split_once('\''))
                .map_or("evalsha", |(c, _)| c);
            let command = if command == "script|load" {
                "script|load"
            } else {
                "evalsha"
            };
            Permissions::Checked(vec![Missing {
                what: format!(
                    "command '{command}' ({}); nothing else could be checked",
                    purpose(command)
                ),
                lock_path: true,
            }])
        }
        Err(e) => Permissions::Unchecked(e.to_string()),
    }
}

/// A NOPERM error saying `text` (one line).
pub(super) fn noperm(text: &str) -> RedisError {
    let line = format!("-NOPERM {}\r\n", text.replace(['\r', '\n'], " "));
    match redis::parse_redis_value(line.as_bytes()) {
        Ok(Value::ServerError(e)) => e.into(),
        _ => RedisError::from((
            ErrorKind::Server(ServerErrorKind::NoPerm),
            "NOPERM",
            text.to_owned(),
        )),
    }
}

/// A refusal by the server's ACL, worded for an operator: NOPERM at the top level (Redis
/// names the command, key or channel), or inside a script (Redis 7.0 says "The user
/// executing the script can't ..."). `None` for any other error.
pub(super) fn refusal(op: &str, e: &RedisError) -> Option<RedisError> {
    let text = e.to_string();
    let said = e.detail().unwrap_or(&text);
    let acl = e.kind() == ErrorKind::Server(ServerErrorKind::NoPerm)
        || text.contains("The user executing the script can't")
        || text.contains("no permissions to");
    acl.then(|| {
        noperm(&format!(
            "Redis refused a permission that {op} needs (NOPERM): {said}; `bidlock health` \
             lists what this user lacks, deploy/redis/bidlock.acl what bidlock needs"
        ))
    })
}

/// What the user of `conn` may not do that bidlock needs: one server, Sentinel's master,
/// a Redlock node (by `EVALSHA`, loading the check on `NOSCRIPT`).
pub(super) async fn check_server(
    conn: &mut (impl ConnectionLike + Send),
    keys: &KeySpace,
    grants: Option<&str>,
    db: i64,
) -> Permissions {
    let checks = checks(keys, Layout::Classic, grants, db);
    let reply = invocation(&checks).invoke_async::<Value>(conn).await;
    answers(reply, &checks)
}

/// What the user may not do on any master of a cluster (ACLs are per node): `EVALSHA`
/// on each, loading the check there by `SCRIPT LOAD` when it lacks it.
pub(super) async fn check_cluster(
    link: &ClusterLink,
    masters: &[Node],
    keys: &KeySpace,
) -> Permissions {
    let checks = checks(keys, Layout::Cluster, None, 0);
    let mut evalsha = redis::cmd("EVALSHA");
    evalsha.arg(CHECK_SCRIPT.get_hash()).arg(0);
    for c in &checks {
        evalsha.arg(c.args.len()).arg(&c.args);
    }
    let mut load = redis::cmd("SCRIPT");
    load.arg("LOAD").arg(CHECK);
    let mut found: Vec<Missing> = Vec::new();
    let mut unchecked = None;
    // A server error comes back as a value when a value is asked for: make it an error.
    let ask = |cmd: &redis::Cmd, m| {
        let cmd = cmd.clone();
        async move {
            link.on_node::<Value>(m, cmd)
                .await
                .and_then(Value::extract_error)
        }
    };
    for m in masters {
        let mut reply = ask(&evalsha, m).await;
        if matches!(&reply, Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)) {
            reply = match ask(&load, m).await {
                Ok(_) => ask(&evalsha, m).await,
                Err(e) => Err(e),
            };
        }
        match answers(reply, &checks) {
            Permissions::Checked(missing) => {
                for x in missing {
                    if !found.contains(&x) {
                        found.push(x);
                    }
                }
            }
            Permissions::Unchecked(why) => {
                unchecked.get_or_insert(format!("{}:{}: {why}", m.0, m.1));
            }
        }
    }
    match unchecked {
        Some(why) if found.is_empty() => Permissions::Unchecked(why),
        _ => Permissions::Checked(found),
    }
}

/// Refuses a user that lacks what the lock path needs, naming it (nothing was written);
/// warns about what only operator commands need.
pub(super) fn require(found: &Permissions, url: &str) -> Result<(), RedisError> {
    let missing = match found {
        Permissions::Checked(missing) => missing,
        Permissions::Unchecked(why) => {
            tracing::debug!(target: "bidlock::redis", url, %why, "the Redis user's permissions could not be checked");
            return Ok(());
        }
    };
    let list = |lock_path: bool| {
        let v: Vec<&str> = missing
            .iter()
            .filter(|m| m.lock_path == lock_path)
            .map(|m| m.what.as_str())
            .collect();
        v.join("; ")
    };
    let operator = list(false);
    if !operator.is_empty() {
        tracing::warn!(target: "bidlock::redis", url, missing = %operator,
            "the Redis user may not do what some operator commands need (NOPERM); locks work, those commands fail");
    }
    let lock_path = list(true);
    if lock_path.is_empty() {
        return Ok(());
    }
    Err(noperm(&format!(
        "the Redis user lacks permissions bidlock needs to hold locks (NOPERM): {lock_path}; \
         grant what deploy/redis/bidlock.acl grants (docs/OPERATING-REDIS.md)"
    )))
}

/// [`require`] for one server (or Sentinel's master) at connect.
pub(super) async fn require_server(
    conn: &mut (impl ConnectionLike + Send),
    keys: &KeySpace,
    grants: Option<&str>,
    target: &RedisTarget,
) -> Result<(), Error> {
    let db = target.info.redis_settings().db();
    let found = check_server(conn, keys, grants, db).await;
    require(&found, target.redacted()).map_err(|source| refused(target, source))
}

impl RedisStore {
    /// [`require`] for every master of a cluster, at connect.
    pub(super) async fn require_permissions(&self) -> Result<(), Error> {
        let Some(link) = self.cluster() else {
            return Ok(());
        };
        let masters = link.masters().await.unwrap_or_default();
        let found = check_cluster(link, &masters, &self.keys).await;
        require(&found, self.target.redacted()).map_err(|source| refused(&self.target, source))
    }
}

fn refused(target: &RedisTarget, source: RedisError) -> Error {
    Error::Redis {
        op: "connect",
        url: target.redacted().to_owned(),
        source: Box::new(source),
    }
}
