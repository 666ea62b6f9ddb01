//! Operator commands: locks, status, release, cleanup, health, metrics.

use std::time::Duration;

use bidlock::{AcquireOptions, LockKey, Topology};
use serde_json::json;

use crate::exit::{self, CliError};
use crate::output::{human_duration, human_ms, print, print_json, table};
use crate::{lock_key, Global, MetricsFormat};

pub(crate) async fn locks(g: &Global, marketplace: Option<&str>) -> Result<u8, CliError> {
    if let Some(m) = marketplace {
        // Refused before connecting, whatever the state of Redis (exit 2, not 69): a
        // marketplace id is valid exactly when it can name a lock, and `LockKey` checks
        // the marketplace first.
        LockKey::new(m, "-").map_err(|e| CliError::usage(format!("invalid --marketplace: {e}")))?;
    }
    let m = g.manager(true).await?;
    // The library checks the marketplace id again before it reads anything.
    let locks = match m.locks(marketplace).await {
        Err(bidlock::Error::InvalidKey(e)) => {
            return Err(CliError::usage(format!("invalid --marketplace: {e}")))
        }
        other => other?,
    };
    if g.json {
        print_json(
            &json!({ "backend": m.backend().to_string(), "count": locks.len(), "locks": locks }),
        )?;
    } else if locks.is_empty() {
        print("no locks held\n")?;
    } else {
        let rows: Vec<Vec<String>> = locks
            .iter()
            .map(|l| {
                vec![
                    l.redis_key.clone(),
                    l.holder.clone(),
                    human_ms(l.ttl_left_ms),
                ]
            })
            .collect();
        print(&table(&["KEY", "HOLDER", "TTL"], &rows))?;
    }
    Ok(exit::OK)
}

pub(crate) async fn status(g: &Global, marketplace: &str, posting: &str) -> Result<u8, CliError> {
    let key = lock_key(marketplace, posting)?;
    let m = g.manager(true).await?;
    let st = m.status(&key).await?;
    let held = st.holder.is_some();
    if g.json {
        print_json(&json!({ "held": held, "status": st }))?;
    } else {
        let mut s = format!("key      {}\n", st.redis_key);
        match &st.holder {
            Some(h) => s.push_str(&format!(
                "holder   {h}\nttl      {}\n",
                human_ms(st.ttl_left_ms)
            )),
            None => s.push_str("holder   - (free)\n"),
        }
        match &st.done {
            Some(d) => s.push_str(&format!(
                "done     {d} (kept {})\n",
                human_ms(st.done_ttl_left_ms)
            )),
            None => s.push_str("done     -\n"),
        }
        print(&s)?;
    }
    Ok(if held { exit::OK } else { exit::FAILURE })
}

pub(crate) async fn release(
    g: &Global,
    marketplace: &str,
    posting: &str,
    holder: Option<&str>,
    force: bool,
) -> Result<u8, CliError> {
    let key = lock_key(marketplace, posting)?;
    if let Some(h) = holder {
        if h.is_empty() {
            return Err(CliError::usage("--holder must not be empty"));
        }
    }
    if holder.is_none() && !force {
        return Err(CliError::usage(
            "release needs --holder ID (release only if that holder has the lock) \
             or --force (release it whoever holds it)",
        ));
    }
    let m = g.manager(true).await?;
    let released = match holder {
        Some(h) if !force => m.release(&key, &h.into()).await?,
        _ => m.force_release(&key).await?,
    };
    if g.json {
        print_json(&json!({ "released": released, "key": m.config().redis_key(&key) }))?;
    } else if released {
        print(&format!("released {}\n", m.config().redis_key(&key)))?;
    } else {
        print(&format!(
            "not released: {} is not held{}\n",
            m.config().redis_key(&key),
            if force { "" } else { " by that holder" }
        ))?;
    }
    Ok(if released { exit::OK } else { exit::FAILURE })
}

pub(crate) async fn cleanup(g: &Global, yes: bool) -> Result<u8, CliError> {
    if !yes {
        return Err(CliError::usage(
            "cleanup removes every lock of the prefix, including locks held right now; add --yes to confirm",
        ));
    }
    let m = g.manager(true).await?;
    let n = m.cleanup_all().await?;
    if g.json {
        print_json(&json!({ "removed": n, "prefix": m.config().key_prefix() }))?;
    } else {
        print(&format!(
            "removed {n} locks with prefix {}\n",
            m.config().key_prefix()
        ))?;
    }
    Ok(exit::OK)
}

