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

/// The key of credential resources' versions. A plain content hash of a secret would let
/// anyone who sees versions (every node, logs, `/status`) test guesses of a short key offline;
/// a keyed hash does not.
#[derive(Clone)]
pub struct VersionKey(aws_lc_rs::hmac::Key);

// The key is as sensitive as a credential: never printed.
impl std::fmt::Debug for VersionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VersionKey(<redacted>)")
    }
}

impl VersionKey {
    /// A key from its bytes (see `StateDir::version_key`).
    pub fn new(bytes: &[u8]) -> Self {
        Self(aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            bytes,
        ))
    }
}

impl Resource {
    /// The same resource versioned by a keyed hash (HMAC-SHA256) of its type and bytes, for
    /// resources that carry credentials; the same key gives the same version after a restart.
    pub fn keyed(&self, key: &VersionKey) -> Arc<Self> {
        let mut mac = aws_lc_rs::hmac::Context::with_key(&key.0);
        for part in [self.any.type_url.as_bytes(), self.any.value.as_slice()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        let tag = mac.sign();
        Arc::new(Self {
            name: self.name.clone(),
            version: tag.as_ref()[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            any: self.any.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;

    #[test]
    fn keyed_versions_depend_on_the_key_and_the_content_only() {
        let secret = |name: &str| Secret {
            name: name.into(),
            ..Default::default()
        };
        let r = Resource::new("c", &secret("a"));
        let (k1, k2) = (VersionKey::new(&[1; 32]), VersionKey::new(&[2; 32]));
        let v = r.keyed(&k1);
        assert_eq!(v.any, r.any);
        assert_eq!(v.version, r.keyed(&VersionKey::new(&[1; 32])).version);
        assert_ne!(v.version, r.version, "not the unkeyed content hash");
        assert_ne!(v.version, r.keyed(&k2).version);
        assert_ne!(
            v.version,
            Resource::new("c", &secret("b")).keyed(&k1).version
        );
        assert_eq!(format!("{k1:?}"), "VersionKey(<redacted>)");
    }
}
