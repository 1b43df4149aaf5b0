//! Tessera: an xDS control plane that gives Envoy AI gateways their routes, provider backends
//! and fresh upstream credentials.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod app;
pub mod bootstrap;
pub mod cli;
pub mod credentials;
pub mod model;
pub mod source;
pub mod state;
pub mod state_dir;
pub mod translate;
pub mod untrusted;
pub mod xds;
