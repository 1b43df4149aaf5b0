use super::*;
use crate::delta::{self, DeltaWire};
use crate::refs::fixtures::{self, discovered, injector, to_any};
use crate::sotw::{self, SotwWire};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};

fn node() -> Node {
    Node {
        id: "n1".to_owned(),
        cluster: "gw".to_owned(),
        ..Default::default()
    }
}
use envoy_types::pb::envoy::config::core::v3::Node;

fn clusters() -> Vec<Any> {
    vec![
        to_any(&fixtures::cluster(
            "backend/a",
            vec![injector("credential/a")],
        )),
        to_any(&fixtures::cluster(
            "backend/b",
            vec![injector("credential/b"), discovered("signer/b")],
        )),
    ]
}

fn listeners() -> Vec<Any> {
    vec![to_any(&fixtures::listener(
        "listener/gw/http",
        "route/gw/http",
        vec![discovered("client-keys/gw")],
    ))]
}

fn routes() -> Vec<Any> {
    vec![to_any(&RouteConfiguration {
        name: "route/gw/http".to_owned(),
        ..Default::default()
    })]
}

fn secrets(value_a: &str) -> Vec<Any> {
    vec![
        to_any(&fixtures::secret("credential/a", value_a)),
        to_any(&fixtures::secret("credential/b", "sk-b")),
    ]
}

fn extension_configs(names: &[&str]) -> Vec<Any> {
    names
        .iter()
        .map(|n| {
            to_any(
                &envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig {
                    name: (*n).to_owned(),
                    typed_config: None,
                },
            )
        })
        .collect()
}

fn shared() -> (Arc<Shared>, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Arc::new(Shared::new(tx)), rx)
}

fn sotw_response(type_url: &str, version: &str, resources: Vec<Any>) -> Incoming {
    sotw::incoming(
        DiscoveryResponse {
            version_info: version.to_owned(),
            resources,
            type_url: type_url.to_owned(),
            nonce: format!("nonce-{version}"),
            ..Default::default()
        },
        Instant::now(),
    )
}

fn delta_response(type_url: &str, nonce: &str, resources: Vec<Any>) -> Incoming {
    delta::incoming(
        DeltaDiscoveryResponse {
            resources: resources
                .into_iter()
                .map(|any| Resource {
                    name: resource_name(&any),
                    version: "v".to_owned(),
                    resource: Some(any),
                    ..Default::default()
                })
                .collect(),
            type_url: type_url.to_owned(),
            nonce: nonce.to_owned(),
            ..Default::default()
        },
        Instant::now(),
    )
}

fn sotw_step(envoy: &mut Envoy, wire: &mut SotwWire, inc: Incoming) -> Vec<DiscoveryRequest> {
    let mut out = Vec::new();
    envoy.on_response(inc, wire, &mut out);
    out
}

fn delta_step(
    envoy: &mut Envoy,
    wire: &mut DeltaWire,
    inc: Incoming,
) -> Vec<DeltaDiscoveryRequest> {
    let mut out = Vec::new();
    envoy.on_response(inc, wire, &mut out);
    out
}

fn summary(requests: &[DiscoveryRequest]) -> Vec<(String, Vec<String>, String, String)> {
    requests
        .iter()
        .map(|r| {
            (
                type_url::short(&r.type_url),
                r.resource_names.clone(),
                r.version_info.clone(),
                r.response_nonce.clone(),
            )
        })
        .collect()
}

