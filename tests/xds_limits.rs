//! The xDS port against misbehaving clients, through the real binary and a raw ADS client:
//! stream limits end only the offending stream, and NACK text that echoes a key is neither
//! logged nor shown.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use harness::*;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

const KEY: &str = "sk-limits-0d9e41f7";
const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const SDS: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

fn config() -> String {
    format!(
        r#"apiVersion: tessera.dev/v1alpha1
kind: Gateway
metadata: {{name: gw}}
spec:
  nodeCluster: ai-gateway
  listeners: [{{name: http, port: {port}, address: 127.0.0.1}}]
---
apiVersion: tessera.dev/v1alpha1
kind: Backend
metadata: {{name: openai}}
spec:
  provider: OpenAI
  endpoint: http://127.0.0.1:9
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
stringData: {{openai: {KEY}}}
---
apiVersion: tessera.dev/v1alpha1
kind: Route
metadata: {{name: chat}}
spec:
  gateway: gw
  rules:
  - backends: [{{name: openai}}]
"#,
        port = port()
    )
}

async fn start(extra: &[&str]) -> (tempfile::TempDir, Tessera) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, config()).unwrap();
    let tessera = Tessera::start(&file, extra).await;
    (dir, tessera)
}

/// One raw ADS stream: requests in, responses (or the ending status) out.
struct Ads {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

async fn channel(t: &Tessera) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{}", t.xds_port))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Opens a stream on `channel`; the server's refusal, if any, is the error.
async fn open(channel: &Channel) -> Result<Ads, tonic::Status> {
    let (tx, rx) = mpsc::channel(8);
    let mut client = AggregatedDiscoveryServiceClient::new(channel.clone());
    let responses = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok(Ads { tx, rx: responses })
}

fn request(type_url: &str, names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(Node {
            id: "probe".into(),
            cluster: "ai-gateway".into(),
            ..Default::default()
        }),
        type_url: type_url.into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

impl Ads {
    async fn send(&self, req: DiscoveryRequest) {
        self.tx.send(req).await.unwrap();
    }

    /// The next message: a response, or the status that ended the stream.
    async fn next(&mut self) -> Result<DiscoveryResponse, tonic::Status> {
        tokio::time::timeout(DEADLINE, self.rx.message())
            .await
            .expect("an answer in time")
            .and_then(|m| m.ok_or_else(|| tonic::Status::unknown("stream closed")))
    }
}

/// Asks for clusters and returns the response: the stream is served.
async fn served(ads: &mut Ads) -> DiscoveryResponse {
    ads.send(request(CDS, &[])).await;
    ads.next().await.expect("a CDS response")
}

#[tokio::test]
async fn a_credential_nack_that_echoes_the_key_is_not_logged_or_shown() {
    let (_dir, tessera) = start(&[]).await;
    let ch = channel(&tessera).await;
    let mut ads = open(&ch).await.unwrap();
    let cds = served(&mut ads).await;
    ads.send(request(SDS, &["credential/key"])).await;
    let sds = ads.next().await.unwrap();
    assert_eq!(sds.resources.len(), 1);
    // Envoy may quote the rejected secret in its error detail.
    let mut nack = request(SDS, &["credential/key"]);
    nack.response_nonce = sds.nonce.clone();
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: format!("Proto constraint validation failed: inline_string: \"{KEY}\"\n"),
        ..Default::default()
    });
    ads.send(nack).await;
    // A cluster NACK's text is shown, escaped: no forged log line.
    let mut cds_nack = request(CDS, &[]);
    cds_nack.response_nonce = cds.nonce;
    cds_nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "bad cluster\nFORGED log line".into(),
        ..Default::default()
    });
    ads.send(cds_nack).await;
    let status = eventually("both NACKs in /status", DEADLINE, || async {
        let s = tessera.status().await;
        let text = s.to_string();
        (text.contains("withheld") && text.contains("bad cluster")).then_some(text)
    })
    .await;
    assert!(!status.contains(KEY), "{status}");
    assert!(status.contains(r"bad cluster\\nFORGED"), "{status}");
    let logs = eventually("the NACKs logged", DEADLINE, || async {
        let logs = tessera.logs();
        (logs.matches("NACKed").count() >= 2).then_some(logs)
    })
    .await;
    assert!(!logs.contains(KEY), "the key in Tessera's log:\n{logs}");
    assert!(
        !logs.lines().any(|l| l.starts_with("FORGED")),
        "a forged log line:\n{logs}"
    );
}

