//! An exhaustive model check of bidlock's handover protocol (docs/HANDOVER.md).
//!
//! (Crate docs: written once the results are in.)

pub mod bounds;
pub mod client;
pub mod design;
pub mod explore;
pub mod invariants;
pub mod model;
pub mod redis;
pub mod show;
pub mod state;
pub mod tidy;

pub use bounds::{Bounds, ClientSpec};
pub use design::Design;
pub use explore::{explore, Counterexample, Model, Outcome, Violation};
pub use model::{Action, HandoverModel};