pub(crate) async fn health(g: &Global) -> Result<u8, CliError> {
    let m = g.manager(true).await?;
    let h = match m.health().await {
        Ok(h) => h,
        Err(e) => {
            if g.json {
                print_json(
                    &json!({ "ok": false, "location": m.location(), "error": e.to_string() }),
                )?;
            }
            return Err(CliError::new(exit::UNAVAILABLE, e.to_string()));
        }
    };
    let policy = match (&h.maxmemory_policy, h.backend) {
        (Some(p), _) => p.as_str(),
        (None, "memory") => "n/a",
        (None, _) => "unknown",
    };
    let latency_ms = h.latency.as_secs_f64() * 1e3;
    if h.can_evict() == Some(true) {
        eprintln!(
            "bidlock: warning: maxmemory-policy {policy} lets Redis evict lock keys and completion records under memory pressure; set maxmemory-policy noeviction"
        );
    }
    let permissions = permissions_note(&h);
    // A cluster that does not serve every slot answers for some postings only; one whose
    // state could not be read is not called healthy either.
    let cluster_failing = matches!(m.topology(), Topology::Cluster { .. })
        && h.cluster_state.as_deref() != Some("ok");
    if g.json {
        let mut v = json!({
            "ok": !cluster_failing,
            "backend": h.backend,
            "location": h.location,
            "latency_ms": latency_ms,
            "maxmemory_policy": policy,
            "can_evict": h.can_evict(),
            "missing_permissions": h.missing_permissions,
            "permissions_unchecked": h.permissions_unchecked,
        });
        if h.cluster_state.is_some() || h.masters.is_some() {
            v["cluster_state"] = json!(h.cluster_state);
            v["masters"] = json!(h.masters);
        }
        print_json(&v)?;
    } else {
        let cluster = match (&h.cluster_state, h.masters) {
            (None, None) => String::new(),
            (state, masters) => format!(
                ", cluster {} with {} masters",
                state.as_deref().unwrap_or("unknown"),
                masters.map_or_else(|| "?".to_owned(), |m| m.to_string())
            ),
        };
        print(&format!(
            "{} {} latency {}, maxmemory-policy {policy}{cluster}{permissions}\n",
            if cluster_failing { "failing" } else { "ok" },
            h.location,
            human_duration(h.latency)
        ))?;
    }
    if cluster_failing {
        return Err(CliError::new(
            exit::UNAVAILABLE,
            format!(
                "the cluster at {} reports cluster_state:{}: some hash slots are not served",
                h.location,
                h.cluster_state.as_deref().unwrap_or("unknown")
            ),
        ));
    }
    Ok(exit::OK)
}

/// The permissions part of `health`'s line, and a warning naming each permission the
/// Redis user lacks (as for an evicting policy: the lock backend answers; what needs the
/// permission fails).
fn permissions_note(h: &bidlock::Health) -> String {
    match (&h.missing_permissions, &h.permissions_unchecked) {
        (Some(missing), _) if !missing.is_empty() => {
            eprintln!(
                "bidlock: warning: the Redis user lacks permissions bidlock needs (NOPERM): {}; \
                 grant what deploy/redis/bidlock.acl grants",
                missing.join("; ")
            );
            format!(", permissions missing: {}", missing.len())
        }
        (Some(_), _) => ", permissions ok".to_owned(),
        (None, Some(why)) => format!(", permissions not checked ({why})"),
        (None, None) => String::new(),
    }
}

/// What `metrics` prints first, so nobody mistakes its counters for an instance's.
const SELF_CHECK_NOTE: &str =
    "bidlock metrics: the counters of this command's own short self-check, \
not of a running instance; scrape the agent's /metrics endpoint (bidlock-agent --metrics-addr) \
for an instance, run `bidlock stats` for the fleet";

/// Acquire, contend, release and complete a few locks in a marketplace of its own, then
/// report the manager's metrics: a quick proof that the backend works end to end.
pub(crate) async fn metrics(g: &Global, format: MetricsFormat) -> Result<u8, CliError> {
    let m = g.manager(false).await?;
    let run = format!("{:08x}", rand::random::<u32>());
    for i in 0..8 {
        let key = LockKey::new("bidlock-selfcheck", format!("{run}-{i}"))?;
        let guard = m
            .acquire(&key, &AcquireOptions::new().ttl(Duration::from_secs(10)))
            .await?;
        // A self-check that checks: a second acquirer must be refused.
        match m.try_acquire(&key, &AcquireOptions::new()).await {
            Err(e) if e.is_not_acquired() => {}
            Err(e) => return Err(e.into()),
            Ok(_) => {
                return Err(CliError::new(
                    exit::FAILURE,
                    format!("self-check failed: {key} was acquired twice"),
                ))
            }
        }
        if i % 2 == 0 {
            guard.release().await?;
        } else {
            guard.complete().await?;
            let _ = m.clear_done(&key).await;
        }
    }
    let snapshot = m.metrics();
    eprintln!("{SELF_CHECK_NOTE}");
    match format {
        MetricsFormat::Json => print_json(&json!({
            "scope": "self-check",
            "backend": m.backend().to_string(),
            "metrics": snapshot,
        }))?,
        // A comment line: the note stays with the text when it is saved or piped.
        MetricsFormat::Prometheus => print(&format!(
            "# {SELF_CHECK_NOTE}\n{}",
            snapshot.to_prometheus(&m.backend().to_string(), &[])
        ))?,
    }
    Ok(exit::OK)
}
