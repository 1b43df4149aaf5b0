//! Who may spend the gateway's credentials: client authentication (401) and per-rule client
//! allow-lists (403), enforced by Envoy's own filters on the listener.
//!
//! Filter order (measured on Envoy 1.40, see README "Client authentication"):
//! strip the identity header → `jwt_authn` (JWT-shaped bearer tokens only, unless JWTs are the
//! only way in) → the client-key filter (`api_key_auth` over ECDS; skipped for JWT-shaped tokens)
//! → strip client credentials → [body-based routing re-selects the route] → `rbac` with a
//! per-route allow-list on the identity header → router. `jwt_authn` must come before the key
//! filter: it deletes its claim headers on every request, which would erase the key's identity.
//! Both paths write the client id into one header, so one RBAC rule serves both.

use super::credential::CredentialForm;
use super::{ads, http_filter, names};
use crate::credentials::client_keys::ClientKeys;
use crate::model::{Backend, ClientAuth, Gateway, Jwks, Provider, Route, Rule};
use crate::xds::Resource;
use crate::xds::resource::to_any;
use envoy_types::pb::envoy::config::accesslog::v3::{
    AccessLogFilter, AndFilter, ComparisonFilter, ExtensionFilter, StatusCodeFilter,
    access_log_filter::FilterSpecifier, comparison_filter::Op, extension_filter,
};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, ExtensionConfigSource, HttpUri, RuntimeUInt32, SubstitutionFormatString,
    TypedExtensionConfig, data_source, http_uri::HttpUpstreamType, substitution_format_string,
};
use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, Rbac as RbacRules, permission, principal, rbac,
};
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, Route as EnvoyRoute, RouteMatch, VirtualCluster, VirtualHost,
    header_matcher::HeaderMatchSpecifier, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter;
use envoy_types::pb::envoy::extensions::common::matching::v3::ExtensionWithMatcher;
use envoy_types::pb::envoy::extensions::filters::common::matcher::action::v3::SkipFilter;
use envoy_types::pb::envoy::extensions::filters::http::api_key_auth::v3::{
    ApiKeyAuth, Credential, Forwarding, KeySource,
};
use envoy_types::pb::envoy::extensions::filters::http::header_mutation::v3::{
    HeaderMutation, Mutations,
};
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, JwtClaimToHeader, JwtHeader, JwtProvider, JwtRequirement, RemoteJwks,
    RequirementRule, jwt_provider::JwksSourceSpecifier, jwt_requirement::RequiresType,
    requirement_rule::RequirementType,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::{Rbac, RbacPerRoute};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, ResponseMapper, http_filter as hcm_filter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    HttpRequestHeaderMatchInput, RegexMatcher, StringMatcher, string_matcher::MatchPattern,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::protobuf::{Duration, UInt32Value};
use envoy_types::pb::xds::core::v3::TypedExtensionConfig as XdsTypedExtensionConfig;
use envoy_types::pb::xds::r#type::matcher::v3::{
    Matcher, RegexMatcher as XdsRegexMatcher, StringMatcher as XdsStringMatcher, matcher,
    matcher::matcher_list::{FieldMatcher, Predicate, predicate},
    regex_matcher as xds_regex,
    string_matcher::MatchPattern as XdsMatchPattern,
};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// The header carrying the authenticated client id inside Envoy when the operator chose none
/// to forward; removed before the request leaves for a backend.
pub const INTERNAL_CLIENT_ID_HEADER: &str = "x-tessera-client-id";
/// The RBAC filter that enforces per-rule allow-lists; per-route configs are keyed by it.
pub const RBAC_FILTER: &str = "envoy.filters.http.rbac";
/// A bearer token with three base64url segments takes the JWT path, anything else the key path.
const JWT_SHAPED: &str = r"^Bearer [A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$";
/// The `jwt_authn` provider name.
const JWT_PROVIDER: &str = "clients";
/// Headers a client key is read from (Bearer, as OpenAI SDKs send it; x-api-key, as Anthropic's).
const KEY_HEADERS: [&str; 2] = ["authorization", "x-api-key"];
/// The shadow policy counting refusals of clients no Route names.
pub const OTHER_CLIENTS: &str = "_other";
const JWKS_TIMEOUT_SECS: i64 = 5;
const JWKS_CACHE_SECS: i64 = 300;

