//! The Envoy bootstrap: node identity, admin, and ADS to Tessera; everything else comes over xDS.

use serde_json::{Value, json};
use std::path::PathBuf;

/// Client-side TLS for the ADS connection.
#[derive(Debug, Clone)]
pub struct XdsClientTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// Name the control plane's certificate must carry (SAN) and the SNI sent.
    pub server_name: Option<String>,
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
}

/// Why a bootstrap cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("--node-id and --node-cluster must not be empty")]
    MissingNode,
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
    let mut out = serde_json::to_string_pretty(&bootstrap(opts))?;
    out.push('\n');
    Ok(out)
}

fn bootstrap(opts: &BootstrapOptions) -> Value {
    let ads_source = json!({"ads": {}, "resource_api_version": "V3"});
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
        let mut context = json!({
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificates": [{
                    "certificate_chain": {"filename": tls.cert},
                    "private_key": {"filename": tls.key}
                }],
            }
        });
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
    json!({
        "node": {"id": opts.node_id, "cluster": opts.node_cluster},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": opts.admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": if opts.delta { "DELTA_GRPC" } else { "GRPC" },
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [{"envoy_grpc": {"cluster_name": "tessera_xds"}}]
            },
            "cds_config": ads_source,
            "lds_config": ads_source
        },
        "static_resources": {"clusters": [xds_cluster]}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_and_tls_are_rendered() {
        let yaml = render(&BootstrapOptions {
            node_id: "gw-1".into(),
            node_cluster: "ai-gateway".into(),
            xds_host: "127.0.0.1".into(),
            xds_port: 18000,
            admin_port: 9901,
            delta: true,
            tls: Some(XdsClientTls {
                cert: "c.pem".into(),
                key: "k.pem".into(),
                ca: "ca.pem".into(),
                server_name: Some("tessera.local".into()),
            }),
        })
        .unwrap();
        assert!(yaml.contains("DELTA_GRPC"), "{yaml}");
        assert!(yaml.contains("UpstreamTlsContext"), "{yaml}");
        assert!(yaml.contains("tessera.local"), "{yaml}");
        assert!(
            !yaml.contains("sds_config"),
            "no static SDS reference: {yaml}"
        );
    }
}
