//! Every rule by which the checker lets a history pass that would otherwise be a
//! violation. A report is a library bug until a deterministic test shows that the history
//! lies outside a stated promise: each rule here names the limit the README states and
//! the test that shows the excused history is that limit, and nothing wider. The rules,
//! their tests and how often each was used go to RELIABILITY.md; a test checks that every
//! named test exists.

/// A rule that excuses a history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Excuse {
    DataLossVanished,
    DataLossRolledBack,
    OperatorRemoved,
    SharedIdAtOnce,
    SharedIdLateRelease,
    LossHiddenBySharedId,
    ToldAfterRemoval,
    FrozenProcess,
    OrphanUnreachable,
    RecordLostWithData,
}

impl Excuse {
    pub const ALL: [Excuse; 10] = [
        Excuse::DataLossVanished,
        Excuse::DataLossRolledBack,
        Excuse::OperatorRemoved,
        Excuse::SharedIdAtOnce,
        Excuse::SharedIdLateRelease,
        Excuse::LossHiddenBySharedId,
        Excuse::ToldAfterRemoval,
        Excuse::FrozenProcess,
        Excuse::OrphanUnreachable,
        Excuse::RecordLostWithData,
    ];

    /// Short name (figures, reports).
    pub fn name(self) -> &'static str {
        match self {
            Excuse::DataLossVanished => "lost_in_data_loss",
            Excuse::DataLossRolledBack => "extend_rolled_back",
            Excuse::OperatorRemoved => "removed_by_operator",
            Excuse::SharedIdAtOnce => "given_id_two_owners_at_once",
            Excuse::SharedIdLateRelease => "given_id_late_release",
            Excuse::LossHiddenBySharedId => "loss_hidden_by_given_id",
            Excuse::ToldAfterRemoval => "told_after_removal_token_order",
            Excuse::FrozenProcess => "frozen_process",
            Excuse::OrphanUnreachable => "orphan_release_unreachable",
            Excuse::RecordLostWithData => "record_lost_with_data",
        }
    }

    /// The history the rule lets pass, exactly.
    pub fn rule(self) -> &'static str {
        match self {
            Excuse::DataLossVanished => "A lock vanished in a data-loss fault (the observer's first reading after the server came back, or after the promotion, showed it gone) may be taken by another holder before its holder learns; the holder must learn within ttl/3 + 500 ms.",
            Excuse::DataLossRolledBack => "A lock survived a data-loss fault with an earlier expiry than before it (the observer saw its expiry move back across the fault: an acknowledged extend rolled back) and then expired while its lease, told held through the fault, still ran; the holder must learn within ttl/3 + 500 ms.",
            Excuse::OperatorRemoved => "A lock removed while an operator's force release, cleanup or release by holder id of that key ran (the observer saw it go during the command) may be taken by another holder before its holder learns; the holder must learn within 1 s.",
            Excuse::SharedIdAtOnce => "Two owners of one given holder id held the key at the same time, because a stated fault (data loss, an operator) removed the lock of the one that held first before the other acquired; the lock then went by the other's release, completion, extend or expiry, which Redis cannot tell apart. The holder must learn within ttl/3 + 500 ms of that.",
            Excuse::SharedIdLateRelease => "Another owner of the given holder id (a library task, or a `bidlock run` process at its command's end) released while its lease was valid, during a network or server fault, and the holder's later acquisition of that id lost its lock within 10 s of that release: Redis ran the release late (its reply lost, as in stated_limits.rs::exclusion_a_release_whose_reply_was_lost_removes_a_later_acquisition_of_its_given_id, or in time saying \"released\" when a paused server read the later acquisition first, as in the test named). The holder must learn within ttl/3 + 500 ms.",
            Excuse::LossHiddenBySharedId => "After a loss excused above, another owner of the same given holder id took the key before the loss was due to be noticed: the first holder's renewal finds its id in Redis and keeps the other's lock, so its lost() is late, or a `bidlock run`'s command works on (counted, not a violation; for a run: bidlock-cli's exclusion.rs::a_run_whose_given_id_is_taken_again_after_a_data_loss_is_never_told_lost).",
            Excuse::ToldAfterRemoval => "A section told \"held\" after another, with a lower token, when its try took the lock in Redis first, a stated cause (operator, data loss, a given id's other owner) removed it before the reply arrived, and the other section's lock was seen in Redis after that try was sent: Redis' order is the token order.",
            Excuse::FrozenProcess => "A `bidlock run` process frozen (SIGSTOP) past its ttl runs on after its lock expired when it thaws, until run stops it; only fencing protects meanwhile. The freeze must have hit that very process.",
            Excuse::OrphanUnreachable => "A lock taken by a try whose acquire was cancelled stayed until its ttl, while a fault kept its instance's background release from reaching Redis in time (its link stalled or slowed, the server paused, down or its connections dropped).",
            Excuse::RecordLostWithData => "A posting ran twice without the first bidder being told, when a data-loss fault hit Redis between the first bid's end and the second's start (the completion record can be lost with the data).",
        }
    }

    /// The limit docs/GUARANTEES.md (or a doc it names) states.
    pub fn limit(self) -> &'static str {
        match self {
            Excuse::DataLossVanished | Excuse::DataLossRolledBack => "docs/GUARANTEES.md, Exclusion (Limit: Redis losing data): if Redis loses a lock, a second holder can start before the first learns; the first learns at its subscriber's reconnect or its next renewal (ttl/3) at the latest",
            Excuse::OperatorRemoved => "docs/GUARANTEES.md, Exclusion (Limit: operators): a release, cleanup or release --force of a key you hold reaches every manager as a message; lost() resolves within a round trip",
            Excuse::SharedIdAtOnce | Excuse::LossHiddenBySharedId => "docs/GUARANTEES.md, No orphans: two acquisitions that use one holder id at the same time are one holder to Redis; a release, completion or extend by either acts on whichever of them holds the key",
            Excuse::SharedIdLateRelease => "docs/GUARANTEES.md, One holder id, two owners at once: ... including a release whose reply was lost and that Redis runs late, after a partition, or one held in the socket of a paused server that runs it after a later acquisition of the id that reached it first",
            Excuse::ToldAfterRemoval => "docs/GUARANTEES.md, Tokens never go back (a token is above every token issued before it: issue order is Redis' order) and Leases (loss is reported at once when a release message names the key)",
            Excuse::FrozenProcess => "docs/GUARANTEES.md, Tokens never go back: a lock with a ttl cannot stop a holder that paused past its ttl from waking up and bidding",
            Excuse::OrphanUnreachable => "docs/GUARANTEES.md, No orphans (Limit: an unreachable Redis): a background release that cannot reach Redis leaves the lock to its ttl",
            Excuse::RecordLostWithData => "docs/GUARANTEES.md, Exactly once, or told (Limit): a completion record lost with Redis' data lets the posting run again, and its first bidder is not told again",
        }
    }

    /// The deterministic test that shows the excused history is that limit:
    /// `file::name`, in `crates/bidlock/tests/` unless it says otherwise.
    pub fn test(self) -> &'static str {
        match self {
            Excuse::DataLossVanished => "stated_limits.rs::exclusion_a_lock_lost_with_the_data_is_taken_by_a_second_holder_before_the_first_learns",
            Excuse::DataLossRolledBack => "stated_limits.rs::exclusion_an_extend_rolled_back_with_the_data_ends_the_lock_before_the_lease",
            Excuse::OperatorRemoved => "stated_limits.rs::exclusion_an_operators_release_lets_a_second_holder_start_before_the_first_learns_within_a_second",
            Excuse::SharedIdAtOnce | Excuse::LossHiddenBySharedId => "stated_limits.rs::exclusion_two_owners_of_one_given_id_at_once_are_one_holder_to_redis",
            Excuse::SharedIdLateRelease => "stated_limits.rs::exclusion_a_release_run_late_with_its_reply_in_time_removes_a_later_acquisition_of_its_given_id",
            Excuse::ToldAfterRemoval => "stated_limits.rs::tokens_an_acquire_answered_after_an_operator_removed_its_lock_is_told_lost_at_once",
            Excuse::FrozenProcess => "crates/bidlock-cli/tests/holders.rs::a_holder_paused_past_its_ttl_is_told_lost_and_its_late_bid_is_fenced_off",
            Excuse::OrphanUnreachable => "stated_limits.rs::no_orphans_a_background_release_that_cannot_reach_redis_leaves_the_lock_to_its_ttl",
            Excuse::RecordLostWithData => "stated_limits.rs::exactly_once_a_record_lost_with_the_data_lets_the_posting_run_again",
        }
    }

    /// The rule as a JSON object for the report, with how often it was used.
    pub fn to_json(self, used: u64) -> serde_json::Value {
        serde_json::json!({
            "name": self.name(),
            "rule": self.rule(),
            "limit": self.limit(),
            "test": self.test(),
            "used": used,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Excuse;
    use std::path::Path;

    /// Every rule names a test that exists (a `fn` of that name in that file).
    #[test]
    fn every_excuse_names_a_test_that_exists() {
        let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
        for e in Excuse::ALL {
            let (file, name) = e.test().rsplit_once("::").expect("file::name");
            let path = if file.starts_with("crates/") {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../..")
                    .join(file)
            } else {
                tests.join(file)
            };
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            assert!(
                text.contains(&format!("fn {name}(")),
                "rule {} names {}, which {} does not define",
                e.name(),
                name,
                path.display()
            );
        }
    }
}
