//! One module per command family.

pub(crate) mod admin;
pub(crate) mod run;
pub(crate) mod simulate;
