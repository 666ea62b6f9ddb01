//! One direction of a proxied connection: a reader that applies the fault in force to
//! each chunk, and a writer that sends chunks on at their due time, in order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use super::{Counters, Direction, Fault, Faults};

/// What the reader hands the writer: a chunk and when it is due, or the end (shut the
/// writing half down once everything before it is written).
enum Item {
    Chunk(Instant, Vec<u8>),
    End,
}

/// One direction of one connection.
pub(super) struct Pump {
    pub(super) dir: Direction,
    pub(super) faults: watch::Receiver<Faults>,
    /// Shared by both directions: set when the client subscribes.
    pub(super) subscriber: Arc<AtomicBool>,
    pub(super) counters: Arc<Counters>,
    /// Towards the client only: half-close (the client sees EOF) when notified.
    pub(super) half_close: Option<Arc<Notify>>,
}

impl Pump {
    fn fault(&self) -> Fault {
        self.faults
            .borrow()
            .on(self.subscriber.load(Ordering::Acquire), self.dir)
    }

    fn count(&self, held: bool) {
        let (r, d) = (
            usize::from(self.subscriber.load(Ordering::Acquire)),
            self.dir as usize,
        );
        self.counters.chunks[r][d].fetch_add(1, Ordering::Relaxed);
        if held {
            self.counters.held[r][d].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits while this direction is blackholed. `None`: the proxy is gone; else
    /// whether it waited.
    async fn while_blackholed(&mut self) -> Option<bool> {
        let mut waited = false;
        while self.fault() == Fault::Blackhole {
            waited = true;
            if self.faults.changed().await.is_err() {
                return None;
            }
        }
        Some(waited)
    }

    pub(super) async fn run(mut self, from: OwnedReadHalf, to: OwnedWriteHalf) {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::join!(self.read(from, tx), write(rx, to));
    }

    async fn read(&mut self, mut from: OwnedReadHalf, tx: mpsc::UnboundedSender<Item>) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            // A partition: do not read until it heals (the kernel buffers what is sent).
            // What was sent meanwhile counts as held back.
            let Some(stalled) = self.while_blackholed().await else {
                return;
            };
            let healed = Instant::now();
            let n = match self.half_close.clone() {
                Some(hc) => tokio::select! {
                    r = from.read(&mut buf) => r,
                    _ = hc.notified() => {
                        let _ = tx.send(Item::End);
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
                    let _ = tx.send(Item::End);
                    return;
                }
                Ok(n) => n,
            };
            // Bytes that were there the moment the stall healed had waited in it.
            let stalled = stalled && healed.elapsed() < std::time::Duration::from_millis(2);
            if self.dir == Direction::ToServer && subscribes(&buf[..n]) {
                self.subscriber.store(true, Ordering::Release);
            }
            let mut due = Instant::now();
            let held = match self.fault() {
                Fault::Latency(d) => {
                    tokio::time::sleep(d).await;
                    due = Instant::now();
                    true
                }
                Fault::Delay(d) => {
                    due += d;
                    true
                }
                Fault::Blackhole => {
                    // The partition began while this chunk was in hand: hold it until it heals.
                    if self.while_blackholed().await.is_none() {
                        return;
                    }
                    due = Instant::now();
                    true
                }
                Fault::None | Fault::Refuse => false,
            };
            self.count(held || stalled);
            if tx.send(Item::Chunk(due, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    }
}

/// Writes chunks in order, each no earlier than its due time; shuts the half down at the
/// end (or when a write fails).
async fn write(mut rx: mpsc::UnboundedReceiver<Item>, mut to: OwnedWriteHalf) {
    while let Some(Item::Chunk(due, bytes)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        if to.write_all(&bytes).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

/// Whether a chunk a client sent holds a (P|S)SUBSCRIBE command (RESP or inline): the
/// word as a command's name (the first element of a RESP array, or the first word of an
/// inline command), not as an argument (bidlock's permission check sends `subscribe` as
/// an argument on its command connection).
fn subscribes(chunk: &[u8]) -> bool {
    let is_sub = |name: &[u8]| {
        [&b"subscribe"[..], b"psubscribe", b"ssubscribe"]
            .iter()
            .any(|w| name.eq_ignore_ascii_case(w))
    };
    let mut rest = chunk;
    while !rest.is_empty() {
        let Some(line) = take_line(&mut rest) else {
            return false;
        };
        match line.first() {
            Some(b'*') => {
                // A RESP array of bulk strings: the first is the command's name.
                let count = number(&line[1..]).unwrap_or(0);
                for n in 0..count {
                    let Some(bulk) = take_line(&mut rest) else {
                        return false;
                    };
                    let len = number(bulk.get(1..).unwrap_or_default()).unwrap_or(0);
                    let Some(data) = rest.get(..len) else {
                        return false;
                    };
                    if n == 0 && is_sub(data) {
                        return true;
                    }
                    rest = rest.get(len + 2..).unwrap_or_default();
                }
            }
            _ => {
                if line.split(|&b| b == b' ').next().is_some_and(is_sub) {
                    return true;
                }
            }
        }
    }
    false
}

/// The bytes up to the next CRLF (or LF), which it takes off `rest`.
fn take_line<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let end = rest.iter().position(|&b| b == b'\n')?;
    let line = &rest[..end];
    *rest = &rest[end + 1..];
    Some(line.strip_suffix(b"\r").unwrap_or(line))
}

fn number(digits: &[u8]) -> Option<usize> {
    std::str::from_utf8(digits).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::subscribes;

    #[test]
    fn subscriptions_are_recognised_in_any_case() {
        assert!(subscribes(b"*2\r\n$9\r\nSUBSCRIBE\r\n$3\r\nfoo\r\n"));
        assert!(subscribes(b"*2\r\n$10\r\npsubscribe\r\n$3\r\nfo*\r\n"));
        assert!(subscribes(b"*2\r\n$10\r\nSSUBSCRIBE\r\n$3\r\nfoo\r\n"));
        assert!(!subscribes(b"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n"));
        assert!(subscribes(b"SUBSCRIBE foo\r\n"));
        assert!(subscribes(
            b"*1\r\n$4\r\nPING\r\n*2\r\n$9\r\nsubscribe\r\n$3\r\nfoo\r\n"
        ));
        // The word as an argument (bidlock's permission check) is not a subscription.
        assert!(!subscribes(
            b"*4\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n0\r\n$9\r\nsubscribe\r\n"
        ));
    }
}
