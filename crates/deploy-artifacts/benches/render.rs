//! Benchmark: renders the full artifact set for a 1,000-service template.
fn main() {}