mod type_url {
    pub use crate::refs::type_url::*;
    pub fn short(url: &str) -> String {
        url.rsplit('.').next().unwrap_or_default().to_owned()
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn sotw_follows_envoys_order_and_acks_every_response() {
    let (shared, mut events) = shared();
    let mut envoy = Envoy::new(7, shared, Instant::now());
    let mut wire = SotwWire::new(node());
    let first = envoy.start(&mut wire);
    assert_eq!(first.type_url, type_url::CLUSTER);
    assert!(first.resource_names.is_empty(), "CDS is a wildcard");
    assert_eq!(first.node.as_ref().map(|n| n.id.as_str()), Some("n1"));

    // Clusters: their ECDS and SDS subscriptions first, then the CDS ACK; no listeners yet.
    let out = sotw_step(
        &mut envoy,
        &mut wire,
        sotw_response(type_url::CLUSTER, "c1", clusters()),
    );
    assert!(
        out.iter().all(|r| r.node.is_none()),
        "the node goes on the first request only"
    );
    assert_eq!(
        summary(&out),
        vec![
            (
                "TypedExtensionConfig".into(),
                s(&["signer/b"]),
                "".into(),
                "".into()
            ),
            (
                "Secret".into(),
                s(&["credential/a", "credential/b"]),
                "".into(),
                "".into()
            ),
            ("Cluster".into(), vec![], "c1".into(), "nonce-c1".into()),
        ]
    );
    // Half the secrets: ACKed, still warming.
    let out = sotw_step(
        &mut envoy,
        &mut wire,
        sotw_response(type_url::SECRET, "s1", secrets("sk-a")[..1].to_vec()),
    );
    assert_eq!(
        summary(&out),
        vec![(
            "Secret".into(),
            s(&["credential/a", "credential/b"]),
            "s1".into(),
            "nonce-s1".into()
        )]
    );
    let out = sotw_step(
        &mut envoy,
        &mut wire,
        sotw_response(type_url::SECRET, "s2", secrets("sk-a")),
    );
    assert_eq!(out.len(), 1, "still waiting for the signer config");
    // The last cluster dependency in: listeners are asked for.
    let out = sotw_step(
        &mut envoy,
        &mut wire,
        sotw_response(
            type_url::EXTENSION_CONFIG,
            "e1",
            extension_configs(&["signer/b"]),
        ),
    );
    assert_eq!(
        summary(&out),
        vec![
            (
                "TypedExtensionConfig".into(),
                s(&["signer/b"]),
                "e1".into(),
                "nonce-e1".into()
            ),
            ("Listener".into(), vec![], "".into(), "".into()),
        ]
    );
    // The listener adds its own ECDS name (with the version accepted so far) and its route config.
    let out = sotw_step(
        &mut envoy,
        &mut wire,
        sotw_response(type_url::LISTENER, "l1", listeners()),
    );
    assert_eq!(
        summary(&out),
        vec![
            (
                "TypedExtensionConfig".into(),
                s(&["client-keys/gw", "signer/b"]),
                "e1".into(),
                "nonce-e1".into()
            ),
            (
                "RouteConfiguration".into(),
                s(&["route/gw/http"]),
                "".into(),
                "".into()
            ),
            ("Listener".into(), vec![], "l1".into(), "nonce-l1".into()),
        ]
    );
    sotw_step(
        &mut envoy,
        &mut wire,
        sotw_response(type_url::ROUTE, "r1", routes()),
    );
    assert!(
        events.try_recv().is_err(),
        "the listener's ECDS config is still missing"
    );
    sotw_step(
        &mut envoy,
        &mut wire,
        sotw_response(
            type_url::EXTENSION_CONFIG,
            "e2",
            extension_configs(&["client-keys/gw", "signer/b"]),
        ),
    );
    let Ok(Event::Initial { stream, bytes, .. }) = events.try_recv() else {
        panic!("no initial event");
    };
    assert_eq!(stream, 7);
    assert!(bytes > 0);
    // Reported once.
    sotw_step(
        &mut envoy,
        &mut wire,
        sotw_response(type_url::ROUTE, "r2", routes()),
    );
    assert!(events.try_recv().is_err());
}

#[test]
fn delta_subscribes_by_difference_and_acks_by_nonce() {
    let (shared, mut events) = shared();
    let mut envoy = Envoy::new(0, shared, Instant::now());
    let mut wire = DeltaWire::new(node());
    let first = envoy.start(&mut wire);
    assert_eq!(first.type_url, type_url::CLUSTER);
    assert!(first.resource_names_subscribe.is_empty(), "legacy wildcard");
    assert!(first.node.is_some());

    let out = delta_step(
        &mut envoy,
        &mut wire,
        delta_response(type_url::CLUSTER, "n1", clusters()),
    );
    let kinds: Vec<_> = out
        .iter()
        .map(|r| {
            (
                type_url::short(&r.type_url),
                r.resource_names_subscribe.clone(),
                r.response_nonce.clone(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("TypedExtensionConfig".into(), s(&["signer/b"]), "".into()),
            (
                "Secret".into(),
                s(&["credential/a", "credential/b"]),
                "".into()
            ),
            ("Cluster".into(), vec![], "n1".into()),
        ]
    );
    assert!(out.iter().all(|r| r.node.is_none()));
    // A later delta with one more cluster subscribes only to its new secret.
    let more = vec![to_any(&fixtures::cluster(
        "backend/c",
        vec![injector("credential/c")],
    ))];
    let out = delta_step(
        &mut envoy,
        &mut wire,
        delta_response(type_url::CLUSTER, "n2", more),
    );
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].resource_names_subscribe, s(&["credential/c"]));
    assert!(out[0].resource_names_unsubscribe.is_empty());
    assert_eq!(out[1].response_nonce, "n2");

    let mut all = secrets("sk-a");
    all.push(to_any(&fixtures::secret("credential/c", "sk-c")));
    delta_step(
        &mut envoy,
        &mut wire,
        delta_response(type_url::SECRET, "n3", all),
    );
    let out = delta_step(
        &mut envoy,
        &mut wire,
        delta_response(
            type_url::EXTENSION_CONFIG,
            "n4",
            extension_configs(&["signer/b"]),
        ),
    );
    assert_eq!(
        out.last().map(|r| r.type_url.as_str()),
        Some(type_url::LISTENER)
    );
    let out = delta_step(
        &mut envoy,
        &mut wire,
        delta_response(type_url::LISTENER, "n5", listeners()),
    );
    assert_eq!(
        out[0].resource_names_subscribe,
        s(&["client-keys/gw"]),
        "only the new name"
    );
    assert_eq!(out[1].resource_names_subscribe, s(&["route/gw/http"]));
    delta_step(
        &mut envoy,
        &mut wire,
        delta_response(type_url::ROUTE, "n6", routes()),
    );
    delta_step(
        &mut envoy,
        &mut wire,
        delta_response(
            type_url::EXTENSION_CONFIG,
            "n7",
            extension_configs(&["client-keys/gw"]),
        ),
    );
    assert!(matches!(events.try_recv(), Ok(Event::Initial { .. })));
}

#[test]
fn a_rotation_is_seen_only_with_the_new_value_and_counts_bytes_since_the_write() {
    let (shared, mut events) = shared();
    let mut envoy = Envoy::new(0, shared.clone(), Instant::now());
    let mut wire = DeltaWire::new(node());
    envoy.start(&mut wire);
    delta_step(
        &mut envoy,
        &mut wire,
        delta_response(type_url::SECRET, "n0", secrets("sk-old")),
    );
    while events.try_recv().is_ok() {}

    shared.set_rotation(Rotation {
        index: 1,
        value: "sk-new".to_owned(),
        written_at: Instant::now(),
    });
    let unrelated = delta_response(type_url::ROUTE, "n1", routes());
    let unrelated_size = unrelated.size as u64;
    delta_step(&mut envoy, &mut wire, unrelated);
    delta_step(
        &mut envoy,
        &mut wire,
        delta_response(type_url::SECRET, "n2", secrets("sk-old")),
    );
    assert!(
        shared.take_reached().is_empty(),
        "the old value is not the rotation"
    );
    let new = delta_response(type_url::SECRET, "n3", secrets("sk-new")[..1].to_vec());
    let new_size = new.size as u64;
    let old_size = delta_response(type_url::SECRET, "n2", secrets("sk-old")).size as u64;
    delta_step(&mut envoy, &mut wire, new);
    let [Reached { index, bytes, .. }] = shared.take_reached()[..] else {
        panic!("rotation not seen once");
    };
    assert_eq!(index, 1);
    assert_eq!(bytes, unrelated_size + old_size + new_size);
    // Once per rotation.
    delta_step(
        &mut envoy,
        &mut wire,
        delta_response(type_url::SECRET, "n4", secrets("sk-new")),
    );
    assert!(shared.take_reached().is_empty());
    assert!(events.try_recv().is_err(), "no event for a rotation");

    // The next rotation starts its byte count afresh.
    shared.set_rotation(Rotation {
        index: 2,
        value: "sk-newer".to_owned(),
        written_at: Instant::now(),
    });
    let newer = delta_response(type_url::SECRET, "n5", secrets("sk-newer")[..1].to_vec());
    let newer_size = newer.size as u64;
    delta_step(&mut envoy, &mut wire, newer);
    assert!(
        matches!(shared.take_reached()[..], [Reached { index: 2, bytes, .. }] if bytes == newer_size)
    );
}

#[tokio::test]
async fn the_run_wakes_once_every_awaited_stream_was_reached() {
    let (shared, _events) = shared();
    shared.set_rotation(Rotation {
        index: 1,
        value: "sk-new".to_owned(),
        written_at: Instant::now(),
    });
    let reached = |index| Reached {
        index,
        latency: Duration::from_millis(1),
        bytes: 10,
    };
    let waiter = {
        let shared = shared.clone();
        tokio::spawn(async move {
            shared.reached_by(2).await;
            shared.reached_count()
        })
    };
    shared.reached(reached(1));
    // A straggler of an earlier rotation does not count.
    shared.reached(reached(0));
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "one of two streams reached");
    shared.reached(reached(1));
    let count = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("woken once both were reached")
        .unwrap();
    assert_eq!(count, 2);
    assert_eq!(shared.take_reached(), [reached(1), reached(1)]);
}
