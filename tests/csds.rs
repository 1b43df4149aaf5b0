//! CSDS on the xDS port against real Envoy (SotW and Delta): a connected node is SYNCED on
//! every type it subscribed to, a key rotation shows up as a new SDS version, and no key value
//! is ever in an answer. With mTLS, only an identity some Gateway lists is answered.

use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
use envoy_types::pb::envoy::service::status::v3::{
    ClientConfig, ClientStatusRequest, ClientStatusResponse, ConfigStatus,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{NodeMatcher, StringMatcher, string_matcher};
use harness::*;
use prost::Message;
use tonic::transport::Channel;

const SDS: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

async fn client(s: &Stack) -> ClientStatusDiscoveryServiceClient<Channel> {
    ClientStatusDiscoveryServiceClient::connect(format!("http://127.0.0.1:{}", s.tessera.xds_port))
        .await
        .unwrap()
}

fn for_node(id: &str) -> ClientStatusRequest {
    ClientStatusRequest {
        node_matchers: vec![NodeMatcher {
            node_id: Some(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(id.to_owned())),
                ignore_case: false,
            }),
            node_metadatas: vec![],
        }],
        ..ClientStatusRequest::default()
    }
}

/// The SDS version of the one node in `r`, once every type it subscribed to (at least CDS,
/// LDS and SDS) is SYNCED.
fn synced_sds_version(r: &ClientStatusResponse) -> Option<String> {
    let [node]: &[ClientConfig; 1] = r.config.as_slice().try_into().ok()?;
    let types = &node.generic_xds_configs;
    let all_synced = types
        .iter()
        .all(|g| g.config_status == ConfigStatus::Synced as i32);
    let has = |t: &str| types.iter().any(|g| g.type_url == t);
    if !(all_synced && has(CDS) && has(LDS) && has(SDS)) {
        return None;
    }
    types
        .iter()
        .find(|g| g.type_url == SDS)
        .map(|g| g.version_info.clone())
}

fn assert_no_secret(r: &ClientStatusResponse, keys: &[&str]) {
    let bytes = r.encode_to_vec();
    for key in keys {
        assert!(
            !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
            "a key value is in the CSDS answer"
        );
    }
    for c in &r.config {
        #[allow(deprecated)]
        let per_type = &c.xds_config;
        assert!(per_type.is_empty());
        assert!(c.generic_xds_configs.iter().all(|g| g.xds_config.is_none()));
    }
}

async fn status_tracks_syncs_and_rotations(mode: Mode) {
    let keys = ["csds-secret-value-one", "csds-secret-value-two"];
    let s = Stack::builder()
        .mock("openai")
        .configure(|s| {
            s.write(
                "gateway.yaml",
                openai_key_file_config(s.listener, &s.mock("openai").endpoint()),
            );
            s.write("openai.key", keys[0]);
        })
        .envoy(mode)
        .start()
        .await;
    let node = s.envoy().node_id();
    let mut csds = client(&s).await;

    let (first, answer) = eventually("every type SYNCED", DEADLINE, || {
        let mut csds = csds.clone();
        let req = for_node(&node);
        async move {
            let r = csds.fetch_client_status(req).await.unwrap().into_inner();
            synced_sds_version(&r).map(|v| (v, r))
        }
    })
    .await;
    let cfg = &answer.config[0];
    let n = cfg.node.as_ref().unwrap();
    assert_eq!(
        (n.id.as_str(), n.cluster.as_str()),
        (node.as_str(), NODE_CLUSTER)
    );
    assert!(!first.is_empty());
    assert_no_secret(&answer, &keys);
    // The key is on the wire, so the SDS status is about a real secret.
    let reply = s.send("/v1/chat/completions", &[]).await;
    assert_eq!(
        reply.upstream_header("authorization").as_deref(),
        Some(format!("Bearer {}", keys[0]).as_str())
    );

    // A matcher naming another node selects nothing.
    let other = csds
        .fetch_client_status(for_node("someone-else"))
        .await
        .unwrap()
        .into_inner();
    assert!(other.config.is_empty());

    write_atomic(&s.config.join("openai.key"), keys[1]);
    let (second, answer) = eventually("a new SDS version, SYNCED", DEADLINE, || {
        let mut csds = csds.clone();
        let req = for_node(&node);
        let first = first.clone();
        async move {
            let r = csds.fetch_client_status(req).await.unwrap().into_inner();
            synced_sds_version(&r)
                .filter(|v| *v != first)
                .map(|v| (v, r))
        }
    })
    .await;
    assert_ne!(second, first);
    assert_no_secret(&answer, &keys);

    // The streaming form answers each request in turn.
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let mut answers = csds
        .stream_client_status(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..2 {
        tx.send(for_node(&node)).await.unwrap();
        let r = answers.message().await.unwrap().unwrap();
        assert_eq!(synced_sds_version(&r).as_deref(), Some(second.as_str()));
        assert_no_secret(&r, &keys);
    }
}
both_modes!(status_tracks_syncs_and_rotations);

/// With mTLS client authentication, CSDS answers an identity some Gateway lists and refuses
/// any other, even on loopback.
#[tokio::test]
async fn with_client_certificates_only_a_listed_identity_is_answered() {
    use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};

    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "xds");
    let server = pki.leaf(dir.path(), "tessera", &["tessera.local"], ServerAuth);
    let listed = pki.leaf(dir.path(), "listed", &["gw-1.a.example"], ClientAuth);
    let stranger = pki.leaf(dir.path(), "stranger", &["gw-1.c.example"], ClientAuth);
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("gateway.yaml"),
        format!(
            "apiVersion: tessera.dev/v1alpha1\nkind: Gateway\nmetadata: {{name: a}}\nspec:\n  nodeCluster: gw-a\n  listeners: [{{name: http, port: {}, address: 127.0.0.1}}]\n  xdsClients: [{{dnsName: gw-1.a.example}}]\n",
            port()
        ),
    )
    .unwrap();
    let path = |p: &std::path::Path| p.display().to_string();
    let args = [
        "--xds-tls-cert".to_owned(),
        path(&server.0),
        "--xds-tls-key".to_owned(),
        path(&server.1),
        "--xds-client-ca".to_owned(),
        path(&pki.ca),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let tessera = Tessera::start(&config, &args).await;

    let ask = |cert: &(std::path::PathBuf, std::path::PathBuf)| {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(&pki.ca).unwrap()))
            .domain_name("tessera.local")
            .identity(Identity::from_pem(
                std::fs::read(&cert.0).unwrap(),
                std::fs::read(&cert.1).unwrap(),
            ));
        let url = format!("https://127.0.0.1:{}", tessera.xds_port);
        async move {
            let channel = Channel::from_shared(url)
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect()
                .await
                .unwrap();
            ClientStatusDiscoveryServiceClient::new(channel)
                .fetch_client_status(ClientStatusRequest::default())
                .await
                .map(|r| r.into_inner().config.len())
                .map_err(|e| e.code())
        }
    };
    assert_eq!(ask(&listed).await, Ok(0));
    assert_eq!(ask(&stranger).await, Err(tonic::Code::PermissionDenied));
}
