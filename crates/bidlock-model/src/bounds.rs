//! The bounds of one exploration: who acquires (on which manager, with which holder id and
//! ttl), how long time runs, how many fresh holder ids an acquire may take, how many
//! operator actions happen; and the two sets the tests run (`short` in the test command,
//! `long` with `BIDLOCK_MODEL_BOUND=long`).

use std::fmt;

/// Discrete time, in ticks.
pub type Time = u8;

/// One acquire (one call of `BidLockManager::acquire`, with a waiting timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientSpec {
    /// The manager it runs on (one grant channel and one subscriber per manager).
    pub manager: u8,
    /// A holder id the caller gave (`AcquireOptions::holder`); acquires with the same
    /// given id share it. `None`: generated ids, and the acquire takes handoffs.
    pub given: Option<u8>,
    /// The lock's ttl, in ticks.
    pub ttl: Time,
    /// Whether it checks the completion record (`AcquireOptions::check_done`, on by
    /// default and in `bid_once`; off in `bidlock run` without `--once`). Only matters
    /// with completion in the bounds.
    pub checks_done: bool,
}

/// The bounds of one exploration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounds {
    /// A short name for reports.
    pub name: &'static str,
    /// The acquires, all on one key (each starts once, at any moment).
    pub clients: Vec<ClientSpec>,
    /// Time runs from 0 to this many ticks.
    pub max_time: Time,
    /// How many generated holder ids one acquire may take (it gives up after).
    pub fresh_ids: u8,
    /// How many operator actions (a release by holder id, a force release) may happen.
    pub operator_actions: u8,
    /// How many requests may end in an unknown outcome (a lost reply, a timeout).
    pub unknown_outcomes: u8,
    /// How many acquires may be cancelled (or reach their deadline) while waiting.
    pub cancels: u8,
    /// Whether a delivered grant message may stay in flight (be delivered again).
    pub duplicates: bool,
    /// Whether a holder may complete the posting (and every acquire then checks the
    /// completion record, as `bid_once` and `run --once` do).
    pub completion: bool,
    /// `Handoff::MAX_GRANT` in ticks: a grant lives `min(ttl, grant_max)`.
    pub grant_max: Time,
    /// How long a queue entry lives after it is written (`entry_ttl`), in ticks: it is
    /// live while `now <= written + entry_life`.
    pub entry_life: Time,
    /// The scripts' "+ 5 s" by which the marker outlives the lock and the queue and
    /// waiters keys outlive their entries and grants, in ticks.
    pub slack: Time,
}

impl Bounds {
    /// The grant ttl of acquire `c`'s handoffs (`Handoff::for_ttl`).
    pub fn grant_ttl(&self, c: usize) -> Time {
        self.clients[c].ttl.min(self.grant_max)
    }

    /// How many managers the acquires run on.
    pub fn managers(&self) -> u8 {
        self.clients
            .iter()
            .map(|c| c.manager + 1)
            .max()
            .unwrap_or(0)
    }

    /// The sets of bounds for `BIDLOCK_MODEL_BOUND` (`long`, or anything else: short).
    pub fn from_env() -> Vec<Bounds> {
        match std::env::var("BIDLOCK_MODEL_BOUND").as_deref() {
            Ok("long") => Bounds::long(),
            _ => Bounds::short(),
        }
    }

    /// The test command's bounds: six scenarios, each small enough to explore in seconds,
    /// each with one kind of trouble (time runs one tick, enough for a grant to stall and
    /// run out, and for a re-queue after it).
    pub fn short() -> Vec<Bounds> {
        vec![
            Bounds::handover(1, 0),
            Bounds::faults(1, 1, 1, 0),
            Bounds::given_ids(1, 1, 0),
            Bounds::operator(2, 1),
            Bounds::completion(1),
            Bounds::queue(1),
        ]
    }

    /// The long bounds (`BIDLOCK_MODEL_BOUND=long`): two ticks, and the kinds of trouble
    /// together.
    pub fn long() -> Vec<Bounds> {
        vec![
            Bounds::handover(2, 1),
            Bounds::faults(2, 1, 1, 0),
            Bounds::faults(2, 1, 0, 1),
            Bounds::given_ids(2, 1, 1),
            Bounds::operator(2, 2),
            Bounds::completion(2),
            Bounds::queue(1),
        ]
    }

    fn base(name: &'static str, clients: Vec<ClientSpec>, max_time: Time) -> Bounds {
        Bounds {
            name,
            clients,
            max_time,
            fresh_ids: 2,
            operator_actions: 0,
            unknown_outcomes: 0,
            cancels: 0,
            duplicates: true,
            completion: false,
            grant_max: 1,
            entry_life: 1,
            slack: 1,
        }
    }

