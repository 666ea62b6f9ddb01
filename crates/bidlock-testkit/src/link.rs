//! A TCP relay on loopback that can be cut, for links between servers (a replica's
//! connection to its master). Plain threads, so it works without a tokio runtime.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Debug, Default)]
struct State {
    cut: AtomicBool,
    stop: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
}

/// A relay from `127.0.0.1:port()` to `127.0.0.1:upstream`. While cut, every connection
/// through it is closed and new ones are closed at once: what is in flight is lost, not
/// delivered late (unlike [`crate::FaultProxy`]'s partition).
#[derive(Debug)]
pub struct Link {
    port: u16,
    state: Arc<State>,
    accept: Option<JoinHandle<()>>,
}

impl Link {
    /// Starts relaying to `upstream`.
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound.
    pub fn start(upstream: u16) -> Link {
        let listener =
            TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("link bind: {e}"));
        let port = listener.local_addr().map_or(0, |a| a.port());
        let state = Arc::new(State::default());
        let st = state.clone();
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::Acquire) {
                    return;
                }
                let Ok(client) = conn else { continue };
                if st.cut.load(Ordering::Acquire) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect_timeout(
                    &([127, 0, 0, 1], upstream).into(),
                    Duration::from_secs(1),
                ) else {
                    continue;
                };
                relay(&st, client, server);
            }
        });
        Link {
            port,
            state,
            accept: Some(accept),
        }
    }

    /// The relay's port (give it instead of the upstream's).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cuts the link: closes every connection through it and refuses new ones until
    /// [`Link::restore`]. Returns how many connections were closed.
    pub fn cut(&self) -> usize {
        self.state.cut.store(true, Ordering::Release);
        let mut conns = self.state.conns.lock().unwrap_or_else(|e| e.into_inner());
        let n = conns.len() / 2;
        for c in conns.drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        n
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::Release);
    }

    /// Whether the link is cut.
    pub fn is_cut(&self) -> bool {
        self.state.cut.load(Ordering::Acquire)
    }
}

fn relay(st: &Arc<State>, client: TcpStream, server: TcpStream) {
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    if let Ok(mut conns) = st.conns.lock() {
        if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
            conns.push(a);
            conns.push(b);
        }
    }
    std::thread::spawn(move || pump(client, s2));
    std::thread::spawn(move || pump(server, c2));
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

impl Drop for Link {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Release);
        self.cut();
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.port).into(),
            Duration::from_millis(200),
        );
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
    }
}
