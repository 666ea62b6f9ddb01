//! The key census at the end of a round: every key on the server (SCAN, never KEYS)
//! with its ttl. Every key a script writes has a ttl on every path, or is deleted on the
//! path that ends its use; the fencing counter is the one exception (docs/HANDOVER.md,
//! rule 4). Locks still held at the end are counted by kind of holder.

use std::collections::BTreeMap;
use std::time::Duration;

use bidlock_testkit::keys::Names;

/// What the census found.
#[derive(Debug, Default, Clone)]
pub struct Census {
    /// Keys by kind (`lock`, `marker`, `queue`, `waiters`, `done`, `fence`, `other`).
    pub kinds: BTreeMap<&'static str, u64>,
    /// Keys without a ttl other than the fencing counter: (name, kind).
    pub without_ttl: Vec<(String, &'static str)>,
    /// Lock keys still present: (name, holder, PTTL ms).
    pub locks: Vec<(String, String, i64)>,
    /// The census could not be taken (the server did not answer).
    pub failed: Option<String>,
}

/// The kind of a key of this prefix, by its name.
pub fn kind(keys: &Names, name: &str) -> &'static str {
    let p = &keys.prefix;
    let rest = |suffix: &str| name.strip_prefix(&format!("{p}{suffix}"));
    if name == keys.fence() {
        "fence"
    } else if rest(":").is_some() {
        "lock"
    } else if rest("_wait:").is_some() {
        "marker"
    } else if rest("_queue:").is_some() {
        "queue"
    } else if rest("_waiters:").is_some() {
        "waiters"
    } else if name.starts_with("bid_done:") || rest("_done:").is_some() {
        "done"
    } else {
        "other"
    }
}

/// Takes the census of the server at `127.0.0.1:port`.
pub fn take(port: u16, keys: &Names) -> Census {
    let mut census = Census::default();
    match scan(port) {
        Ok(all) => {
            for (name, pttl, value) in all {
                let k = kind(keys, &name);
                *census.kinds.entry(k).or_default() += 1;
                if pttl == -1 && k != "fence" {
                    census.without_ttl.push((name.clone(), k));
                }
                if k == "lock" {
                    census.locks.push((name, value.unwrap_or_default(), pttl));
                }
            }
        }
        Err(e) => census.failed = Some(e.to_string()),
    }
    census
}

/// Every key with its PTTL, and its value when it is a string.
fn scan(port: u16) -> redis::RedisResult<Vec<(String, i64, Option<String>)>> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0"))?;
    let mut c = client.get_connection_with_timeout(Duration::from_secs(2))?;
    c.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut names: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    // Bounded: a round writes a few hundred keys at most.
    for _ in 0..10_000 {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(500)
            .query(&mut c)?;
        names.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    names.sort();
    names.dedup();
    let mut pipe = redis::pipe();
    for n in &names {
        pipe.cmd("PTTL").arg(n).cmd("TYPE").arg(n);
    }
    let meta: Vec<(i64, String)> = pipe.query(&mut c)?;
    let mut pipe = redis::pipe();
    for (n, (_, ty)) in names.iter().zip(&meta) {
        if ty == "string" {
            pipe.cmd("GET").arg(n);
        } else {
            pipe.cmd("ECHO").arg("");
        }
    }
    let values: Vec<Option<String>> = pipe.query(&mut c)?;
    Ok(names
        .into_iter()
        .zip(meta)
        .zip(values)
        .map(|((n, (pttl, _)), v)| (n, pttl, v))
        .collect())
}
