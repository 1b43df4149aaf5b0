//! The protobuf descriptors that let `render` print Envoy resources as proto3 JSON.
//!
//! envoy-types ships the descriptors of every Envoy API (`src/generated/types.bin`, 3.3 MB with
//! comments) but does not export them, so Tessera commits the part it needs: the import
//! closure of [`ROOTS`], comments stripped (`envoy.binpb`). After changing [`ROOTS`] or
//! upgrading envoy-types, regenerate it with
//! `TESSERA_UPDATE_DESCRIPTORS=1 cargo test --lib descriptor_set`; that test fails while the
//! committed file differs from what the roots and the locked envoy-types produce.

use prost_reflect::DescriptorPool;
use std::sync::LazyLock;

/// The committed descriptor set.
pub(super) const ENCODED: &[u8] = include_bytes!("envoy.binpb");

/// Messages whose files (and everything they import) the committed set holds: the types
/// Tessera emits, and ones it is likely to emit soon, so a new filter rarely needs a
/// regeneration. A missing type fails rendering with its name and this list's location.
pub const ROOTS: &[&str] = &[
    // Served over ADS.
    "envoy.config.cluster.v3.Cluster",
    "envoy.config.listener.v3.Listener",
    "envoy.config.route.v3.RouteConfiguration",
    "envoy.extensions.transport_sockets.tls.v3.Secret",
    "envoy.config.core.v3.TypedExtensionConfig",
    // Inside those today.
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "envoy.extensions.filters.http.router.v3.Router",
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
    "envoy.extensions.filters.http.credential_injector.v3.CredentialInjector",
    "envoy.extensions.http.injected_credentials.generic.v3.Generic",
    "envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec",
    "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
    "envoy.extensions.filters.http.aws_request_signing.v3.AwsRequestSigning",
    "envoy.extensions.filters.http.rbac.v3.RBAC",
    // Likely soon: client access, model routing, fault handling, observability.
    "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
    "envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
    "envoy.extensions.common.matching.v3.ExtensionWithMatcher",
    "envoy.extensions.filters.common.matcher.action.v3.SkipFilter",
    "envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
    "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
    "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
    "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
    "envoy.extensions.filters.http.lua.v3.Lua",
    "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
    "envoy.extensions.filters.http.header_to_metadata.v3.Config",
    "envoy.extensions.filters.http.json_to_metadata.v3.JsonToMetadata",
    "envoy.extensions.filters.http.set_metadata.v3.Config",
    "envoy.extensions.filters.http.buffer.v3.Buffer",
    "envoy.extensions.http.injected_credentials.oauth2.v3.OAuth2",
    "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
    "envoy.extensions.access_loggers.file.v3.FileAccessLog",
    // CSDS and the discovery protocol itself.
    "envoy.service.status.v3.ClientStatusResponse",
    "envoy.service.discovery.v3.DeltaDiscoveryResponse",
];

static POOL: LazyLock<Result<DescriptorPool, String>> = LazyLock::new(|| {
    let mut pool = DescriptorPool::decode(ENCODED).map_err(|e| e.to_string())?;
    // Types Tessera encodes itself because envoy-types does not generate them.
    pool.add_file_descriptor_proto(crate::translate::model_routing::priority_group::descriptor())
        .map_err(|e| e.to_string())?;
    Ok(pool)
});

/// The pool decoded from the committed set; an error only if that file is corrupt.
pub fn pool() -> Result<&'static DescriptorPool, String> {
    POOL.as_ref().map_err(Clone::clone)
}

/// Filters a full descriptor set (envoy-types' `types.bin`) down to the import closure of
/// `roots`, without source comments; files keep their order (dependencies first) and their
/// extension options (`udpa.annotations.sensitive` drives redaction).
#[cfg(test)]
pub fn closure(full: &[u8], roots: &[&str]) -> Result<Vec<u8>, String> {
    use prost::Message as _;
    use prost_reflect::{DynamicMessage, FileDescriptor};
    use std::collections::BTreeSet;

    let pool = DescriptorPool::decode(full).map_err(|e| e.to_string())?;
    let mut wanted = BTreeSet::new();
    let mut stack: Vec<FileDescriptor> = Vec::new();
    for root in roots {
        let message = pool
            .get_message_by_name(root)
            .ok_or_else(|| format!("{root} is not in the full descriptor set"))?;
        stack.push(message.parent_file());
    }
    while let Some(file) = stack.pop() {
        if wanted.insert(file.name().to_owned()) {
            stack.extend(file.dependencies());
        }
    }
    let file_proto = pool
        .get_message_by_name("google.protobuf.FileDescriptorProto")
        .ok_or("google/protobuf/descriptor.proto is not in the full descriptor set")?;
    let mut set = Vec::new();
    for file in pool.files().filter(|f| wanted.contains(f.name())) {
        // Decoded generically so that options the descriptor types do not model survive.
        let mut raw = DynamicMessage::decode(file_proto.clone(), file.encode_to_vec().as_slice())
            .map_err(|e| format!("{}: {e}", file.name()))?;
        raw.clear_field_by_name("source_code_info");
        prost::encoding::bytes::encode(1, &raw.encode_to_vec(), &mut set);
    }
    Ok(set)
}
