//! The one rule for what a credential looks like on the wire: the upstream filter a cluster
//! carries, and the SDS secret or ECDS config (present or failing closed) that fills it.
//!
//! Both ends are derived from the same [`CredentialForm`], so the filter a cluster references
//! and the resource a credential task's value becomes can never disagree.

use super::secret::generic_secret;
use super::signer::{deny_config, signer_config, signer_filter};
use super::{ads, client_auth, http_filter};
use crate::credentials::Material;
use crate::model::{Model, PolicyKind, Provider, SecurityPolicy};
use crate::xds::Resource;
use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::extensions::filters::http::credential_injector::v3::CredentialInjector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use envoy_types::pb::envoy::extensions::http::injected_credentials::generic::v3::Generic;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::SdsSecretConfig;
use std::sync::Arc;

/// How a security policy's credential reaches Envoy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialForm {
    /// An SDS generic secret that the credential injector sends as `header: <prefix><value>`;
    /// `None` means the backend provider's default header or prefix.
    Injected {
        header: Option<String>,
        prefix: Option<String>,
    },
    /// An ECDS SigV4 signer config for `region`.
    Signed { region: String },
    /// A gateway's client keys: the ECDS config of its listener's client-key filter, which
    /// writes the client id into `client_id_header`; `beside_jwt` when JWTs are accepted too.
    ClientKeys {
        client_id_header: String,
        beside_jwt: bool,
    },
}

impl CredentialForm {
    /// The form of `policy`'s credential.
    pub fn of(policy: &SecurityPolicy) -> Self {
        match &policy.kind {
            PolicyKind::ApiKey(key) => Self::Injected {
                header: key.header.clone(),
                prefix: key.prefix.clone(),
            },
            PolicyKind::Azure(_) => Self::Injected {
                header: Some("authorization".to_owned()),
                prefix: Some("Bearer ".to_owned()),
            },
            PolicyKind::Aws(aws) => Self::Signed {
                region: aws.region.clone(),
            },
        }
    }
}

/// Every credential of `model` with its form, by the name it is published under: the
/// policies', then each gateway's client keys.
pub fn forms(model: &Model) -> impl Iterator<Item = (String, CredentialForm)> + '_ {
    let policies = model
        .policies
        .values()
        .map(|p| (p.name.clone(), CredentialForm::of(p)));
    let gateways = model.gateways.values().filter_map(|g| {
        let auth = g.client_auth.as_ref().filter(|a| a.api_keys.is_some())?;
        Some((g.client_keys_credential(), client_auth::keys_form(auth)))
    });
    policies.chain(gateways)
}

/// The upstream filter that attaches credential `name` to a backend of `provider`.
pub fn filter(name: &str, form: &CredentialForm, provider: Provider) -> HttpFilter {
    match form {
        CredentialForm::Injected { header, prefix } => {
            let (default_header, default_prefix) = provider.api_key_header();
            injector(
                name,
                header.as_deref().unwrap_or(default_header),
                prefix.as_deref().unwrap_or(default_prefix),
            )
        }
        CredentialForm::Signed { .. } => signer_filter(name),
        CredentialForm::ClientKeys { .. } => client_auth::keys_filter(name, form),
    }
}

/// The resource credential `name` is served as: its material, or with none the form that fails
/// closed (an empty secret: Envoy answers 401; the RBAC deny config: 403; no client keys: 401). Material of another
/// form than `form` cannot be served either, so it fails closed too.
pub fn resource(name: &str, form: &CredentialForm, material: Option<&Material>) -> Arc<Resource> {
    match (form, material) {
        (CredentialForm::Injected { .. }, Some(Material::ApiKey(v) | Material::Bearer(v))) => {
            generic_secret(name, Some(v))
        }
        (CredentialForm::Signed { region }, Some(Material::Aws(keys))) => {
            signer_config(name, region, keys)
        }
        (CredentialForm::ClientKeys { .. }, Some(Material::ClientKeys(keys))) => {
            client_auth::keys_config(name, form, Some(keys))
        }
        (CredentialForm::Injected { .. }, _) => generic_secret(name, None),
        (CredentialForm::Signed { .. }, _) => deny_config(name),
        (CredentialForm::ClientKeys { .. }, _) => client_auth::keys_config(name, form, None),
    }
}

/// Injects the SDS secret `name` as `header: <prefix><value>`; a missing or empty secret makes
/// Envoy answer 401 instead of forwarding.
fn injector(name: &str, header: &str, prefix: &str) -> HttpFilter {
    let generic = Generic {
        credential: Some(SdsSecretConfig {
            name: name.to_owned(),
            sds_config: Some(ads()),
        }),
        header: header.to_owned(),
        header_value_prefix: prefix.to_owned(),
    };
    http_filter(
        "envoy.filters.http.credential_injector",
        &CredentialInjector {
            // A client-sent credential must never win over the platform's.
            overwrite: true,
            allow_request_without_credential: false,
            credential: Some(TypedExtensionConfig {
                name: "envoy.http.injected_credentials.generic".to_owned(),
                typed_config: Some(crate::xds::resource::to_any(&generic)),
            }),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AwsKeys, SecretString};
    use crate::xds::resource::type_url;

    #[test]
    fn every_form_fails_closed_without_matching_material() {
        let injected = CredentialForm::Injected {
            header: None,
            prefix: None,
        };
        let signed = CredentialForm::Signed {
            region: "us-east-1".into(),
        };
        let key = Material::ApiKey(SecretString::new("sk-1"));
        let keys = Material::Aws(AwsKeys {
            access_key_id: "AKIA1".into(),
            secret_access_key: SecretString::new("s"),
            session_token: None,
        });
        let empty = resource("c", &injected, None);
        assert_eq!(empty.any.type_url, type_url::SECRET);
        assert_eq!(empty, generic_secret("c", None));
        assert_ne!(resource("c", &injected, Some(&key)).version, empty.version);
        assert_eq!(resource("c", &injected, Some(&keys)), empty);
        let deny = resource("c", &signed, None);
        assert_eq!(deny.any.type_url, type_url::EXTENSION_CONFIG);
        assert_eq!(deny, deny_config("c"));
        assert_ne!(resource("c", &signed, Some(&keys)).version, deny.version);
        assert_eq!(resource("c", &signed, Some(&key)), deny);
    }

    #[test]
    fn bearer_tokens_and_api_keys_are_the_same_secret() {
        let form = CredentialForm::Injected {
            header: None,
            prefix: None,
        };
        let v = SecretString::new("t");
        assert_eq!(
            resource("c", &form, Some(&Material::Bearer(v.clone()))),
            resource("c", &form, Some(&Material::ApiKey(v)))
        );
    }
}
