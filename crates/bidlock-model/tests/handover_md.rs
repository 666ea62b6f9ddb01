//! docs/HANDOVER.md as first written for issue 20 (`Design::FIXED`) against the model: an
//! operator's removal of a lock can miss its holder in two ways, one per amendment of
//! `Design::AMENDED` (which keeps every invariant: `amended.rs`; the code took both up in
//! another form, checked in `current.rs` and `findings.rs`). Each test prints the path.

use bidlock_model::explore::{explore, Counterexample, Limits};
use bidlock_model::invariants::OPERATOR_REMOVAL_REACHES_THE_HOLDER;
use bidlock_model::state::{Msg, Phase, TryAnswer};
use bidlock_model::{Action, Bounds, Design, HandoverModel};

fn counterexample(design: Design) -> Option<Counterexample<HandoverModel>> {
    let model = HandoverModel::new(design, Bounds::operator(2, 1));
    let limits = Limits {
        stop_at_first: true,
        ..Limits::ALL
    };
    let out = explore(&model, limits);
    let c = out.violation(OPERATOR_REMOVAL_REACHES_THE_HOLDER).cloned();
    match &c {
        Some(c) => println!("{design}, {}:\n{}", model.bounds, c.render(&model)),
        None => println!("{design}: holds in {} states", out.states),
    }
    c
}

#[test]
fn as_written_a_notice_that_overtakes_the_acquires_reply_is_lost() {
    // Handovers publish on the release channel: only the race is left.
    let design = Design {
        handover_publishes_release: true,
        ..Design::FIXED
    };
    let Some(c) = counterexample(design) else {
        panic!("the race went unnoticed");
    };
    // The notice reaches the manager while the try's answer (the lock, taken) is on its
    // way; the acquire is told held after it, and no check follows.
    let noticed_before_reply = c.steps.windows(2).any(|w| {
        matches!(
            w[0].0,
            Action::Deliver {
                msg: Msg::Released { .. },
                ..
            }
        ) && w[0].1.clients.iter().any(|cl| {
            matches!(
                cl.phase,
                Phase::Trying {
                    answer: Some(TryAnswer::Acquired(_)),
                    ..
                }
            )
        })
    });
    assert!(noticed_before_reply);
}

#[test]
fn as_written_an_operators_release_that_hands_over_tells_the_old_holder_nothing() {
    // Notices are checked against replies in flight: only the handover is left.
    let design = Design {
        recheck_after_notice: true,
        ..Design::FIXED
    };
    let Some(c) = counterexample(design) else {
        panic!("the silent handover went unnoticed");
    };
    let at = c
        .steps
        .iter()
        .position(|(a, _)| matches!(a, Action::OperatorRelease(_)))
        .unwrap_or_else(|| panic!("no operator release on the path"));
    let after = &c.steps[at].1;
    assert!(after
        .msgs
        .iter()
        .all(|(_, m)| matches!(m, Msg::Grant { .. })));
    assert!(!after.msgs.is_empty(), "a grant, and no release notice");
}

#[test]
fn as_written_both_paths_are_open() {
    assert!(counterexample(Design::FIXED).is_some());
}
