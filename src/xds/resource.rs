//! Encoded xDS resources: encoded once, versioned by content, shared by every stream.

use envoy_types::pb::google::protobuf::Any;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Type URLs Tessera serves, in the order a push walks them: a cluster's secret and extension
/// config go out right after the cluster, the listener after its clusters, routes last.
pub mod type_url {
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    pub const EXTENSION_CONFIG: &str =
        "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

    /// Every served type, in push order.
    pub const ALL: [&str; 5] = [CLUSTER, EXTENSION_CONFIG, SECRET, LISTENER, ROUTE];

    /// Types Envoy subscribes to as a wildcard (all resources of its gateway).
    pub fn is_wildcard(type_url: &str) -> bool {
        type_url == CLUSTER || type_url == LISTENER
    }

    /// Types that carry credentials and so are only sent to nodes that reference them.
    pub fn carries_credentials(type_url: &str) -> bool {
        type_url == SECRET || type_url == EXTENSION_CONFIG
    }

    /// A short name for logs and metrics.
    pub fn short(type_url: &str) -> &'static str {
        match type_url {
            CLUSTER => "cds",
            EXTENSION_CONFIG => "ecds",
            SECRET => "sds",
            LISTENER => "lds",
            ROUTE => "rds",
            _ => "unknown",
        }
    }
}

/// One named resource, encoded; its version is a hash of the encoded bytes.
#[derive(Clone, PartialEq)]
pub struct Resource {
    pub name: String,
    pub version: String,
    pub any: Any,
}

// The encoded bytes of a secret carry its value: never print them.
impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resource")
            .field("name", &self.name)
            .field("type_url", &self.any.type_url)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Resource {
    /// Encodes `message` once; deterministic for the messages Tessera builds (no multi-entry maps).
    pub fn new<M: prost::Message + prost::Name>(name: impl Into<String>, message: &M) -> Arc<Self> {
        let value = message.encode_to_vec();
        let version = short_hash([value.as_slice()]);
        Arc::new(Self {
            name: name.into(),
            version,
            any: Any {
                type_url: M::type_url(),
                value,
            },
        })
    }
}

/// Wraps a message in `Any` (for typed_config fields).
pub fn to_any<M: prost::Message + prost::Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// First 16 hex digits of the SHA-256 of the concatenated parts (each length-prefixed).
pub fn short_hash<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The SotW version of a set of resources: a hash of their names and versions.
pub fn set_version<'a>(resources: impl IntoIterator<Item = &'a Arc<Resource>>) -> String {
    let mut parts: Vec<&[u8]> = Vec::new();
    for r in resources {
        parts.push(r.name.as_bytes());
        parts.push(r.version.as_bytes());
    }
    short_hash(parts)
}
