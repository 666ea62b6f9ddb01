//! What bidlock sends to Redis, as questions for `redis.acl_check_cmd`: each command on a
//! name of each kind it touches (a made-up posting stands for all), with the key or
//! channel pattern of the ACL that covers it and what it is for. Kept beside
//! `deploy/redis/bidlock.acl`: the least-privilege tests hold both to what MONITOR shows.

use crate::key::LockKey;
use crate::keyspace::{KeySpace, Layout};

/// The commands an operator's tools need, but not the lock path: Redis refuses them
/// whole (nothing half-done), and a user without them still takes and releases locks.
pub(super) const OPERATOR_ONLY: &[&str] = &["scan", "info", "cluster|info"];

/// What one command is for, as the ACL file says.
pub(super) fn purpose(command: &str) -> &'static str {
    match command {
        "evalsha" | "script|load" => "running bidlock's Lua scripts",
        "get" | "set" | "del" | "exists" | "type" | "pttl" | "pexpire" => {
            "locks, records, markers and the fencing counter"
        }
        "zadd" | "zrem" | "zscore" | "zrange" | "zcard" => "the wait queue of direct handoff",
        "hset" | "hget" | "hdel" => "the queued waiters' entries",
        "time" => "fencing tokens and queue order from the server clock",
        "publish" | "subscribe" => "release messages and grants",
        "spublish" | "ssubscribe" | "sunsubscribe" => "a cluster's sharded release messages",
        "scan" => "`locks`, `cleanup` and `stats`",
        "info" => "the eviction-policy warning and the URL-kind checks",
        "cluster|slots" => "a cluster's slot map",
        "cluster|info" => "`health`: the cluster's state",
        "asking" => "a cluster's slot migrations (ASK redirections)",
        "select" => "the database number of the URL",
        _ => "bidlock",
    }
}

/// A key or channel pattern of the ACL, with what it holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Pattern {
    /// `keys` or `channel`.
    pub(super) kind: &'static str,
    pub(super) pattern: String,
    pub(super) holds: &'static str,
}

/// One question for `redis.acl_check_cmd`.
#[derive(Debug, Clone)]
pub(super) struct Check {
    pub(super) command: &'static str,
    pub(super) args: Vec<String>,
    pub(super) on: Option<Pattern>,
}

/// Everything bidlock sends, in `layout`, to names of `keys` (a made-up posting stands
/// for all), with `grants` (this manager's grant channel) and a database other than 0.
pub(super) fn checks(keys: &KeySpace, layout: Layout, grants: Option<&str>, db: i64) -> Vec<Check> {
    let Ok(posting) = LockKey::new("acl-check", "posting") else {
        return Vec::new();
    };
    let keys = keys.clone().with_layout(layout);
    let mut out = key_checks(&keys, &posting);
    out.extend(channel_checks(&keys, &posting, grants));
    out.extend(plain_checks(layout, db));
    out
}

