//! One module per command family.

pub(crate) mod admin;
pub(crate) mod bench;
pub(crate) mod run;
pub(crate) mod simulate;
pub(crate) mod stats;