/// The header the client id travels in.
pub fn client_id_header(auth: &ClientAuth) -> &str {
    auth.client_id_header
        .as_deref()
        .unwrap_or(INTERNAL_CLIENT_ID_HEADER)
}

/// How a gateway's client keys reach Envoy: the ECDS config of the client-key filter.
pub fn keys_form(auth: &ClientAuth) -> CredentialForm {
    CredentialForm::ClientKeys {
        client_id_header: client_id_header(auth).to_owned(),
        beside_jwt: auth.jwt.is_some(),
    }
}

/// The listener filters that authenticate (401), in order, before any route re-selection.
pub fn authn_filters(gateway: &Gateway) -> Vec<HttpFilter> {
    let Some(auth) = &gateway.client_auth else {
        return Vec::new();
    };
    let id_header = client_id_header(auth);
    // Only Envoy may name the client.
    let mut filters = vec![remove_headers("tessera.strip-client-id", &[id_header])];
    if let Some(jwt) = &auth.jwt {
        filters.push(jwt_filter(gateway, jwt, id_header, auth.api_keys.is_none()));
    }
    if auth.api_keys.is_some() {
        let name = names::credential(&gateway.client_keys_credential());
        filters.push(super::credential::filter(
            &name,
            &keys_form(auth),
            Provider::Generic,
        ));
    }
    // The JWT path forwards the token so the key filter's skip matcher still sees it.
    filters.push(remove_headers(
        "tessera.strip-client-credentials",
        &KEY_HEADERS,
    ));
    filters
}

/// The listener filters that authorize (403) on the final route.
pub fn authz_filters(gateway: &Gateway) -> Vec<HttpFilter> {
    if gateway.client_auth.is_none() {
        return Vec::new();
    }
    // No rules here: a route without an allow-list admits every authenticated client.
    let rbac = Rbac {
        track_per_rule_stats: true,
        ..Default::default()
    };
    vec![http_filter(RBAC_FILTER, &rbac)]
}

/// Puts rule `rule`'s allow-list on one of its Envoy routes. Each allowed client is its own
/// policy (`rbac.policy.<id>.allowed`); a shadow deny policy per other client the gateway's
/// Routes name, and one for everyone else (`_other`), count refusals
/// (`rbac.policy.<id>.shadow_denied`), so stat names stay bounded by the configuration.
pub fn patch_route(gateway: &Gateway, rule: &Rule, known: &BTreeSet<&str>, route: &mut EnvoyRoute) {
    let (Some(auth), Some(clients)) = (&gateway.client_auth, &rule.clients) else {
        return;
    };
    let header = client_id_header(auth);
    let allowed: BTreeSet<&str> = clients.iter().map(String::as_str).collect();
    let is = |id: &str| Principal {
        identifier: Some(principal::Identifier::Header(exact_header(header, id))),
    };
    let policy = |principal: Principal| Policy {
        permissions: vec![Permission {
            rule: Some(permission::Rule::Any(true)),
        }],
        principals: vec![principal],
        ..Default::default()
    };
    let enforced: BTreeMap<String, Policy> = allowed
        .iter()
        .map(|id| ((*id).to_owned(), policy(is(id))))
        .collect();
    let mut shadow: BTreeMap<String, Policy> = known
        .difference(&allowed)
        .map(|id| ((*id).to_owned(), policy(is(id))))
        .collect();
    let named = known.union(&allowed).map(|id| is(id)).collect();
    let someone_else = Principal {
        identifier: Some(principal::Identifier::AndIds(principal::Set {
            ids: vec![
                Principal {
                    identifier: Some(principal::Identifier::Header(HeaderMatcher {
                        name: header.to_owned(),
                        header_match_specifier: Some(HeaderMatchSpecifier::PresentMatch(true)),
                        ..Default::default()
                    })),
                },
                Principal {
                    identifier: Some(principal::Identifier::NotId(Box::new(Principal {
                        identifier: Some(principal::Identifier::OrIds(principal::Set {
                            ids: named,
                        })),
                    }))),
                },
            ],
        })),
    };
    shadow.insert(OTHER_CLIENTS.to_owned(), policy(someone_else));
    let mut rbac = Rbac {
        track_per_rule_stats: true,
        ..Default::default()
    }
    .encode_to_vec();
    prost::encoding::bytes::encode(1, &encode_rules(rbac::Action::Allow, &enforced), &mut rbac);
    prost::encoding::bytes::encode(2, &encode_rules(rbac::Action::Deny, &shadow), &mut rbac);
    let mut per_route = Vec::new();
    // RBACPerRoute.rbac is field 2 (1 is reserved).
    prost::encoding::bytes::encode(2, &rbac, &mut per_route);
    let any = Any {
        type_url: <RbacPerRoute as prost::Name>::type_url(),
        value: per_route,
    };
    route
        .typed_per_filter_config
        .insert(RBAC_FILTER.to_owned(), any);
}

