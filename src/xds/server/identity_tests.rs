//! Authorisation at stream start and after configuration changes: a proven identity gets only
//! the gateway that lists it.

use super::*;
use crate::model::XdsClient;
use crate::xds::cache::{GatewayConfig, TypeSet};
use crate::xds::identity::PeerIdentity;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse};
use std::time::Duration;

fn cluster(name: &str) -> Arc<Resource> {
    let c = envoy_types::pb::envoy::config::cluster::v3::Cluster {
        name: name.into(),
        ..Default::default()
    };
    Resource::new(name, &c)
}

fn secret(name: &str, value: &str) -> Arc<Resource> {
    crate::translate::generic_secret(name, Some(&crate::model::SecretString::new(value)))
}

fn gateway(cluster_name: &str, cred: &str, clients: &[&str]) -> Arc<GatewayConfig> {
    Arc::new(GatewayConfig {
        clusters: TypeSet::new([cluster(cluster_name)]),
        credentials: [cred.to_owned()].into(),
        xds_clients: clients
            .iter()
            .map(|c| XdsClient::DnsName(c.to_string()))
            .collect(),
        ..Default::default()
    })
}

fn peer(dns: &str) -> Authenticated {
    Authenticated::Peer(PeerIdentity {
        dns_names: vec![dns.into()],
        ..Default::default()
    })
}

fn publish(cache: &Cache, a_clients: &[&str]) {
    let gateways = [
        (
            "a".to_owned(),
            gateway("backend/a", "credential/a", a_clients),
        ),
        (
            "b".to_owned(),
            gateway("backend/b", "credential/b", &["gw.b.example"]),
        ),
    ];
    cache.publish(
        gateways.into(),
        [
            secret("credential/a", "sk-a"),
            secret("credential/b", "sk-b"),
        ],
    );
}

struct Stream {
    req: mpsc::UnboundedSender<Result<DiscoveryRequest, Status>>,
    resp: mpsc::Receiver<Result<DiscoveryResponse, Status>>,
}

impl Stream {
    fn open(cache: &Cache, registry: &Arc<Registry>, peer: Authenticated) -> Self {
        let (req_tx, req_rx) = mpsc::unbounded_channel();
        let (resp_tx, raw_rx) = mpsc::channel(16);
        let resp_rx = decoded(raw_rx);
        let ctx = StreamCtx::new(cache, registry).with_peer(peer);
        tokio::spawn(run_sotw(
            tokio_stream::wrappers::UnboundedReceiverStream::new(req_rx),
            resp_tx,
            ctx,
        ));
        Self {
            req: req_tx,
            resp: resp_rx,
        }
    }

