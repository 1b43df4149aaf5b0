//! LDS listeners (HTTP connection manager with RDS) and their route configurations.

use super::{ads, client_auth, model_routing, names};
use crate::model::{Backend, Gateway, Route, Rule};
use crate::xds::resource::to_any;
use envoy_types::pb::envoy::config::core::v3::{
    Address, SocketAddress, address, socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, Route as EnvoyRoute, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
    WeightedCluster, header_matcher::HeaderMatchSpecifier, route::Action,
    route_action::ClusterSpecifier, route_action::HostRewriteSpecifier, route_match::PathSpecifier,
    weighted_cluster::ClusterWeight,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, LocalReplyConfig, Rds, http_connection_manager::CodecType,
    http_connection_manager::RouteSpecifier, http_filter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use std::collections::{BTreeMap, BTreeSet};

// LLM responses (long generations, streams) routinely outlast Envoy's 15 s default.
const ROUTE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
const ROUTER: &str = "envoy.filters.http.router";

/// The listener of one gateway listener; routes arrive separately over RDS. `body_routing`
/// adds the filters that read the model from the request (see `model_routing`).
pub fn listener(gateway: &Gateway, l: &crate::model::Listener, body_routing: bool) -> Listener {
    let name = names::listener(&gateway.name, &l.name);
    let mut hcm = HttpConnectionManager {
        stat_prefix: format!("{}_{}", gateway.name, l.name),
        codec_type: CodecType::Auto as i32,
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: names::route_config(&gateway.name, &l.name),
        })),
        http_filters: http_filters(gateway),
        local_reply_config: local_reply_config(gateway),
        ..Default::default()
    };
    // --- model routing hook: filters before the router, JSON 413 ---
    if body_routing {
        // After client authentication (a 401 needs no body), before per-route RBAC and the
        // router: both look the route up again once the model is known.
        let at = hcm
            .http_filters
            .iter()
            .position(|f| f.name == "envoy.filters.http.rbac" || f.name == ROUTER)
            .unwrap_or(hcm.http_filters.len());
        hcm.http_filters
            .splice(at..at, model_routing::http_filters());
        hcm.local_reply_config
            .get_or_insert_with(LocalReplyConfig::default)
            .mappers
            .extend(model_routing::local_reply_mappers());
    }
    // --- end model routing hook ---
    let buffer_limit =
        (l.max_request_bytes != crate::api::DEFAULT_MAX_REQUEST_BYTES).then_some(UInt32Value {
            value: l.max_request_bytes,
        });
    Listener {
        name,
        // Bounds what json_to_metadata and the router's retry buffer hold per request.
        per_connection_buffer_limit_bytes: buffer_limit,
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: l.address.clone(),
                port_specifier: Some(PortSpecifier::PortValue(u32::from(l.port))),
                ..Default::default()
            })),
        }),
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

// === hook: HCM filter chain; features add theirs in this order ===
/// authentication (401) → [route re-selection] → per-route authorization (403) → router.
fn http_filters(gateway: &Gateway) -> Vec<HttpFilter> {
    let mut filters = client_auth::authn_filters(gateway);
    filters.extend(client_auth::authz_filters(gateway));
    filters.push(HttpFilter {
        name: ROUTER.to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(to_any(
            &Router::default(),
        ))),
        ..Default::default()
    });
    filters
}

/// JSON bodies for Envoy's own replies; every feature appends its mappers.
fn local_reply_config(gateway: &Gateway) -> Option<LocalReplyConfig> {
    let mappers = client_auth::local_reply_mappers(gateway);
    (!mappers.is_empty()).then(|| LocalReplyConfig {
        mappers,
        ..Default::default()
    })
}
// === end hook ===

