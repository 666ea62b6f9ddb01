//! A fault-injecting TCP proxy between a client and Redis, on loopback: adds latency,
//! blackholes traffic, drops or half-closes connections, refuses new ones.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does to traffic now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    None,
    /// Delay every chunk by this much.
    Latency(Duration),
    /// Forward nothing and stop reading, sockets open: a partition. As with TCP, bytes
    /// already sent are delivered late when the partition heals, not lost.
    Blackhole,
    /// Close new connections at once.
    Refuse,
}

/// Live connections: the task pumping both directions, and its half-close trigger.
type Connections = Arc<Mutex<Vec<(JoinHandle<()>, Arc<tokio::sync::Notify>)>>>;

/// A proxy on 127.0.0.1 forwarding to `127.0.0.1:upstream`.
#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    fault: watch::Sender<Fault>,
    conns: Connections,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts the proxy (inside a tokio runtime).
    pub async fn start(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("proxy bind: {e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let (fault, rx) = watch::channel(Fault::None);
        let conns: Connections = Arc::default();
        let conns2 = conns.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if *rx.borrow() == Fault::Refuse {
                    drop(client);
                    continue;
                }
                let rx = rx.clone();
                let half_close = Arc::new(tokio::sync::Notify::new());
                let hc = half_close.clone();
                let task = tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    // Both directions inside this task: aborting it closes both sockets.
                    tokio::join!(pump(cr, sw, rx.clone(), None), pump(sr, cw, rx, Some(hc)));
                });
                if let Ok(mut c) = conns2.lock() {
                    c.retain(|(t, _)| !t.is_finished());
                    c.push((task, half_close));
                }
            }
        });
        FaultProxy {
            port,
            fault,
            conns,
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

    /// Sets the fault for all traffic from now on.
    pub fn set(&self, fault: Fault) {
        let _ = self.fault.send(fault);
    }

    /// Closes every live connection at once (both directions). Returns how many were
    /// open (0 means the fault hit nothing).
    pub fn drop_connections(&self) -> usize {
        let Ok(mut c) = self.conns.lock() else {
            return 0;
        };
        let mut n = 0;
        for (t, _) in c.drain(..) {
            n += usize::from(!t.is_finished());
            t.abort();
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
        for (t, hc) in c.iter() {
            if !t.is_finished() {
                n += 1;
                hc.notify_one();
            }
        }
        n
    }

    /// The fault in force now.
    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.drop_connections();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    fault: watch::Receiver<Fault>,
    half_close: Option<Arc<tokio::sync::Notify>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut fault = fault;
    loop {
        // A partition: do not read until it heals (the kernel buffers what is sent).
        while *fault.borrow_and_update() == Fault::Blackhole {
            if fault.changed().await.is_err() {
                return;
            }
        }
        let n = match &half_close {
            Some(hc) => tokio::select! {
                r = from.read(&mut buf) => r,
                _ = hc.notified() => {
                    let _ = to.shutdown().await;
                    // Keep draining so the other side's writes do not block.
                    loop {
                        match from.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                    }
                }
            },
            None => from.read(&mut buf).await,
        };
        let n = match n {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        let f = *fault.borrow();
        match f {
            Fault::Latency(d) => tokio::time::sleep(d).await,
            Fault::Blackhole => {
                // The partition began while this chunk was in hand: hold it until it heals.
                while *fault.borrow_and_update() == Fault::Blackhole {
                    if fault.changed().await.is_err() {
                        return;
                    }
                }
            }
            Fault::None | Fault::Refuse => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
