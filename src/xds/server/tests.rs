use super::*;
use crate::xds::cache::{GatewayConfig, TypeSet};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use std::collections::HashMap;
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

/// One stream served by its loop, with the test playing Envoy.
pub(super) struct Harness<Req, Resp> {
    pub(super) req: mpsc::UnboundedSender<Result<Req, Status>>,
    resp: mpsc::Receiver<Result<Resp, Status>>,
}

/// Serves one SotW stream from `ctx`.
pub(super) fn open_sotw(ctx: StreamCtx) -> Harness<DiscoveryRequest, DiscoveryResponse> {
    let (req_tx, req_rx) = mpsc::unbounded_channel();
    let (resp_tx, raw_rx) = mpsc::channel(16);
    tokio::spawn(run_sotw(
        tokio_stream::wrappers::UnboundedReceiverStream::new(req_rx),
        resp_tx,
        ctx,
    ));
    Harness {
        req: req_tx,
        resp: decoded(raw_rx),
    }
}

/// Serves one Delta stream from `ctx`.
pub(super) fn open_delta(ctx: StreamCtx) -> Harness<DeltaDiscoveryRequest, DeltaDiscoveryResponse> {
    let (req_tx, req_rx) = mpsc::unbounded_channel();
    let (resp_tx, raw_rx) = mpsc::channel(16);
    tokio::spawn(run_delta(
        tokio_stream::wrappers::UnboundedReceiverStream::new(req_rx),
        resp_tx,
        ctx,
    ));
    Harness {
        req: req_tx,
        resp: decoded(raw_rx),
    }
}

impl<Req, Resp> Harness<Req, Resp> {
    pub(super) async fn next(&mut self) -> Resp {
        tokio::time::timeout(Duration::from_secs(2), self.resp.recv())
            .await
            .expect("a response")
            .expect("stream open")
            .expect("not an error")
    }

    async fn error(&mut self) -> Status {
        match tokio::time::timeout(Duration::from_secs(2), self.resp.recv()).await {
            Ok(Some(Err(status))) => status,
            other => panic!(
                "expected an error status, got {:?}",
                other.map(|o| o.map(|r| r.is_ok()))
            ),
        }
    }

    async fn nothing(&mut self) {
        // Nothing may arrive; a short wait is the only way to observe an absence.
        let r = tokio::time::timeout(Duration::from_millis(100), self.resp.recv()).await;
        assert!(r.is_err(), "unexpected response");
    }
}

fn sotw(cache: &Cache) -> (Harness<DiscoveryRequest, DiscoveryResponse>, Arc<Registry>) {
    sotw_limited(cache, Limits::default())
}

fn sotw_limited(
    cache: &Cache,
    limits: Limits,
) -> (Harness<DiscoveryRequest, DiscoveryResponse>, Arc<Registry>) {
    let registry = Arc::new(Registry::default());
    let ctx = StreamCtx::new(cache, &registry).with_limits(limits);
    (open_sotw(ctx), registry)
}

fn delta(cache: &Cache) -> Harness<DeltaDiscoveryRequest, DeltaDiscoveryResponse> {
    delta_limited(cache, Limits::default())
}

