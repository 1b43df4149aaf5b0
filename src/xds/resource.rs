//! Encoded xDS resources: encoded once, versioned by content, shared by every stream.

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::Resource as DeltaResource;
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
    /// The name again, shared: what streams keep in their per-name state instead of a copy.
    pub shared_name: Arc<str>,
    pub version: String,
    pub any: Any,
    /// Name and version folded into 64 bits: a set's version is the XOR of its members' keys,
    /// so it is updated in O(1) when one member changes.
    pub set_key: u64,
    /// This resource as one `resources` entry of a SotW `DiscoveryResponse`, encoded.
    pub sotw_entry: Bytes,
    /// This resource as one `resources` entry of a `DeltaDiscoveryResponse`, encoded.
    pub delta_entry: Bytes,
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
        Self::assemble(
            name.into(),
            version,
            Any {
                type_url: M::type_url(),
                value,
            },
        )
    }

    /// A resource with a version chosen by the caller (tests, and versions from elsewhere).
    pub fn from_parts(name: impl Into<String>, version: impl Into<String>, any: Any) -> Arc<Self> {
        Self::assemble(name.into(), version.into(), any)
    }

    /// Encodes the response entries once, for every stream that will send this resource.
    fn assemble(name: String, version: String, any: Any) -> Arc<Self> {
        // Field 2 is `resources` in both DiscoveryResponse and DeltaDiscoveryResponse.
        let sotw_entry = entry(&any);
        let delta_entry = entry(&DeltaResource {
            name: name.clone(),
            version: version.clone(),
            resource: Some(any.clone()),
            ..Default::default()
        });
        let set_key = set_key_of(&name, &version);
        Arc::new(Self {
            shared_name: name.as_str().into(),
            name,
            version,
            any,
            set_key,
            sotw_entry,
            delta_entry,
        })
    }
}

/// `message` encoded as field 2 (tag, length, bytes).
fn entry<M: prost::Message>(message: &M) -> Bytes {
    let mut buf = Vec::with_capacity(message.encoded_len() + 8);
    prost::encoding::message::encode(2, message, &mut buf);
    Bytes::from(buf)
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
        Self::assemble(
            self.name.clone(),
            tag.as_ref()[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            self.any.clone(),
        )
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
    format!("{:016x}", hash64(parts))
}

/// The first 64 bits of the SHA-256 of the concatenated parts (each length-prefixed).
fn hash64<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut first = [0; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The SotW version of a set of resources: the XOR of their [`Resource::set_key`]s, so it
/// depends on names and versions only, not on order, and follows one change in O(1).
pub fn set_version<'a>(resources: impl IntoIterator<Item = &'a Arc<Resource>>) -> String {
    version_of(set_key(resources))
}

/// The set key of a resource named `name` at `version` ([`Resource::set_key`]).
pub fn set_key_of(name: &str, version: &str) -> u64 {
    hash64([name.as_bytes(), version.as_bytes()])
}

/// The XOR of the resources' set keys.
pub fn set_key<'a>(resources: impl IntoIterator<Item = &'a Arc<Resource>>) -> u64 {
    resources.into_iter().fold(0, |acc, r| acc ^ r.set_key)
}

/// The printed form of a set key.
pub fn version_of(set_key: u64) -> String {
    format!("{set_key:016x}")
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
