//! A small explicit-state explorer: breadth-first over every successor of every state,
//! each state remembered once by a 64-bit fingerprint (the layer being explored and the
//! next are kept packed: `Model::pack`), invariants checked at every state and on every
//! step. Breadth-first order makes the first counterexample of each invariant a
//! shortest one; it is rebuilt from the fingerprints by replaying the model from its
//! initial states.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt::{Debug, Display};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

use foldhash::quality::FixedState;
use std::time::{Duration, Instant};

/// A state machine to explore.
pub trait Model {
    /// One state of the whole system.
    type State: Clone + Eq + Hash + Debug;
    /// What moved it from one state to the next (printed in counterexamples).
    type Action: Clone + Debug + Display;

    /// The initial states.
    fn init(&self) -> Vec<Self::State>;

    /// Every state one action away from `s`, appended to `out` with its action.
    fn successors(&self, s: &Self::State, out: &mut Vec<(Self::Action, Self::State)>);

    /// The invariants that hold of every state: each one `s` breaks is pushed to `out`.
    fn check_state(&self, s: &Self::State, out: &mut Vec<Violation>);

    /// The invariants of one step (what an acquire is told, at the instant it is told):
    /// each one broken is pushed to `out`.
    fn check_step(
        &self,
        from: &Self::State,
        action: &Self::Action,
        to: &Self::State,
        out: &mut Vec<Violation>,
    );

    /// A state in one readable line, for counterexamples.
    fn show(&self, s: &Self::State) -> String;

    /// Appends `s` packed into bytes to `out` (the breadth-first layers hold states
    /// packed: millions of them at once).
    fn pack(&self, s: &Self::State, out: &mut Vec<u8>);

    /// The state that `pack` wrote into `bytes`.
    fn unpack(&self, bytes: &[u8]) -> Self::State;
}

/// One breadth-first layer: states packed end to end.
#[derive(Default)]
struct Layer {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Layer {
    fn push<M: Model>(&mut self, model: &M, s: &M::State) {
        model.pack(s, &mut self.bytes);
        self.ends.push(self.bytes.len());
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get<M: Model>(&self, model: &M, i: usize) -> M::State {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        model.unpack(&self.bytes[start..self.ends[i]])
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The invariant's name (stable: tests match on it).
    pub invariant: &'static str,
    /// What exactly was wrong, in that state.
    pub detail: String,
}

/// A shortest path from an initial state to a state (or step) that breaks an invariant.
#[derive(Debug, Clone)]
pub struct Counterexample<M: Model> {
    /// What broke.
    pub violation: Violation,
    /// The initial state, then each action with the state it led to.
    pub start: M::State,
    /// The steps, in order.
    pub steps: Vec<(M::Action, M::State)>,
}

/// What an exploration found.
#[derive(Debug)]
pub struct Outcome<M: Model> {
    /// Distinct states reached (each counted once).
    pub states: u64,
    /// Steps taken (successors generated, duplicates included).
    pub transitions: u64,
    /// The deepest breadth-first level reached.
    pub depth: usize,
    /// Wall time of the exploration.
    pub elapsed: Duration,
    /// The first (shortest) counterexample of each invariant that broke, in the order found.
    pub violations: Vec<Counterexample<M>>,
    /// Whether every reachable state was explored (no limit ended it early).
    pub complete: bool,
}

impl<M: Model> Outcome<M> {
    /// The counterexample of `invariant`, if it broke.
    pub fn violation(&self, invariant: &str) -> Option<&Counterexample<M>> {
        self.violations
            .iter()
            .find(|c| c.violation.invariant == invariant)
    }
}

/// A hasher for keys that are already fingerprints.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Seen = HashMap<u64, u64, BuildHasherDefault<PassThrough>>;

/// A state's fingerprint (foldhash's quality hasher with a fixed seed: the same in every
/// run).
fn fingerprint<S: Hash>(s: &S) -> u64 {
    FixedState::with_seed(0x6269_646c_6f63_6b21).hash_one(s)
}

/// How far to explore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// End at the first broken invariant.
    pub stop_at_first: bool,
    /// End once this invariant broke.
    pub stop_at: Option<&'static str>,
    /// End once this many states were found (the outcome then says `complete: false`).
    pub max_states: u64,
    /// Explore on past a broken invariant (to find witnesses of reachability; by default
    /// a state or step that breaks an invariant is a dead end).
    pub past_violations: bool,
}

impl Limits {
    /// Whether to end, with `found` broken so far.
    fn done<M: Model>(&self, found: &[Found<M>]) -> bool {
        let named = |n: &str| found.iter().any(|f| f.violation.invariant == n);
        (self.stop_at_first && !found.is_empty()) || self.stop_at.is_some_and(named)
    }

