//! One CDS cluster per Backend, with the credential attached by upstream HTTP filters.

use super::credential::{self, CredentialForm};
use super::{http_filter, names};
use crate::model::{
    Backend, CLIENT_CREDENTIAL_HEADERS, Gateway, PROVIDER_FIXED_HEADERS, SIGV4_HEADER_PREFIX,
    SecurityPolicy,
};
use crate::xds::resource::to_any;
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::common::mutation_rules::v3::{
    HeaderMutation as HeaderOp, header_mutation::Action, header_mutation::RemoveOnMatch,
};
use envoy_types::pb::envoy::config::core::v3::{
    Address, DataSource, HeaderValue, HeaderValueOption, Http1ProtocolOptions, SocketAddress,
    TransportSocket, address, data_source::Specifier, header_value_option::HeaderAppendAction,
    socket_address::PortSpecifier, transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::extensions::filters::http::header_mutation::v3::{
    HeaderMutation, Mutations,
};
use envoy_types::pb::envoy::extensions::filters::http::upstream_codec::v3::UpstreamCodec;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SubjectAltNameMatcher, UpstreamTlsContext,
    common_tls_context::ValidationContextType, subject_alt_name_matcher::SanType,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options::ExplicitHttpConfig,
    http_protocol_options::UpstreamProtocolOptions,
    http_protocol_options::explicit_http_config::ProtocolConfig,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::google::protobuf::Duration;

const CONNECT_TIMEOUT_SECS: i64 = 10;

/// Builds the cluster of `backend`; `policy` is its resolved security policy, if any.
pub fn cluster(backend: &Backend, policy: Option<&SecurityPolicy>, gateway: &Gateway) -> Cluster {
    let name = names::cluster(&backend.name);
    let endpoint = &backend.endpoint;
    let discovery = if endpoint.host_is_ip() {
        cluster::DiscoveryType::Static
    } else {
        cluster::DiscoveryType::StrictDns
    };
    let lb_endpoint = LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(socket_address(&endpoint.host, endpoint.port)),
            // auto_host_rewrite sends this as the Host header.
            hostname: endpoint.authority(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let protocol_options = HttpProtocolOptions {
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::HttpProtocolOptions(
                    Http1ProtocolOptions::default(),
                )),
            },
        )),
        http_filters: upstream_filters(backend, policy),
        ..Default::default()
    };
    Cluster {
        name: name.clone(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(discovery as i32)),
        connect_timeout: Some(Duration {
            seconds: CONNECT_TIMEOUT_SECS,
            nanos: 0,
        }),
        dns_lookup_family: cluster::DnsLookupFamily::V4Preferred as i32,
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name,
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![lb_endpoint],
                ..Default::default()
            }],
            ..Default::default()
        }),
        transport_socket: backend.tls.as_ref().map(|tls| {
            let ca = match &tls.ca_pem {
                Some(pem) => Specifier::InlineString(pem.clone()),
                None => Specifier::Filename(gateway.ca_bundle_path.clone()),
            };
            upstream_tls(
                &endpoint.host,
                endpoint.host_is_ip(),
                tls.sni.as_deref(),
                ca,
            )
        }),
        typed_extension_protocol_options: [(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_owned(),
            to_any(&protocol_options),
        )]
        .into(),
        ..Default::default()
    }
}

fn socket_address(host: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: host.to_owned(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

/// TLS to the provider: verification always on, SAN pinned to the endpoint host.
fn upstream_tls(host: &str, host_is_ip: bool, sni: Option<&str>, ca: Specifier) -> TransportSocket {
    let san_type = if host_is_ip {
        SanType::IpAddress
    } else {
        SanType::Dns
    };
    let context = UpstreamTlsContext {
        sni: sni.unwrap_or(host).to_owned(),
        common_tls_context: Some(CommonTlsContext {
            validation_context_type: Some(ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(DataSource {
                        specifier: Some(ca),
                        ..Default::default()
                    }),
                    match_typed_subject_alt_names: vec![SubjectAltNameMatcher {
                        san_type: san_type as i32,
                        matcher: Some(StringMatcher {
                            match_pattern: Some(MatchPattern::Exact(host.to_owned())),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".to_owned(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(to_any(&context))),
    }
}

/// header_mutation (strip client credentials, add fixed provider headers) → credential
/// injection or SigV4 signing → codec. Order matters: the strip must run before the injector adds its header.
fn upstream_filters(backend: &Backend, policy: Option<&SecurityPolicy>) -> Vec<HttpFilter> {
    let mut ops: Vec<HeaderOp> = CLIENT_CREDENTIAL_HEADERS
        .iter()
        .map(|h| HeaderOp {
            action: Some(Action::Remove((*h).to_owned())),
        })
        .collect();
    // Every cluster strips every provider's credential and fixed headers, not only its own:
    // a retry on another backend carries what the previous attempt's filters set (measured),
    // and a client-chosen x-amz-* header (a date, a security token) must not be signed along.
    ops.push(HeaderOp {
        action: Some(Action::RemoveOnMatch(RemoveOnMatch {
            key_matcher: Some(StringMatcher {
                match_pattern: Some(MatchPattern::Prefix(SIGV4_HEADER_PREFIX.to_owned())),
                ..Default::default()
            }),
        })),
    });
    let own: Vec<&str> = backend
        .provider
        .fixed_headers()
        .iter()
        .map(|(k, _)| *k)
        .collect();
    for header in PROVIDER_FIXED_HEADERS.iter().filter(|h| !own.contains(h)) {
        ops.push(HeaderOp {
            action: Some(Action::Remove((*header).to_owned())),
        });
    }
    let form = policy.map(CredentialForm::of);
    for (key, value) in backend.provider.fixed_headers() {
        ops.push(HeaderOp {
            action: Some(Action::Append(HeaderValueOption {
                header: Some(HeaderValue {
                    key: (*key).to_owned(),
                    value: (*value).to_owned(),
                    ..Default::default()
                }),
                append_action: HeaderAppendAction::AddIfAbsent as i32,
                ..Default::default()
            })),
        });
    }
    let mut filters = vec![http_filter(
        "envoy.filters.http.header_mutation",
        &HeaderMutation {
            mutations: Some(Mutations {
                request_mutations: ops,
                ..Default::default()
            }),
            ..Default::default()
        },
    )];
    if let (Some(policy), Some(form)) = (policy, &form) {
        let name = names::credential(&policy.name);
        filters.push(credential::filter(&name, form, backend.provider));
    }
    filters.push(http_filter(
        "envoy.filters.http.upstream_codec",
        &UpstreamCodec::default(),
    ));
    filters
}
