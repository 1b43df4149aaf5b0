//! AWS SigV4 signing delivered by ECDS, and the deny config that replaces it at expiry.
//!
//! The signer accepts no SDS secret, so its whole config is an ECDS resource named after the
//! credential. Failing closed is a swap to an RBAC deny-all config of the same name: an empty
//! credential is NACKed, no credential provider means Envoy's own host credentials, and a
//! removed resource is ignored (docs/envoy-ecds-fail-closed.md).

use super::ads;
use crate::model::AwsKeys;
use crate::xds::Resource;
use crate::xds::resource::to_any;
use envoy_types::pb::envoy::config::core::v3::{ExtensionConfigSource, TypedExtensionConfig};
use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, Rbac as RbacRules, permission, principal, rbac,
};
use envoy_types::pb::envoy::extensions::common::aws::v3::{
    AwsCredentialProvider, InlineCredentialProvider,
};
use envoy_types::pb::envoy::extensions::filters::http::aws_request_signing::v3::AwsRequestSigning;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use std::sync::Arc;

/// The service Bedrock requests are signed for.
pub const BEDROCK_SERVICE: &str = "bedrock";

/// The upstream filter entry: its config arrives by ECDS. Until it does (or if it is lost),
/// the default is deny, so a request is never forwarded unsigned or signed with Envoy's own
/// host credentials.
pub fn signer_filter(name: &str) -> HttpFilter {
    HttpFilter {
        name: name.to_owned(),
        config_type: Some(http_filter::ConfigType::ConfigDiscovery(
            ExtensionConfigSource {
                config_source: Some(ads()),
                default_config: Some(to_any(&deny_all())),
                apply_default_config_without_warming: true,
                type_urls: vec![
                    <AwsRequestSigning as prost::Name>::type_url(),
                    <Rbac as prost::Name>::type_url(),
                ],
            },
        )),
        ..Default::default()
    }
}

/// The ECDS resource that signs with `keys`.
pub fn signer_config(name: &str, region: &str, keys: &AwsKeys) -> Arc<Resource> {
    let exact = |v: &str| StringMatcher {
        match_pattern: Some(MatchPattern::Exact(v.to_owned())),
        ..Default::default()
    };
    let signing = AwsRequestSigning {
        service_name: BEDROCK_SERVICE.to_owned(),
        region: region.to_owned(),
        // Headers Envoy or a proxy may add or change after signing.
        match_excluded_headers: vec![
            StringMatcher {
                match_pattern: Some(MatchPattern::Prefix("x-envoy".to_owned())),
                ..Default::default()
            },
            exact("x-request-id"),
            exact("x-forwarded-proto"),
        ],
        credential_provider: Some(AwsCredentialProvider {
            inline_credential: Some(InlineCredentialProvider {
                access_key_id: keys.access_key_id.clone(),
                secret_access_key: keys.secret_access_key.expose().to_owned(),
                session_token: keys
                    .session_token
                    .as_ref()
                    .map(|t| t.expose().to_owned())
                    .unwrap_or_default(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    extension_config(name, to_any(&signing))
}

/// The ECDS resource that refuses every request (403) without contacting the provider.
pub fn deny_config(name: &str) -> Arc<Resource> {
    extension_config(name, to_any(&deny_all()))
}

fn extension_config(
    name: &str,
    typed_config: envoy_types::pb::google::protobuf::Any,
) -> Arc<Resource> {
    let config = TypedExtensionConfig {
        name: name.to_owned(),
        typed_config: Some(typed_config),
    };
    Resource::new(name, &config)
}

fn deny_all() -> Rbac {
    Rbac {
        rules: Some(RbacRules {
            action: rbac::Action::Deny as i32,
            policies: [(
                "credential-unavailable".to_owned(),
                Policy {
                    permissions: vec![Permission {
                        rule: Some(permission::Rule::Any(true)),
                    }],
                    principals: vec![Principal {
                        identifier: Some(principal::Identifier::Any(true)),
                    }],
                    ..Default::default()
                },
            )]
            .into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}