    /// An acquire with generated ids on a manager, ttl 2 (grant ttl 1).
    pub fn waiter(manager: u8) -> ClientSpec {
        ClientSpec {
            manager,
            given: None,
            ttl: 2,
            checks_done: true,
        }
    }

    /// An acquire with given id `G0` on a manager.
    pub fn given(manager: u8, ttl: Time) -> ClientSpec {
        ClientSpec {
            manager,
            given: Some(0),
            ttl,
            checks_done: true,
        }
    }

    /// Two waiters on two managers and an acquire with a given id: handovers, a grant
    /// stalled past its ttl, the lock taken meanwhile, a re-queue (issue 20's hole 2).
    /// Queue entries live less than a tick (`entry_life` 0: an entry written at t is dead
    /// at t + 1 unless refreshed), so that a handover also skips dead entries.
    pub fn handover(max_time: Time, cancels: u8) -> Bounds {
        let clients = vec![Bounds::waiter(0), Bounds::waiter(1), Bounds::given(1, 2)];
        Bounds {
            cancels,
            entry_life: 0,
            ..Bounds::base("handover", clients, max_time)
        }
    }

    /// Two waiters on two managers, with lost replies and cancellations.
    pub fn faults(
        max_time: Time,
        unknown_outcomes: u8,
        cancels: u8,
        operator_actions: u8,
    ) -> Bounds {
        let clients = vec![Bounds::waiter(0), Bounds::waiter(1)];
        Bounds {
            unknown_outcomes,
            cancels,
            operator_actions,
            ..Bounds::base("faults", clients, max_time)
        }
    }

    /// A waiter and two acquires that share given id G0 (ttl 1 and 2, on two managers),
    /// cancelled in a batch (issue 20's hole 1).
    pub fn given_ids(max_time: Time, cancels: u8, unknown_outcomes: u8) -> Bounds {
        let clients = vec![Bounds::waiter(0), Bounds::given(1, 1), Bounds::given(0, 2)];
        Bounds {
            cancels,
            unknown_outcomes,
            ..Bounds::base("given ids", clients, max_time)
        }
    }

    /// Three waiters on two managers: handovers along the queue, dead entries skipped,
    /// grants racing refreshes and tries.
    pub fn queue(max_time: Time) -> Bounds {
        let clients = vec![Bounds::waiter(0), Bounds::waiter(1), Bounds::waiter(1)];
        Bounds {
            entry_life: 0,
            ..Bounds::base("queue", clients, max_time)
        }
    }

    /// Two waiters and an operator's release by holder id, force release and cleanup
    /// (issue 20's hole 4).
    pub fn operator(max_time: Time, operator_actions: u8) -> Bounds {
        let clients = vec![Bounds::waiter(0), Bounds::waiter(1)];
        Bounds {
            operator_actions,
            ..Bounds::base("operator", clients, max_time)
        }
    }

    /// Two waiters whose holders may complete the posting (both check the record, as
    /// `bid_once` does), and a given id that does not check it (`bidlock run` without
    /// `--once`).
    pub fn completion(max_time: Time) -> Bounds {
        let unchecked = ClientSpec {
            checks_done: false,
            ..Bounds::given(1, 1)
        };
        let clients = vec![Bounds::waiter(0), Bounds::waiter(1), unchecked];
        Bounds {
            completion: true,
            ..Bounds::base("completion", clients, max_time)
        }
    }
}

impl fmt::Display for Bounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let clients: Vec<String> = self
            .clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let id = match c.given {
                    Some(g) => format!("given id G{g}"),
                    None => "generated ids".to_owned(),
                };
                let unchecked = if c.checks_done {
                    ""
                } else {
                    ", no record check"
                };
                format!(
                    "c{i}: manager {}, {id}, ttl {}{unchecked}",
                    c.manager, c.ttl
                )
            })
            .collect();
        write!(
            f,
            "{}: [{}]; time 0..={} ticks, {} fresh ids per acquire, {} operator action(s), \
             {} unknown outcome(s), {} cancel(s), duplicates {}, completion {}, \
             grant ttl min(ttl, {}), entry life {}, slack {}",
            self.name,
            clients.join("; "),
            self.max_time,
            self.fresh_ids,
            self.operator_actions,
            self.unknown_outcomes,
            self.cancels,
            if self.duplicates { "on" } else { "off" },
            if self.completion { "on" } else { "off" },
            self.grant_max,
            self.entry_life,
            self.slack
        )
    }
}
