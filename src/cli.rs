//! Client commands of the `tessera` binary that talk to a running Tessera.

pub mod status;
