//! xDS: the resource cache and the ADS gRPC service that serves it.

pub mod cache;
pub mod csds;
pub mod encoded;
pub mod grpc;
pub mod identity;
pub mod limits;
pub mod resource;
pub mod server;
pub mod status;
pub mod transport;

pub use cache::{Cache, GatewayConfig, NodeIdentity, State, TypeSet};
pub use csds::CsdsService;
pub use encoded::Encoded;
pub use grpc::AdsServer;
pub use limits::Limits;
pub use resource::{Resource, type_url};
pub use server::AdsService;
pub use status::Registry;
