//! Routing by the requested model, and failover across a rule's backend priorities.
//!
//! The model comes from `x-ai-model` when a client sets it, else from the JSON body's `model`
//! (OpenAI and Anthropic style paths), else from the path (Gemini, Bedrock). Envoy's own filters
//! do the work: `json_to_metadata` reads the body's `model` into dynamic metadata and clears the
//! route cache; a `header_mutation` then copies it into `x-ai-model` unless the client set that
//! header, so every rule matches one header whichever way the model arrived. Failover uses the
//! `priority_group` cluster specifier with `refresh_cluster_on_retry`: each attempt runs its own
//! cluster's upstream filters, so it carries its own backend's credential (aggregate clusters
//! skip their members' filters, measured on Envoy 1.40).

use super::http_filter;
use crate::model::{Match, ModelMatch, Retry, RetryOn, Route, Rule};
use envoy_types::pb::envoy::config::accesslog::v3::{
    AccessLogFilter, ComparisonFilter, StatusCodeFilter, access_log_filter::FilterSpecifier,
    comparison_filter::Op,
};
use envoy_types::pb::envoy::config::common::mutation_rules::v3::{
    HeaderMutation as HeaderOp, header_mutation::Action as HeaderAction,
};
use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, RuntimeUInt32, SubstitutionFormatString, TypedExtensionConfig,
    header_value_option::HeaderAppendAction, substitution_format_string::Format,
};
use envoy_types::pb::envoy::config::route::v3::{
    ClusterSpecifierPlugin, DirectResponseAction, HeaderMatcher, RetryPolicy, Route as EnvoyRoute,
    RouteMatch, header_matcher::HeaderMatchSpecifier, route::Action, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::header_mutation::v3::{
    HeaderMutation, Mutations,
};
use envoy_types::pb::envoy::extensions::filters::http::json_to_metadata::v3::{
    JsonToMetadata,
    json_to_metadata::{
        KeyValuePair, MatchRules, Rule as JsonRule, Selector, ValueType, key_value_pair, selector,
    },
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, ResponseMapper,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatcher, StringMatcher, string_matcher::MatchPattern,
};
use envoy_types::pb::google::protobuf::{
    Duration, NullValue, Struct, UInt32Value, Value, value::Kind,
};
use std::collections::BTreeSet;

/// The header every model rule matches; a client may set it, else Envoy fills it in.
pub const MODEL_HEADER: &str = "x-ai-model";
/// Dynamic metadata namespace `json_to_metadata` writes the body's model to.
const NAMESPACE: &str = "tessera.ai";
/// The model value of a request whose body has no `model`.
const MISSING: &str = "(missing)";
/// The model value of a request whose body is not JSON (or has a non-JSON content type).
const INVALID: &str = "(invalid)";

/// Paths whose JSON body names the model (OpenAI and Anthropic APIs).
const BODY_MODEL_PATHS: [&str; 5] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
];
/// Gemini: `/v1beta/models/{model}:generateContent` (and `:streamGenerateContent`).
const GEMINI_PREFIX: &str = "/v1beta/models/";
const GEMINI_METHODS: &str = "(generateContent|streamGenerateContent|countTokens|embedContent)";
/// Bedrock: `/model/{modelId}/invoke` and friends.
const BEDROCK_PREFIX: &str = "/model/";
const BEDROCK_METHODS: &str = "(invoke|invoke-with-response-stream|converse|converse-stream)";

/// True when some rule of `routes` selects by model, which is what turns body inspection on.
pub fn enabled(routes: &[&Route]) -> bool {
    routes
        .iter()
        .flat_map(|r| r.rules.iter())
        .flat_map(|rule| rule.matches.iter())
        .any(|m| m.model.is_some())
}

// === HCM filters ===