fn delta_limited(
    cache: &Cache,
    limits: Limits,
) -> Harness<DeltaDiscoveryRequest, DeltaDiscoveryResponse> {
    let registry = Arc::new(Registry::default());
    open_delta(StreamCtx::new(cache, &registry).with_limits(limits))
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

    // CSDS: CDS is in sync; SDS is in error on the rotated version, the NACK text withheld.
    use envoy_types::pb::envoy::service::status::v3::ConfigStatus;
    let csds = crate::xds::csds::client_configs(&registry.snapshot(), &[]).unwrap();
    let types = &csds[0].generic_xds_configs;
    let of = |t: &str| types.iter().find(|g| g.type_url == t).unwrap();
    assert_eq!(
        of(type_url::CLUSTER).config_status,
        ConfigStatus::Synced as i32
    );
    let sds = of(type_url::SECRET);
    assert_eq!(sds.config_status, ConfigStatus::Error as i32);
    assert_eq!(sds.version_info, rotated.version_info);
    let details = &sds.error_state.as_ref().unwrap().details;
    assert!(!details.contains("bad secret"), "{details}");
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

fn names_of(resp: &DiscoveryResponse) -> Vec<String> {
    resp.resources
        .iter()
        .map(|a| Secret::decode(a.value.as_slice()).unwrap().name)
        .collect()
}

fn two_secrets(cache: &Cache) {
    cache.publish(
        gateway(
            &["backend/a", "backend/b"],
            &["credential/a", "credential/b"],
        ),
        [secret("credential/a", "ka1"), secret("credential/b", "kb1")],
    );
}

/// Research Q2.4: a cluster removed and re-added asks for its secret again; Envoy keeps
/// nothing for it, so it must be sent even though Tessera's view did not change.
#[tokio::test]
async fn sotw_answers_a_name_watched_again() {
    let cache = Cache::new();
    two_secrets(&cache);
    let (mut h, _) = sotw(&cache);
    let both = ["credential/a", "credential/b"];
    h.req
        .send(Ok(sotw_req(type_url::SECRET, &both, "", "")))
        .unwrap();
    let first = h.next().await;
    assert_eq!(names_of(&first), both);
    h.req
        .send(Ok(sotw_req(
            type_url::SECRET,
            &both,
            &first.version_info,
            &first.nonce,
        )))
        .unwrap();
    h.nothing().await;
    // backend/b is removed: Envoy unwatches credential/b and Tessera answers with the rest.
    h.req
        .send(Ok(sotw_req(
            type_url::SECRET,
            &["credential/a"],
            &first.version_info,
            &first.nonce,
        )))
        .unwrap();
    let only_a = h.next().await;
    assert_eq!(names_of(&only_a), ["credential/a"]);
    // Re-added before Envoy processed that answer: the request carries the old nonce and
    // version, and the answer to it must carry credential/b without waiting for an ACK.
    h.req
        .send(Ok(sotw_req(
            type_url::SECRET,
            &both,
            &first.version_info,
            &first.nonce,
        )))
        .unwrap();
    let again = h.next().await;
    assert_eq!(names_of(&again), both);
    assert_ne!(again.nonce, only_a.nonce);
}

/// The same, for a reconnected stream whose first request claimed the current version: the
/// request that watches a name again carries an empty nonce and that same version.
#[tokio::test]
async fn sotw_answers_a_name_watched_again_after_a_reconnect() {
    let cache = Cache::new();
    two_secrets(&cache);
    let both = ["credential/a", "credential/b"];
    let (mut h, _) = sotw(&cache);
    h.req
        .send(Ok(sotw_req(type_url::SECRET, &both, "", "")))
        .unwrap();
    let held = h.next().await.version_info;
    drop(h);
    let (mut h, _) = sotw(&cache);
    h.req
        .send(Ok(sotw_req(type_url::SECRET, &both, &held, "")))
        .unwrap();
    h.nothing().await;
    h.req
        .send(Ok(sotw_req(type_url::SECRET, &["credential/a"], &held, "")))
        .unwrap();
    assert_eq!(names_of(&h.next().await), ["credential/a"]);
    h.req
        .send(Ok(sotw_req(type_url::SECRET, &both, &held, "")))
        .unwrap();
    assert_eq!(names_of(&h.next().await), both);
}

/// Research: a Delta Envoy whose gateway has no clusters or listeners still needs an answer
/// to its wildcard CDS and LDS subscriptions to finish initializing.
#[tokio::test]
async fn delta_answers_an_empty_wildcard_once() {
    let cache = Cache::new();
    cache.publish(gateway(&[], &[]), []);
    let mut h = delta(&cache);
    for t in [type_url::CLUSTER, type_url::LISTENER] {
        h.req
            .send(Ok(DeltaDiscoveryRequest {
                node: node(),
                type_url: t.into(),
                ..Default::default()
            }))
            .unwrap();
        let r = h.next().await;
        assert_eq!(r.type_url, t);
        assert!(r.resources.is_empty() && r.removed_resources.is_empty());
        // The ACK gets nothing more.
        h.req
            .send(Ok(DeltaDiscoveryRequest {
                type_url: t.into(),
                response_nonce: r.nonce,
                ..Default::default()
            }))
            .unwrap();
        h.nothing().await;
    }
    // A reconnecting node that holds resources is past initializing: no empty answer (no
    // churn after a restart).
    cache.publish(gateway(&["backend/a"], &[]), []);
    let mut back = delta(&cache);
    back.req
        .send(Ok(DeltaDiscoveryRequest {
            node: node(),
            type_url: type_url::CLUSTER.into(),
            initial_resource_versions: [(
                "backend/a".to_string(),
                cluster("backend/a").version.clone(),
            )]
            .into(),
            ..Default::default()
        }))
        .unwrap();
    back.nothing().await;
    // A node of a gateway that does not exist (yet) is answered the same way.
    let mut stranger = delta(&cache);
    let mut req = DeltaDiscoveryRequest {
        node: node(),
        type_url: type_url::CLUSTER.into(),
        ..Default::default()
    };
    req.node.as_mut().unwrap().cluster = "nobody".into();
    stranger.req.send(Ok(req)).unwrap();
    assert!(stranger.next().await.resources.is_empty());
}

fn small_limits() -> Limits {
    Limits {
        max_names_per_type: 3,
        max_node_field_bytes: 16,
        ..Limits::default()
    }
}

#[tokio::test]
async fn too_many_names_end_only_that_stream() {
    let cache = Cache::new();
    two_secrets(&cache);
    let (mut calm, _) = sotw_limited(&cache, small_limits());
    calm.req
        .send(Ok(sotw_req(type_url::SECRET, &["credential/a"], "", "")))
        .unwrap();
    calm.next().await;

    let (mut greedy, registry) = sotw_limited(&cache, small_limits());
    greedy
        .req
        .send(Ok(sotw_req(
            type_url::SECRET,
            &["a", "b", "c", "d"],
            "",
            "",
        )))
        .unwrap();
    let status = greedy.error().await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(registry.streams.is_empty(), "the stream is gone");

    let mut greedy = delta_limited(&cache, small_limits());
    for name in ["a", "b", "c", "d"] {
        greedy
            .req
            .send(Ok(DeltaDiscoveryRequest {
                node: node(),
                type_url: type_url::ROUTE.into(),
                resource_names_subscribe: vec![name.into()],
                ..Default::default()
            }))
            .unwrap();
    }
    assert_eq!(greedy.error().await.code(), tonic::Code::ResourceExhausted);

    // The calm stream still gets its rotation.
    cache.set_credentials([secret("credential/a", "ka2")]);
    assert_eq!(names_of(&calm.next().await), ["credential/a"]);
}

#[tokio::test]
async fn oversized_or_unprintable_node_is_refused() {
    let cache = Cache::new();
    cache.publish(gateway(&["backend/a"], &[]), []);
    for (id, cluster) in [
        ("n".repeat(17), "gw".to_string()),
        ("n1".into(), "g\nw".into()),
    ] {
        let (mut h, registry) = sotw_limited(&cache, small_limits());
        let mut req = sotw_req(type_url::CLUSTER, &[], "", "");
        req.node = Some(Node {
            id: id.clone(),
            cluster,
            ..Default::default()
        });
        h.req.send(Ok(req)).unwrap();
        assert_eq!(h.error().await.code(), tonic::Code::InvalidArgument);
        assert!(registry.streams.is_empty());
    }
    let (mut ok, _) = sotw_limited(&cache, small_limits());
    ok.req
        .send(Ok(sotw_req(type_url::CLUSTER, &[], "", "")))
        .unwrap();
    ok.next().await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_stream_ends_after_the_first_request_timeout() {
    let cache = Cache::new();
    cache.publish(gateway(&["backend/a"], &[]), []);
    let limits = Limits {
        first_request_timeout: Duration::from_secs(15),
        ..Limits::default()
    };
    let (mut silent, _) = sotw_limited(&cache, limits);
    let (mut talking, _) = sotw_limited(&cache, limits);
    tokio::time::sleep(Duration::from_secs(14)).await;
    talking
        .req
        .send(Ok(sotw_req(type_url::CLUSTER, &[], "", "")))
        .unwrap();
    assert_eq!(talking.next().await.resources.len(), 1);
    let status = tokio::time::timeout(Duration::from_secs(2), silent.resp.recv())
        .await
        .expect("ended by the deadline")
        .expect("an item")
        .expect_err("a status");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    // The talking stream lives on past the deadline.
    cache.publish(gateway(&["backend/a", "backend/b"], &[]), []);
    assert_eq!(talking.next().await.resources.len(), 2);
}

#[tokio::test]
async fn streams_over_the_total_are_refused_until_one_closes() {
    let cache = Arc::new(Cache::new());
    let service = AdsService::with_limits(
        cache,
        Arc::new(Registry::default()),
        Limits {
            max_streams: 2,
            ..Limits::default()
        },
    );
    let a = service.admit().unwrap();
    let _b = service.admit().unwrap();
    let refused = service.admit().err().expect("a third stream is refused");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    drop(a);
    assert!(service.admit().is_ok(), "room again once a stream closed");
}

/// A buffer the tracing subscriber writes into, for reading back what was logged.
#[derive(Clone, Default)]
struct LogBuf(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_credential_nack_echoing_the_key_is_neither_logged_nor_shown() {
    let key = "sk-echoed-4f1c9a";
    let cache = Cache::new();
    cache.publish(
        gateway(&["backend/a"], &["credential/a"]),
        [secret("credential/a", key)],
    );
    let registry = Arc::new(Registry::default());
    let logs = LogBuf::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    // Kept open: a stream leaves the registry when it ends.
    let _stream = tracing::subscriber::with_default(subscriber, || {
        let mut stream = StreamState::open(
            identity(
                node().as_ref(),
                &Authenticated::Unauthenticated,
                &Limits::default(),
            )
            .unwrap(),
            &registry,
            Limits::default(),
            false,
        );
        let mut types = FxHashMap::default();
        let snapshot = cache.state();
        let req = sotw_req(type_url::SECRET, &["credential/a"], "", "");
        let sent = step::<Sotw>(
            &mut stream,
            &mut types,
            Event::Request(req),
            &snapshot,
            true,
        )
        .unwrap();
        let sent = DiscoveryResponse::decode(sent[0].to_bytes()).unwrap();
        let mut nack = sotw_req(type_url::SECRET, &["credential/a"], "", &sent.nonce);
        nack.error_detail = Some(RpcStatus {
            code: 3,
            message: format!("Proto constraint validation failed: inline_string: \"{key}\"\n"),
            ..Default::default()
        });
        let resent = step::<Sotw>(
            &mut stream,
            &mut types,
            Event::Request(nack),
            &snapshot,
            true,
        );
        assert!(resent.unwrap().is_empty(), "a NACKed version is not resent");
        stream
    });
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("NACKed"), "the NACK is logged: {logged}");
    assert!(!logged.contains(key), "{logged}");
    let shown = serde_json::to_string(&registry.snapshot()).unwrap();
    assert!(shown.contains("withheld"), "{shown}");
    assert!(!shown.contains(key), "{shown}");
}

/// Subscribes a SotW stream to two secrets and ACKs them; returns the SDS response.
async fn sotw_two_secrets(
    h: &mut Harness<DiscoveryRequest, DiscoveryResponse>,
) -> DiscoveryResponse {
    let names = ["credential/a", "credential/b"];
    h.req
        .send(Ok(sotw_req(type_url::SECRET, &names, "", "")))
        .unwrap();
    let sds = h.next().await;
    assert_eq!(sds.resources.len(), 2);
    h.req
        .send(Ok(sotw_req(
            type_url::SECRET,
            &names,
            &sds.version_info,
            &sds.nonce,
        )))
        .unwrap();
    h.nothing().await;
    sds
}

#[tokio::test]
async fn a_sotw_rotation_carries_only_the_changed_secret_and_the_whole_set_version() {
    let cache = Cache::new();
    cache.publish(
        gateway(&["backend/a"], &["credential/a", "credential/b"]),
        [secret("credential/a", "a1"), secret("credential/b", "b1")],
    );
    let (mut h, _) = sotw(&cache);
    let first = sotw_two_secrets(&mut h).await;
    cache.set_credentials([secret("credential/a", "a2")]);
    let rotated = h.next().await;
    assert_eq!(rotated.resources.len(), 1, "only the rotated secret");
    let s = Secret::decode(rotated.resources[0].value.as_slice()).unwrap();
    assert_eq!(s.name, "credential/a");
    // The version names the whole set the node now holds, as a full answer would.
    let whole = crate::xds::resource::set_version(&[
        secret("credential/a", "a2"),
        secret("credential/b", "b1"),
    ]);
    assert_eq!(rotated.version_info, whole);
    assert_ne!(rotated.version_info, first.version_info);
}

#[tokio::test]
async fn a_refused_partial_sotw_update_is_answered_once_with_the_whole_set() {
    let cache = Cache::new();
    cache.publish(
        gateway(&["backend/a"], &["credential/a", "credential/b"]),
        [secret("credential/a", "a1"), secret("credential/b", "b1")],
    );
    let (mut h, registry) = sotw(&cache);
    let first = sotw_two_secrets(&mut h).await;
    cache.set_credentials([secret("credential/a", "a2")]);
    let partial = h.next().await;
    assert_eq!(partial.resources.len(), 1);
    // Envoy's unified mux refuses it.
    let mut nack = sotw_req(
        type_url::SECRET,
        &["credential/a", "credential/b"],
        &first.version_info,
        &partial.nonce,
    );
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "missing credential/b".into(),
        ..Default::default()
    });
    h.req.send(Ok(nack)).unwrap();
    let whole = h.next().await;
    assert_eq!(whole.resources.len(), 2, "the whole set after the refusal");
    assert_eq!(whole.version_info, partial.version_info);
    h.req
        .send(Ok(sotw_req(
            type_url::SECRET,
            &["credential/a", "credential/b"],
            &whole.version_info,
            &whole.nonce,
        )))
        .unwrap();
    h.nothing().await;
    // From now on this stream gets whole sets.
    cache.set_credentials([secret("credential/b", "b2")]);
    assert_eq!(h.next().await.resources.len(), 2);
    let nacks: u64 = registry.snapshot()[0].types.get("sds").unwrap().nacks;
    assert_eq!(nacks, 1);
}