/// Each command bidlock runs on each kind of name, with the pattern of that kind (the
/// single-server layout's: a cluster's names match them too).
fn key_checks(keys: &KeySpace, posting: &LockKey) -> Vec<Check> {
    let classic = keys.clone().with_layout(Layout::Classic);
    let (fence, fence_pattern) = match keys.layout() {
        Layout::Classic => (keys.fence_key(), keys.fence_key()),
        Layout::Cluster => (
            keys.fence_key_of(posting),
            format!("{}:*", keys.fence_key()),
        ),
    };
    let names: [(String, String, &str, &[&'static str]); 6] = [
        (
            keys.lock_key(posting),
            classic.scan_pattern(None),
            "locks",
            &["get", "set", "del", "exists", "type", "pttl", "pexpire"],
        ),
        (
            keys.done_key(posting),
            classic.done_pattern(),
            "completion records",
            &["get", "set", "del", "exists", "type", "pttl"],
        ),
        (
            keys.wait_key(posting),
            classic.wait_pattern(),
            "wait markers",
            &["set", "del", "exists", "pttl", "pexpire"],
        ),
        (
            keys.queue_key(posting),
            classic.queue_pattern(),
            "wait queues",
            &[
                "zadd", "zrem", "zscore", "zrange", "zcard", "exists", "type", "pttl", "pexpire",
                "del",
            ],
        ),
        (
            keys.waiters_key(posting),
            classic.waiters_pattern(),
            "queued waiters",
            &[
                "hset", "hget", "hdel", "exists", "type", "pttl", "pexpire", "del",
            ],
        ),
        (
            fence.clone(),
            fence_pattern.clone(),
            "the fencing counter",
            // TYPE when it holds junk: the error then names what it holds.
            &["get", "set", "type"],
        ),
    ];
    let mut out = Vec::new();
    for (name, pattern, holds, commands) in names {
        let on = Pattern {
            kind: "keys",
            pattern,
            holds,
        };
        out.extend(commands.iter().map(|&command| Check {
            command,
            args: key_args(command, &name),
            on: Some(on.clone()),
        }));
    }
    // Some script commands name several keys of a posting at once, and Redis wants one
    // selector of a user's ACL that covers every key of a command: each of those
    // commands is asked as the scripts send it (a smaller set inside one of these, like
    // release.lua's EXISTS of queue and waiters, is covered by it).
    let (lock, done, marker, queue, waiters) = (
        (keys.lock_key(posting), classic.scan_pattern(None)),
        (keys.done_key(posting), classic.done_pattern()),
        (keys.wait_key(posting), classic.wait_pattern()),
        (keys.queue_key(posting), classic.queue_pattern()),
        (keys.waiters_key(posting), classic.waiters_pattern()),
    );
    // A script call names every key its script touches, and Redis checks the call on
    // each (read and write): acquire.lua's names all six kinds of a posting at once.
    let counter = (fence.clone(), fence_pattern.clone());
    out.push(Check {
        command: "evalsha",
        args: ["evalsha", "0000000000000000000000000000000000000000", "6"]
            .into_iter()
            .map(str::to_owned)
            .chain(
                [&lock, &counter, &done, &marker, &queue, &waiters]
                    .iter()
                    .map(|(name, _)| name.clone()),
            )
            .collect(),
        on: Some(Pattern {
            kind: "keys",
            pattern: [&lock, &counter, &done, &marker, &queue, &waiters]
                .iter()
                .map(|(_, pattern)| pattern.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            holds: "every name of a posting in one script call (acquire.lua's EVALSHA)",
        }),
    });
    for (command, names, holds) in [
        (
            "exists",
            vec![&done, &queue, &waiters],
            "a posting's record, queue and waiters together (acquire.lua's one EXISTS)",
        ),
        (
            "exists",
            vec![&marker, &queue, &waiters],
            "a posting's wait marker, queue and waiters together (release.lua's one EXISTS)",
        ),
        (
            "del",
            vec![&lock, &marker],
            "a lock and its wait marker together (the one DEL of release, completion and force release)",
        ),
    ] {
        out.push(Check {
            command,
            args: std::iter::once(command.to_owned())
                .chain(names.iter().map(|(name, _)| name.clone()))
                .collect(),
            on: Some(Pattern {
                kind: "keys",
                pattern: names
                    .iter()
                    .map(|(_, pattern)| pattern.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
                holds,
            }),
        });
    }
    out
}

/// Publishing and listening on the release channel (a cluster's sharded ones) and on this
/// manager's grant channel.
fn channel_checks(keys: &KeySpace, posting: &LockKey, grants: Option<&str>) -> Vec<Check> {
    let (publish, subscribe, release) = match keys.layout() {
        Layout::Classic => ("publish", "subscribe", keys.release_channel()),
        Layout::Cluster => (
            "spublish",
            "ssubscribe",
            format!("{}:*", keys.release_channel()),
        ),
    };
    let mut channels = vec![(
        keys.release_channel_of(posting),
        release,
        "release messages",
    )];
    if let Some(g) = grants {
        channels.push((
            g.to_owned(),
            format!("{}_grants:*", keys.prefix()),
            "grants",
        ));
    }
    let mut out = Vec::new();
    for (channel, pattern, holds) in channels {
        let on = Pattern {
            kind: "channel",
            pattern,
            holds,
        };
        out.push(Check {
            command: publish,
            args: vec![publish.into(), channel.clone(), "x".into()],
            on: Some(on.clone()),
        });
        out.push(Check {
            command: subscribe,
            args: vec![subscribe.into(), channel],
            on: Some(on),
        });
    }
    out
}

/// The commands that name no key or channel.
fn plain_checks(layout: Layout, db: i64) -> Vec<Check> {
    let mut plain: Vec<&'static str> =
        vec!["time", "ping", "scan", "info", "evalsha", "script|load"];
    if layout == Layout::Cluster {
        plain.extend(["sunsubscribe", "cluster|slots", "cluster|info", "asking"]);
    }
    if db != 0 {
        plain.push("select");
    }
    plain
        .into_iter()
        .map(|command| Check {
            command,
            args: keyless_args(command),
            on: None,
        })
        .collect()
}

/// The arguments of a command on one key, as bidlock sends it.
fn key_args(command: &'static str, key: &str) -> Vec<String> {
    let extra: &[&str] = match command {
        "set" => &["1"],
        "pexpire" => &["1000"],
        "zadd" => &["1", "h"],
        "zrange" => &["0", "0"],
        "zrem" | "zscore" | "hget" | "hdel" => &["h"],
        "hset" => &["h", "1"],
        _ => &[],
    };
    let mut args = vec![command.to_owned(), key.to_owned()];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// The arguments of a command that names no key.
fn keyless_args(command: &'static str) -> Vec<String> {
    let args: &[&str] = match command {
        "scan" => &["scan", "0"],
        "info" => &["info", "memory"],
        "evalsha" => &["evalsha", "0000000000000000000000000000000000000000", "0"],
        "script|load" => &["script", "load", "return 1"],
        "cluster|slots" => &["cluster", "slots"],
        "cluster|info" => &["cluster", "info"],
        "select" => &["select", "0"],
        other => return vec![other.to_owned()],
    };
    args.iter().map(|s| (*s).to_owned()).collect()
}
