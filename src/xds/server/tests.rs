use super::*;
use crate::xds::cache::{GatewayConfig, TypeSet};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use std::time::Duration;

fn secret(name: &str, value: &str) -> Arc<Resource> {
    crate::translate::generic_secret(name, Some(&crate::model::SecretString::new(value)))
}

fn cluster(name: &str) -> Arc<Resource> {
    let c = envoy_types::pb::envoy::config::cluster::v3::Cluster {
        name: name.into(),
        ..Default::default()
    };
    Resource::new(name, &c)
}

fn gateway(clusters: &[&str], creds: &[&str]) -> HashMap<String, Arc<GatewayConfig>> {
    let g = GatewayConfig {
        clusters: TypeSet::new(clusters.iter().map(|c| cluster(c))),
        credentials: creds.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    [("gw".to_string(), Arc::new(g))].into()
}

fn node() -> Option<Node> {
    Some(Node {
        id: "n1".into(),
        cluster: "gw".into(),
        ..Default::default()
    })
}

struct Harness<Req, Resp> {
    req: mpsc::UnboundedSender<Result<Req, Status>>,
    resp: mpsc::Receiver<Result<Resp, Status>>,
}

impl<Req, Resp> Harness<Req, Resp> {
    async fn next(&mut self) -> Resp {
        tokio::time::timeout(Duration::from_secs(2), self.resp.recv())
            .await
            .expect("a response")
            .expect("stream open")
            .expect("not an error")
    }

    async fn nothing(&mut self) {
        // Nothing may arrive; a short wait is the only way to observe an absence.
        let r = tokio::time::timeout(Duration::from_millis(100), self.resp.recv()).await;
        assert!(r.is_err(), "unexpected response");
    }
}

fn sotw(cache: &Cache) -> (Harness<DiscoveryRequest, DiscoveryResponse>, Arc<Registry>) {
    let (req_tx, req_rx) = mpsc::unbounded_channel();
    let (resp_tx, resp_rx) = mpsc::channel(16);
    let registry = Arc::new(Registry::default());
    let ctx = StreamCtx::new(cache, &registry);
    tokio::spawn(run_sotw(
        tokio_stream::wrappers::UnboundedReceiverStream::new(req_rx),
        resp_tx,
        ctx,
    ));
    (
        Harness {
            req: req_tx,
            resp: resp_rx,
        },
        registry,
    )
}

fn delta(cache: &Cache) -> Harness<DeltaDiscoveryRequest, DeltaDiscoveryResponse> {
    let (req_tx, req_rx) = mpsc::unbounded_channel();
    let (resp_tx, resp_rx) = mpsc::channel(16);
    let registry = Arc::new(Registry::default());
    let ctx = StreamCtx::new(cache, &registry);
    tokio::spawn(run_delta(
        tokio_stream::wrappers::UnboundedReceiverStream::new(req_rx),
        resp_tx,
        ctx,
    ));
    Harness {
        req: req_tx,
        resp: resp_rx,
    }
}

fn sotw_req(t: &str, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        node: node(),
        type_url: t.into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn sotw_sends_acks_and_pushes_rotations_only_for_secrets() {
    let cache = Cache::new();
    cache.publish(
        gateway(&["backend/a"], &["credential/a"]),
        [secret("credential/a", "k1")],
    );
    let (mut h, registry) = sotw(&cache);
    h.req
        .send(Ok(sotw_req(type_url::CLUSTER, &[], "", "")))
        .unwrap();
    let cds = h.next().await;
    assert_eq!(cds.resources.len(), 1);
    h.req
        .send(Ok(sotw_req(
            type_url::CLUSTER,
            &[],
            &cds.version_info,
            &cds.nonce,
        )))
        .unwrap();
    h.req
        .send(Ok(sotw_req(type_url::SECRET, &["credential/a"], "", "")))
        .unwrap();
    let sds = h.next().await;
    assert_eq!(sds.type_url, type_url::SECRET);
    h.req
        .send(Ok(sotw_req(
            type_url::SECRET,
            &["credential/a"],
            &sds.version_info,
            &sds.nonce,
        )))
        .unwrap();
    h.nothing().await;

    // Rotation: exactly one SDS response, nothing else.
    cache.set_credentials([secret("credential/a", "k2")]);
    let rotated = h.next().await;
    assert_eq!(rotated.type_url, type_url::SECRET);
    assert_ne!(rotated.version_info, sds.version_info);
    let s = Secret::decode(rotated.resources[0].value.as_slice()).unwrap();
    assert_eq!(s.name, "credential/a");
    h.nothing().await;

    // A NACK is recorded and the same version is not resent.
    let mut nack = sotw_req(
        type_url::SECRET,
        &["credential/a"],
        &sds.version_info,
        &rotated.nonce,
    );
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "bad secret".into(),
        ..Default::default()
    });
    h.req.send(Ok(nack)).unwrap();
    h.nothing().await;
    assert_eq!(registry.nacks_total.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn sotw_reconnect_with_current_version_gets_nothing() {
    let cache = Cache::new();
    cache.publish(gateway(&["backend/a"], &[]), []);
    let (mut h, _) = sotw(&cache);
    h.req
        .send(Ok(sotw_req(type_url::CLUSTER, &[], "", "")))
        .unwrap();
    let first = h.next().await;
    drop(h);
    let (mut again, _) = sotw(&cache);
    again
        .req
        .send(Ok(sotw_req(
            type_url::CLUSTER,
            &[],
            &first.version_info,
            "",
        )))
        .unwrap();
    again.nothing().await;
}

#[tokio::test]
async fn secrets_go_only_to_nodes_that_reference_them() {
    let cache = Cache::new();
    cache.publish(
        gateway(&["backend/a"], &["credential/a"]),
        [secret("credential/a", "k1")],
    );
    cache.set_credentials([secret("credential/other", "x")]);
    let (mut h, _) = sotw(&cache);
    h.req
        .send(Ok(sotw_req(
            type_url::SECRET,
            &["credential/other"],
            "",
            "",
        )))
        .unwrap();
    h.nothing().await;
    // A node of an unknown gateway gets nothing either.
    let (mut stranger, _) = sotw(&cache);
    let mut req = sotw_req(type_url::SECRET, &["credential/a"], "", "");
    req.node = Some(Node {
        id: "x".into(),
        cluster: "other".into(),
        ..Default::default()
    });
    stranger.req.send(Ok(req)).unwrap();
    stranger.nothing().await;
}

#[tokio::test]
async fn delta_honours_initial_versions_and_removes_clusters_not_secrets() {
    let cache = Cache::new();
    cache.publish(
        gateway(&["backend/a", "backend/b"], &["credential/a"]),
        [secret("credential/a", "k1")],
    );
    let mut h = delta(&cache);
    let a_version = cluster("backend/a").version.clone();
    h.req
        .send(Ok(DeltaDiscoveryRequest {
            node: node(),
            type_url: type_url::CLUSTER.into(),
            initial_resource_versions: [("backend/a".to_string(), a_version)].into(),
            ..Default::default()
        }))
        .unwrap();
    let r = h.next().await;
    let names: Vec<_> = r.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["backend/b"], "only what the node lacks");
    h.req
        .send(Ok(DeltaDiscoveryRequest {
            type_url: type_url::SECRET.into(),
            resource_names_subscribe: vec!["credential/a".into()],
            ..Default::default()
        }))
        .unwrap();
    assert_eq!(h.next().await.resources.len(), 1);

    // Config drops backend/b and the credential reference: the cluster is removed, the
    // secret is not (Envoy would keep the old key anyway).
    cache.publish(gateway(&["backend/a"], &[]), []);
    let r = h.next().await;
    assert_eq!(r.type_url, type_url::CLUSTER);
    assert_eq!(r.removed_resources, ["backend/b"]);
    h.nothing().await;
}

#[tokio::test]
async fn delta_rotation_is_one_resource() {
    let cache = Cache::new();
    cache.publish(
        gateway(&["backend/a"], &["credential/a"]),
        [secret("credential/a", "k1")],
    );
    let mut h = delta(&cache);
    h.req
        .send(Ok(DeltaDiscoveryRequest {
            node: node(),
            type_url: type_url::SECRET.into(),
            resource_names_subscribe: vec!["credential/a".into()],
            ..Default::default()
        }))
        .unwrap();
    h.next().await;
    cache.set_credentials([secret("credential/a", "k2")]);
    let r = h.next().await;
    assert_eq!(r.resources.len(), 1);
    assert!(r.removed_resources.is_empty());
    h.nothing().await;
}

#[tokio::test]
async fn a_node_whose_gateway_is_missing_from_an_incomplete_configuration_gets_nothing() {
    let cache = Cache::new();
    // Reconnecting nodes that hold a configuration, before anything is loaded.
    let mut d = delta(&cache);
    d.req
        .send(Ok(DeltaDiscoveryRequest {
            node: node(),
            type_url: type_url::CLUSTER.into(),
            initial_resource_versions: [("backend/a".to_string(), "v1".to_string())].into(),
            ..Default::default()
        }))
        .unwrap();
    let (mut s, _) = sotw(&cache);
    s.req
        .send(Ok(sotw_req(type_url::CLUSTER, &[], "v1", "")))
        .unwrap();
    d.nothing().await;
    s.nothing().await;

    // Loaded, but with objects left out and without their gateway: still nothing, neither an
    // empty SotW answer nor a Delta removal.
    cache.publish_with(HashMap::new(), [], false);
    d.nothing().await;
    s.nothing().await;

    // The gateway arrives: both are answered.
    cache.publish_with(gateway(&["backend/a"], &[]), [], false);
    assert_eq!(s.next().await.resources.len(), 1);
    let r = d.next().await;
    assert_eq!(r.resources.len(), 1);
    assert!(r.removed_resources.is_empty());

    // A complete configuration without the gateway is a deliberate removal, and is sent.
    cache.publish(HashMap::new(), []);
    assert!(s.next().await.resources.is_empty());
    assert_eq!(d.next().await.removed_resources, ["backend/a"]);
}