/// Every client id the gateway's Routes name: the bound of per-client stat names.
pub fn known_clients<'a>(routes: &[&'a Route]) -> BTreeSet<&'a str> {
    routes
        .iter()
        .flat_map(|r| r.rules.iter())
        .flat_map(|rule| rule.clients.iter().flatten())
        .map(String::as_str)
        .collect()
}

/// `rules` with its policies in name order. prost writes a map in `HashMap` order, which would
/// change the route table's bytes (and version) from one run to the next.
fn encode_rules(action: rbac::Action, policies: &BTreeMap<String, Policy>) -> Vec<u8> {
    use prost::encoding::{WireType, encode_key, encode_varint};
    let mut buf = RbacRules {
        action: action as i32,
        ..Default::default()
    }
    .encode_to_vec();
    for (name, policy) in policies {
        let mut entry = Vec::new();
        prost::encoding::string::encode(1, name, &mut entry);
        prost::encoding::message::encode(2, policy, &mut entry);
        encode_key(2, WireType::LengthDelimited, &mut buf);
        encode_varint(entry.len() as u64, &mut buf);
        buf.extend(entry);
    }
    buf
}

/// Per-client request stats and the internal identity header's removal on the virtual host.
pub fn patch_virtual_host(gateway: &Gateway, routes: &[&Route], vh: &mut VirtualHost) {
    let Some(auth) = &gateway.client_auth else {
        return;
    };
    let header = client_id_header(auth);
    if auth.client_id_header.is_none() {
        vh.request_headers_to_remove.push(header.to_owned());
    }
    // Bounded by the ids the Routes name; everyone else counts under Envoy's `other`.
    vh.virtual_clusters = known_clients(routes)
        .into_iter()
        .map(|id| VirtualCluster {
            name: id.to_owned(),
            headers: vec![exact_header(header, id)],
        })
        .collect();
}

/// The cluster Envoy fetches a remote JWKS through.
pub fn clusters(gateway: &Gateway) -> Vec<Cluster> {
    let Some(Jwks::Remote { endpoint, tls, .. }) = gateway
        .client_auth
        .as_ref()
        .and_then(|a| a.jwt.as_ref())
        .map(|j| &j.jwks)
    else {
        return Vec::new();
    };
    let backend = Backend {
        name: String::new(),
        provider: Provider::Generic,
        endpoint: endpoint.clone(),
        tls: tls.clone(),
        security_policy: None,
    };
    let mut cluster = super::cluster::cluster(&backend, None, gateway);
    let name = names::jwks_cluster(&gateway.name);
    cluster.name.clone_from(&name);
    if let Some(load) = &mut cluster.load_assignment {
        load.cluster_name = name;
    }
    vec![cluster]
}