    /// Everything: every invariant's first counterexample, every reachable state.
    pub const ALL: Limits = Limits {
        stop_at_first: false,
        stop_at: None,
        max_states: u64::MAX,
        past_violations: false,
    };
}

/// A broken invariant as found: the fingerprint of the state it was found at, and for a
/// broken step, that step.
struct Found<M: Model> {
    violation: Violation,
    at: u64,
    step: Option<(M::Action, M::State)>,
}

/// Records each invariant in `broken` that is broken for the first time (breadth first:
/// along a shortest path), and empties `broken`.
fn record<M: Model>(
    found: &mut Vec<Found<M>>,
    broken: &mut Vec<Violation>,
    at: u64,
    step: Option<(&M::Action, &M::State)>,
) {
    for violation in broken.drain(..) {
        if !found
            .iter()
            .any(|f| f.violation.invariant == violation.invariant)
        {
            let step = step.map(|(a, s)| (a.clone(), s.clone()));
            found.push(Found {
                violation,
                at,
                step,
            });
        }
    }
}

/// Explores every state of `model` reachable from its initial states, breadth first.
///
/// A state that breaks an invariant is recorded (the first, shortest, counterexample of
/// each invariant) and, unless `limits.past_violations`, not explored further.
pub fn explore<M: Model>(model: &M, limits: Limits) -> Outcome<M> {
    let started = Instant::now();
    // Each state's fingerprint, with its parent's (an initial state is its own parent).
    let mut seen = Seen::default();
    let mut found: Vec<Found<M>> = Vec::new();
    let mut broken = Vec::new();
    let mut layer = Layer::default();
    for s in model.init() {
        let fp = fingerprint(&s);
        if seen.insert(fp, fp).is_none() {
            model.check_state(&s, &mut broken);
            let bad = !broken.is_empty();
            record(&mut found, &mut broken, fp, None);
            if !bad || limits.past_violations {
                layer.push(model, &s);
            }
        }
    }
    let (mut transitions, mut depth) = (0u64, 0usize);
    let mut complete = true;
    let mut next = Layer::default();
    let mut succ = Vec::new();
    'levels: while layer.len() > 0 {
        if limits.done(&found) {
            complete = false;
            break;
        }
        for i in 0..layer.len() {
            let s = layer.get(model, i);
            let parent = fingerprint(&s);
            model.successors(&s, &mut succ);
            transitions += succ.len() as u64;
            for (a, t) in succ.drain(..) {
                model.check_step(&s, &a, &t, &mut broken);
                if !broken.is_empty() {
                    record(&mut found, &mut broken, parent, Some((&a, &t)));
                    if limits.done(&found) {
                        complete = false;
                        break 'levels;
                    }
                    if !limits.past_violations {
                        continue;
                    }
                }
                let fp = fingerprint(&t);
                let Entry::Vacant(slot) = seen.entry(fp) else {
                    continue;
                };
                slot.insert(parent);
                model.check_state(&t, &mut broken);
                if broken.is_empty() {
                    next.push(model, &t);
                    continue;
                }
                record(&mut found, &mut broken, fp, None);
                if limits.done(&found) {
                    complete = false;
                    break 'levels;
                }
                if limits.past_violations {
                    next.push(model, &t);
                }
            }
        }
        depth += 1;
        std::mem::swap(&mut layer, &mut next);
        next.clear();
        if seen.len() as u64 >= limits.max_states && layer.len() > 0 {
            complete = false;
            break;
        }
    }
    let violations = found
        .into_iter()
        .map(|f| rebuild(model, &seen, f.violation, f.at, f.step))
        .collect();
    Outcome {
        states: seen.len() as u64,
        transitions,
        depth,
        elapsed: started.elapsed(),
        violations,
        complete,
    }
}

/// The path to the state fingerprinted `at` (then `step`, for a broken step), replayed
/// from the initial states along the recorded parents.
fn rebuild<M: Model>(
    model: &M,
    seen: &Seen,
    violation: Violation,
    at: u64,
    step: Option<(M::Action, M::State)>,
) -> Counterexample<M> {
    let mut chain = vec![at];
    let mut fp = at;
    while let Some(&parent) = seen.get(&fp) {
        if parent == fp {
            break;
        }
        chain.push(parent);
        fp = parent;
    }
    chain.reverse();
    let inits = model.init();
    // A 64-bit fingerprint collision (odds about n^2 / 2^65 for n states) could break the
    // replay: the path then ends where it broke, and says so.
    let Some(start) = inits.iter().find(|s| fingerprint(s) == chain[0]).cloned() else {
        let start = inits.into_iter().next();
        return Counterexample {
            violation: lost(violation),
            start: start.unwrap_or_else(|| unreachable!("a violation needs a state")),
            steps: Vec::new(),
        };
    };
    let mut steps = Vec::new();
    let mut current = start.clone();
    let mut succ = Vec::new();
    for want in &chain[1..] {
        model.successors(&current, &mut succ);
        let Some((a, t)) = succ.drain(..).find(|(_, t)| fingerprint(t) == *want) else {
            return Counterexample {
                violation: lost(violation),
                start,
                steps,
            };
        };
        current = t.clone();
        steps.push((a, t));
    }
    steps.extend(step);
    Counterexample {
        violation,
        start,
        steps,
    }
}

fn lost(mut v: Violation) -> Violation {
    v.detail
        .push_str(" (the path could not be replayed: a fingerprint collision)");
    v
}

impl<M: Model> Counterexample<M> {
    /// The path, one numbered line per step, with the state it led to.
    pub fn render(&self, model: &M) -> String {
        let mut out = format!(
            "invariant broken: {}\n  {}\n   0. (start)\n      {}\n",
            self.violation.invariant,
            self.violation.detail,
            model.show(&self.start)
        );
        for (i, (a, s)) in self.steps.iter().enumerate() {
            out.push_str(&format!("  {:2}. {a}\n      {}\n", i + 1, model.show(s)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two counters a and b, each step adds 1 to one of them (up to 3); the invariant
    /// "a + b < 4" breaks first at depth 4, and "a != 2 or b != 1" at depth 3.
    struct Counters;

    impl Model for Counters {
        type State = (u8, u8);
        type Action = &'static str;

        fn init(&self) -> Vec<(u8, u8)> {
            vec![(0, 0)]
        }

        fn successors(&self, s: &(u8, u8), out: &mut Vec<(&'static str, (u8, u8))>) {
            if s.0 < 3 {
                out.push(("a+1", (s.0 + 1, s.1)));
            }
            if s.1 < 3 {
                out.push(("b+1", (s.0, s.1 + 1)));
            }
        }

        fn check_state(&self, s: &(u8, u8), out: &mut Vec<Violation>) {
            if s.0 + s.1 >= 4 {
                out.push(Violation {
                    invariant: "sum",
                    detail: format!("{s:?}"),
                });
            }
            if *s == (2, 1) {
                out.push(Violation {
                    invariant: "not_2_1",
                    detail: format!("{s:?}"),
                });
            }
        }

        fn check_step(&self, _: &(u8, u8), _: &&str, _: &(u8, u8), _: &mut Vec<Violation>) {}

        fn show(&self, s: &(u8, u8)) -> String {
            format!("{s:?}")
        }

        fn pack(&self, s: &(u8, u8), out: &mut Vec<u8>) {
            out.extend([s.0, s.1]);
        }

        fn unpack(&self, bytes: &[u8]) -> (u8, u8) {
            (bytes[0], bytes[1])
        }
    }

    #[test]
    fn finds_the_shortest_counterexample_of_each_invariant_and_replays_it() {
        let out = explore(&Counters, Limits::ALL);
        let first = out.violation("not_2_1").expect("reached");
        assert_eq!(first.steps.len(), 3);
        assert_eq!(first.steps.last().map(|s| s.1), Some((2, 1)));
        let sum = out.violation("sum").expect("reached");
        assert_eq!(sum.steps.len(), 4, "{}", sum.render(&Counters));
        // Every path step is a real successor of the one before.
        let mut at = sum.start;
        for (a, t) in &sum.steps {
            let mut succ = Vec::new();
            Counters.successors(&at, &mut succ);
            assert!(succ.contains(&(*a, *t)));
            at = *t;
        }
        // States past a violation are not explored: (3,1), (1,3), ... are never reached.
        assert!(out.complete);
        assert_eq!(
            out.states, 13,
            "the 10 states with a + b < 4, and (2,2) (3,1) (1,3)"
        );
    }

    #[test]
    fn stops_at_the_first_violation_or_the_state_limit() {
        let first = explore(
            &Counters,
            Limits {
                stop_at_first: true,
                ..Limits::ALL
            },
        );
        assert_eq!(first.violations.len(), 1);
        assert!(!first.complete);
        let capped = explore(
            &Counters,
            Limits {
                max_states: 3,
                ..Limits::ALL
            },
        );
        assert!(!capped.complete);
    }
}
