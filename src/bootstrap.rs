//! The Envoy bootstrap: node identity, admin, and ADS to Tessera; everything else comes over xDS.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Client-side TLS for the ADS connection.
#[derive(Debug, Clone)]
pub struct XdsClientTls {
    /// Envoy's client certificate; None only with a token ([`BootstrapOptions::token_file`]),
    /// which then proves who Envoy is.
    pub client: Option<ClientCert>,
    pub ca: PathBuf,
    /// Name the control plane's certificate must carry (SAN) and the SNI sent.
    pub server_name: Option<String>,
}

/// A client certificate chain and its private key (PEM files).
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What goes into a bootstrap.
#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    pub node_id: String,
    pub node_cluster: String,
    pub xds_host: String,
    pub xds_port: u16,
    pub admin_port: u16,
    pub delta: bool,
    pub tls: Option<XdsClientTls>,
    /// A file holding a bearer token (a projected ServiceAccount token) that Envoy sends on
    /// every new ADS stream, re-read each time.
    pub token_file: Option<PathBuf>,
}

/// Why a bootstrap cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("--node-id and --node-cluster must not be empty")]
    MissingNode,
    #[error(
        "--xds-token-file needs --xds-tls-ca: Envoy sends a file-based token only over TLS \
         (and a token must not cross the network in the clear)"
    )]
    TokenWithoutTls,
    #[error(
        "--xds-tls-ca without --xds-tls-cert and --xds-tls-key needs --xds-token-file: the token is then the proof of identity"
    )]
    NoClientProof,
    #[error("cannot render the bootstrap: {0}")]
    Render(#[from] serde_json::Error),
}

/// Renders the bootstrap as JSON, which Envoy reads as YAML: a YAML emitter leaves names such
/// as `n` or `off` unquoted and Envoy's YAML 1.1 parser turns them into booleans. The only
/// static cluster is the one to Tessera itself: an ADS-delivered secret referenced from a
/// static cluster crashes Envoy 1.40 at start.
pub fn render(opts: &BootstrapOptions) -> Result<String, BootstrapError> {
    if opts.node_id.is_empty() || opts.node_cluster.is_empty() {
        return Err(BootstrapError::MissingNode);
    }
    let doc = match (&opts.token_file, &opts.tls) {
        (Some(_), None) => return Err(BootstrapError::TokenWithoutTls),
        (Some(token), Some(tls)) => google_grpc_bootstrap(opts, tls, token),
        (None, Some(tls)) if tls.client.is_none() => return Err(BootstrapError::NoClientProof),
        (None, _) => bootstrap(opts),
    };
    let mut out = serde_json::to_string_pretty(&doc)?;
    out.push('\n');
    Ok(out)
}

fn bootstrap(opts: &BootstrapOptions) -> Value {
    let host_is_ip = opts.xds_host.parse::<std::net::IpAddr>().is_ok();
    let mut xds_cluster = json!({
        "name": "tessera_xds",
        "type": if host_is_ip { "STATIC" } else { "STRICT_DNS" },
        "connect_timeout": "5s",
        "load_assignment": {
            "cluster_name": "tessera_xds",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": opts.xds_host, "port_value": opts.xds_port
            }}}}]}]
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {
                    // ADS is one long-lived stream; keepalives notice a dead control plane.
                    "connection_keepalive": {"interval": "30s", "timeout": "5s"}
                }}
            }
        }
    });
    if let Some(tls) = &opts.tls {
        let mut validation = json!({"trusted_ca": {"filename": tls.ca}});
        let mut context = json!({"common_tls_context": {"alpn_protocols": ["h2"]}});
        if let Some(client) = &tls.client {
            context["common_tls_context"]["tls_certificates"] = json!([{
                "certificate_chain": {"filename": client.cert},
                "private_key": {"filename": client.key}
            }]);
        }
        if let Some(name) = &tls.server_name {
            let san_type = if name.parse::<std::net::IpAddr>().is_ok() {
                "IP_ADDRESS"
            } else {
                "DNS"
            };
            validation["match_typed_subject_alt_names"] =
                json!([{"san_type": san_type, "matcher": {"exact": name}}]);
            context["sni"] = json!(name);
        }
        context["common_tls_context"]["validation_context"] = validation;
        context["@type"] = json!(
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
        );
        xds_cluster["transport_socket"] =
            json!({"name": "envoy.transport_sockets.tls", "typed_config": context});
    }
    let mut doc = ads_bootstrap(opts, json!({"envoy_grpc": {"cluster_name": "tessera_xds"}}));
    doc["static_resources"] = json!({"clusters": [xds_cluster]});
    doc
}

/// The node, admin and ADS through `grpc_service`; CDS and LDS over ADS.
fn ads_bootstrap(opts: &BootstrapOptions, grpc_service: Value) -> Value {
    let ads_source = json!({"ads": {}, "resource_api_version": "V3"});
    json!({
        "node": {"id": opts.node_id, "cluster": opts.node_cluster},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": opts.admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": if opts.delta { "DELTA_GRPC" } else { "GRPC" },
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [grpc_service]
            },
            "cds_config": ads_source,
            "lds_config": ads_source
        }
    })
}

