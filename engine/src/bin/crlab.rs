//! The `crlab` command line.
fn main() {}
