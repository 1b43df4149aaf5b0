//! Only the right Envoy gets a gateway's credentials: with mTLS, the gateway a stream is
//! served is decided by its client certificate's SANs and the Gateway's `xdsClients`, not by
//! the `node.cluster` it claims. Also: server certificate rotation without dropping streams,
//! `/status` protection and `validate`'s warning.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use harness::*;
use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::StreamExt as _;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const SERVER_NAME: &str = "tessera.local";

fn config(a_port: u16, b_port: u16, a: &str, b: &str) -> String {
    format!(
        r#"apiVersion: tessera.dev/v1alpha1
kind: Gateway
metadata: {{name: a}}
spec:
  nodeCluster: gw-a
  listeners: [{{name: http, port: {a_port}, address: 127.0.0.1}}]
  xdsClients: [{{dnsName: gw-1.a.example}}]
---
apiVersion: tessera.dev/v1alpha1
kind: Gateway
metadata: {{name: b}}
spec:
  nodeCluster: gw-b
  listeners: [{{name: http, port: {b_port}, address: 127.0.0.1}}]
  xdsClients:
  - spiffe: spiffe://corp.example/ns/b/sa/envoy
  - dnsName: "*.b.example"
---
apiVersion: tessera.dev/v1alpha1
kind: Backend
metadata: {{name: a}}
spec: {{provider: OpenAI, endpoint: "{a}", securityPolicy: key-a}}
---
apiVersion: tessera.dev/v1alpha1
kind: Backend
metadata: {{name: b}}
spec: {{provider: OpenAI, endpoint: "{b}", securityPolicy: key-b}}
---
apiVersion: tessera.dev/v1alpha1
kind: BackendSecurityPolicy
metadata: {{name: key-a}}
spec: {{type: APIKey, apiKey: {{file: key-a.key}}}}
---
apiVersion: tessera.dev/v1alpha1
kind: BackendSecurityPolicy
metadata: {{name: key-b}}
spec: {{type: APIKey, apiKey: {{file: key-b.key}}}}
---
apiVersion: tessera.dev/v1alpha1
kind: Route
metadata: {{name: ra}}
spec: {{gateway: a, rules: [{{backends: [{{name: a}}]}}]}}
---
apiVersion: tessera.dev/v1alpha1
kind: Route
metadata: {{name: rb}}
spec: {{gateway: b, rules: [{{backends: [{{name: b}}]}}]}}
"#
    )
}

/// The xDS PKI of a test: Tessera's server certificate and the Envoys' client certificates.
struct Certs {
    pki: Pki,
    dir: PathBuf,
    server: (PathBuf, PathBuf),
}

impl Certs {
    fn new(dir: &Path) -> Self {
        let pki = Pki::new(dir, "xds");
        let server = pki.leaf(dir, "tessera", &[SERVER_NAME, "127.0.0.1"], ServerAuth);
        Self {
            pki,
            dir: dir.to_owned(),
            server,
        }
    }

    fn client(&self, file: &str, dns: &[&str], uris: &[&str]) -> (PathBuf, PathBuf) {
        self.pki
            .leaf_with_uris(&self.dir, file, dns, uris, ClientAuth)
    }

    fn tessera_args(&self) -> Vec<String> {
        let s = |p: &Path| p.display().to_string();
        vec![
            "--xds-tls-cert".into(),
            s(&self.server.0),
            "--xds-tls-key".into(),
            s(&self.server.1),
            "--xds-client-ca".into(),
            s(&self.pki.ca),
        ]
    }

