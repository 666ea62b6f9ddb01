//! How the managers' script calls reached Redis: a `MONITOR` connection straight to the
//! server counts every `EVALSHA` on lock keys and how many locks each carried (one per
//! item: a call with two or more went as a batch). Evidence that a class reaches the
//! batch path, from Redis' side rather than the library's word.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Acquire and release script calls seen, by whether they carried one item or several.
#[derive(Debug, Default, Clone, Copy)]
pub struct Calls {
    /// Acquire-script calls with one lock key.
    pub acquire_lone: u64,
    /// Acquire-script calls with two or more lock keys, and the items they carried.
    pub acquire_batched: u64,
    pub acquire_batched_items: u64,
    /// Release-script calls, lone and batched, and the items batched ones carried.
    pub release_lone: u64,
    pub release_batched: u64,
    pub release_batched_items: u64,
}

pub struct Monitor {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Calls>,
}

/// Starts monitoring the server at `127.0.0.1:port`; `None` when it cannot connect.
pub fn start(port: u16, lock_prefix: String) -> Option<Monitor> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
    s.write_all(b"MONITOR\r\n").ok()?;
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut calls = Calls::default();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        while !s2.load(Ordering::Acquire) {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => count(&mut calls, &line, &lock_prefix),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        calls
    });
    Some(Monitor { stop, handle })
}

impl Monitor {
    pub fn stop(self) -> Calls {
        self.stop.store(true, Ordering::Release);
        self.handle.join().unwrap_or_default()
    }
}

/// One `MONITOR` line: `+TIME [DB ADDR] "EVALSHA" "sha" "numkeys" "key"... "arg"...`.
fn count(calls: &mut Calls, line: &str, lock_prefix: &str) {
    // Commands a script runs show as `[0 lua]`: the call itself is enough.
    if line.contains(" lua]") {
        return;
    }
    let Some(rest) = line.split_once("\"EVALSHA\" ").map(|(_, r)| r) else {
        return;
    };
    let args: Vec<&str> = rest
        .trim_end()
        .split("\" \"")
        .map(|a| a.trim_matches('"'))
        .collect();
    let Some(n) = args.get(1).and_then(|n| n.parse::<usize>().ok()) else {
        return;
    };
    let keys = args.get(2..2 + n).unwrap_or_default();
    let items = keys.iter().filter(|k| k.starts_with(lock_prefix)).count() as u64;
    if items == 0 {
        return;
    }
    let publishes = args.iter().skip(2 + n).any(|a| *a == "PUBLISH");
    let has = |part: &str| keys.iter().any(|k| k.contains(part));
    // The acquire script takes the fencing counter and publishes nothing; the release
    // script takes the queue and publishes. Others (renewals, completions) are left out.
    let release = match (publishes, has("_fence"), has("_queue:")) {
        (false, true, _) => false,
        (true, _, true) => true,
        _ => return,
    };
    let (lone, batched, batched_items) = if release {
        (
            &mut calls.release_lone,
            &mut calls.release_batched,
            &mut calls.release_batched_items,
        )
    } else {
        (
            &mut calls.acquire_lone,
            &mut calls.acquire_batched,
            &mut calls.acquire_batched_items,
        )
    };
    if items == 1 {
        *lone += 1;
    } else {
        *batched += 1;
        *batched_items += items;
    }
}
