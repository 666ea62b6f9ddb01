//! Which protocol the model runs: the code as it is now ([`Design::CURRENT`]), the fixed
//! one of an earlier docs/HANDOVER.md with its amendments, or the code before issue 20 with
//! its four holes, one flag per difference, so that each can be shown alone.

use std::fmt;

/// One protocol design: the fixed protocol with the holes whose flag is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Design {
    /// Hole 1: the batch's release of an answer whose caller left ignores the given-id
    /// rule (`backend/redis/calls.rs`, `unclaimed`: it releases any holder id, where
    /// `Inner::release_detached` never releases a caller-given one).
    pub unclaimed_ignores_given_id: bool,
    /// Hole 2: a holder id outlives the try (`acquire.rs` today): the lease is kept for
    /// the next try while answers say "held"; a try with `queue = 2` joins the queue again
    /// (`acquire.lua`: `ZADD NX` for any mode but '0'); `refresh.lua` answers "not queued"
    /// also when the lock is free (and the try that follows re-queues the same id); a try
    /// that ends in an error ends the acquire; a grant counts from the last try or
    /// refresh that said "queued" (`accept_grant`, with `queued` set by every busy try).
    pub id_outlives_try: bool,
    /// Hole 3: `release.lua`'s handover writes `HSET waiters '' ...` after popping the
    /// last entry, which re-creates the hash without a ttl (and raises no ttl).
    pub waiters_without_ttl: bool,
    /// Hole 4: `release.lua` publishes only when a marker or a queue exists (a release
    /// with nobody waiting deletes the lock silently).
    pub release_publishes_only_when_waited: bool,
    /// An amendment the model found HANDOVER.md needs (not a hole of today's code): a
    /// release notice that reaches a manager while one of its acquires has a request out
    /// or waits queued makes that acquire check its lease when it takes it up (the notice
    /// may be about the lock its reply or grant is about to report).
    pub recheck_after_notice: bool,
    /// An amendment: `release.lua`'s handover (step 2) also publishes on the release
    /// channel, as rule 3 says ("a release (with or without waiters)") but the script
    /// steps do not; without it the holder whose lock an operator's release by holder id
    /// handed on never hears of it.
    pub handover_publishes_release: bool,
    /// A refinement of the two amendments: the notice of a handover names the new holder,
    /// and the waiter queued as that id takes it as its own (no check for it). Every other
    /// notice still makes waiters check: one round trip per handover saved.
    pub notice_names_new_holder: bool,
    /// Rule 6 as implemented (`queue.lua`'s `live_head` and `hand_to`, called by
    /// `acquire.lua` and `refresh.lua`): a script that finds the lock free while live
    /// waiters are queued hands it to the first of them (a refresh answers `Granted` when
    /// that is itself), where the earlier design's refresh answered "free, try again".
    pub free_lock_to_first_waiter: bool,
    /// Rule 3 as implemented (`release.lua`, `complete.lua`, `tell` from
    /// `RedisStore::release`): a release or completion publishes on the release channel
    /// when someone waits (a marker or a queue), when asked (`tell`: a release by holder
    /// id, or of a holder id the caller chose) or (completion) when the lock was someone
    /// else's; a handover publishes the grant, and the release too only with `tell`. The
    /// marker is read, so it is modelled.
    pub publish_when_waited_or_told: bool,
    /// The notice check as implemented (`keeper.rs`, `LeaseKeeper::register`): a manager
    /// remembers when a notice last named the key, and a lease confirmed from a moment
    /// before that (a try's send, a grant's `since`) is checked at once when registered.
    /// Replaces the earlier design's per-request flag (`recheck_after_notice`).
    pub notice_dates_leases: bool,
    /// The acquire as implemented (`acquire.rs`, `acquire/wait.rs`): a failed try goes to
    /// `Watch` (its lease let go in the background) and a failed refresh keeps the tenure;
    /// a late answer goes to `Watch`; a queued waiter at its deadline takes its place out
    /// (or hands on a grant) before it returns (`Acquiring::leave`); a batched try whose
    /// caller left is let go also when it only queued (`calls.rs`, codes 1, 4 and 5).
    pub acquire_as_implemented: bool,
    /// `bidlock cleanup` as implemented (`scan.rs`, `delete_locks`): the locks first, each
    /// with its notice (`cleanup.lua`), then markers, queues and waiters by later commands.
    pub cleanup_locks_first: bool,
    /// Half of the change this model proposes (not in the code yet): `refresh.lua`, finding
    /// the lock free and a completion record, hands it to nobody (as `release.lua` never
    /// hands on a posting with a record): it takes the id out of the queue and answers "not
    /// queued", and the next try (a fresh id) sees the record. Without it a waiter is
    /// handed the lock of a posting already bid on (`done_is_final`).
    pub refresh_sees_the_record: bool,
    /// The other half: `acquire.lua` hands a free lock to the first waiter (rule 6) only
    /// when no record exists (a try that checks the record never gets there; one that does
    /// not, `bidlock run` without `--once`, would hand it to a waiter that does).
    pub acquire_rule_6_sees_the_record: bool,
}