    fn bootstrap_args(&self, client: &(PathBuf, PathBuf)) -> Vec<String> {
        let s = |p: &Path| p.display().to_string();
        vec![
            "--xds-tls-cert".into(),
            s(&client.0),
            "--xds-tls-key".into(),
            s(&client.1),
            "--xds-tls-ca".into(),
            s(&self.pki.ca),
            "--xds-server-name".into(),
            SERVER_NAME.into(),
        ]
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

async fn metric(tessera: &Tessera, name: &str) -> u64 {
    let body = http()
        .get(format!("http://127.0.0.1:{}/metrics", tessera.admin_port))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in {body}"))
}

/// Opens an ADS stream claiming `cluster` and asks for clusters: how many came back, or the
/// error (a refused handshake or the gRPC status).
async fn probe(
    port: u16,
    ca: &Path,
    client: &(PathBuf, PathBuf),
    cluster: &str,
) -> Result<usize, String> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .domain_name(SERVER_NAME)
        .identity(Identity::from_pem(
            std::fs::read(&client.0).unwrap(),
            std::fs::read(&client.1).unwrap(),
        ));
    let go = async {
        let channel = Channel::from_shared(format!("https://127.0.0.1:{port}"))
            .unwrap()
            .tls_config(tls)
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let req = DiscoveryRequest {
            node: Some(Node {
                id: "probe".into(),
                cluster: cluster.into(),
                ..Default::default()
            }),
            type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
            ..Default::default()
        };
        let (_keep, rx) = tokio::sync::mpsc::channel::<DiscoveryRequest>(1);
        let requests =
            tokio_stream::iter([req]).chain(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut responses = AggregatedDiscoveryServiceClient::new(channel)
            .stream_aggregated_resources(requests)
            .await
            .map_err(|e| format!("{:?}: {}", e.code(), e.message()))?
            .into_inner();
        let first = responses
            .message()
            .await
            .map_err(|e| format!("{:?}: {}", e.code(), e.message()))?
            .ok_or("stream closed")?;
        Ok(first.resources.len())
    };
    tokio::time::timeout(Duration::from_secs(10), go)
        .await
        .map_err(|_| "timed out".to_string())?
}

async fn gateways_by_certificate(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(dir.path());
    let cert_a = certs.client("envoy-a", &["gw-1.a.example"], &[]);
    let cert_b_wildcard = certs.client("envoy-b", &["gw-7.b.example"], &[]);
    let cert_b_spiffe = certs.client("probe-b", &[], &["spiffe://corp.example/ns/b/sa/envoy"]);
    let cert_unlisted = certs.client("stranger", &["gw-1.c.example"], &[]);
    let other_ca = Pki::new(dir.path(), "other");
    let cert_other_ca =
        other_ca.leaf_with_uris(dir.path(), "other-ca", &["gw-1.a.example"], &[], ClientAuth);
    let b_port = port();
    let tessera_args = certs.tessera_args();
    let bootstrap_a = certs.bootstrap_args(&cert_a);
    let stack = Stack::builder()
        .dir(dir)
        .mocks(&["a", "b"])
        .configure(|c| {
            let (a, b) = (c.mock("a").endpoint(), c.mock("b").endpoint());
            c.write("gateways.yaml", config(c.listener, b_port, &a, &b));
            c.write("key-a.key", "sk-a-secret");
            c.write("key-b.key", "sk-b-secret");
        })
        .tessera_args(&strs(&tessera_args))
        .bootstrap_args(&strs(&bootstrap_a))
        .node_cluster("gw-a")
        .envoy(mode)
        .start()
        .await;
    let (tessera, d) = (&stack.tessera, stack.dir.path());

    // Gateway A's certificate claiming A: A's configuration and key.
    let reply = stack.send("/v1/chat/completions", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.provider().as_deref(), Some("a"));
    assert_eq!(
        reply.upstream_header("authorization").as_deref(),
        Some("Bearer sk-a-secret")
    );

    // Gateway A's certificate claiming B: refused, and not a byte of B.
    let options = |cluster, args| EnvoyOptions {
        node_cluster: cluster,
        delta: mode.is_delta(),
        bootstrap_args: args,
        envoy_args: Vec::new(),
    };
    let thief = Envoy::start_unready(
        &envoy(),
        d,
        tessera.xds_port,
        b_port,
        options("gw-b", bootstrap_a.clone()),
    )
    .await;
    let refusal = eventually("Tessera records the refusal", DEADLINE, || async {
        let status = tessera.status().await;
        status["xds"]["refused"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["node_id"] == thief.node_id().as_str())
            .cloned()
    })
    .await;
    assert_eq!(refusal["node_cluster"], "gw-b");
    assert!(
        refusal["identity"]
            .as_str()
            .unwrap()
            .contains("dns gw-1.a.example"),
        "{refusal}"
    );
    assert!(metric(tessera, "tessera_xds_refused_streams_total").await >= 1);
    assert!(tessera.logs().contains("PERMISSION_DENIED"));
    let dump = thief.config_dump().await.to_string();
    for leak in ["backend/b", "credential/b", "sk-b-secret", "listener/b/"] {
        assert!(
            !dump.contains(leak),
            "the refused Envoy holds {leak}: {dump}"
        );
    }
    assert_eq!(
        thief.stat("cluster_manager.active_clusters").await,
        1,
        "only tessera_xds"
    );

    // A wildcard DNS entry: any one label under b.example.
    let b_envoy = Envoy::start(
        &envoy(),
        d,
        tessera.xds_port,
        b_port,
        options("gw-b", certs.bootstrap_args(&cert_b_wildcard)),
    )
    .await;
    let reply = send(&stack.client, &b_envoy.url("/v1/chat/completions"), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.upstream_header("authorization").as_deref(),
        Some("Bearer sk-b-secret")
    );

    // Without Envoy: a SPIFFE ID is served; a certificate with no listed SAN is refused; one
    // from another CA cannot even connect.
    let ca = &certs.pki.ca;
    assert_eq!(
        probe(tessera.xds_port, ca, &cert_b_spiffe, "gw-b").await,
        Ok(1)
    );
    let refused = probe(tessera.xds_port, ca, &cert_b_spiffe, "gw-a").await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.starts_with("PermissionDenied")),
        "{refused:?}"
    );
    let refused = probe(tessera.xds_port, ca, &cert_unlisted, "gw-a").await;
    let refused = refused.unwrap_err();
    assert!(refused.starts_with("PermissionDenied"), "{refused}");
    assert!(
        refused.contains("gw-1.c.example") && refused.contains("gw-a"),
        "{refused}"
    );
    let stranger = probe(tessera.xds_port, ca, &cert_other_ca, "gw-a").await;
    assert!(
        stranger
            .as_ref()
            .is_err_and(|e| !e.starts_with("PermissionDenied")),
        "{stranger:?}"
    );
    // The server logs the failed handshake just after the client sees it fail.
    eventually("the failed handshake logged", DEADLINE, || async {
        tessera
            .logs()
            .contains("xDS TLS handshake failed")
            .then_some(())
    })
    .await;
}
both_modes!(gateways_by_certificate);