/// OpenAI-style JSON bodies for the local replies of authentication and authorization. A list
/// other features extend with their own mappers; the first that matches wins.
pub fn local_reply_mappers(gateway: &Gateway) -> Vec<ResponseMapper> {
    if gateway.client_auth.is_none() {
        return Vec::new();
    }
    vec![
        mapper(
            Some(401),
            "response.code_details in ['missing_api_key', 'unknown_api_key']",
            None,
            &error_body(
                "Missing or incorrect API key. Send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
                "invalid_request_error",
                "invalid_api_key",
            ),
        ),
        // jwt_authn answers 403 for a wrong audience: to the client it is a bad token too.
        mapper(
            None,
            "response.code_details.startsWith('jwt_authn_access_denied')",
            Some(401),
            &error_body(
                "Invalid or expired token.",
                "invalid_request_error",
                "invalid_token",
            ),
        ),
        // Only the listener's allow-list, not a credential's deny config (another policy name).
        mapper(
            Some(403),
            "response.code_details == 'rbac_access_denied_matched_policy[none]'",
            None,
            &error_body(
                "This client is not allowed to use this route.",
                "permission_error",
                "client_not_allowed",
            ),
        ),
    ]
}

/// The client-key filter entry: its config (the keys) arrives by ECDS, so a key change is one
/// in-place update. Until it arrives every key is refused (401).
pub fn keys_filter(name: &str, form: &CredentialForm) -> HttpFilter {
    let (default, type_url) = match keys_extension(name, form, None) {
        Extension::Plain(auth) => (to_any(&auth), <ApiKeyAuth as prost::Name>::type_url()),
        Extension::Wrapped(w) => (
            to_any(&*w),
            <ExtensionWithMatcher as prost::Name>::type_url(),
        ),
    };
    HttpFilter {
        name: name.to_owned(),
        config_type: Some(hcm_filter::ConfigType::ConfigDiscovery(
            ExtensionConfigSource {
                config_source: Some(ads()),
                default_config: Some(default),
                apply_default_config_without_warming: true,
                type_urls: vec![type_url],
            },
        )),
        ..Default::default()
    }
}

/// The ECDS resource holding `keys`; with none, every key is refused (401).
pub fn keys_config(name: &str, form: &CredentialForm, keys: Option<&ClientKeys>) -> Arc<Resource> {
    let typed_config = match keys_extension(name, form, keys) {
        Extension::Plain(auth) => to_any(&auth),
        Extension::Wrapped(w) => to_any(&*w),
    };
    let config = TypedExtensionConfig {
        name: name.to_owned(),
        typed_config: Some(typed_config),
    };
    Resource::new(name, &config)
}

enum Extension {
    Plain(ApiKeyAuth),
    Wrapped(Box<ExtensionWithMatcher>),
}

fn keys_extension(name: &str, form: &CredentialForm, keys: Option<&ClientKeys>) -> Extension {
    let (header, beside_jwt) = match form {
        CredentialForm::ClientKeys {
            client_id_header,
            beside_jwt,
        } => (client_id_header.as_str(), *beside_jwt),
        _ => (INTERNAL_CLIENT_ID_HEADER, false),
    };
    let auth = ApiKeyAuth {
        credentials: keys
            .into_iter()
            .flat_map(ClientKeys::iter)
            .map(|(client, key)| Credential {
                key: key.expose().to_owned(),
                client: client.to_owned(),
            })
            .collect(),
        key_sources: KEY_HEADERS
            .iter()
            .map(|h| KeySource {
                header: (*h).to_owned(),
                ..Default::default()
            })
            .collect(),
        // The client's key never travels on; the id does, in Envoy's own header.
        forwarding: Some(Forwarding {
            header: header.to_owned(),
            hide_credentials: true,
        }),
    };
    if !beside_jwt {
        return Extension::Plain(auth);
    }
    // A JWT-shaped bearer token was checked by jwt_authn: the key filter steps aside.
    let predicate = Predicate {
        match_type: Some(predicate::MatchType::SinglePredicate(
            predicate::SinglePredicate {
                input: Some(XdsTypedExtensionConfig {
                    name: "authorization".to_owned(),
                    typed_config: Some(to_any(&HttpRequestHeaderMatchInput {
                        header_name: "authorization".to_owned(),
                    })),
                }),
                matcher: Some(predicate::single_predicate::Matcher::ValueMatch(
                    XdsStringMatcher {
                        match_pattern: Some(XdsMatchPattern::SafeRegex(XdsRegexMatcher {
                            regex: JWT_SHAPED.to_owned(),
                            // The xDS matcher requires an engine.
                            engine_type: Some(xds_regex::EngineType::GoogleRe2(
                                xds_regex::GoogleRe2::default(),
                            )),
                        })),
                        ..Default::default()
                    },
                )),
            },
        )),
    };
    let skip = matcher::OnMatch {
        on_match: Some(matcher::on_match::OnMatch::Action(
            XdsTypedExtensionConfig {
                name: "skip".to_owned(),
                typed_config: Some(to_any(&SkipFilter::default())),
            },
        )),
        ..Default::default()
    };
    Extension::Wrapped(Box::new(ExtensionWithMatcher {
        xds_matcher: Some(Matcher {
            matcher_type: Some(matcher::MatcherType::MatcherList(matcher::MatcherList {
                matchers: vec![FieldMatcher {
                    predicate: Some(predicate),
                    on_match: Some(skip),
                }],
            })),
            ..Default::default()
        }),
        extension_config: Some(TypedExtensionConfig {
            name: name.to_owned(),
            typed_config: Some(to_any(&auth)),
        }),
        ..Default::default()
    }))
}

