//! TLS on both sides of Tessera: Envoy → provider (verified, SAN-pinned) and Envoy → Tessera
//! (ADS over mTLS; a client without a certificate is refused).

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use harness::*;
use rcgen::ExtendedKeyUsagePurpose;
use std::path::Path;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

fn config(listener: u16, good: &Mock, bad: &Mock, ca: &Path) -> String {
    format!(
        r#"apiVersion: tessera.dev/v1alpha1
kind: Gateway
metadata: {{name: gw}}
spec:
  nodeCluster: ai-gateway
  listeners: [{{name: http, port: {listener}, address: 127.0.0.1}}]
  xdsClients: [{{dnsName: gw-1.ai-gateway}}]
---
apiVersion: tessera.dev/v1alpha1
kind: Backend
metadata: {{name: good}}
spec:
  provider: OpenAI
  endpoint: {good}
  tls: {{caFile: {ca}}}
  securityPolicy: key
---
apiVersion: tessera.dev/v1alpha1
kind: Backend
metadata: {{name: impostor}}
spec:
  provider: OpenAI
  endpoint: {bad}
  tls: {{caFile: {ca}}}
  securityPolicy: key
---
apiVersion: tessera.dev/v1alpha1
kind: BackendSecurityPolicy
metadata: {{name: key}}
spec:
  type: APIKey
  apiKey: {{secretRef: {{name: provider-keys, key: openai}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: provider-keys}}
stringData: {{openai: sk-tls-secret}}
---
apiVersion: tessera.dev/v1alpha1
kind: Route
metadata: {{name: chat}}
spec:
  gateway: gw
  rules:
  - matches: [{{headers: [{{name: x-ai-model, value: good}}]}}]
    backends: [{{name: good}}]
  - matches: [{{headers: [{{name: x-ai-model, value: impostor}}]}}]
    backends: [{{name: impostor}}]
"#,
        good = good.endpoint(),
        bad = bad.endpoint(),
        ca = ca.display()
    )
}

async fn tls_end_to_end(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Upstream PKI: one provider with a certificate for 127.0.0.1, one whose certificate
    // names another host.
    let up = Pki::new(d, "upstream");
    let (good_cert, good_key) = up.leaf(
        d,
        "good",
        &["127.0.0.1", "localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (bad_cert, bad_key) = up.leaf(
        d,
        "bad",
        &["other.example"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let good = Mock::start_tls(d, "good", &good_cert, &good_key).await;
    let bad = Mock::start_tls(d, "impostor", &bad_cert, &bad_key).await;
    // xDS PKI: Tessera's server certificate and Envoy's client certificate.
    let xds = Pki::new(d, "xds");
    let (server_cert, server_key) = xds.leaf(
        d,
        "tessera",
        &["tessera.local", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client_cert, client_key) = xds.leaf(
        d,
        "envoy",
        &["gw-1.ai-gateway"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );

    let s = |p: &Path| p.display().to_string();
    let stack = Stack::builder()
        .dir(dir)
        .config_file("config.yaml")
        .configure(|c| c.write("config.yaml", config(c.listener, &good, &bad, &up.ca)))
        .tessera_args(&[
            "--xds-tls-cert",
            &s(&server_cert),
            "--xds-tls-key",
            &s(&server_key),
            "--xds-client-ca",
            &s(&xds.ca),
        ])
        .bootstrap_args(&[
            "--xds-tls-cert",
            &s(&client_cert),
            "--xds-tls-key",
            &s(&client_key),
            "--xds-tls-ca",
            &s(&xds.ca),
            "--xds-server-name",
            "tessera.local",
        ])
        .envoy(mode)
        .start()
        .await;
    let (tessera, envoy, client) = (&stack.tessera, stack.envoy(), &stack.client);
    let url = envoy.url("/v1/chat/completions");
    // Envoy got its config over mTLS, and the verified upstream works with the Secret's key.
    let reply = send(
        client,
        &url,
        &[("x-ai-model", "good"), ("authorization", "Bearer stolen")],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.provider().as_deref(), Some("good"));
    assert_eq!(
        reply.upstream_header("authorization").as_deref(),
        Some("Bearer sk-tls-secret")
    );
    // A certificate for another host is refused by Envoy: the request never gets through.
    let reply = send(client, &url, &[("x-ai-model", "impostor")]).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(reply.provider().is_none());
    assert!(
        envoy
            .stat("cluster.backend/impostor.ssl.fail_verify_san")
            .await
            >= 1,
        "SAN verification rejected it"
    );

    // A client without a certificate gets nothing from the xDS port; with one, it does.
    let endpoint = format!("https://127.0.0.1:{}", tessera.xds_port);
    let ca = Certificate::from_pem(std::fs::read(&xds.ca).unwrap());
    let no_cert = ClientTlsConfig::new()
        .ca_certificate(ca.clone())
        .domain_name("tessera.local");
    assert!(
        ads_request(&endpoint, no_cert).await.is_err(),
        "a client without a certificate was served"
    );
    let with_cert = ClientTlsConfig::new()
        .ca_certificate(ca)
        .domain_name("tessera.local")
        .identity(Identity::from_pem(
            std::fs::read(&client_cert).unwrap(),
            std::fs::read(&client_key).unwrap(),
        ));
    let clusters = ads_request(&endpoint, with_cert)
        .await
        .expect("a client with a certificate is served");
    assert_eq!(clusters, 2, "both backends' clusters");
}
both_modes!(tls_end_to_end);

/// Opens an ADS stream, asks for clusters, returns how many came back.
async fn ads_request(endpoint: &str, tls: ClientTlsConfig) -> Result<usize, String> {
    let go = async {
        let channel = Channel::from_shared(endpoint.to_owned())
            .map_err(|e| e.to_string())?
            .tls_config(tls)
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        let req = DiscoveryRequest {
            node: Some(Node {
                id: "probe".into(),
                cluster: "ai-gateway".into(),
                ..Default::default()
            }),
            type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
            ..Default::default()
        };
        let (_keep, rx) = tokio::sync::mpsc::channel::<DiscoveryRequest>(1);
        let stream =
            tokio_stream::iter([req]).chain(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut responses = client
            .stream_aggregated_resources(stream)
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        let first = responses
            .message()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("stream closed")?;
        Ok(first.resources.len())
    };
    tokio::time::timeout(Duration::from_secs(10), go)
        .await
        .map_err(|_| "timed out".to_string())?
}

use tokio_stream::StreamExt as _;