/// The filters that put the requested model into `x-ai-model`, in order. They go after client
/// authentication (401s first, without reading a body) and before per-route RBAC and the
/// router, which both look the route up again.
pub fn http_filters() -> Vec<HttpFilter> {
    let pair = |value: Option<&str>| KeyValuePair {
        metadata_namespace: NAMESPACE.to_owned(),
        key: "model".to_owned(),
        r#type: ValueType::String as i32,
        value_type: value.map(|v| key_value_pair::ValueType::Value(string(v))),
        ..Default::default()
    };
    let json = JsonToMetadata {
        request_rules: Some(MatchRules {
            rules: vec![JsonRule {
                selectors: vec![Selector {
                    selector: Some(selector::Selector::Key("model".to_owned())),
                }],
                on_present: Some(pair(None)),
                on_missing: Some(pair(Some(MISSING))),
                on_error: Some(pair(Some(INVALID))),
            }],
            // SDKs send `application/json`, some with a charset.
            allow_content_types_regex: Some(RegexMatcher {
                regex: "^application/json(;.*)?$".to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let copy = HeaderMutation {
        mutations: Some(Mutations {
            request_mutations: vec![HeaderOp {
                action: Some(HeaderAction::Append(HeaderValueOption {
                    header: Some(HeaderValue {
                        key: MODEL_HEADER.to_owned(),
                        value: format!("%DYNAMIC_METADATA({NAMESPACE}:model)%"),
                        ..Default::default()
                    }),
                    // The client's header wins over the body.
                    append_action: HeaderAppendAction::AddIfAbsent as i32,
                    ..Default::default()
                })),
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    vec![
        http_filter("envoy.filters.http.json_to_metadata", &json),
        http_filter("tessera.model_header", &copy),
    ]
}

/// JSON bodies for Envoy's own local replies about the request body: 413 above the listener's
/// `maxRequestBytes`. For the HCM's `local_reply_config`.
pub fn local_reply_mappers() -> Vec<ResponseMapper> {
    vec![ResponseMapper {
        filter: Some(AccessLogFilter {
            filter_specifier: Some(FilterSpecifier::StatusCodeFilter(StatusCodeFilter {
                comparison: Some(ComparisonFilter {
                    op: Op::Eq as i32,
                    value: Some(RuntimeUInt32 {
                        default_value: 413,
                        runtime_key: "tessera.local_reply.413".to_owned(),
                    }),
                }),
            })),
        }),
        body_format_override: Some(json_body(error(
            "request_too_large",
            "The request body is larger than this gateway accepts.",
        ))),
        ..Default::default()
    }]
}

// === Route matches ===

/// The Envoy matches of one rule match: `base` builds a match from a path specifier and the
/// rule's own header conditions. Without a model condition this is just `base(prefix)`.
pub fn route_matches(m: &Match, base: impl Fn(PathSpecifier) -> RouteMatch) -> Vec<RouteMatch> {
    let prefix = PathSpecifier::Prefix(m.path_prefix.clone().unwrap_or_else(|| "/".to_owned()));
    let Some(model) = &m.model else {
        return vec![base(prefix)];
    };
    let mut header_route = base(prefix);
    header_route.headers.push(model_header(model));
    let mut out = vec![header_route];
    // A path prefix narrows a rule to paths of the user's choosing; the model-in-path APIs
    // have their own fixed paths, so they only join rules that do not narrow the path.
    if m.path_prefix.is_none() {
        let (gemini, bedrock) = match model {
            ModelMatch::Exact(name) => (regex_escape(name), bedrock_escape(name)),
            ModelMatch::Prefix(p) => (
                format!("{}[^/:]*", regex_escape(p)),
                format!("{}[^/]*", bedrock_escape(p)),
            ),
        };
        out.push(base(regex_path(&format!(
            "^{}{gemini}:{GEMINI_METHODS}$",
            regex_escape(GEMINI_PREFIX)
        ))));
        out.push(base(regex_path(&format!(
            "^{BEDROCK_PREFIX}{bedrock}/{BEDROCK_METHODS}$"
        ))));
    }
    out
}

fn model_header(model: &ModelMatch) -> HeaderMatcher {
    let pattern = match model {
        ModelMatch::Exact(name) => MatchPattern::Exact(name.clone()),
        ModelMatch::Prefix(prefix) => MatchPattern::Prefix(prefix.clone()),
    };
    HeaderMatcher {
        name: MODEL_HEADER.to_owned(),
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
            match_pattern: Some(pattern),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn regex_path(regex: &str) -> PathSpecifier {
    PathSpecifier::SafeRegex(RegexMatcher {
        regex: regex.to_owned(),
        ..Default::default()
    })
}

/// Escapes every RE2 metacharacter.
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Bedrock model ids contain `:` (`...-v1:0`), which boto3 sends percent-encoded and Envoy
/// does not decode.
fn bedrock_escape(text: &str) -> String {
    regex_escape(text).replace(':', "(:|%3[aA])")
}

/// Routes after every rule: a JSON 400 for a body that is not JSON and a JSON 404
/// `model_not_found` on the model APIs' paths, instead of Envoy's empty 404.
pub fn fallback_routes() -> Vec<EnvoyRoute> {
    let invalid = HeaderMatcher {
        name: MODEL_HEADER.to_owned(),
        header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
            match_pattern: Some(MatchPattern::Exact(INVALID.to_owned())),
            ..Default::default()
        })),
        ..Default::default()
    };
    let mut routes = Vec::new();
    for path in BODY_MODEL_PATHS {
        routes.push(direct(
            format!("model-routing/invalid-json{path}"),
            RouteMatch {
                path_specifier: Some(PathSpecifier::Path(path.to_owned())),
                headers: vec![invalid.clone()],
                ..Default::default()
            },
            400,
            error(
                "invalid_json",
                "The request body is not valid JSON (or its content-type is not application/json).",
            ),
        ));
        routes.push(direct(
            format!("model-routing/no-model{path}"),
            RouteMatch {
                path_specifier: Some(PathSpecifier::Path(path.to_owned())),
                ..Default::default()
            },
            404,
            not_found(&format!("%REQ({MODEL_HEADER})%")),
        ));
    }
    for (name, prefix) in [("gemini", GEMINI_PREFIX), ("bedrock", BEDROCK_PREFIX)] {
        routes.push(direct(
            format!("model-routing/no-model/{name}"),
            RouteMatch {
                path_specifier: Some(PathSpecifier::Prefix(prefix.to_owned())),
                ..Default::default()
            },
            404,
            not_found("%REQ(:PATH)%"),
        ));
    }
    routes
}

fn direct(name: String, m: RouteMatch, status: u32, body: Struct) -> EnvoyRoute {
    EnvoyRoute {
        name,
        r#match: Some(m),
        action: Some(Action::DirectResponse(DirectResponseAction {
            status,
            body_format: Some(json_body(body)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn not_found(model: &str) -> Struct {
    error(
        "model_not_found",
        &format!("The model `{model}` does not exist or you do not have access to it."),
    )
}

/// An OpenAI-style error object; Anthropic's SDK reads the same `error.message`.
fn error(code: &str, message: &str) -> Struct {
    let inner = object([
        ("message", string(message)),
        ("type", string("invalid_request_error")),
        (
            "param",
            Value {
                kind: Some(Kind::NullValue(NullValue::NullValue as i32)),
            },
        ),
        ("code", string(code)),
    ]);
    Struct {
        fields: [(
            "error".to_owned(),
            Value {
                kind: Some(Kind::StructValue(inner)),
            },
        )]
        .into(),
    }
}

fn json_body(body: Struct) -> SubstitutionFormatString {
    SubstitutionFormatString {
        content_type: "application/json".to_owned(),
        format: Some(Format::JsonFormat(body)),
        ..Default::default()
    }
}

fn object<const N: usize>(fields: [(&str, Value); N]) -> Struct {
    Struct {
        fields: fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
    }
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

// === Backend selection and retries ===

/// How a rule with backends of more than one priority picks its cluster: attempt 1 goes to
/// priority group 0, the first retry to group 1, and so on (weights split within a group).
/// `None` when the rule has a single priority: then plain (weighted) clusters do.
pub fn priority_groups(
    rule: &Rule,
    cluster: impl Fn(&str) -> String,
) -> Option<ClusterSpecifierPlugin> {
    let tiers: BTreeSet<u32> = rule.backends.iter().map(|b| b.priority).collect();
    if tiers.len() < 2 {
        return None;
    }
    let groups = tiers
        .into_iter()
        .map(|tier| priority_group::PriorityGroup {
            name: format!("priority-{tier}"),
            clusters: rule
                .backends
                .iter()
                // The plugin requires weights of at least 1; a 0 weight means "no traffic".
                .filter(|b| b.priority == tier && b.weight > 0)
                .map(|b| priority_group::ClusterWeight {
                    cluster_name: cluster(&b.name),
                    weight: Some(UInt32Value { value: b.weight }),
                })
                .collect(),
        })
        .collect();
    let config = priority_group::PriorityGroupClusterSpecifier {
        priority_groups: groups,
    };
    Some(ClusterSpecifierPlugin {
        extension: Some(TypedExtensionConfig {
            name: "envoy.router.cluster_specifier_plugin.priority_group".to_owned(),
            typed_config: Some(crate::xds::resource::to_any(&config)),
        }),
        is_optional: false,
    })
}

/// The route's retry policy; `None` when a rule tries once.
pub fn retry_policy(retry: &Retry, failover: bool) -> Option<RetryPolicy> {
    if retry.attempts < 2 {
        return None;
    }
    let mut on: Vec<&str> = Vec::new();
    let mut codes = Vec::new();
    for cause in &retry.on {
        match cause {
            RetryOn::ServerError => on.push("5xx"),
            RetryOn::ConnectFailure => on.push("connect-failure"),
            RetryOn::Reset => on.push("reset"),
            RetryOn::RateLimited => {
                on.push("retriable-status-codes");
                codes.push(429);
            }
        }
    }
    Some(RetryPolicy {
        retry_on: on.join(","),
        retriable_status_codes: codes,
        num_retries: Some(UInt32Value {
            value: retry.attempts - 1,
        }),
        per_try_timeout: Some(duration(retry.per_try_timeout)),
        // Without it a retry stays on the cluster the first attempt picked.
        refresh_cluster_on_retry: failover,
        ..Default::default()
    })
}

/// The whole request's budget: every attempt's, so failover is not cut short.
pub fn route_timeout(retry: &Retry, single: std::time::Duration) -> Duration {
    let total = retry.per_try_timeout.saturating_mul(retry.attempts.max(1));
    duration(if retry.attempts < 2 {
        single
    } else {
        total.max(single)
    })
}

fn duration(d: std::time::Duration) -> Duration {
    Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// `envoy.extensions.router.cluster_specifiers.priority_group.v3`, which envoy-types 0.7.7 does
/// not generate. Field numbers from the descriptor compiled into Envoy 1.40.
pub mod priority_group {
    use envoy_types::pb::google::protobuf::UInt32Value;

    const PACKAGE: &str = "envoy.extensions.router.cluster_specifiers.priority_group.v3";

    /// The plugin's config: groups in failover order.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PriorityGroupClusterSpecifier {
        #[prost(message, repeated, tag = "1")]
        pub priority_groups: Vec<PriorityGroup>,
    }

    /// One tier of clusters, split by weight.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PriorityGroup {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, repeated, tag = "2")]
        pub clusters: Vec<ClusterWeight>,
    }

    /// A cluster and its weight within its group (at least 1).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ClusterWeight {
        #[prost(string, tag = "1")]
        pub cluster_name: String,
        #[prost(message, optional, tag = "2")]
        pub weight: Option<UInt32Value>,
    }

    /// The messages above as a file descriptor, so the golden renderer can decode them.
    pub fn descriptor() -> prost_reflect::prost_types::FileDescriptorProto {
        use prost_reflect::prost_types::{
            DescriptorProto, FieldDescriptorProto, FileDescriptorProto,
            field_descriptor_proto::{Label, Type},
        };
        let field = |name: &str, number: i32, repeated: bool, kind: Type, message: &str| {
            FieldDescriptorProto {
                name: Some(name.to_owned()),
                number: Some(number),
                label: Some(if repeated {
                    Label::Repeated
                } else {
                    Label::Optional
                } as i32),
                r#type: Some(kind as i32),
                type_name: (!message.is_empty()).then(|| message.to_owned()),
                json_name: None,
                ..Default::default()
            }
        };
        let own = |name: &str| format!(".{PACKAGE}.{name}");
        let message = |name: &str, fields: Vec<FieldDescriptorProto>| DescriptorProto {
            name: Some(name.to_owned()),
            field: fields,
            ..Default::default()
        };
        FileDescriptorProto {
            name: Some(format!(
                "{}/priority_group.proto",
                PACKAGE.replace('.', "/")
            )),
            package: Some(PACKAGE.to_owned()),
            dependency: vec!["google/protobuf/wrappers.proto".to_owned()],
            syntax: Some("proto3".to_owned()),
            message_type: vec![
                message(
                    "ClusterWeight",
                    vec![
                        field("cluster_name", 1, false, Type::String, ""),
                        field(
                            "weight",
                            2,
                            false,
                            Type::Message,
                            ".google.protobuf.UInt32Value",
                        ),
                    ],
                ),
                message(
                    "PriorityGroup",
                    vec![
                        field("name", 1, false, Type::String, ""),
                        field("clusters", 2, true, Type::Message, &own("ClusterWeight")),
                    ],
                ),
                message(
                    "PriorityGroupClusterSpecifier",
                    vec![field(
                        "priority_groups",
                        1,
                        true,
                        Type::Message,
                        &own("PriorityGroup"),
                    )],
                ),
            ],
            ..Default::default()
        }
    }

    impl prost::Name for PriorityGroupClusterSpecifier {
        const NAME: &'static str = "PriorityGroupClusterSpecifier";
        const PACKAGE: &'static str = PACKAGE;
        fn full_name() -> String {
            format!("{PACKAGE}.{}", Self::NAME)
        }
        fn type_url() -> String {
            format!("type.googleapis.com/{}", Self::full_name())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_regex_metacharacters_and_bedrock_colons() {
        assert_eq!(regex_escape("gpt-4.1(x)"), "gpt-4\\.1\\(x\\)");
        assert_eq!(
            bedrock_escape("anthropic.claude-v1:0"),
            "anthropic\\.claude-v1(:|%3[aA])0"
        );
    }

    #[test]
    fn retries_follow_the_rule_and_failover_refreshes_the_cluster() {
        let once = Retry::once();
        assert!(retry_policy(&once, false).is_none());
        let retry = Retry {
            attempts: 3,
            on: vec![RetryOn::ServerError, RetryOn::RateLimited],
            per_try_timeout: std::time::Duration::from_secs(30),
        };
        let p = retry_policy(&retry, true).unwrap();
        assert_eq!(p.retry_on, "5xx,retriable-status-codes");
        assert_eq!(p.retriable_status_codes, [429]);
        assert_eq!(p.num_retries.unwrap().value, 2);
        assert!(p.refresh_cluster_on_retry);
        let single = std::time::Duration::from_secs(300);
        // Three 30 s tries fit in the 300 s default; 3 × 200 s would not.
        assert_eq!(route_timeout(&retry, single).seconds, 300);
        let slow = Retry {
            per_try_timeout: std::time::Duration::from_secs(200),
            ..retry
        };
        assert_eq!(route_timeout(&slow, single).seconds, 600);
    }

    #[test]
    fn priority_group_encodes_with_envoy_field_numbers() {
        use prost::Message;
        let config = priority_group::PriorityGroupClusterSpecifier {
            priority_groups: vec![priority_group::PriorityGroup {
                name: "p".into(),
                clusters: vec![priority_group::ClusterWeight {
                    cluster_name: "c".into(),
                    weight: Some(UInt32Value { value: 2 }),
                }],
            }],
        };
        // group(1) { name(1) "p", clusters(2) { cluster_name(1) "c", weight(2) { value(1) 2 } } }
        let expected = [
            0x0a, 12, 0x0a, 1, b'p', 0x12, 7, 0x0a, 1, b'c', 0x12, 2, 0x08, 2,
        ];
        assert_eq!(config.encode_to_vec(), expected);
    }
}
