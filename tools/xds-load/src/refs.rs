//! What a resource makes Envoy ask for next, read from the decoded resource as Envoy reads it:
//! a cluster's SDS secrets and ECDS configs, a listener's RDS route configs and ECDS configs.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{TransportSocket, data_source, transport_socket};
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::extensions::filters::http::credential_injector::v3::CredentialInjector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager::RouteSpecifier, http_filter,
};
use envoy_types::pb::envoy::extensions::http::injected_credentials::generic::v3::Generic;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, Secret, UpstreamTlsContext,
    common_tls_context::ValidationContextType, secret,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use std::collections::BTreeSet;

/// xDS type URLs, in the order Envoy subscribes to them.
pub mod type_url {
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    pub const EXTENSION_CONFIG: &str =
        "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
}

const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const ANY_PREFIX: &str = "type.googleapis.com/";

/// Names one resource (or one response) makes Envoy subscribe to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Refs {
    pub secrets: BTreeSet<String>,
    pub extension_configs: BTreeSet<String>,
    pub route_configs: BTreeSet<String>,
}

/// Decodes `any` as `M` when its type URL says it is one.
fn decode<M: Message + Default + prost::Name>(any: &Any) -> Option<M> {
    let name = any.type_url.strip_prefix(ANY_PREFIX)?;
    (name == M::full_name())
        .then(|| M::decode(any.value.as_slice()).ok())
        .flatten()
}

/// Adds what `cluster` references: secrets of its TLS context and credential injectors, and the
/// ECDS configs of its upstream HTTP filters.
pub fn cluster(cluster: &Cluster, refs: &mut Refs) {
    if let Some(socket) = &cluster.transport_socket {
        tls_socket(socket, refs);
    }
    let Some(options) = cluster
        .typed_extension_protocol_options
        .get(HTTP_PROTOCOL_OPTIONS)
        .and_then(decode::<HttpProtocolOptions>)
    else {
        return;
    };
    for filter in &options.http_filters {
        http_filter(filter, refs);
    }
}

/// Adds what `listener` references: each HTTP connection manager's RDS route config and the
/// ECDS configs of its HTTP filters, and SDS secrets of downstream TLS.
pub fn listener(listener: &Listener, refs: &mut Refs) {
    let chains = listener
        .filter_chains
        .iter()
        .chain(listener.default_filter_chain.as_ref());
    for chain in chains {
        if let Some(socket) = &chain.transport_socket {
            tls_socket(socket, refs);
        }
        for network_filter in &chain.filters {
            let Some(filter::ConfigType::TypedConfig(any)) = &network_filter.config_type else {
                continue;
            };
            let Some(hcm) = decode::<HttpConnectionManager>(any) else {
                continue;
            };
            if let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier {
                refs.route_configs.insert(rds.route_config_name.clone());
            }
            for filter in &hcm.http_filters {
                http_filter(filter, refs);
            }
        }
    }
}

fn http_filter(filter: &HttpFilter, refs: &mut Refs) {
    match &filter.config_type {
        // Envoy asks ECDS for the filter's own name.
        Some(http_filter::ConfigType::ConfigDiscovery(_)) => {
            refs.extension_configs.insert(filter.name.clone());
        }
        Some(http_filter::ConfigType::TypedConfig(any)) => {
            let secret = decode::<CredentialInjector>(any)
                .and_then(|injector| injector.credential)
                .and_then(|credential| credential.typed_config)
                .and_then(|any| decode::<Generic>(&any))
                .and_then(|generic| generic.credential);
            if let Some(sds) = secret {
                refs.secrets.insert(sds.name);
            }
        }
        None => {}
    }
}

fn tls_socket(socket: &TransportSocket, refs: &mut Refs) {
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &socket.config_type else {
        return;
    };
    let common = decode::<UpstreamTlsContext>(any)
        .and_then(|c| c.common_tls_context)
        .or_else(|| decode::<DownstreamTlsContext>(any).and_then(|c| c.common_tls_context));
    if let Some(common) = common {
        tls_context(&common, refs);
    }
}

fn tls_context(common: &CommonTlsContext, refs: &mut Refs) {
    for sds in &common.tls_certificate_sds_secret_configs {
        refs.secrets.insert(sds.name.clone());
    }
    match &common.validation_context_type {
        Some(ValidationContextType::ValidationContextSdsSecretConfig(sds)) => {
            refs.secrets.insert(sds.name.clone());
        }
        Some(ValidationContextType::CombinedValidationContext(combined)) => {
            if let Some(sds) = &combined.validation_context_sds_secret_config {
                refs.secrets.insert(sds.name.clone());
            }
        }
        _ => {}
    }
}

/// Whether the encoded SDS secret `any` is a generic secret whose value is exactly `value`.
pub fn secret_carries(any: &Any, value: &str) -> bool {
    let Some(secret) = decode::<Secret>(any) else {
        return false;
    };
    let Some(secret::Type::GenericSecret(generic)) = secret.r#type else {
        return false;
    };
    match generic.secret.and_then(|data| data.specifier) {
        Some(data_source::Specifier::InlineString(s)) => s == value,
        Some(data_source::Specifier::InlineBytes(b)) => b == value.as_bytes(),
        _ => false,
    }
}

