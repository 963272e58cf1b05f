//! `timecard`: the operator's entry point (work in progress).
fn main() {}