/// The certificate a new TLS connection to Tessera's xDS port is shown.
async fn served_certificate(port: u16, ca: &Path, client: &(PathBuf, PathBuf)) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![CertificateDer::from_pem_file(&client.0).unwrap()],
        PrivateKeyDer::from_pem_file(&client.1).unwrap(),
    )
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

async fn server_certificate_rotation_keeps_streams(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(dir.path());
    let cert_a = certs.client("envoy-a", &["gw-1.a.example"], &[]);
    let tessera_args = certs.tessera_args();
    let bootstrap_a = certs.bootstrap_args(&cert_a);
    let b_port = port();
    let stack = Stack::builder()
        .dir(dir)
        .mocks(&["a", "b"])
        .configure(|c| {
            let (a, b) = (c.mock("a").endpoint(), c.mock("b").endpoint());
            c.write("gateways.yaml", config(c.listener, b_port, &a, &b));
            c.write("key-a.key", "sk-a-1");
            c.write("key-b.key", "sk-b-1");
        })
        .tessera_args(&strs(&tessera_args))
        .bootstrap_args(&strs(&bootstrap_a))
        .node_cluster("gw-a")
        .envoy(mode)
        .start()
        .await;
    let (tessera, envoy) = (&stack.tessera, stack.envoy());
    let reply = stack.send("/v1/chat/completions", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let xds_connections = "cluster.tessera_xds.upstream_cx_total";
    let connections = envoy.stat(xds_connections).await;
    assert_eq!(envoy.stat("control_plane.connected_state").await, 1);
    let before = served_certificate(tessera.xds_port, &certs.pki.ca, &cert_a).await;

    // cert-manager writes a new certificate and key (same CA, same names).
    let d = stack.dir.path();
    let (new_cert, _) = certs
        .pki
        .leaf(d, "tessera", &[SERVER_NAME, "127.0.0.1"], ServerAuth);
    let rotated = CertificateDer::from_pem_file(&new_cert).unwrap().to_vec();
    assert_ne!(rotated, before);
    eventually("Tessera loads the new certificate", DEADLINE, || async {
        tessera
            .logs()
            .contains("new connections use them")
            .then_some(())
    })
    .await;
    assert_eq!(
        served_certificate(tessera.xds_port, &certs.pki.ca, &cert_a).await,
        rotated,
        "new connections see the new certificate"
    );

    // The established stream is untouched and still delivers updates.
    std::fs::write(stack.config.join("key-a.key"), "sk-a-2").unwrap();
    eventually(
        "the rotated key arrives over the old stream",
        DEADLINE,
        || async {
            let reply = stack.send("/v1/chat/completions", &[]).await;
            (reply.upstream_header("authorization").as_deref() == Some("Bearer sk-a-2"))
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        envoy.stat(xds_connections).await,
        connections,
        "no reconnect"
    );
    assert_eq!(envoy.stat("control_plane.connected_state").await, 1);
}
both_modes!(server_certificate_rotation_keeps_streams);

#[tokio::test]
async fn status_needs_the_admin_token_and_says_when_clients_are_unauthenticated() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, config_text(port())).unwrap();
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "s3cret-admin-token\n").unwrap();
    let tessera = Tessera::start(
        &config,
        &["--admin-token-file", &token.display().to_string()],
    )
    .await;
    let url = format!("http://127.0.0.1:{}/status", tessera.admin_port);
    let client = http();
    let anonymous = client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = client.get(&url).bearer_auth("guess").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let status: serde_json::Value = client
        .get(&url)
        .bearer_auth("s3cret-admin-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["xds"]["clientAuthentication"], "unauthenticated");
    assert!(
        status["xds"]["warning"]
            .as_str()
            .unwrap()
            .contains("any local process can read credentials"),
        "{status}"
    );
    // Probes and scrapers need no token.
    for open in ["/healthz", "/readyz", "/metrics"] {
        let url = format!("http://127.0.0.1:{}{open}", tessera.admin_port);
        assert_eq!(
            client.get(&url).send().await.unwrap().status(),
            200,
            "{open}"
        );
    }
    assert!(
        tessera
            .logs()
            .contains("any local process can read credentials")
    );
}

