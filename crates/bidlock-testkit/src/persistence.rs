//! Data that comes back older than it was: an RDB snapshot restored after a crash, and an
//! append-only file that lost its unsynced tail. These are the faults that roll a
//! counter back instead of deleting it (what fencing tokens must survive).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::RedisServer;

/// A copy of a server's RDB file, taken by [`RedisServer::snapshot`].
#[derive(Debug, Clone)]
pub struct Snapshot {
    path: PathBuf,
    /// When the `SAVE` finished.
    pub taken_at: Instant,
}

impl Snapshot {
    /// Where the copy is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

static SNAPSHOTS: AtomicU64 = AtomicU64::new(0);

impl RedisServer {
    /// Runs `SAVE` (synchronous) and keeps a copy of the `dump.rdb` it wrote, to roll the
    /// server back to later with [`RedisServer::restore_snapshot`].
    ///
    /// # Panics
    ///
    /// When `SAVE` fails or the file cannot be copied (a test setup error).
    pub fn snapshot(&self) -> Snapshot {
        let _: () = self.cmd(&["SAVE"]);
        let taken_at = Instant::now();
        let n = SNAPSHOTS.fetch_add(1, Ordering::Relaxed);
        let path = self.dir().join(format!("snapshot-{n}.rdb"));
        std::fs::copy(self.dir().join("dump.rdb"), &path)
            .unwrap_or_else(|e| panic!("copy dump.rdb of port {}: {e}", self.port()));
        Snapshot { path, taken_at }
    }

    /// Kills the server (SIGKILL), puts `snap` back as its `dump.rdb` and starts it again
    /// on the same port: its data is rolled back to the snapshot, as after restoring an
    /// old backup or restarting from an RDB file older than the last writes. Keys whose
    /// expiry passed meanwhile are dropped on load; the others come back, counters with
    /// their old values.
    ///
    /// # Panics
    ///
    /// When the snapshot cannot be copied back or the server does not start again.
    pub fn restore_snapshot(&mut self, snap: &Snapshot) {
        self.kill();
        std::fs::copy(&snap.path, self.dir().join("dump.rdb"))
            .unwrap_or_else(|e| panic!("restore {}: {e}", snap.path.display()));
        self.restart();
    }

    /// The append-only file being written now: with Redis 7's multi-part AOF, the last
    /// `incr` file named in the manifest; with older servers, `appendonly.aof`.
    pub fn aof_tail_file(&self) -> Option<PathBuf> {
        let dir = self.dir().join("appendonlydir");
        let manifest = std::fs::read_dir(&dir)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "manifest"));
        if let Some(manifest) = manifest {
            let text = std::fs::read_to_string(manifest).ok()?;
            let name = text
                .lines()
                .filter(|l| l.ends_with(" type i"))
                .filter_map(|l| l.split_whitespace().nth(1))
                .next_back()?;
            return Some(dir.join(name));
        }
        let single = self.dir().join("appendonly.aof");
        single.exists().then_some(single)
    }

    /// The length of [`RedisServer::aof_tail_file`] now, in bytes (0 when there is none).
    pub fn aof_tail_len(&self) -> u64 {
        self.aof_tail_file()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len())
    }

    /// Kills the server (SIGKILL), cuts its append-only file back to `keep` bytes and
    /// starts it again. A process crash alone loses nothing the server had written to the
    /// file (the kernel keeps it); a machine crash with `appendfsync everysec` loses the
    /// part not yet synced, about the last second. Give the length the file had that long
    /// ago to reproduce it. Redis loads the file up to the last whole command
    /// (`aof-load-truncated yes`, the default). Returns the bytes cut off.
    ///
    /// # Panics
    ///
    /// When the server has no append-only file or does not start again.
    pub fn crash_losing_aof_tail(&mut self, keep: u64) -> u64 {
        self.kill();
        let file = self
            .aof_tail_file()
            .unwrap_or_else(|| panic!("port {} has no append-only file", self.port()));
        let len = std::fs::metadata(&file).map_or(0, |m| m.len());
        let cut = len.saturating_sub(keep);
        if cut > 0 {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .unwrap_or_else(|e| panic!("open {}: {e}", file.display()));
            f.set_len(keep)
                .unwrap_or_else(|e| panic!("truncate {}: {e}", file.display()));
        }
        self.restart();
        cut
    }
}
