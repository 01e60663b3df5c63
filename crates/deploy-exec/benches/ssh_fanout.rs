//! SSH fan-out benchmark.
fn main() {}
