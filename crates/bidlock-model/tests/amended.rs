//! The exhaustive check: the protocol of docs/HANDOVER.md, with the two amendments the
//! model found it needs (`Design::AMENDED`), keeps every invariant in every state reachable
//! within the bounds. `BIDLOCK_MODEL_BOUND=long` runs the long bounds.

use bidlock_model::explore::{explore, Limits};
use bidlock_model::{Bounds, Design, HandoverModel};

#[test]
fn the_amended_handover_protocol_keeps_every_invariant() {
    let set = std::env::var("BIDLOCK_MODEL_BOUND").unwrap_or_else(|_| "short".into());
    let (mut states, mut seconds) = (0, 0.0);
    for bounds in Bounds::from_env() {
        let model = HandoverModel::new(Design::AMENDED, bounds);
        let out = explore(&model, Limits::ALL);
        println!(
            "{} | {}\n  {} states, {} transitions, depth {}, {:.1?}",
            Design::AMENDED,
            model.bounds,
            out.states,
            out.transitions,
            out.depth,
            out.elapsed
        );
        for c in &out.violations {
            println!("{}", c.render(&model));
        }
        assert!(out.violations.is_empty(), "an invariant broke (above)");
        assert!(out.complete);
        // Not vacuous: every scenario has thousands of states and goes 20+ steps deep.
        assert!(
            out.states > 10_000 && out.depth > 20,
            "{} states",
            out.states
        );
        states += out.states;
        seconds += out.elapsed.as_secs_f64();
    }
    println!("{set} bounds: {states} states in all, {seconds:.1} s");
}
