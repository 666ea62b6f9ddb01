//! Issue 20's four holes: each alone (on the amended protocol, which keeps every
//! invariant in these bounds: `amended.rs`) and all together (today's design). The model
//! must find each, and each test prints the shortest counterexample it found.

use bidlock_model::explore::{explore, Counterexample, Limits};
use bidlock_model::invariants::{
    EVERY_KEY_HAS_A_TTL, HELD_IS_SHOWN, OPERATOR_REMOVAL_REACHES_THE_HOLDER, TOKEN_ORDER,
    TOLD_HELD_IS_SHOWN,
};
use bidlock_model::state::{HolderId, Msg, Phase, Releaser, Req};
use bidlock_model::{Action, Bounds, Design, HandoverModel};

/// Explores `design` within `bounds` and returns the counterexample of `invariant`,
/// printed (the exploration ends once it broke).
fn find(
    design: Design,
    bounds: Bounds,
    invariant: &'static str,
) -> (HandoverModel, Counterexample<HandoverModel>) {
    let model = HandoverModel::new(design, bounds);
    let limits = Limits {
        stop_at: Some(invariant),
        ..Limits::ALL
    };
    let out = explore(&model, limits);
    let broken: Vec<&str> = out
        .violations
        .iter()
        .map(|c| c.violation.invariant)
        .collect();
    let Some(c) = out.violation(invariant).cloned() else {
        panic!(
            "{design}, {}: `{invariant}` holds in {} states (broken: {broken:?})",
            model.bounds, out.states
        );
    };
    println!(
        "{design}\n{}\n{} states, {} transitions, {:.1?}; broken: {broken:?}\n{}",
        model.bounds,
        out.states,
        out.transitions,
        out.elapsed,
        c.render(&model)
    );
    (model, c)
}

fn hole(n: u8) -> Design {
    Design::only_hole(n).unwrap_or_else(|| unreachable!("holes 1 to 4 exist"))
}

/// The last step of `c`: its action and the state it led to.
fn last(c: &Counterexample<HandoverModel>) -> (Action, &bidlock_model::state::State) {
    let (a, s) = c.steps.last().unwrap_or_else(|| panic!("an empty path"));
    (*a, s)
}

#[test]
fn hole_2_a_waiter_is_told_held_for_a_grant_of_an_earlier_tenure() {
    let (_, c) = find(hole(2), Bounds::handover(1, 0), TOLD_HELD_IS_SHOWN);
    // The last step delivers a grant; the waiter it names is told held with that grant's
    // token, while Redis shows another holder with a higher token.
    let (action, end) = last(&c);
    let Action::Deliver {
        msg: Msg::Grant { id, token },
        ..
    } = action
    else {
        panic!("the last step is not a grant: {action}");
    };
    let lock = end
        .redis
        .lock
        .unwrap_or_else(|| panic!("no lock at the end"));
    assert!(lock.holder != id && lock.token > token, "{lock:?}");
    // Before that, the id the lock was handed to queued again (today's re-queue).
    let requeued = c
        .steps
        .iter()
        .any(|(_, s)| s.redis.queue.contains(&id) && s.redis.last_grant == Some((id, token)));
    assert!(requeued, "no re-queue of the granted id on the path");
    // The same history breaks the order of tokens.
    find(hole(2), Bounds::handover(1, 0), TOKEN_ORDER);
}

#[test]
fn hole_1_a_batch_releases_a_given_id_whose_caller_left_under_its_next_owner() {
    let (_, c) = find(hole(1), Bounds::given_ids(1, 1, 0), HELD_IS_SHOWN);
    let cancelled_in_a_batch = c
        .steps
        .iter()
        .any(|(a, _)| matches!(a, Action::Cancel { batched: true, .. }));
    assert!(cancelled_in_a_batch);
    let (action, _) = last(&c);
    assert!(
        matches!(
            action,
            Action::RunLate(Req::Release {
                id: HolderId::Given(_),
                by: Releaser::Background
            })
        ),
        "the lock goes by a background release of the given id: {action}"
    );
}

#[test]
fn hole_3_the_waiters_hash_comes_back_without_a_ttl_after_the_last_handover() {
    let (_, c) = find(hole(3), Bounds::handover(1, 0), EVERY_KEY_HAS_A_TTL);
    let (_, end) = last(&c);
    assert!(end.redis.last_grant.is_some() && end.redis.waiters_ttl.is_none());
    assert!(end.redis.waiters.is_empty(), "only the '' field is left");
}

#[test]
fn hole_4_an_operators_release_by_holder_id_reaches_no_one_when_nobody_waits() {
    let (_, c) = find(
        hole(4),
        Bounds::operator(2, 1),
        OPERATOR_REMOVAL_REACHES_THE_HOLDER,
    );
    let released = c
        .steps
        .iter()
        .position(|(a, _)| matches!(a, Action::OperatorRelease(_)));
    let Some(at) = released else {
        panic!("no operator release on the path");
    };
    assert!(
        c.steps[at].1.msgs.is_empty(),
        "the release published nothing"
    );
    let (_, end) = last(&c);
    assert!(end
        .clients
        .iter()
        .any(|cl| matches!(cl.phase, Phase::Held { .. })));
}

#[test]
fn todays_design_has_every_hole() {
    let today = Design::TODAY;
    find(today, Bounds::handover(1, 0), TOLD_HELD_IS_SHOWN);
    find(today, Bounds::handover(1, 0), EVERY_KEY_HAS_A_TTL);
    find(today, Bounds::given_ids(1, 1, 0), HELD_IS_SHOWN);
    find(
        today,
        Bounds::operator(2, 1),
        OPERATOR_REMOVAL_REACHES_THE_HOLDER,
    );
}
