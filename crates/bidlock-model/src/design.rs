//! Which protocol the model runs: the fixed one of docs/HANDOVER.md, with any of issue 20's
//! four holes put back, one flag per hole, so that each can be shown alone.

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

    /// The code before the fix (this worktree's scripts and acquire): every hole open.
    pub const TODAY: Design = Design {
        unclaimed_ignores_given_id: true,
        id_outlives_try: true,
        waiters_without_ttl: true,
        release_publishes_only_when_waited: true,
        recheck_after_notice: false,
        handover_publishes_release: false,
        notice_names_new_holder: false,
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
