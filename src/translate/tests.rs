use super::*;
use crate::model::*;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::common::mutation_rules::v3::header_mutation::Action;
use envoy_types::pb::envoy::config::core::v3::{data_source, transport_socket};
use envoy_types::pb::envoy::extensions::filters::http::credential_injector::v3::CredentialInjector;
use envoy_types::pb::envoy::extensions::filters::http::header_mutation::v3::HeaderMutation;
use envoy_types::pb::envoy::extensions::http::injected_credentials::generic::v3::Generic;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, subject_alt_name_matcher::SanType,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use prost::Message;

mod golden;

fn model() -> Model {
    let mut m = Model::default();
    m.gateways.insert(
        "gw".into(),
        Gateway {
            name: "gw".into(),
            node_cluster: "edge".into(),
            listeners: vec![Listener {
                name: "http".into(),
                address: "0.0.0.0".into(),
                port: 10000,
                max_request_bytes: crate::api::DEFAULT_MAX_REQUEST_BYTES,
            }],
            ca_bundle_path: "/etc/ssl/certs/ca-certificates.crt".into(),
            xds_clients: Vec::new(),
            client_auth: None,
        },
    );
    for (name, provider, tls) in [
        ("openai", Provider::OpenAI, true),
        ("claude", Provider::Anthropic, false),
        ("unused", Provider::Mistral, false),
    ] {
        m.backends.insert(
            name.into(),
            Backend {
                name: name.into(),
                provider,
                endpoint: Endpoint {
                    host: format!("{name}.example"),
                    port: if tls { 443 } else { 8080 },
                    tls,
                },
                tls: tls.then_some(UpstreamTls {
                    ca_pem: None,
                    sni: None,
                }),
                security_policy: Some(format!("{name}-key")),
            },
        );
        m.policies.insert(
            format!("{name}-key"),
            SecurityPolicy {
                name: format!("{name}-key"),
                kind: PolicyKind::ApiKey(ApiKey {
                    source: KeySource::File(format!("/keys/{name}").into()),
                    header: None,
                    prefix: None,
                }),
            },
        );
    }
    m.routes.insert(
        "chat".into(),
        Route {
            name: "chat".into(),
            gateway: "gw".into(),
            rules: vec![Rule {
                matches: vec![],
                backends: vec![
                    WeightedBackend {
                        name: "openai".into(),
                        weight: 3,
                        priority: 0,
                    },
                    WeightedBackend {
                        name: "claude".into(),
                        weight: 1,
                        priority: 0,
                    },
                ],
                retry: crate::model::Retry::once(),
                clients: None,
            }],
        },
    );
    m
}

fn cluster(config: &GatewayConfig, name: &str) -> Cluster {
    Cluster::decode(config.clusters.resources[name].any.value.as_slice()).unwrap()
}

fn filters(c: &Cluster) -> Vec<(String, Vec<u8>)> {
    let opts = &c.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    let opts = HttpProtocolOptions::decode(opts.value.as_slice()).unwrap();
    opts.http_filters
        .into_iter()
        .map(|f| match f.config_type {
            Some(envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType::TypedConfig(a)) => (f.name, a.value),
            _ => (f.name, vec![]),
        })
        .collect()
}

#[test]
fn deterministic_output() {
    let a = translate(&model());
    let b = translate(&model());
    assert_eq!(a, b);
    assert_eq!(a["edge"].clusters.version, b["edge"].clusters.version);
}

#[test]
fn only_referenced_backends_and_credentials_reach_a_gateway() {
    let out = translate(&model());
    let gw = &out["edge"];
    let names: Vec<_> = gw.clusters.resources.keys().cloned().collect();
    assert_eq!(names, ["backend/claude", "backend/openai"]);
    let creds: Vec<_> = gw.credentials.iter().cloned().collect();
    assert_eq!(creds, ["credential/claude-key", "credential/openai-key"]);
    assert_eq!(gw.listeners.resources.len(), 1);
    assert!(gw.routes.resources.contains_key("route/gw/http"));
}

