//! The hot scripts' calls: how a batch of items ([`protocol`](super::protocol)) becomes
//! one script call (`acquire.lua`, `release.lua` and `renew.lua` take any number of
//! items), and the batchers that group a single server's concurrent calls.
//!
//! These three build their `EVALSHA` by hand, writing key names straight into the command
//! (a try allocates no key strings), so they reload a missing script themselves; every
//! other script goes through redis-rs' `ScriptInvocation`, which does the same.

use std::fmt::Display;
use std::sync::Arc;

use futures_util::FutureExt as _;
use redis::aio::ConnectionLike;
use redis::{
    Cmd, ErrorKind, FromRedisValue, RedisResult, RedisWrite, Script, ServerErrorKind, ToRedisArgs,
};

use super::batch::{Batcher, SendBatch, Unclaimed};
use super::client::Master;
use super::conn::Conn;
use super::protocol::{LetGo, LetGoAnswer, Renewal, Take, TakeAnswer};
use super::scripts::{ACQUIRE, RELEASE, RENEW};
use crate::keyspace::{KeySpace, Layout, Name};
use crate::metrics::{Counter, Metrics};
use crate::notices::Notices;

/// A name (or any text) written into a command's buffer as one argument.
struct Text<T>(T);

impl<T: Display> ToRedisArgs for Text<T> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        out.write_arg_fmt(&self.0);
    }
}

/// `EVALSHA` of `script` with `keys` names; the caller appends keys, then arguments.
fn evalsha(script: &Script, keys: usize) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(keys);
    cmd
}

/// Runs `cmd` (an `EVALSHA` of `script`), loading the script first if the server lacks it.
async fn run<T: FromRedisValue>(
    conn: &mut impl ConnectionLike,
    script: &Script,
    cmd: &Cmd,
) -> RedisResult<T> {
    match cmd.query_async(conn).await {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            script.prepare_invoke().load_async(conn).await?;
            cmd.query_async(conn).await
        }
        other => other,
    }
}

/// Runs `acquire.lua` for `items`. `grants`: this manager's grant channel ('' for none);
/// `keep`: how long a counter lives in ms ('' for ever).
pub(super) async fn send_takes(
    conn: &mut impl ConnectionLike,
    keys: &KeySpace,
    items: &[Take],
    grants: &str,
    keep: &str,
) -> RedisResult<Vec<TakeAnswer>> {
    let mut cmd = evalsha(&ACQUIRE, 6 * items.len());
    for t in items {
        for name in [
            Name::Lock,
            Name::Fence,
            Name::Done,
            Name::Wait,
            Name::Queue,
            Name::Waiters,
        ] {
            cmd.arg(Text(keys.name_of(name, &t.key)));
        }
    }
    cmd.arg(grants).arg(keep);
    for t in items {
        cmd.arg(t.holder.as_str())
            .arg(t.ttl_ms)
            .arg(flag(t.check_done))
            .arg(flag(t.waiters_behind))
            .arg(t.mode.as_arg())
            .arg(t.entry_ms)
            .arg(t.grant_ms);
    }
    run(conn, &ACQUIRE, &cmd).await
}

/// Runs `release.lua` for `items` with `publish` (PUBLISH or SPUBLISH).
pub(super) async fn send_let_gos(
    conn: &mut impl ConnectionLike,
    keys: &KeySpace,
    items: &[LetGo],
    publish: &str,
    keep: &str,
) -> RedisResult<Vec<LetGoAnswer>> {
    let mut cmd = evalsha(&RELEASE, 6 * items.len());
    for g in items {
        for name in [
            Name::Lock,
            Name::Wait,
            Name::Queue,
            Name::Waiters,
            Name::Fence,
            Name::Done,
        ] {
            cmd.arg(Text(keys.name_of(name, &g.key)));
        }
    }
    cmd.arg(publish).arg(keep);
    for g in items {
        cmd.arg(g.holder.as_str());
        match keys.layout() {
            Layout::Classic => cmd.arg(Text(keys.release_channel_name())),
            _ => cmd.arg(keys.release_channel_of(&g.key)),
        };
        cmd.arg(flag(g.tell));
    }
    run(conn, &RELEASE, &cmd).await
}