/// ADS through Envoy's Google gRPC client, whose `file_based_metadata` call credentials read
/// the token file for every new stream, so a kubelet-rotated token is on the next (re)connect
/// without a restart (measured on Envoy 1.40, rename and in-place writes alike, and a file
/// that only appears after start). That client always speaks TLS, hence the CA requirement.
/// `credentials_factory_name` is not optional: without it Envoy accepts the bootstrap and
/// silently sends no token. No static cluster is needed.
fn google_grpc_bootstrap(opts: &BootstrapOptions, tls: &XdsClientTls, token: &Path) -> Value {
    let host = if opts.xds_host.contains(':') {
        format!("[{}]", opts.xds_host)
    } else {
        opts.xds_host.clone()
    };
    let mut ssl = json!({"root_certs": {"filename": tls.ca}});
    if let Some(client) = &tls.client {
        ssl["cert_chain"] = json!({"filename": client.cert});
        ssl["private_key"] = json!({"filename": client.key});
    }
    let mut grpc = json!({
        "target_uri": format!("{host}:{}", opts.xds_port),
        "stat_prefix": "tessera_xds",
        "credentials_factory_name": FILE_BASED_METADATA,
        "channel_credentials": {"ssl_credentials": ssl},
        "call_credentials": [{"from_plugin": {
            "name": FILE_BASED_METADATA,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.grpc_credential.v3.FileBasedMetadataConfig",
                "secret_data": {"filename": token},
                "header_key": "authorization",
                "header_prefix": "Bearer "
            }
        }}]
    });
    // ADS is one long-lived stream: keepalives notice a control plane that vanished without
    // closing the connection (a lost node) so Envoy reconnects, to another replica.
    let mut args = json!({
        "grpc.keepalive_time_ms": {"int_value": 30000},
        "grpc.keepalive_timeout_ms": {"int_value": 5000},
        // gRPC otherwise stops pinging after two pings without data on the stream.
        "grpc.http2.max_pings_without_data": {"int_value": 0}
    });
    if let Some(name) = &tls.server_name {
        // The certificate is checked against the host of target_uri unless overridden.
        args["grpc.ssl_target_name_override"] = json!({"string_value": name});
    }
    grpc["channel_args"] = json!({"args": args});
    ads_bootstrap(opts, json!({"google_grpc": grpc}))
}

const FILE_BASED_METADATA: &str = "envoy.grpc_credentials.file_based_metadata";

#[cfg(test)]
mod tests {
    use super::*;

    fn options(tls: Option<XdsClientTls>, token_file: Option<&str>) -> BootstrapOptions {
        BootstrapOptions {
            node_id: "gw-1".into(),
            node_cluster: "ai-gateway".into(),
            xds_host: "127.0.0.1".into(),
            xds_port: 18000,
            admin_port: 9901,
            delta: true,
            tls,
            token_file: token_file.map(Into::into),
        }
    }

    fn tls(client: bool) -> XdsClientTls {
        XdsClientTls {
            client: client.then(|| ClientCert {
                cert: "c.pem".into(),
                key: "k.pem".into(),
            }),
            ca: "ca.pem".into(),
            server_name: Some("tessera.local".into()),
        }
    }

    #[test]
    fn a_token_file_gives_google_grpc_with_file_based_call_credentials() {
        for client in [false, true] {
            let text = render(&options(Some(tls(client)), Some("/var/run/tok"))).unwrap();
            let doc: Value = serde_json::from_str(&text).unwrap();
            let ads = &doc["dynamic_resources"]["ads_config"];
            assert_eq!(ads["api_type"], "DELTA_GRPC");
            let grpc = &ads["grpc_services"][0]["google_grpc"];
            assert_eq!(grpc["target_uri"], "127.0.0.1:18000");
            assert_eq!(grpc["credentials_factory_name"], FILE_BASED_METADATA);
            let plugin = &grpc["call_credentials"][0]["from_plugin"];
            assert_eq!(plugin["name"], FILE_BASED_METADATA);
            assert_eq!(
                plugin["typed_config"]["secret_data"]["filename"],
                "/var/run/tok"
            );
            assert_eq!(plugin["typed_config"]["header_prefix"], "Bearer ");
            let ssl = &grpc["channel_credentials"]["ssl_credentials"];
            assert_eq!(ssl["root_certs"]["filename"], "ca.pem");
            assert_eq!(ssl["cert_chain"].is_object(), client, "{text}");
            assert_eq!(
                grpc["channel_args"]["args"]["grpc.ssl_target_name_override"]["string_value"],
                "tessera.local"
            );
            assert!(doc.get("static_resources").is_none(), "{text}");
        }
    }

    #[test]
    fn a_token_is_never_sent_in_the_clear_and_tls_needs_a_proof() {
        assert!(matches!(
            render(&options(None, Some("/tok"))),
            Err(BootstrapError::TokenWithoutTls)
        ));
        assert!(matches!(
            render(&options(Some(tls(false)), None)),
            Err(BootstrapError::NoClientProof)
        ));
    }

    #[test]
    fn delta_and_tls_are_rendered() {
        let yaml = render(&options(Some(tls(true)), None)).unwrap();
        assert!(yaml.contains("DELTA_GRPC"), "{yaml}");
        assert!(yaml.contains("UpstreamTlsContext"), "{yaml}");
        assert!(yaml.contains("tessera.local"), "{yaml}");
        assert!(
            !yaml.contains("sds_config"),
            "no static SDS reference: {yaml}"
        );
    }
}
