//! The exhaustive check: the protocol of docs/HANDOVER.md, with the two amendments the
//! model found it needs (`Design::AMENDED`), keeps every invariant in every state reachable
//! within the bounds; and the bounds reach what the check is about (a witness path for
//! each way a lock is handed over and taken up, for the faults and for the operator: a
//! check that never reached a handover would pass vacuously). `BIDLOCK_MODEL_BOUND=long`
//! runs the long bounds, and checks the refined amendment (`Design::AMENDED_REFINED`) too.

use bidlock_model::explore::{explore, Limits, Model, Violation};
use bidlock_model::state::{Phase, RefreshAnswer, Releaser, Req, State, TryAnswer};
use bidlock_model::{Action, Bounds, Design, HandoverModel};

/// A step worth reaching: its name, and whether `from --action--> to` is one.
type Goal = (&'static str, fn(&State, &Action, &State) -> bool);

/// The model, with each goal reached reported as a "violation" named after the goal (a
/// witness path), next to the invariants' own.
struct Witness {
    model: HandoverModel,
    goals: Vec<Goal>,
}

impl Model for Witness {
    type State = State;
    type Action = Action;

    fn init(&self) -> Vec<State> {
        self.model.init()
    }

    fn successors(&self, s: &State, out: &mut Vec<(Action, State)>) {
        self.model.successors(s, out);
    }

    fn check_state(&self, s: &State, out: &mut Vec<Violation>) {
        self.model.check_state(s, out);
    }

    fn check_step(&self, from: &State, a: &Action, to: &State, out: &mut Vec<Violation>) {
        self.model.check_step(from, a, to, out);
        for (name, reached) in &self.goals {
            if reached(from, a, to) {
                out.push(Violation {
                    invariant: name,
                    detail: format!("reached by: {a}"),
                });
            }
        }
    }

    fn show(&self, s: &State) -> String {
        self.model.show(s)
    }

    fn pack(&self, s: &State, out: &mut Vec<u8>) {
        self.model.pack(s, out);
    }

    fn unpack(&self, bytes: &[u8]) -> State {
        self.model.unpack(bytes)
    }
}

fn told_held(from: &State, to: &State) -> Option<usize> {
    (0..to.clients.len()).find(|&c| {
        matches!(to.clients[c].phase, Phase::Held { .. })
            && !matches!(from.clients[c].phase, Phase::Held { .. })
    })
}

fn held_after(from: &State, a: &Action, to: &State, answer: fn(&Phase) -> bool) -> bool {
    let Action::Answer(c) = *a else { return false };
    told_held(from, to) == Some(usize::from(c)) && answer(&from.clients[usize::from(c)].phase)
}

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
    let set = std::env::var("BIDLOCK_MODEL_BOUND").unwrap_or_else(|_| "short".into());
    let designs = if set == "long" {
        vec![Design::AMENDED, Design::AMENDED_REFINED]
    } else {
        vec![Design::AMENDED]
    };
    let goals = goals();
    let mut missing: Vec<&str> = goals.iter().map(|g| g.0).collect();
    let (mut states, mut seconds) = (0, 0.0);
    let runs = designs
        .iter()
        .flat_map(|d| Bounds::from_env().into_iter().map(move |b| (*d, b)));
    for (design, bounds) in runs {
        let witness = Witness {
            model: HandoverModel::new(design, bounds),
            goals: goals.clone(),
        };
        // Goals are not dead ends: explore past them (no invariant breaks, asserted below).
        let limits = Limits {
            past_violations: true,
            ..Limits::ALL
        };
        let out = explore(&witness, limits);
        println!(
            "{design} | {}\n  {} states, {} transitions, depth {}, {:.1?}",
            witness.model.bounds, out.states, out.transitions, out.depth, out.elapsed
        );
        let mut broken = Vec::new();
        for c in &out.violations {
            let name = c.violation.invariant;
            match missing.iter().position(|m| *m == name) {
                Some(i) => {
                    missing.remove(i);
                    if std::env::var_os("BIDLOCK_MODEL_WITNESSES").is_some() {
                        println!("{name}:\n{}", c.render(&witness));
                    }
                }
                None if goals.iter().any(|g| g.0 == name) => {}
                None => {
                    println!("{}", c.render(&witness));
                    broken.push(name);
                }
            }
        }
        assert!(broken.is_empty(), "invariants broken (above): {broken:?}");
        assert!(out.complete);
        states += out.states;
        seconds += out.elapsed.as_secs_f64();
    }
    println!("{set} bounds: {states} states in all, {seconds:.1} s");
    assert!(missing.is_empty(), "never reached: {missing:?}");
}
