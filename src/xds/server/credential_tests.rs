//! Which credential version each stream holds: recorded at the ACK of the response that
//! carried it (SotW and Delta), or from what a reconnecting node names.

use super::tests::{open_delta, open_sotw};
use super::*;
use crate::xds::cache::{GatewayConfig, TypeSet};
use std::time::Duration;

const NAME: &str = "credential/k";

fn secret(value: &str) -> Arc<Resource> {
    crate::translate::generic_secret(NAME, Some(&crate::model::SecretString::new(value)))
}

fn cache_with(value: &str, registry: &Registry) -> (Cache, Arc<Resource>) {
    let cache = Cache::new();
    let g = GatewayConfig {
        clusters: TypeSet::new([]),
        credentials: [NAME.to_string()].into(),
        ..Default::default()
    };
    let r = secret(value);
    cache.publish([("gw".to_string(), Arc::new(g))].into(), [r.clone()]);
    registry.credentials.published(NAME, "k", &r.version);
    (cache, r)
}

fn rotate(cache: &Cache, registry: &Registry, value: &str) {
    let r = secret(value);
    assert!(cache.set_credentials([r.clone()]));
    registry.credentials.published(NAME, "k", &r.version);
}

fn node() -> Option<Node> {
    Some(Node {
        id: "n1".into(),
        cluster: "gw".into(),
        ..Default::default()
    })
}

/// Whether the one stream holds the current version, once it is registered.
async fn holds_current(registry: &Registry) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        if let Some((id, _)) = registry.snapshot_with_ids().first() {
            return registry
                .credentials
                .held(*id)
                .first()
                .is_some_and(|h| h.current);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no stream registered"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn sotw_holds_a_version_once_its_response_is_acked() {
    let registry = Arc::new(Registry::default());
    let (cache, _) = cache_with("v1", &registry);
    let mut h = open_sotw(StreamCtx::new(&cache, &registry));
    let ask = |version: &str, nonce: &str| DiscoveryRequest {
        node: node(),
        type_url: type_url::SECRET.into(),
        resource_names: vec![NAME.into()],
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    };
    h.req.send(Ok(ask("", ""))).unwrap();
    let first = h.next().await;
    assert!(!holds_current(&registry).await, "sent, not ACKed");
    h.req
        .send(Ok(ask(&first.version_info, &first.nonce)))
        .unwrap();
    let progress = || registry.credentials.progress(NAME).unwrap();
    tokio::time::timeout(Duration::from_secs(2), async {
        while progress().nodes_current == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    assert!(holds_current(&registry).await);

    rotate(&cache, &registry, "v2");
    let second = h.next().await;
    assert!(
        !holds_current(&registry).await,
        "the rotation is not ACKed yet"
    );
    assert_eq!((progress().nodes_current, progress().nodes_total), (0, 1));
    // A NACK keeps the old value.
    let mut nack = ask(&first.version_info, &second.nonce);
    nack.error_detail = Some(Default::default());
    h.req.send(Ok(nack)).unwrap();
    let nacked = || {
        registry.snapshot()[0]
            .types
            .get("sds")
            .is_some_and(|t| t.nacks == 1)
    };
    tokio::time::timeout(Duration::from_secs(2), async {
        while !nacked() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    assert!(!holds_current(&registry).await);
    let id = registry.snapshot_with_ids()[0].0;
    assert!(
        !registry.credentials.held(id)[0].version.is_empty(),
        "still the first value"
    );

    rotate(&cache, &registry, "v3");
    let third = h.next().await;
    h.req
        .send(Ok(ask(&third.version_info, &third.nonce)))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(2), async {
        while progress().nodes_current == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    assert!(holds_current(&registry).await);
}

#[tokio::test]
async fn delta_holds_what_a_reconnecting_node_names_and_what_it_acks() {
    let registry = Arc::new(Registry::default());
    let (cache, r1) = cache_with("v1", &registry);
    let mut h = open_delta(StreamCtx::new(&cache, &registry));
    h.req
        .send(Ok(DeltaDiscoveryRequest {
            node: node(),
            type_url: type_url::SECRET.into(),
            resource_names_subscribe: vec![NAME.into()],
            initial_resource_versions: [(NAME.to_string(), r1.version.clone())].into(),
            ..Default::default()
        }))
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while registry.credentials.progress(NAME).unwrap().nodes_current == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the named version was not recorded"
        );
        tokio::task::yield_now().await;
    }
    assert!(holds_current(&registry).await);

    rotate(&cache, &registry, "v2");
    let pushed = h.next().await;
    assert_eq!(pushed.resources.len(), 1);
    assert!(!holds_current(&registry).await);
    h.req
        .send(Ok(DeltaDiscoveryRequest {
            type_url: type_url::SECRET.into(),
            response_nonce: pushed.nonce.clone(),
            ..Default::default()
        }))
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while !holds_current(&registry).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ACK was not recorded"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(
        registry.credentials.propagation()[2].count,
        1,
        "one rotation reached every node"
    );
}