impl Design {
    /// docs/HANDOVER.md as written: every hole closed.
    pub const FIXED: Design = Design {
        unclaimed_ignores_given_id: false,
        id_outlives_try: false,
        waiters_without_ttl: false,
        release_publishes_only_when_waited: false,
        recheck_after_notice: false,
        handover_publishes_release: false,
        notice_names_new_holder: false,
        free_lock_to_first_waiter: false,
        publish_when_waited_or_told: false,
        notice_dates_leases: false,
        acquire_as_implemented: false,
        cleanup_locks_first: false,
        refresh_sees_the_record: false,
        acquire_rule_6_sees_the_record: false,
    };

    /// The protocol as the code implements it now (docs/HANDOVER.md as it stands): rules 3
    /// and 6 as implemented, the keeper's dated notices, today's acquire and cleanup.
    pub const CURRENT: Design = Design {
        free_lock_to_first_waiter: true,
        publish_when_waited_or_told: true,
        notice_dates_leases: true,
        acquire_as_implemented: true,
        cleanup_locks_first: true,
        ..Design::FIXED
    };

    /// The code as it is now with the change the model proposes: rule 6 sees the
    /// completion record (`refresh_sees_the_record`, `acquire_rule_6_sees_the_record`).
    pub const PROPOSED: Design = Design {
        refresh_sees_the_record: true,
        acquire_rule_6_sees_the_record: true,
        ..Design::CURRENT
    };

    /// HANDOVER.md with the two amendments the model found it needs.
    pub const AMENDED: Design = Design {
        recheck_after_notice: true,
        handover_publishes_release: true,
        ..Design::FIXED
    };

    /// The amended design, refined: a handover's notice names the new holder, which does
    /// not check its lease for it (one round trip per handover fewer).
    pub const AMENDED_REFINED: Design = Design {
        notice_names_new_holder: true,
        ..Design::AMENDED
    };

    /// The code before the fix (issue 20's scripts and acquire): every hole open.
    pub const TODAY: Design = Design {
        unclaimed_ignores_given_id: true,
        id_outlives_try: true,
        waiters_without_ttl: true,
        release_publishes_only_when_waited: true,
        recheck_after_notice: false,
        handover_publishes_release: false,
        notice_names_new_holder: false,
        ..Design::FIXED
    };

    /// The amended design with only issue 20's hole `n` (1 to 4) open; `None` for another
    /// n. (On the amended design, so that what breaks is the hole's doing alone.)
    pub fn only_hole(n: u8) -> Option<Design> {
        let mut d = Design::AMENDED;
        match n {
            1 => d.unclaimed_ignores_given_id = true,
            2 => d.id_outlives_try = true,
            3 => d.waiters_without_ttl = true,
            4 => d.release_publishes_only_when_waited = true,
            _ => return None,
        }
        Some(d)
    }
}

impl fmt::Display for Design {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Design::FIXED {
            return f.write_str("Fixed");
        }
        if *self == Design::TODAY {
            return f.write_str("Today");
        }
        if *self == Design::AMENDED {
            return f.write_str("Amended");
        }
        if *self == Design::AMENDED_REFINED {
            return f.write_str("Amended, refined");
        }
        if *self == Design::CURRENT {
            return f.write_str("Current");
        }
        if *self == Design::PROPOSED {
            return f.write_str("Current + rule 6 sees the record (proposed)");
        }
        if self.acquire_as_implemented {
            // CURRENT with some of its parts taken out (the ablations of `tests/current.rs`).
            let parts: Vec<&str> = [
                (!self.free_lock_to_first_waiter, "without rule 6"),
                (!self.publish_when_waited_or_told, "without the tell rule"),
                (!self.notice_dates_leases, "without dated notices"),
                (!self.cleanup_locks_first, "with an atomic cleanup"),
                (self.recheck_after_notice, "with per-request notices"),
                (self.handover_publishes_release, "with handovers announced"),
                (
                    self.refresh_sees_the_record,
                    "with refresh.lua seeing the record",
                ),
                (
                    self.acquire_rule_6_sees_the_record,
                    "with acquire.lua's rule 6 seeing the record",
                ),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
            return write!(f, "Current {}", parts.join(", "));
        }
        let amended = self.recheck_after_notice && self.handover_publishes_release;
        let parts: Vec<&str> = [
            (self.unclaimed_ignores_given_id, "hole 1"),
            (self.id_outlives_try, "hole 2"),
            (self.waiters_without_ttl, "hole 3"),
            (self.release_publishes_only_when_waited, "hole 4"),
            (
                !amended && self.recheck_after_notice,
                "recheck after notice",
            ),
            (
                !amended && self.handover_publishes_release,
                "handover publishes release",
            ),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect();
        let base = if amended { "Amended" } else { "Fixed" };
        write!(f, "{base} + {}", parts.join(" + "))
    }
}