#[tokio::test]
async fn delta_names_changed_one_by_one_are_served_and_both_lists_mean_unsubscribed() {
    // The last name is never subscribed to.
    let names: Vec<String> = (0..41).map(|i| format!("credential/{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let cache = Cache::new();
    cache.publish(
        gateway(&["backend/a"], &refs),
        names.iter().map(|n| secret(n, "v1")),
    );
    let mut h = delta(&cache);
    // One name a request: the set is the stream's own for a while (see `names`), then shared.
    for (i, name) in names[..40].iter().enumerate() {
        h.req
            .send(Ok(DeltaDiscoveryRequest {
                node: node(),
                type_url: type_url::SECRET.into(),
                resource_names_subscribe: vec![name.clone()],
                ..Default::default()
            }))
            .unwrap();
        let r = h.next().await;
        assert_eq!(r.resources.len(), 1, "request {i}");
        assert_eq!(&r.resources[0].name, name);
    }
    // In both lists of one request: unsubscribed (subscribe first, then unsubscribe).
    h.req
        .send(Ok(DeltaDiscoveryRequest {
            type_url: type_url::SECRET.into(),
            resource_names_subscribe: vec![names[40].clone()],
            resource_names_unsubscribe: vec![names[40].clone()],
            ..Default::default()
        }))
        .unwrap();
    h.nothing().await;
    cache.set_credentials([secret(&names[40], "v2"), secret(&names[39], "v2")]);
    let rotated = h.next().await;
    let got: Vec<&str> = rotated.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(got, [names[39].as_str()]);
    h.nothing().await;
}

#[tokio::test]
async fn a_delta_rotation_carries_only_the_changed_secret() {
    let cache = Cache::new();
    cache.publish(
        gateway(&["backend/a"], &["credential/a", "credential/b"]),
        [secret("credential/a", "a1"), secret("credential/b", "b1")],
    );
    let mut h = delta(&cache);
    h.req
        .send(Ok(DeltaDiscoveryRequest {
            node: node(),
            type_url: type_url::SECRET.into(),
            resource_names_subscribe: vec!["credential/a".into(), "credential/b".into()],
            ..Default::default()
        }))
        .unwrap();
    assert_eq!(h.next().await.resources.len(), 2);
    cache.set_credentials([secret("credential/b", "b2")]);
    let rotated = h.next().await;
    assert_eq!(rotated.resources.len(), 1);
    assert_eq!(rotated.resources[0].name, "credential/b");
    h.nothing().await;
}

#[tokio::test]
async fn a_rotation_wakes_only_the_streams_of_gateways_that_reference_it() {
    let cache = Cache::new();
    let mut gateways = gateway(&["backend/a"], &["credential/a"]);
    gateways.insert(
        "other".into(),
        Arc::new(GatewayConfig {
            credentials: ["credential/o".to_string()].into(),
            ..Default::default()
        }),
    );
    cache.publish(
        gateways,
        [secret("credential/a", "a1"), secret("credential/o", "o1")],
    );
    let wakeups = cache.wakeups();
    let mut gw = wakeups.watch("gw");
    let mut other = wakeups.watch("other");
    let config = cache.subscribe();
    cache.set_credentials([secret("credential/a", "a2")]);
    assert!(
        futures::FutureExt::now_or_never(gw.next()).is_some(),
        "the referencing gateway wakes"
    );
    assert!(
        futures::FutureExt::now_or_never(other.next()).is_none(),
        "another gateway sleeps"
    );
    assert!(!config.has_changed().unwrap(), "no configuration change");
    let state = cache.state();
    let seen = state.generation - 1;
    assert_eq!(
        state.credentials_changed_since(seen),
        Some(["credential/a"].into())
    );
    // A configuration change: everyone compares everything.
    cache.publish(gateway(&["backend/a", "backend/b"], &["credential/a"]), []);
    assert!(config.has_changed().unwrap());
    assert_eq!(cache.state().credentials_changed_since(seen), None);
    let _gw2 = wakeups.watch("gw");
    drop((gw, other));
    // Dropped wake-ups are released; one still held keeps its gateway's.
    assert_eq!(wakeups.clusters(), ["gw"]);
}

#[test]
fn a_stream_too_far_behind_the_change_log_compares_everything() {
    let cache = Cache::new();
    cache.publish(
        gateway(&["backend/a"], &["credential/a"]),
        [secret("credential/a", "0")],
    );
    let seen = cache.state().generation;
    for i in 1..=100 {
        cache.set_credentials([secret("credential/a", &i.to_string())]);
    }
    let state = cache.state();
    assert_eq!(state.credentials_changed_since(seen), None);
    assert_eq!(
        state.credentials_changed_since(state.generation - 3),
        Some(["credential/a"].into())
    );
}
