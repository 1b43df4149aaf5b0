//! Pure translation: model → Envoy resources, grouped by the gateway whose nodes get them.
//!
//! No I/O and no clock: the same model always yields byte-identical resources and versions,
//! so a restarted Tessera causes no churn in the fleet. Credential values are not an input of
//! [`translate`] (only the names of the secrets the clusters reference are); `credential`
//! turns one credential's current value into the resource that carries it.

pub mod client_auth;
mod cluster;
pub mod credential;
mod listener;
pub(crate) mod model_routing;
pub mod names;
pub mod render;
mod secret;
mod signer;

pub use credential::CredentialForm;
pub use secret::generic_secret;
pub use signer::{deny_config, signer_config};

use crate::model::Model;
use crate::xds::resource::to_any;
use crate::xds::{GatewayConfig, Resource, TypeSet};
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, config_source::ConfigSourceSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Translates every gateway of `model`; the key is the `node.cluster` the gateway serves.
pub fn translate(model: &Model) -> HashMap<String, Arc<GatewayConfig>> {
    model
        .gateways
        .values()
        .map(|gateway| {
            let routes: Vec<_> = model
                .routes
                .values()
                .filter(|r| r.gateway == gateway.name)
                .collect();
            let backend_names: BTreeSet<&str> = routes
                .iter()
                .flat_map(|r| r.rules.iter())
                .flat_map(|rule| rule.backends.iter())
                .map(|b| b.name.as_str())
                .collect();
            let mut clusters = Vec::new();
            let mut credentials = BTreeSet::new();
            for backend in backend_names.iter().filter_map(|n| model.backends.get(*n)) {
                let policy = backend
                    .security_policy
                    .as_ref()
                    .and_then(|p| model.policies.get(p));
                if let Some(p) = policy {
                    credentials.insert(names::credential(&p.name));
                }
                let c = cluster::cluster(backend, policy, gateway);
                clusters.push(Resource::new(c.name.clone(), &c));
            }
            // Client authentication: the client keys' ECDS config and a remote JWKS cluster.
            if gateway
                .client_auth
                .as_ref()
                .is_some_and(|a| a.api_keys.is_some())
            {
                credentials.insert(names::credential(&gateway.client_keys_credential()));
            }
            for c in client_auth::clusters(gateway) {
                clusters.push(Resource::new(c.name.clone(), &c));
            }
            let mut listeners = Vec::new();
            let mut route_configs = Vec::new();
            let body_routing = model_routing::enabled(&routes);
            for l in &gateway.listeners {
                let lis = listener::listener(gateway, l, body_routing);
                listeners.push(Resource::new(lis.name.clone(), &lis));
                let rc = listener::route_config(gateway, l, &routes, &model.backends, body_routing);
                route_configs.push(Resource::new(rc.name.clone(), &rc));
            }
            let config = GatewayConfig {
                clusters: TypeSet::new(clusters),
                listeners: TypeSet::new(listeners),
                routes: TypeSet::new(route_configs),
                credentials,
                xds_clients: gateway.xds_clients.clone(),
            };
            (gateway.node_cluster.clone(), Arc::new(config))
        })
        .collect()
}

/// The ADS config source every dynamic reference in Tessera's resources uses.
fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

/// An HTTP filter entry with an inline typed config.
fn http_filter<M: prost::Message + prost::Name>(name: &str, config: &M) -> HttpFilter {
    HttpFilter {
        name: name.to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(to_any(config))),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
