//! What a run cost, per operation: the client's CPU time and context switches (this
//! process, every thread, from `getrusage`) and one Redis server's CPU time, time in
//! scripts and commands (from `INFO cpu`, `INFO commandstats` and `INFO stats`), between a
//! snapshot taken before a contender's run and one taken after it. Contenders run one
//! after the other in one process, so each one's deltas are its own.

use std::collections::BTreeMap;

use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::time::TimeValLike;
use serde_json::{json, Map, Value};

use crate::exit::{self, CliError};

/// This process's CPU time (user and system, µs) and context switches so far.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    pub(crate) user_us: i64,
    pub(crate) sys_us: i64,
    pub(crate) voluntary: i64,
    pub(crate) involuntary: i64,
}

impl Usage {
    /// Now. Zero on a system without `getrusage` (the figures then read 0, not wrong).
    pub(crate) fn now() -> Usage {
        getrusage(UsageWho::RUSAGE_SELF)
            .map(|u| Usage {
                user_us: u.user_time().num_microseconds(),
                sys_us: u.system_time().num_microseconds(),
                voluntary: u.voluntary_context_switches(),
                involuntary: u.involuntary_context_switches(),
            })
            .unwrap_or_default()
    }

    /// CPU seconds since `before`.
    pub(crate) fn cpu_s_since(&self, before: &Usage) -> f64 {
        ((self.user_us - before.user_us) + (self.sys_us - before.sys_us)) as f64 / 1e6
    }
}

/// One Redis server's counters at one moment.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServerStats {
    /// `used_cpu_user + used_cpu_sys`, seconds.
    pub(crate) cpu_s: f64,
    /// `total_commands_processed` (commands run by scripts included).
    pub(crate) commands: u64,
    /// Per command: (calls, µs spent executing it), from `INFO commandstats`.
    pub(crate) by_command: BTreeMap<String, (u64, u64)>,
    /// `used_memory`, bytes.
    pub(crate) used_memory: u64,
    /// Keys in all databases.
    pub(crate) keys: u64,
}

/// Commands that start a script or a function.
const SCRIPT_CALLS: [&str; 6] = [
    "evalsha",
    "eval",
    "fcall",
    "evalsha_ro",
    "eval_ro",
    "fcall_ro",
];

/// Commands of the measurement itself, left out of the per-command figures.
const OURS: [&str; 1] = ["info"];

impl ServerStats {
    /// Reads the server's counters over `conn`.
    pub(crate) async fn read(
        conn: &mut redis::aio::MultiplexedConnection,
    ) -> Result<ServerStats, CliError> {
        let info: String = redis::cmd("INFO")
            .arg("cpu")
            .arg("commandstats")
            .arg("stats")
            .arg("memory")
            .arg("keyspace")
            .query_async(conn)
            .await
            .map_err(|e| CliError::new(exit::UNAVAILABLE, format!("INFO: {e}")))?;
        Ok(ServerStats::parse(&info))
    }

    /// Parses the text of `INFO`.
    pub(crate) fn parse(info: &str) -> ServerStats {
        let mut s = ServerStats::default();
        for line in info.lines().map(str::trim) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            match name {
                "used_cpu_user" | "used_cpu_sys" => s.cpu_s += value.parse().unwrap_or(0.0),
                "total_commands_processed" => s.commands = value.parse().unwrap_or(0),
                "used_memory" => s.used_memory = value.parse().unwrap_or(0),
                _ if name.starts_with("cmdstat_") => {
                    let cmd = name.trim_start_matches("cmdstat_").to_owned();
                    let figures = (field_of(value, "calls="), field_of(value, "usec="));
                    s.by_command.insert(cmd, figures);
                }
                _ if name.starts_with("db") => s.keys += field_of(value, "keys="),
                _ => {}
            }
        }
        s
    }

    /// Calls and µs of the commands (ours left out) since `before`.
    fn command_deltas(&self, before: &ServerStats) -> BTreeMap<String, (u64, u64)> {
        self.by_command
            .iter()
            .filter(|(c, _)| !OURS.contains(&c.as_str()))
            .filter_map(|(c, (calls, usec))| {
                let (c0, u0) = before.by_command.get(c).copied().unwrap_or((0, 0));
                let calls = calls.saturating_sub(c0);
                (calls > 0).then(|| (c.clone(), (calls, usec.saturating_sub(u0))))
            })
            .collect()
    }

    /// Script and function calls since `before`.
    pub(crate) fn script_calls_since(&self, before: &ServerStats) -> u64 {
        let d = self.command_deltas(before);
        SCRIPT_CALLS
            .iter()
            .filter_map(|c| d.get(*c).map(|(calls, _)| *calls))
            .sum()
    }

    /// Commands since `before`, ours left out.
    pub(crate) fn commands_since(&self, before: &ServerStats) -> u64 {
        let ours: u64 = OURS
            .iter()
            .filter_map(|c| {
                let now = self.by_command.get(*c)?.0;
                Some(now.saturating_sub(before.by_command.get(*c).map_or(0, |v| v.0)))
            })
            .sum();
        self.commands
            .saturating_sub(before.commands)
            .saturating_sub(ours)
    }
}