/// Resources as Tessera encodes them, for tests.
#[cfg(test)]
pub mod fixtures {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{
        AggregatedConfigSource, ConfigSource, DataSource, ExtensionConfigSource,
        TypedExtensionConfig, config_source::ConfigSourceSpecifier,
    };
    use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain};
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::Rds;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        GenericSecret, SdsSecretConfig,
    };

    pub fn to_any<M: Message + prost::Name>(m: &M) -> Any {
        Any {
            type_url: M::type_url(),
            value: m.encode_to_vec(),
        }
    }

    fn ads() -> ConfigSource {
        ConfigSource {
            config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
            ..Default::default()
        }
    }

    /// The credential injector filter of secret `secret`.
    pub fn injector(secret: &str) -> HttpFilter {
        let generic = Generic {
            credential: Some(SdsSecretConfig {
                name: secret.to_owned(),
                sds_config: Some(ads()),
            }),
            ..Default::default()
        };
        HttpFilter {
            name: "envoy.filters.http.credential_injector".to_owned(),
            config_type: Some(http_filter::ConfigType::TypedConfig(to_any(
                &CredentialInjector {
                    credential: Some(TypedExtensionConfig {
                        name: "envoy.http.injected_credentials.generic".to_owned(),
                        typed_config: Some(to_any(&generic)),
                    }),
                    ..Default::default()
                },
            ))),
            ..Default::default()
        }
    }

    /// An HTTP filter whose config comes over ECDS as `name`.
    pub fn discovered(name: &str) -> HttpFilter {
        HttpFilter {
            name: name.to_owned(),
            config_type: Some(http_filter::ConfigType::ConfigDiscovery(
                ExtensionConfigSource {
                    config_source: Some(ads()),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }
    }

    /// A cluster with `filters` as its upstream HTTP filters.
    pub fn cluster(name: &str, filters: Vec<HttpFilter>) -> Cluster {
        let options = HttpProtocolOptions {
            http_filters: filters,
            ..Default::default()
        };
        Cluster {
            name: name.to_owned(),
            typed_extension_protocol_options: [(
                HTTP_PROTOCOL_OPTIONS.to_owned(),
                to_any(&options),
            )]
            .into(),
            ..Default::default()
        }
    }

    /// A listener whose connection manager uses route config `route` and `filters`.
    pub fn listener(name: &str, route: &str, filters: Vec<HttpFilter>) -> Listener {
        let hcm = HttpConnectionManager {
            route_specifier: Some(RouteSpecifier::Rds(Rds {
                route_config_name: route.to_owned(),
                config_source: Some(ads()),
            })),
            http_filters: filters,
            ..Default::default()
        };
        Listener {
            name: name.to_owned(),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "envoy.filters.network.http_connection_manager".to_owned(),
                    config_type: Some(filter::ConfigType::TypedConfig(to_any(&hcm))),
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// A generic secret holding `value`.
    pub fn secret(name: &str, value: &str) -> Secret {
        Secret {
            name: name.to_owned(),
            r#type: Some(secret::Type::GenericSecret(GenericSecret {
                secret: Some(DataSource {
                    specifier: Some(data_source::Specifier::InlineString(value.to_owned())),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{self, discovered, injector, secret, to_any};
    use super::*;

    fn names(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_cluster_references_its_injected_secret_and_discovered_filters() {
        let cluster = fixtures::cluster(
            "backend/a",
            vec![injector("credential/a"), discovered("credential/signer")],
        );
        let mut refs = Refs::default();
        super::cluster(&cluster, &mut refs);
        assert_eq!(refs.secrets, names(&["credential/a"]));
        assert_eq!(refs.extension_configs, names(&["credential/signer"]));
        assert!(refs.route_configs.is_empty());
    }

    #[test]
    fn a_listener_references_its_route_config_and_discovered_filters() {
        let listener = fixtures::listener("l", "route/gw/http", vec![discovered("client-keys/gw")]);
        let mut refs = Refs::default();
        super::listener(&listener, &mut refs);
        assert_eq!(refs.route_configs, names(&["route/gw/http"]));
        assert_eq!(refs.extension_configs, names(&["client-keys/gw"]));
        assert!(refs.secrets.is_empty());
    }

    #[test]
    fn a_secret_matches_only_its_exact_value() {
        let any = to_any(&secret("credential/a", "sk-new-1"));
        assert!(secret_carries(&any, "sk-new-1"));
        assert!(!secret_carries(&any, "sk-new-10"));
        assert!(!secret_carries(&any, "sk-new-"));
        let wrong_type = Any {
            type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".to_owned(),
            value: any.value.clone(),
        };
        assert!(!secret_carries(&wrong_type, "sk-new-1"));
    }
}
