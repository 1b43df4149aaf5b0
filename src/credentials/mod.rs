//! Credentials: where each security policy's secret material comes from and how it stays fresh.

pub mod static_key;

pub use static_key::{KeyState, StaticKeys};