fn config_text(listener: u16) -> String {
    format!(
        "apiVersion: tessera.dev/v1alpha1\nkind: Gateway\nmetadata: {{name: open}}\nspec: {{nodeCluster: open, listeners: [{{name: http, port: {listener}, address: 127.0.0.1}}]}}\n"
    )
}

#[test]
fn validate_warns_about_gateways_without_xds_clients() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, config_text(10000)).unwrap();
    let out = std::process::Command::new(tessera_binary())
        .args(["validate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a warning is not an error: {stderr}");
    assert!(
        stderr.contains(r#"warning: Gateway "open" (nodeCluster "open") lists no spec.xdsClients"#),
        "{stderr}"
    );
    std::fs::write(
        &config,
        config_text(10000).replace("}]}", "}], xdsClients: [{dnsName: gw.example}]}"),
    )
    .unwrap();
    let out = std::process::Command::new(tessera_binary())
        .args(["validate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crd_accepts_xds_clients_and_refuses_ambiguous_entries() {
    use harness::kube_apiserver::{KubeApiserver, require_kube};
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
    let Some(bins) = require_kube("identity xdsClients CRD") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let kube = KubeApiserver::start(bins, dir.path()).await;
    kube.apply_shipped().await;
    let gvk = GroupVersionKind::gvk("tessera.dev", "v1alpha1", "Gateway");
    let gateways: Api<DynamicObject> = Api::namespaced_with(
        kube.client().await,
        "default",
        &ApiResource::from_gvk_with_plural(&gvk, "gateways"),
    );
    let gateway = |name: &str, clients: serde_json::Value| {
        serde_json::from_value::<DynamicObject>(serde_json::json!({
            "apiVersion": "tessera.dev/v1alpha1",
            "kind": "Gateway",
            "metadata": {"name": name},
            "spec": {
                "nodeCluster": name,
                "listeners": [{"name": "http", "port": 10000}],
                "xdsClients": clients,
            },
        }))
        .unwrap()
    };
    let valid = gateway(
        "valid",
        serde_json::json!([
            {"spiffe": "spiffe://corp.example/ns/payments/sa/envoy"},
            {"dnsName": "*.payments.corp.example"},
            {"serviceAccount": {"namespace": "payments", "name": "envoy"}},
        ]),
    );
    gateways
        .create(&PostParams::default(), &valid)
        .await
        .unwrap();
    for (name, entry) in [
        (
            "two",
            serde_json::json!({"spiffe": "spiffe://x/y", "dnsName": "a.b"}),
        ),
        ("none", serde_json::json!({})),
    ] {
        let refused = gateways
            .create(
                &PostParams::default(),
                &gateway(name, serde_json::json!([entry])),
            )
            .await;
        match refused {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{name}: {status:?}");
                assert!(
                    status.message.contains("needs exactly one of"),
                    "{status:?}"
                );
            }
            other => panic!("{name}: expected a refusal, got {other:?}"),
        }
    }
}