/// Runs `renew.lua` for `items`; one code per item (1 renewed, 0 not held, -1 junk).
pub(super) async fn send_renewals(
    conn: &mut impl ConnectionLike,
    keys: &KeySpace,
    items: &[Renewal],
) -> RedisResult<Vec<i64>> {
    let mut cmd = evalsha(&RENEW, 3 * items.len());
    for r in items {
        for name in [Name::Lock, Name::Wait, Name::Waiters] {
            cmd.arg(Text(keys.name_of(name, &r.key)));
        }
    }
    for r in items {
        cmd.arg(r.holder.as_str())
            .arg(r.ttl_ms)
            .arg(tenure_arg(r.token));
    }
    run(conn, &RENEW, &cmd).await
}

/// The fencing token a renewal or extend checks the last grant against (tenure.lua), or
/// '' when the store never hands locks over.
pub(super) fn tenure_arg(token: Option<u64>) -> String {
    token.map_or_else(String::new, |t| t.to_string())
}

fn flag(on: bool) -> &'static str {
    if on {
        "1"
    } else {
        "0"
    }
}

/// The batchers of one server (Sentinel: of its current master). A cluster sends each
/// call alone: a batch's keys would live in many slots.
pub(super) struct Batches {
    pub(super) takes: Arc<Batcher<Take, TakeAnswer>>,
    pub(super) let_gos: Arc<Batcher<LetGo, LetGoAnswer>>,
    /// Renewals: the keeper attends every lease due in one round at once, so they go
    /// together.
    pub(super) renewals: Arc<Batcher<Renewal, i64>>,
}

impl Batches {
    pub(super) fn new(
        master: Arc<Master>,
        metrics: Arc<Metrics>,
        keys: KeySpace,
        grants: Option<String>,
        notices: Arc<Notices>,
    ) -> Self {
        let keys = Arc::new(keys);
        let grants: Arc<str> = grants.unwrap_or_default().into();
        let conn = {
            let master = master.clone();
            Arc::new(move || {
                metrics.count(Counter::BackendCalls, None);
                Conn::Single(master.conn())
            })
        };
        let send_takes: SendBatch<Take, TakeAnswer> = {
            let (conn, keys) = (conn.clone(), keys.clone());
            Arc::new(move |items: Arc<Vec<Take>>| {
                let (mut c, keys, grants) = (conn(), keys.clone(), grants.clone());
                async move { send_takes(&mut c, &keys, &items, &grants, "").await }.boxed()
            })
        };
        // A try whose caller is gone when its answer arrives may have taken the lock (or a
        // place in the queue): the manager lets it go by the one rule for releases
        // without a caller.
        let unclaimed: Unclaimed<Take, TakeAnswer> = Arc::new(move |t: &Take, answer| {
            let took = matches!(
                answer,
                TakeAnswer::Acquired { .. }
                    | TakeAnswer::Granted { .. }
                    | TakeAnswer::Held { queued: true, .. }
            );
            if took {
                notices.unclaimed(&t.key, &t.holder, t.given);
            }
        });
        let send_let_gos: SendBatch<LetGo, LetGoAnswer> = {
            let (conn, keys) = (conn.clone(), keys.clone());
            Arc::new(move |items: Arc<Vec<LetGo>>| {
                let (mut c, keys) = (conn(), keys.clone());
                async move { send_let_gos(&mut c, &keys, &items, "PUBLISH", "").await }.boxed()
            })
        };
        let send_renewals: SendBatch<Renewal, i64> = Arc::new(move |items: Arc<Vec<Renewal>>| {
            let (mut c, keys) = (conn(), keys.clone());
            async move { send_renewals(&mut c, &keys, &items).await }.boxed()
        });
        Batches {
            takes: Batcher::new(send_takes, unclaimed),
            let_gos: Batcher::new(send_let_gos, Arc::new(|_, _| {})),
            // A renewal whose caller left only lengthened a lock its holder holds.
            renewals: Batcher::new(send_renewals, Arc::new(|_, _| {})),
        }
    }
}