    fn ask(&self, cluster: &str, t: &str, names: &[&str]) {
        let req = DiscoveryRequest {
            node: Some(Node {
                id: "n1".into(),
                cluster: cluster.into(),
                ..Default::default()
            }),
            type_url: t.into(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        self.req.send(Ok(req)).unwrap();
    }

    async fn next(&mut self) -> Option<Result<DiscoveryResponse, Status>> {
        tokio::time::timeout(Duration::from_secs(2), self.resp.recv())
            .await
            .expect("an answer or the end of the stream")
    }
}

fn names(resp: &DiscoveryResponse) -> Vec<String> {
    resp.resources
        .iter()
        .map(|a| {
            use prost::Message;
            envoy_types::pb::envoy::config::cluster::v3::Cluster::decode(a.value.as_slice())
                .unwrap()
                .name
        })
        .collect()
}

#[tokio::test]
async fn a_listed_identity_gets_its_gateway() {
    let cache = Cache::new();
    publish(&cache, &["*.a.example"]);
    let registry = Arc::new(Registry::default());
    let mut s = Stream::open(&cache, &registry, peer("gw-1.a.example"));
    s.ask("a", type_url::CLUSTER, &[]);
    let resp = s.next().await.unwrap().unwrap();
    assert_eq!(names(&resp), ["backend/a"]);
    assert_eq!(registry.refused_total.load(Ordering::Relaxed), 0);
    let streams = registry.snapshot();
    assert_eq!(streams[0].identity.as_deref(), Some("[dns gw-1.a.example]"));
}

#[tokio::test]
async fn claiming_another_gateway_is_permission_denied_and_gets_nothing() {
    let cache = Cache::new();
    publish(&cache, &["gw.a.example"]);
    let registry = Arc::new(Registry::default());
    let mut s = Stream::open(&cache, &registry, peer("gw.a.example"));
    s.ask("b", type_url::CLUSTER, &[]);
    s.ask("b", type_url::SECRET, &["credential/b"]);
    let status = s.next().await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(status.message().contains("dns gw.a.example"), "{status:?}");
    assert!(status.message().contains("\"b\""), "{status:?}");
    assert!(!status.message().contains("sk-"), "{status:?}");
    assert!(
        s.next().await.is_none(),
        "the stream ends without a response"
    );
    assert_eq!(registry.refused_total.load(Ordering::Relaxed), 1);
    let refusals = registry.refusals();
    assert_eq!(refusals[0].node_cluster, "b");
    assert!(registry.streams.is_empty());
}

#[tokio::test]
async fn gateways_without_xds_clients_and_unknown_clusters_serve_no_proven_identity() {
    let cache = Cache::new();
    publish(&cache, &[]);
    let registry = Arc::new(Registry::default());
    for cluster in ["a", "nope"] {
        let mut s = Stream::open(&cache, &registry, peer("gw.a.example"));
        s.ask(cluster, type_url::CLUSTER, &[]);
        let status = s.next().await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{cluster}");
    }
    // Without client authentication the claimed cluster decides, as before.
    let mut s = Stream::open(&cache, &registry, Authenticated::Unauthenticated);
    s.ask("a", type_url::CLUSTER, &[]);
    assert_eq!(names(&s.next().await.unwrap().unwrap()), ["backend/a"]);
}

#[tokio::test]
async fn removing_an_identity_from_xds_clients_ends_its_stream() {
    let cache = Cache::new();
    publish(&cache, &["gw.a.example"]);
    let registry = Arc::new(Registry::default());
    let mut s = Stream::open(&cache, &registry, peer("gw.a.example"));
    s.ask("a", type_url::CLUSTER, &[]);
    assert_eq!(names(&s.next().await.unwrap().unwrap()), ["backend/a"]);
    publish(&cache, &["other.a.example"]);
    let status = s.next().await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(s.next().await.is_none());
}

#[tokio::test]
async fn asking_for_another_gateways_credential_gets_nothing_and_is_counted() {
    let cache = Cache::new();
    publish(&cache, &["gw.a.example"]);
    let registry = Arc::new(Registry::default());
    let mut s = Stream::open(&cache, &registry, peer("gw.a.example"));
    s.ask("a", type_url::SECRET, &["credential/b"]);
    let nothing = tokio::time::timeout(Duration::from_millis(200), s.resp.recv()).await;
    assert!(nothing.is_err(), "nothing is sent for an unreferenced name");
    assert_eq!(
        registry
            .unreferenced_credentials_total
            .load(Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn delta_refuses_and_counts_like_sotw() {
    let cache = Cache::new();
    publish(&cache, &["gw.a.example"]);
    let registry = Arc::new(Registry::default());
    let open = |cluster: &str, names: &[&str]| {
        let (req_tx, req_rx) = mpsc::unbounded_channel();
        let (resp_tx, raw_rx) = mpsc::channel(16);
        let resp_rx = decoded::<DeltaDiscoveryResponse>(raw_rx);
        let ctx = StreamCtx::new(&cache, &registry).with_peer(peer("gw.a.example"));
        tokio::spawn(run_delta(
            tokio_stream::wrappers::UnboundedReceiverStream::new(req_rx),
            resp_tx,
            ctx,
        ));
        let req = DeltaDiscoveryRequest {
            node: Some(Node {
                id: "n1".into(),
                cluster: cluster.into(),
                ..Default::default()
            }),
            type_url: type_url::SECRET.into(),
            resource_names_subscribe: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        req_tx.send(Ok(req)).unwrap();
        (req_tx, resp_rx)
    };
    let (_keep, mut refused) = open("b", &["credential/b"]);
    let first = tokio::time::timeout(Duration::from_secs(2), refused.recv()).await;
    let status = first.unwrap().unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);

    let (_keep, mut served) = open("a", &["credential/a", "credential/b"]);
    let resp = tokio::time::timeout(Duration::from_secs(2), served.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let names: Vec<_> = resp.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["credential/a"],
        "never another gateway's credential"
    );
    assert_eq!(
        registry
            .unreferenced_credentials_total
            .load(Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn a_proven_identity_waits_for_an_incomplete_configuration_instead_of_being_refused() {
    // Before anything is loaded (a restart) the gateway may still arrive.
    let cache = Cache::new();
    let registry = Arc::new(Registry::default());
    let mut s = Stream::open(&cache, &registry, peer("gw.a.example"));
    s.ask("a", type_url::CLUSTER, &[]);
    let nothing = tokio::time::timeout(Duration::from_millis(200), s.resp.recv()).await;
    assert!(nothing.is_err(), "held, neither answered nor refused");
    assert_eq!(registry.refused_total.load(Ordering::Relaxed), 0);
    publish(&cache, &["gw.a.example"]);
    assert_eq!(names(&s.next().await.unwrap().unwrap()), ["backend/a"]);

    // Once the configuration is complete, a cluster no Gateway serves is refused.
    let mut other = Stream::open(&cache, &registry, peer("gw.a.example"));
    other.ask("nope", type_url::CLUSTER, &[]);
    let status = other.next().await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
}
