//! Discovery responses assembled from resources encoded once.
//!
//! A protobuf message is the concatenation of its fields, in any order. Every [`Resource`]
//! keeps its own `resources` entry of a SotW and of a Delta response already encoded
//! ([`Resource::sotw_entry`], [`Resource::delta_entry`]), so a response to ten thousand
//! streams costs each stream a few shared `Bytes` handles and its own nonce, not a protobuf
//! encoding of the whole configuration.

use super::resource::Resource;
use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{DecodeContext, WireType, encode_key, encode_varint, skip_field};
use std::sync::Arc;

// Field numbers of envoy.service.discovery.v3.DiscoveryResponse.
const SOTW_VERSION: u32 = 1;
const SOTW_TYPE_URL: u32 = 4;
const SOTW_NONCE: u32 = 5;
// Field numbers of envoy.service.discovery.v3.DeltaDiscoveryResponse.
const DELTA_SYSTEM_VERSION: u32 = 1;
const DELTA_TYPE_URL: u32 = 4;
const DELTA_NONCE: u32 = 5;
const DELTA_REMOVED: u32 = 6;

/// One discovery response (SotW or Delta) as encoded pieces; written out by copying them.
#[derive(Clone, Default)]
pub struct Encoded {
    chunks: Vec<Bytes>,
    len: usize,
    /// How many resources it carries, for logs and tests.
    resources: usize,
}

impl Encoded {
    /// A SotW `DiscoveryResponse` carrying `resources`.
    pub fn sotw<'a>(
        version: &str,
        type_url: &str,
        nonce: &str,
        resources: impl IntoIterator<Item = &'a Arc<Resource>>,
    ) -> Self {
        let mut head = BytesMut::new();
        put_str(SOTW_VERSION, version, &mut head);
        put_str(SOTW_TYPE_URL, type_url, &mut head);
        put_str(SOTW_NONCE, nonce, &mut head);
        let mut out = Self::default();
        out.push(head.freeze());
        for r in resources {
            out.push(r.sotw_entry.clone());
            out.resources += 1;
        }
        out
    }

    /// A Delta `DeltaDiscoveryResponse` carrying `resources` and removing `removed`.
    pub fn delta<'a>(
        system_version: &str,
        type_url: &str,
        nonce: &str,
        resources: impl IntoIterator<Item = &'a Arc<Resource>>,
        removed: &[String],
    ) -> Self {
        let mut head = BytesMut::new();
        put_str(DELTA_SYSTEM_VERSION, system_version, &mut head);
        put_str(DELTA_TYPE_URL, type_url, &mut head);
        put_str(DELTA_NONCE, nonce, &mut head);
        for name in removed {
            put_field(DELTA_REMOVED, name, &mut head);
        }
        let mut out = Self::default();
        out.push(head.freeze());
        for r in resources {
            out.push(r.delta_entry.clone());
            out.resources += 1;
        }
        out
    }

    fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len();
        self.chunks.push(chunk);
    }

    /// The encoded pieces, in order.
    pub fn into_chunks(self) -> Vec<Bytes> {
        self.chunks
    }

    /// How many resources the response carries.
    pub fn resource_count(&self) -> usize {
        self.resources
    }

    /// The whole encoded message, for decoding in tests and tools.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.len);
        for c in &self.chunks {
            buf.put_slice(c);
        }
        buf.freeze()
    }
}

// The pieces carry secret values (SDS secrets, signer keys): never printed.
impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoded")
            .field("bytes", &self.len)
            .field("resources", &self.resources)
            .finish_non_exhaustive()
    }
}

/// Writes a singular string field; an empty one is left out, as proto3 does.
fn put_str(tag: u32, value: &str, buf: &mut BytesMut) {
    if !value.is_empty() {
        put_field(tag, value, buf);
    }
}

/// Writes one string field (or one element of a repeated one).
fn put_field(tag: u32, value: &str, buf: &mut BytesMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(value.len() as u64, buf);
    buf.put_slice(value.as_bytes());
}

impl prost::Message for Encoded {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for c in &self.chunks {
            buf.put_slice(c);
        }
    }

    // Responses are only ever sent, never received: any input is skipped.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl bytes::Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.len
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse,
    };
    use prost::Message;

    fn secret(name: &str) -> Arc<Resource> {
        Resource::new(
            name,
            &Secret {
                name: name.into(),
                ..Default::default()
            },
        )
    }

    #[test]
    fn a_sotw_response_decodes_as_if_prost_had_encoded_it() {
        let (a, b) = (secret("a"), secret("b"));
        let e = Encoded::sotw("v1", "t", "7", [&a, &b]);
        let decoded = DiscoveryResponse::decode(e.to_bytes()).unwrap();
        let expected = DiscoveryResponse {
            version_info: "v1".into(),
            resources: vec![a.any.clone(), b.any.clone()],
            type_url: "t".into(),
            nonce: "7".into(),
            ..Default::default()
        };
        assert_eq!(decoded, expected);
        assert_eq!(e.encoded_len(), expected.encoded_len());
        assert_eq!(e.resource_count(), 2);
    }

    #[test]
    fn a_delta_response_decodes_with_names_versions_and_removals() {
        let a = secret("a");
        let e = Encoded::delta("sv", "t", "3", [&a], &["gone".to_owned()]);
        let d = DeltaDiscoveryResponse::decode(e.to_bytes()).unwrap();
        assert_eq!(d.system_version_info, "sv");
        assert_eq!(d.nonce, "3");
        assert_eq!(d.type_url, "t");
        assert_eq!(d.removed_resources, vec!["gone".to_owned()]);
        assert_eq!(d.resources.len(), 1);
        assert_eq!(d.resources[0].name, "a");
        assert_eq!(d.resources[0].version, a.version);
        assert_eq!(d.resources[0].resource.as_ref(), Some(&a.any));
    }

    #[test]
    fn debug_output_shows_sizes_not_the_secret_inside() {
        let key = "sk-never-printed-7f3a";
        let r = crate::translate::generic_secret(
            "credential/a",
            Some(&crate::model::SecretString::new(key)),
        );
        let e = Encoded::sotw("v", "t", "1", [&r]);
        assert!(e.to_bytes().windows(key.len()).any(|w| w == key.as_bytes()));
        let shown = format!("{e:?}");
        assert!(!shown.contains(key), "{shown}");
        assert!(shown.contains("resources: 1"), "{shown}");
    }
}