#[test]
fn upstream_filters_strip_then_inject_then_codec() {
    let out = translate(&model());
    let c = cluster(&out["edge"], "backend/claude");
    let f = filters(&c);
    let names: Vec<_> = f.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "envoy.filters.http.header_mutation",
            "envoy.filters.http.credential_injector",
            "envoy.filters.http.upstream_codec"
        ]
    );
    let injector = CredentialInjector::decode(f[1].1.as_slice()).unwrap();
    assert!(injector.overwrite && !injector.allow_request_without_credential);
    let generic = Generic::decode(
        injector
            .credential
            .unwrap()
            .typed_config
            .unwrap()
            .value
            .as_slice(),
    )
    .unwrap();
    assert_eq!(generic.header, "x-api-key");
    assert_eq!(generic.header_value_prefix, "");
    assert_eq!(generic.credential.unwrap().name, "credential/claude-key");
    // Every client credential header is removed, then the version header added if absent.
    let ops = mutations(&f[0].1);
    let removed: Vec<_> = ops
        .iter()
        .filter_map(|a| match a {
            Action::Remove(h) => Some(h.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(removed, CLIENT_CREDENTIAL_HEADERS);
    let Some(Action::Append(add)) = ops.last() else {
        panic!("anthropic-version is appended: {ops:?}")
    };
    let header = add.header.as_ref().unwrap();
    assert_eq!(
        (header.key.as_str(), header.value.as_str()),
        ("anthropic-version", "2023-06-01")
    );
}

/// The request mutations of a header_mutation filter config.
fn mutations(config: &[u8]) -> Vec<Action> {
    HeaderMutation::decode(config)
        .unwrap()
        .mutations
        .unwrap()
        .request_mutations
        .into_iter()
        .map(|m| m.action.unwrap())
        .collect()
}

#[test]
fn https_backends_verify_the_endpoint_host() {
    let out = translate(&model());
    let c = cluster(&out["edge"], "backend/openai");
    let ts = c.transport_socket.expect("TLS");
    let Some(transport_socket::ConfigType::TypedConfig(any)) = ts.config_type else {
        panic!("typed config")
    };
    let tls = UpstreamTlsContext::decode(any.value.as_slice()).unwrap();
    assert_eq!(tls.sni, "openai.example");
    let Some(ValidationContextType::ValidationContext(validation)) =
        tls.common_tls_context.unwrap().validation_context_type
    else {
        panic!("a validation context")
    };
    assert_eq!(
        validation.trusted_ca.unwrap().specifier,
        Some(data_source::Specifier::Filename(
            "/etc/ssl/certs/ca-certificates.crt".into()
        )),
        "system bundle by default"
    );
    let [san] = validation.match_typed_subject_alt_names.as_slice() else {
        panic!("one SAN matcher")
    };
    assert_eq!(san.san_type, SanType::Dns as i32);
    let pinned = san.matcher.as_ref().unwrap().match_pattern.clone();
    assert_eq!(pinned, Some(MatchPattern::Exact("openai.example".into())));
    // Plain http backends have no transport socket.
    assert!(
        cluster(&out["edge"], "backend/claude")
            .transport_socket
            .is_none()
    );
}

#[test]
fn credentials_do_not_affect_config_versions() {
    // Secret values are not an input to translate: a rotation cannot change CDS/LDS/RDS.
    let mut m = model();
    let before = translate(&m);
    if let Some(p) = m.policies.get_mut("openai-key") {
        p.kind = PolicyKind::ApiKey(ApiKey {
            source: KeySource::Secret {
                name: "s".into(),
                key: "k".into(),
                value: Some(SecretString::new("new")),
            },
            header: None,
            prefix: None,
        });
    }
    let after = translate(&m);
    assert_eq!(
        before["edge"].clusters.version,
        after["edge"].clusters.version
    );
}

#[test]
fn revoked_secret_is_pushed_empty_and_never_printed() {
    let key = SecretString::new("sk-top-secret");
    let present = generic_secret("credential/x", Some(&key));
    let revoked = generic_secret("credential/x", None);
    assert_eq!(present.name, revoked.name);
    assert_ne!(present.version, revoked.version);
    assert!(!format!("{present:?}").contains("sk-top-secret"));
}

#[test]
fn aws_backends_sign_through_ecds_and_fail_closed_by_default() {
    let mut m = model();
    m.backends.insert(
        "bedrock".into(),
        Backend {
            name: "bedrock".into(),
            provider: Provider::AWSBedrock,
            endpoint: Endpoint {
                host: "bedrock-runtime.us-east-1.amazonaws.com".into(),
                port: 443,
                tls: true,
            },
            tls: Some(UpstreamTls {
                ca_pem: None,
                sni: None,
            }),
            security_policy: Some("aws".into()),
        },
    );
    m.policies.insert(
        "aws".into(),
        SecurityPolicy {
            name: "aws".into(),
            kind: PolicyKind::Aws(Box::new(AwsCredentials {
                region: "us-east-1".into(),
                source: AwsSource::CredentialsFile {
                    path: "/c".into(),
                    profile: "default".into(),
                },
                sts_endpoint: None,
                refresh: RefreshPolicy::default(),
            })),
        },
    );
    if let Some(r) = m.routes.get_mut("chat") {
        r.rules[0].backends.push(WeightedBackend {
            name: "bedrock".into(),
            weight: 1,
            priority: 0,
        });
    }
    let out = translate(&m);
    assert!(out["edge"].credentials.contains("credential/aws"));
    let c = cluster(&out["edge"], "backend/bedrock");
    let opts = &c.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    let opts = HttpProtocolOptions::decode(opts.value.as_slice()).unwrap();
    let names: Vec<_> = opts.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "envoy.filters.http.header_mutation",
            "credential/aws",
            "envoy.filters.http.upstream_codec"
        ]
    );
    let Some(envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType::ConfigDiscovery(ecds)) =
        &opts.http_filters[1].config_type
    else {
        panic!("the signer arrives by ECDS")
    };
    assert!(ecds.apply_default_config_without_warming);
    assert!(
        ecds.default_config
            .as_ref()
            .unwrap()
            .type_url
            .ends_with("rbac.v3.RBAC"),
        "deny until signed"
    );
    assert_eq!(ecds.type_urls.len(), 2);
    // Client x-amz-* headers are stripped before signing.
    let strips_amz = mutations(&filters(&c)[0].1).iter().any(|a| {
        matches!(a, Action::RemoveOnMatch(r)
            if r.key_matcher.as_ref().unwrap().match_pattern == Some(MatchPattern::Prefix("x-amz-".into())))
    });
    assert!(strips_amz);
    // The signer config carries the keys; Debug never shows them.
    let keys = AwsKeys {
        access_key_id: "AKIA1".into(),
        secret_access_key: SecretString::new("very-secret"),
        session_token: Some(SecretString::new("tok")),
    };
    let r = signer_config("credential/aws", "us-east-1", &keys);
    assert!(!format!("{r:?} {keys:?}").contains("very-secret"));
    assert_ne!(r.version, deny_config("credential/aws").version);
}
