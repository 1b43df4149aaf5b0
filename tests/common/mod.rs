//! Kept for tests written against the old `mod common;`: the harness is now the
//! `tests/harness` crate (`use harness::*;`), compiled once for every test binary.

pub use harness::*;
