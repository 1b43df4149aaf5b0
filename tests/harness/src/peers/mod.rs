//! The peers Tessera and Envoy talk to in tests, each a process from `testenv/`.

mod aws;
mod entra;
mod mock;
mod oidc;

pub use aws::AwsPeers;
pub use entra::{Entra, verify_jwt};
pub use mock::Mock;
pub use oidc::Issuer;
