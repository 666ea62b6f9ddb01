//! A fault-injecting TCP proxy between a client and Redis, on loopback: adds latency,
//! blackholes traffic, drops or half-closes connections, refuses new ones.
//!
//! Faults apply to all traffic ([`FaultProxy::set`]) or to one kind of connection in one
//! direction ([`FaultProxy::set_for`]): a Redis client keeps its commands and its pub/sub
//! messages on separate connections, so a fault on [`Role::Subscribers`] towards the
//! client holds back the messages a manager is sent (a grant, a release) while its
//! commands flow.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod pump;

/// What the proxy does to traffic now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    None,
    /// Delay every chunk by this much, one chunk after another: a burst of chunks waits
    /// for each other, so the delays add up.
    Latency(Duration),
    /// A slow link: every chunk arrives this long after it was sent, chunks in flight
    /// overlapping (the delays do not add up), in order.
    Delay(Duration),
    /// Forward nothing and stop reading, sockets open: a partition. As with TCP, bytes
    /// already sent are delivered late when the partition heals, not lost.
    Blackhole,
    /// Close new connections at once.
    Refuse,
}

/// The kind of a proxied connection. A connection becomes a subscriber once it sent a
/// `SUBSCRIBE`, `PSUBSCRIBE` or `SSUBSCRIBE` (seen in its bytes); until then, and for
/// every other connection, it carries commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Connections that send commands and read their replies.
    Commands,
    /// Pub/sub connections: subscriptions one way, messages the other.
    Subscribers,
}

/// One direction of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client to Redis (requests, subscriptions).
    ToServer,
    /// From Redis to the client (replies, pub/sub messages).
    ToClient,
}

/// What a proxy moved and held back, per role and direction, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Chunks forwarded, `[role][direction]` (roles and directions in declaration order).
    pub chunks: [[u64; 2]; 2],
    /// Chunks that a fault held back (delayed, or kept until a partition healed).
    pub held: [[u64; 2]; 2],
}

impl Traffic {
    /// Chunks forwarded on `role` towards `dir`.
    pub fn chunks(&self, role: Role, dir: Direction) -> u64 {
        self.chunks[role as usize][dir as usize]
    }

    /// Chunks held back on `role` towards `dir`.
    pub fn held(&self, role: Role, dir: Direction) -> u64 {
        self.held[role as usize][dir as usize]
    }
}

/// The fault on each role and direction, `[role][direction]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Faults([[Fault; 2]; 2]);

impl Faults {
    fn on(&self, subscriber: bool, dir: Direction) -> Fault {
        self.0[usize::from(subscriber)][dir as usize]
    }
}

/// Counters shared by every connection of a proxy.
#[derive(Debug, Default)]
struct Counters {
    chunks: [[AtomicU64; 2]; 2],
    held: [[AtomicU64; 2]; 2],
}

/// A live connection: the task pumping both directions, its half-close trigger, and
/// whether it is a subscriber.
struct Conn {
    task: JoinHandle<()>,
    half_close: Arc<tokio::sync::Notify>,
    subscriber: Arc<AtomicBool>,
}

type Connections = Arc<Mutex<Vec<Conn>>>;

/// A proxy on 127.0.0.1 forwarding to `127.0.0.1:upstream`.
pub struct FaultProxy {
    port: u16,
    fault: watch::Sender<Faults>,
    conns: Connections,
    counters: Arc<Counters>,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("port", &self.port)
            .field("faults", &*self.fault.borrow())
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Starts the proxy (inside a tokio runtime).
    pub async fn start(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("proxy bind: {e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let (fault, rx) = watch::channel(Faults([[Fault::None; 2]; 2]));
        let conns: Connections = Arc::default();
        let counters: Arc<Counters> = Arc::default();
        let (conns2, counters2) = (conns.clone(), counters.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if rx.borrow().on(false, Direction::ToServer) == Fault::Refuse {
                    drop(client);
                    continue;
                }
                let conn = connect(client, upstream, rx.clone(), counters2.clone());
                if let Ok(mut c) = conns2.lock() {
                    c.retain(|c| !c.task.is_finished());
                    c.push(conn);
                }
            }
        });
        FaultProxy {
            port,
            fault,
            conns,
            counters,
            accept,
        }
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Sets the fault for all traffic from now on (every connection, both directions).
    pub fn set(&self, fault: Fault) {
        let _ = self.fault.send(Faults([[fault; 2]; 2]));
    }

