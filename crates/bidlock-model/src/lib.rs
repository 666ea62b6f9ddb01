//! An exhaustive model check of bidlock's handover protocol (docs/HANDOVER.md, issue 20).
//!
//! The protocol is one state machine ([`HandoverModel`]): the Lua scripts as atomic steps
//! on one Redis, acquires running the state machine of `acquire.rs` and `acquire/wait.rs`,
//! and everything between them delayed, reordered, lost or duplicated. The explorer ([`explore()`]) visits
//! every state reachable within a set of [`Bounds`], breadth first, checks the
//! [`invariants`] in every state and on every step, and prints the shortest path to each
//! one broken, a step per line (`show`).
//!
//! ```
//! use bidlock_model::{explore, Bounds, Design, HandoverModel, Limits};
//!
//! // Issue 20's hole 4 alone: an operator's release by holder id reaches nobody.
//! let hole = Design::only_hole(4).expect("holes 1 to 4");
//! let model = HandoverModel::new(hole, Bounds::operator(2, 1));
//! let out = explore(&model, Limits { stop_at_first: true, ..Limits::ALL });
//! let found = &out.violations[0];
//! assert_eq!(found.violation.invariant, "operator_removal_reaches_the_holder");
//! println!("{}", found.render(&model)); // the shortest path, a step per line
//! ```
//!
//! # Designs
//!
//! [`Design`] selects the protocol, one flag per difference, so each can be shown alone:
//!
//! - [`Design::CURRENT`]: the code as it is now, which docs/HANDOVER.md describes (the
//!   scripts with their Lua lines named in `redis` and `queue`, the acquire's differences
//!   from the earlier table in `current`). The test command checks it (`tests/current.rs`):
//!   it keeps every invariant within the bounds but `done_is_final` (see below).
//! - [`Design::PROPOSED`]: the same with the change the model proposes for that finding;
//!   it keeps every invariant within the bounds (`tests/current.rs`).
//! - [`Design::FIXED`]: HANDOVER.md as it was first written for issue 20.
//! - [`Design::AMENDED`]: that text with the two amendments the model found it needs
//!   (see below). It keeps every invariant within the bounds (`tests/amended.rs`).
//!   The code took both up in another form: the keeper's dated notices for the first, and
//!   `tell` on a release by holder id for the second.
//! - [`Design::AMENDED_REFINED`]: the same, with a handover's notice naming the new
//!   holder so that its waiter need not check its lease for it (no longer checked:
//!   `CURRENT` publishes no notice on a lease's own handover).
//! - [`Design::TODAY`]: the code before the fix: issue 20's four holes, each a flag
//!   ([`Design::only_hole`] opens one on the amended design; `tests/holes.rs` finds each).
//!
//! # What the code as it is now breaks (`tests/findings.rs`)
//!
//! *Rule 6 hands on the lock of a posting that has a completion record.* `release.lua`
//! never hands on a posting with a record ("every waiter must see the record"), but
//! `queue.lua`'s handover, as `refresh.lua` and `acquire.lua` call it when they find the
//! lock free, does not look at the record. A holder completes the posting (the record
//! is written, its lock deleted); a waiter's refresh finds the lock free and hands it to
//! the first live waiter, itself: `Granted`, and the acquire, which checks the record
//! (`bid_once`), is told "held" with a token issued after the record: it bids again
//! (`done_is_final`, eleven steps). With `refresh.lua` fixed, a try that does not check
//! the record (`bidlock run` without `--once`) finds the lock free and hands it to the
//! queue's head just the same. The change the model checks ([`Design::PROPOSED`]):
//! `refresh.lua`, finding the lock free and a record, takes the id out of the queue and
//! answers "not queued" (the next try, a fresh id, answers AlreadyDone); `acquire.lua`
//! hands a free lock over only when no record exists.
//!
//! The same tests show what two parts of the code are for: without the keeper's dated
//! notices, or without `tell` on a release by holder id that hands over, an operator's
//! removal never reaches the holder. The narrower rule 3 (a lease's own handover of a
//! generated id publishes only the grant) loses nothing within the bounds.
//!
//! # What HANDOVER.md as first written missed (`tests/handover_md.rs`)
//!
//! Both are paths where an operator's removal of a lock never reaches a holder that was
//! told "held", so at quiescence (nothing in flight) it still holds a lease whose lock is
//! gone:
//!
//! 1. *A notice that overtakes the acquire's reply.* The try takes the lock, the operator
//!    releases it, the release notice reaches the manager (the subscriber's connection)
//!    before the try's reply (the command connection): the keeper checks the leases it
//!    holds, which do not include this one yet; then the reply arrives and the acquire
//!    returns a guard for a lock that is gone. The same for a grant whose handover an
//!    operator undid while the waiter waited. Amendment ([`Design::recheck_after_notice`]):
//!    a release notice for a key that reaches a manager while one of its acquires has a
//!    request out or waits queued makes that acquire check its lease when it takes it up
//!    (in the library: a per-key count of notices, read when each request is sent and
//!    compared in `take_up`; the check is the keeper's `check`). With amendment 2 every
//!    handover publishes such a notice, so the new holder would check once per handover;
//!    [`Design::notice_names_new_holder`] spared it that round trip (it was checked in
//!    the long bounds; a waiter that checks on every notice checks more, never less, so
//!    [`Design::AMENDED`] is the safe, simple form).
//! 2. *A handover publishes only the grant.* Rule 3 said every removal publishes on the
//!    release channel, "a release (with or without waiters)"; the script steps published
//!    only `grants(h)` on a handover. An operator's `release --holder X` while someone
//!    waits hands X's lock to the waiter, and X's manager never hears of it. Amendment
//!    ([`Design::handover_publishes_release`]): `release.lua` step 2 also publishes on the
//!    release channel.
//!
//! # What is modelled
//!
//! - Redis: the lock with its expiry, the queue (arrival order), the waiters hash (entry
//!   deadlines and the `''` last-grant field), the ttl of each key (or its absence), the
//!   fencing counter, the completion record; the marker (with its ttl) where a design
//!   reads it (today's release and completion, hole 4). The scripts `acquire`, `refresh`,
//!   `release`, `complete`, `force_release` and cleanup, each one atomic step, with
//!   comments naming the script's lines (`redis`, `queue`); cleanup's later `DEL` of
//!   markers, queues and waiters is a step of its own.
//! - Acquires (`client`, `current`): a generated id per tenure (or today's reused one) or
//!   a given id shared by several acquires, checking the completion record or not;
//!   HANDOVER.md's table (`Try`, `Queued`, `Watch`, `Held`), or the loop before issue 20;
//!   cancellation at every await (a try that rode in a batch hands an answer that took
//!   the lock, or queued, to the batch's `unclaimed` release); a queued waiter's deadline
//!   (it leaves the queue before it returns); unknown outcomes (a request that may still
//!   run: a try's lease released in the background, a refresh's tenure kept); the
//!   keeper's check of held leases when a release notice arrives or the subscriber
//!   reconnects, and of a lease registered after a notice that came after the moment it
//!   counts from (two flags per acquire: a notice since its request's send, since its
//!   `since`).
//! - The network: every request that no caller waits for any more (an abandoned try or
//!   refresh, a release) runs at any later moment or never; replies arrive late or never;
//!   each manager's pub/sub messages arrive in any order, are lost (the subscriber then
//!   reconnects and checks every lease: `Notices::all`) or duplicated.
//! - Time: discrete ticks (a bounded number); keys and leases expire when their time
//!   comes. An operator's release by holder id, force release and cleanup, bounded.
//!
//! # What is abstracted away, and why that is sound
//!
//! - *One key.* Every script item touches one posting's keys and the shared counter; a
//!   batch runs its items one after another inside one script, so each item is an atomic
//!   step of its own (a batch is one of the interleavings explored). A notice for another
//!   key wakes only that key's waiters, and a reconnect's wake-up of every waiter is one
//!   of the moments below at which a waiter may try.
//! - *Timers.* The local wait queue, backoff, the holder's ttl hint, refresh timers and
//!   deadlines only decide *when* a waiting acquire tries, refreshes or gives up: here it
//!   may do each at any moment, a superset of every timing.
//! - *Tokens* are the counter plus one: the hybrid clock only makes them jump, in order.
//! - *Renewal and extend* are left out: `renew.lua` only lengthens a lock its holder id
//!   still holds, and the lease's deadline counts from the renewal's send, so a renewed
//!   lease behaves as one with a longer ttl (the bounds vary ttls). The "held via grant
//!   without renewal" path confirms the lock with a round trip before the caller is told
//!   "held": it is the renewing path (told at once, modelled) plus one more check.
//! - *The keeper's check* runs when the notice arrives (a `GET` of the holder id; a later
//!   one could find the id again only by the given-id limit).
//! - *Requests are never duplicated* (redis-rs sends a script once and never retries it);
//!   a lost reply is an unknown outcome; a release's reply is never awaited.
//! - *Clocks* are exact; the library's drift margins only shorten leases.
//! - *Slack.* The scripts' "+ 5 s" is one tick: keys outlive their contents, as promised.
//! - *Reductions* (`tidy`): what can no longer change anything is dropped (a grant for an
//!   id its acquire stopped using; a notice no holder or waiter of that manager hears; a
//!   release of a generated id that can hold nothing). A dropped item corresponds to its
//!   delivery with no effect, and the invariants are monotone in holders, so no violation
//!   is lost; likewise only grants are duplicated and lost (a duplicate or lost notice
//!   only checks leases again).
//! - *Deadlines* share the cancels bound: an acquire ends early once, either way. A try
//!   cut at its deadline is a cancellation (its future is dropped); a queued waiter's
//!   deadline is `Action::Deadline`. The local wait queue is not modelled but through
//!   `waiters_behind` (the marker): who tries when is any timing.
//! - *The keeper's memory of notices* is unbounded here; the code forgets a notice after
//!   60 s once it remembers 4096 keys, far past any try's response timeout or grant ttl.
//! - *Out of scope*: data loss, failover, Sentinel, Redlock, a cluster, a completion
//!   record's expiry, a lapsed completion, junk in the keys.
//!
//! # Invariants (`invariants`)
//!
//! At most one acquire told "held" with a still-valid lease (two owners of one given id at
//! once are the README's limit); every such lease is the lock Redis shows (holder id and
//! tenure); an acquire told "held" is, at that instant, the holder Redis shows with an
//! expiry not before its deadline; tokens increase in the order acquires are told "held";
//! no key without a ttl but the counter (in every state); at quiescence, no still-valid
//! lease whose lock an operator removed; an acquire that checks the completion record is
//! never told "held" with a lock taken (a token issued) after the record was written. A lease whose lock an operator removed, or
//! another owner of its given id released, is excused until quiescence; a background
//! release never excuses anything.
//!
//! # Bounds
//!
//! [`Bounds::short`] (the test command) and [`Bounds::long`] (`BIDLOCK_MODEL_BOUND=long`):
//! scenarios on one key, two or three acquires on two managers, one or two ticks, two
//! generated ids per acquire, and per scenario the faults (unknown outcomes,
//! cancellations and deadlines, operator actions, completion with one acquire that does
//! not check the record) listed by their `Display`. The tests print the bounds and the
//! states explored.
//!
//! # Why an explorer of its own
//!
//! `stateright` 0.31 would bring rand 0.9, rand_core 0.9 and getrandom 0.3 next to the
//! workspace's rand 0.10 (`multiple-versions = "deny"`), and an HTTP server (`tiny_http`,
//! for its explorer UI) into the test build. What the check needs is a breadth-first
//! search with a fingerprint per state, invariants on states and steps, and a shortest
//! path replayed from the fingerprints: `explore`, about two hundred lines, with the
//! layers' states packed into bytes (`pack`) so that the long bounds fit in memory. Its
//! fingerprints are 64-bit (foldhash, fixed seed); two states that collide would merge
//! (odds about n²/2⁶⁵: below 10⁻⁵ for ten million states, below 10⁻³ for a hundred
//! million).

pub mod action;
pub mod bounds;
pub mod client;
pub mod current;
pub mod design;
pub mod explore;
pub mod invariants;
pub mod model;
pub mod pack;
pub mod queue;
pub mod redis;
pub mod show;
pub mod state;
pub mod tidy;

pub use action::Action;
pub use bounds::{Bounds, ClientSpec};
pub use design::Design;
pub use explore::{explore, Counterexample, Limits, Model, Outcome, Violation};
pub use model::HandoverModel;
