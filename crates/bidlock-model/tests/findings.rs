//! What the model finds in the protocol as the code implements it now (`Design::CURRENT`),
//! and what its parts are for: each test explores one design within one set of bounds
//! until an invariant breaks, asserts the shape of the shortest path, and prints it.

use bidlock_model::explore::{explore, Counterexample, Limits};
use bidlock_model::invariants::{DONE_IS_FINAL, OPERATOR_REMOVAL_REACHES_THE_HOLDER};
use bidlock_model::state::{Msg, Phase, RefreshAnswer, Req, State, TryAnswer};
use bidlock_model::{Action, Bounds, Design, HandoverModel};

/// Explores `design` within `bounds` until `invariant` breaks; its shortest path, printed.
fn find(design: Design, bounds: Bounds, invariant: &'static str) -> Counterexample<HandoverModel> {
    let model = HandoverModel::new(design, bounds);
    let limits = Limits {
        stop_at: Some(invariant),
        ..Limits::ALL
    };
    let out = explore(&model, limits);
    let Some(c) = out.violation(invariant).cloned() else {
        panic!(
            "{design}, {}: `{invariant}` holds in {} states",
            model.bounds, out.states
        );
    };
    println!(
        "{design}\n{}\n{} states, {:.1?}\n{}",
        model.bounds,
        out.states,
        out.elapsed,
        c.render(&model)
    );
    c
}

/// The state before the last step, and the last step.
fn last(c: &Counterexample<HandoverModel>) -> (&State, Action, &State) {
    let n = c.steps.len();
    let before = if n >= 2 { &c.steps[n - 2].1 } else { &c.start };
    let (a, s) = c.steps.last().unwrap_or_else(|| panic!("an empty path"));
    (before, *a, s)
}

fn completed_before(c: &Counterexample<HandoverModel>) -> bool {
    c.steps
        .iter()
        .any(|(a, _)| matches!(a, Action::RunLate(Req::Complete { .. })))
}

#[test]
fn as_implemented_a_refresh_hands_the_lock_of_a_done_posting_to_its_waiter() {
    let c = find(Design::CURRENT, Bounds::completion(1), DONE_IS_FINAL);
    assert!(completed_before(&c), "no completion on the path");
    // The waiter is told held by its refresh's answer: refresh.lua found the lock free
    // (deleted by the completion) and handed it to its first live waiter, itself.
    let (before, action, _) = last(&c);
    let Action::Answer(w) = action else {
        panic!("the last step is not an answer: {action}");
    };
    assert!(matches!(
        before.clients[usize::from(w)].phase,
        Phase::Refreshing {
            answer: Some(RefreshAnswer::Granted(_)),
            ..
        }
    ));
    assert!(
        before.redis.done,
        "the record was there when the refresh ran"
    );
}

#[test]
fn as_implemented_a_try_that_skips_the_record_hands_the_lock_of_a_done_posting_on() {
    // With refresh.lua fixed, acquire.lua's rule 6 is left: a try that does not check the
    // record (c2: `bidlock run` without `--once`) finds the lock free and hands it to the
    // first waiter, which checks the record and would have been told "already done".
    let design = Design {
        refresh_sees_the_record: true,
        ..Design::CURRENT
    };
    let c = find(design, Bounds::completion(1), DONE_IS_FINAL);
    assert!(completed_before(&c), "no completion on the path");
    let handed = c.steps.windows(2).any(|w| {
        let (before, (a, after)) = (&w[0].1, (&w[1].0, &w[1].1));
        let unchecked = matches!(
            *a,
            Action::Run(2) | Action::RunLate(Req::Try { client: 2, .. })
        );
        unchecked
            && before.redis.done
            && before.redis.lock.is_none()
            && after
                .redis
                .lock
                .is_some_and(|l| before.redis.queue.contains(&l.holder))
    });
    assert!(
        handed,
        "no rule-6 handover by the try that skips the record"
    );
}

#[test]
fn without_dated_notices_an_operators_removal_is_missed() {
    // keeper.rs's `noticed`: without it, a notice that overtakes the try's reply (the
    // subscriber's connection is not the command connection) reaches no lease.
    let design = Design {
        notice_dates_leases: false,
        ..Design::CURRENT
    };
    let c = find(
        design,
        Bounds::operator(2, 1),
        OPERATOR_REMOVAL_REACHES_THE_HOLDER,
    );
    let overtaken = c.steps.windows(2).any(|w| {
        matches!(
            w[1].0,
            Action::Deliver {
                msg: Msg::Released { .. },
                ..
            }
        ) && w[0].1.clients.iter().any(|cl| {
            matches!(
                cl.phase,
                Phase::Trying {
                    answer: Some(TryAnswer::Acquired(_) | TryAnswer::Granted(_)),
                    ..
                } | Phase::Refreshing {
                    answer: Some(RefreshAnswer::Granted(_)),
                    ..
                } | Phase::Queued
            )
        })
    });
    assert!(
        overtaken,
        "the notice did not arrive before the lease was taken up"
    );
}

#[test]
fn without_tell_a_handover_by_holder_id_reaches_nobody() {
    // release.lua 56-59: a release by holder id that hands the lock on also publishes the
    // release. Without it (the earlier design's rule: a handover publishes only the grant)
    // the holder whose id an operator released never hears of it.
    let design = Design {
        publish_when_waited_or_told: false,
        ..Design::CURRENT
    };
    let c = find(
        design,
        Bounds::operator(2, 1),
        OPERATOR_REMOVAL_REACHES_THE_HOLDER,
    );
    let at = c
        .steps
        .iter()
        .position(|(a, _)| matches!(a, Action::OperatorRelease(_)))
        .unwrap_or_else(|| panic!("no operator release on the path"));
    let after = &c.steps[at].1;
    assert!(after.redis.lock.is_some(), "the release handed the lock on");
    assert!(after
        .msgs
        .iter()
        .all(|(_, m)| matches!(m, Msg::Grant { .. })));
}