#[tokio::test]
async fn streams_over_the_total_are_refused_and_others_unaffected() {
    let (_dir, tessera) = start(&["--xds-max-streams", "2"]).await;
    let (c1, c2, c3) = (
        channel(&tessera).await,
        channel(&tessera).await,
        channel(&tessera).await,
    );
    let mut first = open(&c1).await.unwrap();
    served(&mut first).await;
    let mut second = open(&c2).await.unwrap();
    served(&mut second).await;
    let refused = match open(&c3).await {
        Err(status) => status,
        Ok(mut third) => {
            third.send(request(CDS, &[])).await;
            third.next().await.expect_err("the third stream is refused")
        }
    };
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    // The two admitted streams are still served.
    first.send(request(SDS, &["credential/key"])).await;
    assert_eq!(first.next().await.unwrap().type_url, SDS);
    second.send(request(SDS, &["credential/key"])).await;
    assert_eq!(second.next().await.unwrap().type_url, SDS);
    // Once one closes there is room again.
    drop(first);
    let mut again = eventually("a stream admitted again", DEADLINE, || async {
        let mut ads = open(&c3).await.ok()?;
        ads.send(request(CDS, &[])).await;
        ads.next().await.ok().map(|_| ads)
    })
    .await;
    again.send(request(SDS, &["credential/key"])).await;
    assert!(again.next().await.is_ok());
    assert!(tessera.logs().contains("limit of open streams"));
}

#[tokio::test]
async fn a_silent_or_oversized_stream_ends_alone() {
    let (_dir, tessera) = start(&["--xds-first-request-timeout", "1s"]).await;
    let ch = channel(&tessera).await;
    let mut working = open(&ch).await.unwrap();
    served(&mut working).await;

    let mut silent = open(&ch).await.unwrap();
    let status = silent.next().await.expect_err("ended");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");

    let mut greedy = open(&ch).await.unwrap();
    let names: Vec<String> = (0..10_001).map(|i| format!("credential/{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    greedy.send(request(SDS, &refs)).await;
    let status = greedy.next().await.expect_err("ended");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    let mut long_node = open(&ch).await.unwrap();
    let mut req = request(CDS, &[]);
    req.node.as_mut().unwrap().id = "n".repeat(1025);
    long_node.send(req).await;
    let status = long_node.next().await.expect_err("ended");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // The first stream, on the same connection, outlived all three.
    working.send(request(SDS, &["credential/key"])).await;
    assert_eq!(working.next().await.unwrap().type_url, SDS);
    let logs = tessera.logs();
    assert!(logs.contains("no first request in time"), "{logs}");
    assert!(
        logs.contains("too many subscribed resource names"),
        "{logs}"
    );
}

#[tokio::test]
async fn one_connection_has_at_most_its_stream_limit_open() {
    let (_dir, tessera) = start(&["--xds-max-streams-per-connection", "2"]).await;
    let ch = channel(&tessera).await;
    let mut a = open(&ch).await.unwrap();
    served(&mut a).await;
    let mut b = open(&ch).await.unwrap();
    served(&mut b).await;
    // The client must hold the third stream back (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS):
    // it is not served while two are open, but another connection is.
    let mut pending = tokio::spawn(async move {
        let mut c = open(&ch).await?;
        c.send(request(CDS, &[])).await;
        c.next().await
    });
    let mut other = open(&channel(&tessera).await).await.unwrap();
    served(&mut other).await;
    // An absence: only a bounded wait can observe it.
    let early = tokio::time::timeout(Duration::from_millis(500), &mut pending).await;
    assert!(
        early.is_err(),
        "a third stream on one connection was served"
    );
    drop(a);
    let third = tokio::time::timeout(DEADLINE, pending)
        .await
        .expect("served once a stream closed")
        .unwrap();
    assert!(third.is_ok(), "{third:?}");
    b.send(request(SDS, &["credential/key"])).await;
    assert_eq!(b.next().await.unwrap().type_url, SDS);
}
