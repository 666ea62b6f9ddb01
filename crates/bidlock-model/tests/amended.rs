//! The exhaustive check of the earlier design: the protocol of docs/HANDOVER.md as it was
//! written before rules 3 and 6 took their present form, with the two amendments the model
//! found it needs (`Design::AMENDED`), keeps every invariant in every state reachable
//! within the bounds; and the bounds reach what the check is about (a witness path for
//! each way a lock is handed over and taken up, for the faults and for the operator: a
//! check that never reached a handover would pass vacuously). In the short bounds only:
//! the long ones check the code as it is now (`current.rs`), which took the amendments up
//! in another form.

mod witness;

use bidlock_model::state::{Phase, RefreshAnswer, Releaser, Req, TryAnswer};
use bidlock_model::{Action, Bounds, Design};
use witness::{held_after, told_held, Goal};

fn goals() -> Vec<Goal> {
    vec![
        ("held by a grant message", |f, a, t| {
            matches!(a, Action::Deliver { .. }) && told_held(f, t).is_some()
        }),
        ("held by a refresh that found the grant", |f, a, t| {
            held_after(f, a, t, |p| {
                matches!(
                    p,
                    Phase::Refreshing {
                        answer: Some(RefreshAnswer::Granted(_)),
                        ..
                    }
                )
            })
        }),
        ("held by a try that found the grant", |f, a, t| {
            held_after(f, a, t, |p| {
                matches!(
                    p,
                    Phase::Trying {
                        answer: Some(TryAnswer::Granted(_)),
                        ..
                    }
                )
            })
        }),
        (
            "a grant taken up too late, released, tried afresh",
            |f, a, t| {
                matches!(a, Action::Deliver { .. })
                    && f.clients.iter().zip(&t.clients).any(|(x, y)| {
                        x.phase == Phase::Queued && matches!(y.phase, Phase::Trying { .. })
                    })
            },
        ),
        ("a refresh that found the tenure over", |f, a, _| {
            let Action::Answer(c) = *a else { return false };
            matches!(
                f.clients[usize::from(c)].phase,
                Phase::Refreshing {
                    answer: Some(RefreshAnswer::Gone),
                    ..
                }
            )
        }),
        ("a handover that skips a dead entry", |f, a, t| {
            matches!(a, Action::RunLate(Req::Release { .. }))
                && f.redis.queue.len() >= 2
                && t.redis
                    .lock
                    .is_some_and(|l| Some(&l.holder) == f.redis.queue.get(1))
        }),
        (
            "a cancelled waiter's background release hands on its grant",
            |f, a, t| {
                matches!(
                    a,
                    Action::RunLate(Req::Release {
                        by: Releaser::Background,
                        ..
                    })
                ) && f
                    .redis
                    .last_grant
                    .is_some_and(|g| f.redis.lock.is_some_and(|l| l.holder == g.0))
                    && t.redis
                        .lock
                        .is_some_and(|l| f.redis.lock.is_some_and(|o| o.holder != l.holder))
            },
        ),
        (
            "a batched answer whose caller left is released",
            |f, a, _| {
                matches!(a, Action::Cancel { batched: true, .. })
                    && f.clients.iter().any(|c| {
                        matches!(
                            c.phase,
                            Phase::Trying {
                                answer: Some(TryAnswer::Acquired(_)),
                                ..
                            }
                        )
                    })
            },
        ),
        (
            "an operator's release hands the lock to a waiter",
            |f, a, t| {
                matches!(a, Action::OperatorRelease(_))
                    && t.redis
                        .lock
                        .is_some_and(|l| f.redis.lock.is_some_and(|o| o.token < l.token))
            },
        ),
        ("a holder learns of an operator's removal", |f, a, t| {
            matches!(a, Action::Deliver { .. } | Action::Check(_))
                && f.clients
                    .iter()
                    .zip(&t.clients)
                    .any(|(x, y)| matches!(x.phase, Phase::Held { .. }) && y.phase == Phase::Done)
        }),
    ]
}

#[test]
fn the_amended_handover_protocol_keeps_every_invariant() {
    witness::check(&[Design::AMENDED], &Bounds::short(), &goals(), &[]);
}
