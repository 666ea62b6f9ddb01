//! Witness paths, shared by the exhaustive checks (`amended.rs`, `current.rs`): the model
//! with each goal (a step worth reaching) reported as a "violation" named after it, so that
//! the explorer's shortest path to it is printed like a counterexample, and a check that
//! never reached a handover cannot pass vacuously.

use bidlock_model::explore::{explore, Limits, Model, Violation};
use bidlock_model::state::{Phase, State};
use bidlock_model::{Action, Bounds, Design, HandoverModel};

/// A step worth reaching: its name, and whether `from --action--> to` is one.
pub type Goal = (&'static str, fn(&State, &Action, &State) -> bool);

/// The model, with each goal reached reported as a "violation" named after the goal (a
/// witness path), next to the invariants' own.
pub struct Witness {
    pub model: HandoverModel,
    pub goals: Vec<Goal>,
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

/// The acquire told "held" by this step, if one was.
pub fn told_held(from: &State, to: &State) -> Option<usize> {
    (0..to.clients.len()).find(|&c| {
        matches!(to.clients[c].phase, Phase::Held { .. })
            && !matches!(from.clients[c].phase, Phase::Held { .. })
    })
}

/// Whether this step is the answer of acquire `c` that tells it "held", the answer being
/// one `answer` accepts (read from the phase before the step).
pub fn held_after(from: &State, a: &Action, to: &State, answer: fn(&Phase) -> bool) -> bool {
    let Action::Answer(c) = *a else { return false };
    told_held(from, to) == Some(usize::from(c)) && answer(&from.clients[usize::from(c)].phase)
}

/// Explores each design within each of `bounds`, printing bounds, states, transitions,
/// depth and time; asserts that no invariant breaks but the `known` ones (each of which
/// must break somewhere: a known finding that no longer shows is news), that each
/// exploration is complete (past every violation: the other invariants are checked in
/// every state, after a known finding too), and that every goal is reached in some run
/// (`BIDLOCK_MODEL_WITNESSES=1` prints each goal's path). Returns the states in all.
pub fn check(designs: &[Design], bounds: &[Bounds], goals: &[Goal], known: &[&str]) -> u64 {
    let mut missing: Vec<&str> = goals.iter().map(|g| g.0).collect();
    let mut unseen: Vec<&str> = known.to_vec();
    let (mut states, mut seconds) = (0, 0.0);
    let runs = designs
        .iter()
        .flat_map(|d| bounds.iter().map(move |b| (*d, b.clone())));
    for (design, bounds) in runs {
        let witness = Witness {
            model: HandoverModel::new(design, bounds),
            goals: goals.to_vec(),
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
                None if known.contains(&name) => {
                    unseen.retain(|k| *k != name);
                    println!("known finding: {}", c.render(&witness));
                }
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
    println!("in all: {states} states, {seconds:.1} s");
    assert!(missing.is_empty(), "never reached: {missing:?}");
    assert!(
        unseen.is_empty(),
        "known findings that no longer break: {unseen:?}"
    );
    states
}
