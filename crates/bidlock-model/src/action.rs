//! The steps of the system: what can happen next in a state (`model` says which are
//! enabled and what each leads to; `show` prints them).

use crate::state::{HolderId, Msg, Req};

/// One step of the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// One tick passes; keys and leases whose time ran out expire.
    Tick,
    /// Acquire `c` is called: its first try is sent.
    Start(u8),
    /// Acquire `c`'s request runs at Redis (its reply is then in flight).
    Run(u8),
    /// Acquire `c`'s reply arrives.
    Answer(u8),
    /// Acquire `c`'s request fails with an unknown outcome (lost reply, timeout).
    Error(u8),
    /// Acquire `c` is cancelled (or its deadline passes) at its current await;
    /// `batched`: its try rode in a batch.
    Cancel {
        /// The acquire.
        client: u8,
        /// Whether its try rode in a batch.
        batched: bool,
    },
    /// Queued acquire `c` reaches its deadline (`Design::acquire_as_implemented`): a
    /// refresh in flight is cut, and it leaves the queue before it returns (a cancel is
    /// the other way an acquire ends early: its future dropped, everything let go in the
    /// background).
    Deadline(u8),
    /// Queued acquire `c` sends a refresh.
    Refresh(u8),
    /// Waiting acquire `c` tries again (a release message, its timer, backoff).
    TryAgain(u8),
    /// Acquire `c`, told held, releases its guard.
    Release(u8),
    /// The keeper checks acquire `c`'s lease (due after a notice, `recheck_after_notice`).
    Check(u8),
    /// Acquire `c`, told held, completes the posting.
    Complete(u8),
    /// A request no caller waits for runs at Redis.
    RunLate(Req),
    /// A request no caller waits for is lost (never runs).
    Lose(Req),
    /// Manager `m` receives `msg`; `keep`: a duplicate stays in flight.
    Deliver {
        /// The manager.
        manager: u8,
        /// The message.
        msg: Msg,
        /// Whether a copy stays in flight.
        keep: bool,
    },
    /// Manager `m`'s subscriber loses `msg` and reconnects (then checks every lease).
    Drop {
        /// The manager.
        manager: u8,
        /// The message lost.
        msg: Msg,
    },
    /// An operator's `bidlock release M P --holder <id>` (release.lua by holder id).
    OperatorRelease(HolderId),
    /// An operator's `bidlock release --force` (force_release.lua).
    OperatorForce,
    /// An operator's `bidlock cleanup --yes` (every key of the posting).
    OperatorCleanup,
}