fn jwt_filter(
    gateway: &Gateway,
    jwt: &crate::model::Jwt,
    id_header: &str,
    only_way_in: bool,
) -> HttpFilter {
    let jwks = match &jwt.jwks {
        Jwks::Inline(doc) => JwksSourceSpecifier::LocalJwks(DataSource {
            specifier: Some(data_source::Specifier::InlineString(doc.clone())),
            ..Default::default()
        }),
        Jwks::Remote { uri, .. } => JwksSourceSpecifier::RemoteJwks(RemoteJwks {
            http_uri: Some(HttpUri {
                uri: uri.clone(),
                timeout: Some(Duration {
                    seconds: JWKS_TIMEOUT_SECS,
                    nanos: 0,
                }),
                http_upstream_type: Some(HttpUpstreamType::Cluster(names::jwks_cluster(
                    &gateway.name,
                ))),
            }),
            cache_duration: Some(Duration {
                seconds: JWKS_CACHE_SECS,
                nanos: 0,
            }),
            ..Default::default()
        }),
    };
    let provider = JwtProvider {
        issuer: jwt.issuer.clone(),
        audiences: jwt.audiences.clone(),
        // Kept for the key filter's skip matcher; stripped right after it.
        forward: true,
        // Only the header: by default Envoy also takes `?access_token=`, which would then
        // travel on to the provider in the URL.
        from_headers: vec![JwtHeader {
            name: "authorization".to_owned(),
            value_prefix: "Bearer ".to_owned(),
        }],
        claim_to_headers: vec![JwtClaimToHeader {
            header_name: id_header.to_owned(),
            claim_name: jwt.client_claim.clone(),
            ..Default::default()
        }],
        jwks_source_specifier: Some(jwks),
        ..Default::default()
    };
    // With client keys too, only JWT-shaped bearer tokens must verify; without, every request.
    let headers = if only_way_in {
        Vec::new()
    } else {
        vec![HeaderMatcher {
            name: "authorization".to_owned(),
            header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(MatchPattern::SafeRegex(RegexMatcher {
                    regex: JWT_SHAPED.to_owned(),
                    ..Default::default()
                })),
                ..Default::default()
            })),
            ..Default::default()
        }]
    };
    let rule = RequirementRule {
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".to_owned())),
            headers,
            ..Default::default()
        }),
        requirement_type: Some(RequirementType::Requires(JwtRequirement {
            requires_type: Some(RequiresType::ProviderName(JWT_PROVIDER.to_owned())),
        })),
    };
    http_filter(
        "envoy.filters.http.jwt_authn",
        &JwtAuthentication {
            providers: HashMap::from([(JWT_PROVIDER.to_owned(), provider)]),
            rules: vec![rule],
            ..Default::default()
        },
    )
}

