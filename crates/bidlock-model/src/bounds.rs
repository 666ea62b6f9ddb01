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
    /// `Handoff::MAX_GRANT` in ticks: a grant lives `min(ttl, grant_max)`.
    pub grant_max: Time,
    /// How long a queue entry lives after it is written (`entry_ttl`), in ticks.
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

    /// The test command's bounds: each scenario small enough to explore in seconds.
    pub fn short() -> Vec<Bounds> {
        vec![Bounds::mixed(2, 1), Bounds::waiters(2, 0)]
    }

    /// The long bounds (`scripts/reliability.sh --long`): more time, ids and operators.
    pub fn long() -> Vec<Bounds> {
        vec![Bounds::mixed(3, 2), Bounds::waiters(3, 1)]
    }

    /// A waiter with generated ids (manager 0) and two acquires that share one given id,
    /// on two managers (ttl 1 and 2): reaches a handover, a stalled grant and a re-queue,
    /// batched answers whose caller left, and another owner of a given id.
    pub fn mixed(max_time: Time, operator_actions: u8) -> Bounds {
        Bounds {
            name: "mixed",
            clients: vec![
                ClientSpec {
                    manager: 0,
                    given: None,
                    ttl: 2,
                },
                ClientSpec {
                    manager: 1,
                    given: Some(0),
                    ttl: 1,
                },
                ClientSpec {
                    manager: 0,
                    given: Some(0),
                    ttl: 2,
                },
            ],
            max_time,
            fresh_ids: 2,
            operator_actions,
            unknown_outcomes: 1,
            cancels: 1,
            duplicates: true,
            grant_max: 1,
            entry_life: 1,
            slack: 1,
        }
    }

    /// Three waiters with generated ids on two managers: handovers along the queue, dead
    /// entries skipped, grants racing refreshes and tries.
    pub fn waiters(max_time: Time, operator_actions: u8) -> Bounds {
        let waiter = |manager| ClientSpec {
            manager,
            given: None,
            ttl: 2,
        };
        Bounds {
            name: "waiters",
            clients: vec![waiter(0), waiter(1), waiter(1)],
            max_time,
            fresh_ids: 2,
            operator_actions,
            unknown_outcomes: 1,
            cancels: 1,
            duplicates: true,
            grant_max: 1,
            entry_life: 1,
            slack: 1,
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
                format!("c{i}: manager {}, {id}, ttl {}", c.manager, c.ttl)
            })
            .collect();
        write!(
            f,
            "{}: [{}]; time 0..={} ticks, {} fresh ids per acquire, {} operator action(s), \
             {} unknown outcome(s), {} cancel(s), grant ttl min(ttl, {}), entry life {}, slack {}",
            self.name,
            clients.join("; "),
            self.max_time,
            self.fresh_ids,
            self.operator_actions,
            self.unknown_outcomes,
            self.cancels,
            self.grant_max,
            self.entry_life,
            self.slack
        )
    }
}