fn field_of(value: &str, f: &str) -> u64 {
    value
        .split(',')
        .find_map(|kv| kv.strip_prefix(f))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

type Conn = redis::aio::MultiplexedConnection;

/// The servers a run's cost is read from: the one Redis the manager talks to (a single
/// server's), and named nodes given on the command line (a cluster's masters).
#[derive(Default)]
pub(crate) struct Probes {
    pub(crate) main: Option<Conn>,
    pub(crate) nodes: Vec<(String, Conn)>,
}

/// A meter for one contender's run: snapshots before, figures per operation after.
pub(crate) struct Meter {
    client: Usage,
    main: Option<(Conn, ServerStats)>,
    nodes: Vec<(String, Conn, ServerStats)>,
}

impl Meter {
    /// Starts measuring this process and the servers of `probes`.
    pub(crate) async fn start(probes: Probes) -> Result<Meter, CliError> {
        let main = match probes.main {
            Some(mut conn) => {
                let before = ServerStats::read(&mut conn).await?;
                Some((conn, before))
            }
            None => None,
        };
        let mut nodes = Vec::new();
        for (name, mut conn) in probes.nodes {
            let before = ServerStats::read(&mut conn).await?;
            nodes.push((name, conn, before));
        }
        Ok(Meter {
            client: Usage::now(),
            main,
            nodes,
        })
    }

    /// The figures per operation (`ops` of them, named `unit`: `pair` or `cs`) since the
    /// start, as JSON fields `client_cpu_us_per_{unit}` and the like; each node's deltas
    /// as they are (`server_nodes`), to be shared out by whoever knows the operations.
    pub(crate) async fn finish(self, ops: f64, unit: &str) -> Result<Value, CliError> {
        let client = Usage::now();
        let ops = ops.max(1.0);
        let mut out = Map::new();
        let csw = (client.voluntary - self.client.voluntary)
            + (client.involuntary - self.client.involuntary);
        out.insert(
            format!("client_cpu_us_per_{unit}"),
            json!(client.cpu_s_since(&self.client) * 1e6 / ops),
        );
        out.insert(format!("client_csw_per_{unit}"), json!(csw as f64 / ops));
        if let Some((mut conn, before)) = self.main {
            let after = ServerStats::read(&mut conn).await?;
            per_op(&mut out, &before, &after, ops, unit);
        }
        if !self.nodes.is_empty() {
            let mut nodes = Vec::new();
            for (name, mut conn, before) in self.nodes {
                let after = ServerStats::read(&mut conn).await?;
                nodes.push(json!({
                    "node": name,
                    "cpu_s": after.cpu_s - before.cpu_s,
                    "script_calls": after.script_calls_since(&before),
                    "commands": after.commands_since(&before),
                }));
            }
            out.insert("server_nodes".to_owned(), Value::Array(nodes));
        }
        Ok(Value::Object(out))
    }
}

/// One server's figures per operation between two snapshots.
fn per_op(
    out: &mut Map<String, Value>,
    before: &ServerStats,
    after: &ServerStats,
    ops: f64,
    unit: &str,
) {
    let mut put = |k: &str, v: Value| {
        out.insert(format!("{k}_per_{unit}"), v);
    };
    let cmds = after.command_deltas(before);
    // A script's time includes the commands it calls, which commandstats also counts on
    // their own: only the scripts' time is summed. It is wall-clock time inside the
    // command, so a server that loses its core mid-script counts the wait too.
    let script_us: u64 = SCRIPT_CALLS
        .iter()
        .filter_map(|c| cmds.get(*c).map(|(_, us)| *us))
        .sum();
    put(
        "server_cpu_us",
        json!((after.cpu_s - before.cpu_s) * 1e6 / ops),
    );
    put("server_script_us", json!(script_us as f64 / ops));
    put(
        "server_calls",
        json!(after.commands_since(before) as f64 / ops),
    );
    put(
        "script_calls",
        json!(after.script_calls_since(before) as f64 / ops),
    );
    let by: Map<String, Value> = cmds
        .iter()
        .map(|(c, (calls, _))| (c.clone(), json!(*calls as f64 / ops)))
        .collect();
    put("server_calls_by_command", Value::Object(by));
}

/// Connects to a server given by URL, for its counters only.
pub(crate) async fn node(url: &str) -> Result<Conn, CliError> {
    let bad = |e: redis::RedisError| CliError::new(exit::UNAVAILABLE, format!("{url}: {e}"));
    redis::Client::open(url)
        .map_err(bad)?
        .get_multiplexed_async_connection()
        .await
        .map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.000000\r\n\
        # Stats\r\ntotal_commands_processed:100\r\n# Memory\r\nused_memory:1000\r\n\
        # Commandstats\r\ncmdstat_evalsha:calls=10,usec=50,usec_per_call=5.00\r\n\
        cmdstat_info:calls=3,usec=30,usec_per_call=10.00\r\n\
        # Keyspace\r\ndb0:keys=7,expires=7,avg_ttl=100\r\ndb1:keys=1,expires=0,avg_ttl=0\r\n";

    #[test]
    fn info_is_read_and_differenced_without_our_own_commands() {
        let before = ServerStats::parse(BEFORE);
        assert!((before.cpu_s - 3.5).abs() < 1e-9);
        assert_eq!(before.commands, 100);
        assert_eq!(before.used_memory, 1000);
        assert_eq!(before.keys, 8);
        let after = ServerStats::parse(
            "used_cpu_sys:2.0\r\nused_cpu_user:2.5\r\ntotal_commands_processed:131\r\n\
             cmdstat_evalsha:calls=20,usec=120,usec_per_call=6\r\n\
             cmdstat_set:calls=20,usec=40,usec_per_call=2\r\n\
             cmdstat_info:calls=4,usec=40,usec_per_call=10\r\n",
        );
        assert_eq!(after.script_calls_since(&before), 10);
        // 31 processed, one of them our INFO.
        assert_eq!(after.commands_since(&before), 30);
        let d = after.command_deltas(&before);
        assert_eq!(d.get("set"), Some(&(20, 40)));
        assert_eq!(d.get("evalsha"), Some(&(10, 70)));
        assert_eq!(d.get("info"), None);
    }

    #[test]
    fn this_process_uses_cpu() {
        let before = Usage::now();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(Usage::now().cpu_s_since(&before) > 0.0);
    }
}
