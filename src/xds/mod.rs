//! xDS: the resource cache and the ADS gRPC service that serves it.

pub mod cache;
pub mod identity;
pub mod resource;
pub mod server;
pub mod status;
pub mod token;

pub use cache::{Cache, GatewayConfig, NodeIdentity, State, TypeSet};
pub use resource::{Resource, type_url};
pub use server::AdsService;
pub use status::Registry;
