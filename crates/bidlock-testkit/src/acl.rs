//! Redis ACL users for tests: the `bidlock` user of `deploy/redis/bidlock.acl` (the file
//! itself, read when the test runs), loaded into servers with `ACL SETUSER`; a `MONITOR`
//! that records the commands a server runs (those Lua scripts run included); and a
//! snapshot of a server's keys, to show that something changed nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// `deploy/redis/bidlock.acl`.
pub fn acl_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/redis/bidlock.acl")
}

/// The rules of user `bidlock` in `deploy/redis/bidlock.acl`: the words after
/// `user bidlock` on its one uncommented line.
pub fn bidlock_rules() -> Vec<String> {
    let path = acl_file();
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(lines.len(), 1, "one user line in {}", path.display());
    let rest = lines[0]
        .strip_prefix("user bidlock ")
        .unwrap_or_else(|| panic!("{} must define `user bidlock`", path.display()));
    rest.split_whitespace().map(str::to_owned).collect()
}

/// The commands `rules` allow (`+get` gives `get`, `+script|load` gives `script|load`).
pub fn allowed_commands(rules: &[String]) -> BTreeSet<String> {
    rules
        .iter()
        .filter_map(|r| r.strip_prefix('+'))
        .map(str::to_owned)
        .collect()
}

/// `ACL SETUSER name rules... >password` as arguments for `RedisServer::cmd`.
pub fn setuser_args(name: &str, rules: &[String], password: &str) -> Vec<String> {
    let mut args = vec!["ACL".to_owned(), "SETUSER".to_owned(), name.to_owned()];
    args.extend(rules.iter().cloned());
    args.push(format!(">{password}"));
    args
}

/// `url` with `user:password@` after its scheme (`redis://h:p/0` → `redis://u:pw@h:p/0`).
pub fn with_credentials(url: &str, user: &str, password: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{user}:{password}@{rest}"),
        None => panic!("not a URL: {url}"),
    }
}

/// The ACL name of the command in one `MONITOR` line (`get`, `script|load`), lowercased.
pub fn command_of(line: &str) -> Option<String> {
    let rest = &line[line.find("] \"")? + 2..];
    let mut words = quoted_words(rest).into_iter();
    let first = words.next()?.to_ascii_lowercase();
    const CONTAINERS: &[&str] = &[
        "script", "cluster", "client", "config", "acl", "object", "memory", "command", "function",
        "pubsub", "xinfo", "latency", "slowlog", "module", "debug",
    ];
    if CONTAINERS.contains(&first.as_str()) {
        if let Some(sub) = words.next() {
            return Some(format!("{first}|{}", sub.to_ascii_lowercase()));
        }
    }
    Some(first)
}

/// The `"..."` words of a `MONITOR` line, unescaped enough for command names.
fn quoted_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut word = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => word.extend(chars.next()),
                '"' => break,
                c => word.push(c),
            }
        }
        out.push(word);
    }
    out
}

/// A `MONITOR` connection to a plain server on 127.0.0.1, recording every line.
pub struct Monitor {
    stream: TcpStream,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Starts monitoring the server on `port` (default user, no password) and waits for
    /// its `+OK`.
    pub fn start(port: u16) -> Monitor {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("monitor {port}: {e}"));
        stream
            .write_all(b"MONITOR\r\n")
            .unwrap_or_else(|e| panic!("monitor {port}: {e}"));
        let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
        let mut ok = String::new();
        reader.read_line(&mut ok).expect("MONITOR reply");
        assert!(ok.starts_with("+OK"), "MONITOR on {port}: {ok}");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let thread = std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        Monitor {
            stream,
            lines,
            reader: Some(thread),
        }
    }

    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The commands seen so far, by ACL name.
    pub fn commands(&self) -> BTreeSet<String> {
        self.lines().iter().filter_map(|l| command_of(l)).collect()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(t) = self.reader.take() {
            let _ = t.join();
        }
    }
}

/// One key as a snapshot holds it: its serialized value and its ttl in ms (-1: none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyState {
    /// `DUMP` of the value.
    pub dump: Vec<u8>,
    /// `PTTL` when the snapshot was taken.
    pub pttl: i64,
}

/// Every key of database 0 of the server on `port` (default user, no password).
pub fn snapshot(port: u16) -> BTreeMap<String, KeyState> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0"))
        .unwrap_or_else(|e| panic!("snapshot {port}: {e}"));
    let mut c = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("snapshot {port}: {e}"));
    let mut out = BTreeMap::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(&mut c)
            .unwrap_or_else(|e| panic!("SCAN on {port}: {e}"));
        for k in keys {
            let dump: Option<Vec<u8>> = redis::cmd("DUMP").arg(&k).query(&mut c).ok();
            let pttl: i64 = redis::cmd("PTTL").arg(&k).query(&mut c).unwrap_or(-2);
            if let Some(dump) = dump {
                out.insert(k, KeyState { dump, pttl });
            }
        }
        if next == 0 {
            return out;
        }
        cursor = next;
    }
}

/// Panics unless `after` holds the same keys with the same values as `before`, and no
/// ttl grew (time only shortens them) nor appeared.
pub fn assert_unchanged(
    what: &str,
    before: &BTreeMap<String, KeyState>,
    after: &BTreeMap<String, KeyState>,
) {
    let names = |m: &BTreeMap<String, KeyState>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(before), names(after), "{what}: the keys changed");
    for (k, b) in before {
        let a = &after[k];
        assert_eq!(a.dump, b.dump, "{what}: the value of {k} changed");
        let grew = if b.pttl < 0 {
            a.pttl >= 0
        } else {
            a.pttl > b.pttl
        };
        assert!(
            !grew,
            "{what}: the ttl of {k} went from {} to {} ms",
            b.pttl, a.pttl
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_lines_give_acl_command_names() {
        let line = r#"+1733574819.123456 [0 127.0.0.1:40000] "SCRIPT" "LOAD" "x \"y\"""#;
        assert_eq!(command_of(line).as_deref(), Some("script|load"));
        let lua = r#"+1733574819.1 [0 lua] "set" "bid_lock:m:p" "h""#;
        assert_eq!(command_of(lua).as_deref(), Some("set"));
        assert_eq!(command_of("+OK"), None);
    }

    #[test]
    fn the_acl_file_defines_the_bidlock_user() {
        let rules = bidlock_rules();
        assert!(rules.contains(&"-@all".to_owned()), "{rules:?}");
        assert!(allowed_commands(&rules).contains("evalsha"));
        assert_eq!(
            with_credentials("redis://127.0.0.1:1/0", "u", "p"),
            "redis://u:p@127.0.0.1:1/0"
        );
    }
}