    /// Sets the fault for one kind of connection, in one direction (`None`: both), from
    /// now on; the others keep theirs. New connections are refused when commands towards
    /// the server are set to [`Fault::Refuse`].
    pub fn set_for(&self, role: Role, direction: Option<Direction>, fault: Fault) {
        self.fault.send_modify(|f| {
            for dir in [Direction::ToServer, Direction::ToClient] {
                if direction.is_none_or(|d| d == dir) {
                    f.0[role as usize][dir as usize] = fault;
                }
            }
        });
    }

    /// Closes every live connection at once (both directions). Returns how many were
    /// open (0 means the fault hit nothing).
    pub fn drop_connections(&self) -> usize {
        let Ok(mut c) = self.conns.lock() else {
            return 0;
        };
        let mut n = 0;
        for conn in c.drain(..) {
            n += usize::from(!conn.task.is_finished());
            conn.task.abort();
        }
        n
    }

    /// Half-closes every live connection: the client sees EOF, its writes still go
    /// through to Redis. Returns how many were open.
    pub fn half_close(&self) -> usize {
        let Ok(c) = self.conns.lock() else {
            return 0;
        };
        let mut n = 0;
        for conn in c.iter().filter(|c| !c.task.is_finished()) {
            n += 1;
            conn.half_close.notify_one();
        }
        n
    }

    /// The fault in force now on commands towards the server (what [`set`](Self::set)
    /// last set, unless [`set_for`](Self::set_for) changed it since).
    pub fn fault(&self) -> Fault {
        self.fault.borrow().on(false, Direction::ToServer)
    }

    /// The fault in force now on `role` towards `direction`.
    pub fn fault_for(&self, role: Role, direction: Direction) -> Fault {
        self.fault.borrow().on(role == Role::Subscribers, direction)
    }

    /// Live connections now: (commands, subscribers).
    pub fn connections(&self) -> (usize, usize) {
        let Ok(c) = self.conns.lock() else {
            return (0, 0);
        };
        let live = c.iter().filter(|c| !c.task.is_finished());
        live.fold((0, 0), |(cmd, sub), c| {
            if c.subscriber.load(Ordering::Acquire) {
                (cmd, sub + 1)
            } else {
                (cmd + 1, sub)
            }
        })
    }

    /// What the proxy forwarded and held back so far.
    pub fn traffic(&self) -> Traffic {
        let read = |a: &[[AtomicU64; 2]; 2]| {
            [0, 1].map(|r| [0, 1].map(|d| a[r][d].load(Ordering::Relaxed)))
        };
        Traffic {
            chunks: read(&self.counters.chunks),
            held: read(&self.counters.held),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.drop_connections();
    }
}

/// Starts pumping one accepted connection to the upstream server.
fn connect(
    client: TcpStream,
    upstream: u16,
    rx: watch::Receiver<Faults>,
    counters: Arc<Counters>,
) -> Conn {
    let half_close = Arc::new(tokio::sync::Notify::new());
    let subscriber = Arc::new(AtomicBool::new(false));
    let (hc, sub) = (half_close.clone(), subscriber.clone());
    let task = tokio::spawn(async move {
        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
            return;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (cr, cw) = client.into_split();
        let (sr, sw) = server.into_split();
        let up = pump::Pump {
            dir: Direction::ToServer,
            faults: rx.clone(),
            subscriber: sub.clone(),
            counters: counters.clone(),
            half_close: None,
        };
        let down = pump::Pump {
            dir: Direction::ToClient,
            faults: rx,
            subscriber: sub,
            counters,
            half_close: Some(hc),
        };
        // Both directions inside this task: aborting it closes both sockets.
        tokio::join!(up.run(cr, sw), down.run(sr, cw));
    });
    Conn {
        task,
        half_close,
        subscriber,
    }
}