fn remove_headers(name: &str, headers: &[&str]) -> HttpFilter {
    use envoy_types::pb::envoy::config::common::mutation_rules::v3::{
        HeaderMutation as HeaderOp, header_mutation::Action,
    };
    let request_mutations = headers
        .iter()
        .map(|h| HeaderOp {
            action: Some(Action::Remove((*h).to_owned())),
        })
        .collect();
    let mutation = HeaderMutation {
        mutations: Some(Mutations {
            request_mutations,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut filter = http_filter("envoy.filters.http.header_mutation", &mutation);
    filter.name = name.to_owned();
    filter
}

fn exact_header(name: &str, value: &str) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_owned(),
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
            match_pattern: Some(MatchPattern::Exact(value.to_owned())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// `{"error": {...}}` as OpenAI SDKs read it; fixed text, so nothing needs escaping.
fn error_body(message: &str, kind: &str, code: &str) -> String {
    serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        .to_string()
}

fn mapper(status: Option<u32>, cel: &str, rewrite: Option<u32>, body: &str) -> ResponseMapper {
    let cel_filter = AccessLogFilter {
        filter_specifier: Some(FilterSpecifier::ExtensionFilter(ExtensionFilter {
            name: "envoy.access_loggers.extension_filters.cel".to_owned(),
            config_type: Some(extension_filter::ConfigType::TypedConfig(to_any(
                &ExpressionFilter {
                    expression: cel.to_owned(),
                    ..Default::default()
                },
            ))),
        })),
    };
    let filter = match status {
        None => cel_filter,
        Some(code) => AccessLogFilter {
            filter_specifier: Some(FilterSpecifier::AndFilter(AndFilter {
                filters: vec![
                    AccessLogFilter {
                        filter_specifier: Some(FilterSpecifier::StatusCodeFilter(
                            StatusCodeFilter {
                                comparison: Some(ComparisonFilter {
                                    op: Op::Eq as i32,
                                    value: Some(RuntimeUInt32 {
                                        default_value: code,
                                        runtime_key: format!("tessera.local_reply.{code}"),
                                    }),
                                }),
                            },
                        )),
                    },
                    cel_filter,
                ],
            })),
        },
    };
    ResponseMapper {
        filter: Some(filter),
        status_code: rewrite.map(|value| UInt32Value { value }),
        body_format_override: Some(SubstitutionFormatString {
            format: Some(substitution_format_string::Format::TextFormatSource(
                DataSource {
                    specifier: Some(data_source::Specifier::InlineString(body.to_owned())),
                    ..Default::default()
                },
            )),
            content_type: "application/json".to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClientKeySource, Jwt, SecretString};
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType;

    fn gateway(api_keys: bool, jwt: bool) -> Gateway {
        Gateway {
            name: "gw".into(),
            node_cluster: "gw".into(),
            listeners: vec![],
            ca_bundle_path: "/ca.pem".into(),
            xds_clients: Vec::new(),
            client_auth: Some(ClientAuth {
                api_keys: api_keys.then(|| ClientKeySource::File("/k.yaml".into())),
                jwt: jwt.then(|| Jwt {
                    issuer: "https://idp".into(),
                    audiences: vec![],
                    jwks: Jwks::Inline("{\"keys\":[]}".into()),
                    client_claim: "sub".into(),
                }),
                client_id_header: None,
            }),
        }
    }

    fn keys(pairs: &[(&str, &str)]) -> ClientKeys {
        ClientKeys::new(
            pairs
                .iter()
                .map(|(id, k)| ((*id).to_owned(), SecretString::new(*k)))
                .collect(),
        )
        .0
    }

    fn decode_auth(resource: &Resource) -> ApiKeyAuth {
        let config = TypedExtensionConfig::decode(resource.any.value.as_slice()).unwrap();
        ApiKeyAuth::decode(config.typed_config.unwrap().value.as_slice()).unwrap()
    }

    #[test]
    fn without_keys_every_key_is_refused() {
        let form = keys_form(gateway(true, false).client_auth.as_ref().unwrap());
        let closed = keys_config("c", &form, None);
        assert!(decode_auth(&closed).credentials.is_empty());
        let open = keys_config("c", &form, Some(&keys(&[("team-a", "sk-a")])));
        let auth = decode_auth(&open);
        assert_eq!(auth.credentials.len(), 1);
        assert_eq!(auth.credentials[0].client, "team-a");
        assert!(auth.forwarding.unwrap().hide_credentials);
        assert_ne!(open.version, closed.version);
        // The filter's default (before the first ECDS config) is the closed form too.
        let filter = keys_filter("c", &form);
        let Some(ConfigType::ConfigDiscovery(source)) = filter.config_type else {
            panic!("not discovered");
        };
        assert!(source.apply_default_config_without_warming);
        let default = ApiKeyAuth::decode(source.default_config.unwrap().value.as_slice()).unwrap();
        assert!(default.credentials.is_empty());
    }

    #[test]
    fn jwt_alone_requires_a_token_on_every_request() {
        let rule_headers = |g: &Gateway| {
            let filter = jwt_filter(
                g,
                g.client_auth.as_ref().unwrap().jwt.as_ref().unwrap(),
                "h",
                g.client_auth.as_ref().unwrap().api_keys.is_none(),
            );
            let Some(ConfigType::TypedConfig(any)) = filter.config_type else {
                panic!()
            };
            let auth = JwtAuthentication::decode(any.value.as_slice()).unwrap();
            auth.rules[0].r#match.clone().unwrap().headers.len()
        };
        assert_eq!(rule_headers(&gateway(false, true)), 0);
        assert_eq!(rule_headers(&gateway(true, true)), 1);
        let names: Vec<String> = authn_filters(&gateway(true, true))
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(
            names,
            [
                "tessera.strip-client-id",
                "envoy.filters.http.jwt_authn",
                "credential/gw/clients",
                "tessera.strip-client-credentials"
            ]
        );
    }

    #[test]
    fn allow_lists_go_on_the_rule_routes_only() {
        let g = gateway(true, false);
        let rule = |clients: Option<Vec<&str>>| Rule {
            matches: vec![],
            backends: vec![],
            retry: crate::model::Retry::once(),
            clients: clients.map(|c| c.into_iter().map(str::to_owned).collect()),
        };
        let known = BTreeSet::from(["a", "b", "c"]);
        let mut open = EnvoyRoute::default();
        patch_route(&g, &rule(None), &known, &mut open);
        assert!(open.typed_per_filter_config.is_empty());
        let listed = || {
            let mut r = EnvoyRoute::default();
            patch_route(&g, &rule(Some(vec!["b", "a", "a"])), &known, &mut r);
            r.typed_per_filter_config[RBAC_FILTER].value.clone()
        };
        let bytes = listed();
        // Deterministic although the policies are a map.
        assert_eq!(bytes, listed());
        let rbac = RbacPerRoute::decode(bytes.as_slice())
            .unwrap()
            .rbac
            .unwrap();
        assert!(rbac.track_per_rule_stats);
        let rules = rbac.rules.unwrap();
        assert_eq!(rules.action, rbac::Action::Allow as i32);
        let mut ids: Vec<&String> = rules.policies.keys().collect();
        ids.sort();
        assert_eq!(ids, ["a", "b"]);
        let shadow = rbac.shadow_rules.unwrap();
        assert_eq!(shadow.action, rbac::Action::Deny as i32);
        let mut ids: Vec<&String> = shadow.policies.keys().collect();
        ids.sort();
        assert_eq!(ids, [OTHER_CLIENTS, "c"]);
        let mut nobody = EnvoyRoute::default();
        patch_route(&g, &rule(Some(vec![])), &known, &mut nobody);
        let per_route =
            RbacPerRoute::decode(nobody.typed_per_filter_config[RBAC_FILTER].value.as_slice())
                .unwrap();
        assert!(per_route.rbac.unwrap().rules.unwrap().policies.is_empty());
    }

    #[test]
    fn without_client_auth_nothing_changes() {
        let mut g = gateway(true, true);
        g.client_auth = None;
        assert!(authn_filters(&g).is_empty());
        assert!(authz_filters(&g).is_empty());
        assert!(local_reply_mappers(&g).is_empty());
        assert!(clusters(&g).is_empty());
    }
}