/// The route table of one gateway listener: every rule of every Route attached to the
/// gateway, Routes in name order and rules in their written order.
pub fn route_config(
    gateway: &Gateway,
    l: &crate::model::Listener,
    routes: &[&Route],
    backends: &BTreeMap<String, Backend>,
    body_routing: bool,
) -> RouteConfiguration {
    let mut envoy_routes = Vec::new();
    let known_clients = client_auth::known_clients(routes);
    for route in routes {
        for (i, rule) in route.rules.iter().enumerate() {
            let mut rule_routes = rule_routes(&route.name, i, rule, backends);
            // === hook: per-rule route config (typed_per_filter_config) ===
            for r in &mut rule_routes {
                client_auth::patch_route(gateway, rule, &known_clients, r);
            }
            envoy_routes.extend(rule_routes);
        }
    }
    if body_routing {
        envoy_routes.extend(model_routing::fallback_routes());
    }
    let mut vh = VirtualHost {
        name: gateway.name.clone(),
        domains: vec!["*".to_owned()],
        routes: envoy_routes,
        ..Default::default()
    };
    client_auth::patch_virtual_host(gateway, routes, &mut vh);
    RouteConfiguration {
        name: names::route_config(&gateway.name, &l.name),
        virtual_hosts: vec![vh],
        ..Default::default()
    }
}

fn rule_routes(
    route: &str,
    index: usize,
    rule: &Rule,
    backends: &BTreeMap<String, Backend>,
) -> Vec<EnvoyRoute> {
    let authorities: BTreeSet<String> = rule
        .backends
        .iter()
        .filter_map(|b| backends.get(&b.name))
        .map(|b| b.endpoint.authority())
        .collect();
    // A literal rewrite happens when the route is chosen, before any upstream filter runs, so
    // a request signer (SigV4 signs the Host) always sees the final Host. The automatic
    // rewrite follows the chosen endpoint and is only needed when backends differ.
    let host_rewrite = match authorities.len() {
        1 => authorities
            .into_iter()
            .next()
            .map(HostRewriteSpecifier::HostRewriteLiteral),
        _ => Some(HostRewriteSpecifier::AutoHostRewrite(BoolValue {
            value: true,
        })),
    };
    // --- model routing hook: priority failover and retries ---
    let groups = model_routing::priority_groups(rule, names::cluster);
    let retry_policy = model_routing::retry_policy(&rule.retry, groups.is_some());
    let cluster_specifier = match groups {
        Some(plugin) => ClusterSpecifier::InlineClusterSpecifierPlugin(plugin),
        None => cluster_specifier(rule),
    };
    let action = Action::Route(RouteAction {
        cluster_specifier: Some(cluster_specifier),
        host_rewrite_specifier: host_rewrite,
        timeout: Some(model_routing::route_timeout(&rule.retry, ROUTE_TIMEOUT)),
        retry_policy,
        ..Default::default()
    });
    let matches: Vec<(usize, RouteMatch)> = if rule.matches.is_empty() {
        vec![(0, prefix_match("/", Vec::new()))]
    } else {
        rule.matches
            .iter()
            .enumerate()
            .flat_map(|(j, m)| {
                let headers: Vec<HeaderMatcher> = m
                    .headers
                    .iter()
                    .map(|h| HeaderMatcher {
                        name: h.name.clone(),
                        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(
                            StringMatcher {
                                match_pattern: Some(MatchPattern::Exact(h.value.clone())),
                                ..Default::default()
                            },
                        )),
                        ..Default::default()
                    })
                    .collect();
                // --- model routing hook: one rule match may need several Envoy matches ---
                let base = |path| RouteMatch {
                    path_specifier: Some(path),
                    headers: headers.clone(),
                    ..Default::default()
                };
                model_routing::route_matches(m, base)
                    .into_iter()
                    .map(move |r| (j, r))
            })
            .collect()
    };
    let mut seen = BTreeMap::new();
    matches
        .into_iter()
        .map(|(j, m)| {
            let n = seen.entry(j).or_insert(0usize);
            let name = match *n {
                0 => names::route(route, index, j),
                k => format!("{}/{k}", names::route(route, index, j)),
            };
            *n += 1;
            (name, m)
        })
        .map(|(name, m)| EnvoyRoute {
            name,
            r#match: Some(m),
            action: Some(action.clone()),
            ..Default::default()
        })
        .collect()
}

fn prefix_match(prefix: &str, headers: Vec<HeaderMatcher>) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(PathSpecifier::Prefix(prefix.to_owned())),
        headers,
        ..Default::default()
    }
}

fn cluster_specifier(rule: &Rule) -> ClusterSpecifier {
    match rule.backends.as_slice() {
        [only] => ClusterSpecifier::Cluster(names::cluster(&only.name)),
        many => ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: many
                .iter()
                .map(|b| ClusterWeight {
                    name: names::cluster(&b.name),
                    weight: Some(UInt32Value { value: b.weight }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
    }
}
