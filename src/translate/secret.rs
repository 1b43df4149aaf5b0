//! SDS secrets carrying API keys and bearer tokens.

use crate::model::SecretString;
use crate::xds::Resource;
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    GenericSecret, Secret, secret,
};
use std::sync::Arc;

/// A generic secret for the credential injector; an empty value is a revocation (Envoy
/// answers 401 instead of forwarding without a credential).
pub fn generic_secret(name: &str, value: Option<&SecretString>) -> Arc<Resource> {
    let inline = value.map(|v| v.expose().to_owned()).unwrap_or_default();
    let secret = Secret {
        name: name.to_owned(),
        r#type: Some(secret::Type::GenericSecret(GenericSecret {
            secret: Some(DataSource {
                specifier: Some(Specifier::InlineString(inline)),
                ..Default::default()
            }),
            ..Default::default()
        })),
    };
    Resource::new(name, &secret)
}
