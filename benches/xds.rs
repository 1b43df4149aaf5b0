//! Measures the design targets that do not need Envoy: translating 10,000 backends, and how
//! long one key rotation takes to reach 10,000 ADS streams (and what those streams cost).
//!
//! `cargo bench --bench xds` prints the figures; nothing is asserted.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera::model::*;
use tessera::translate::{generic_secret, names, translate};
use tessera::xds::server::{StreamCtx, run_delta};
use tessera::xds::{Cache, Registry, type_url};
use tokio::sync::mpsc;

fn model(backends: usize) -> Model {
    let mut m = Model::default();
    m.gateways.insert(
        "gw".into(),
        Gateway {
            name: "gw".into(),
            node_cluster: "edge".into(),
            listeners: vec![Listener {
                name: "http".into(),
                address: "0.0.0.0".into(),
                port: 10000,
                max_request_bytes: tessera::api::DEFAULT_MAX_REQUEST_BYTES,
            }],
            ca_bundle_path: "/etc/ssl/certs/ca-certificates.crt".into(),
            xds_clients: Vec::new(),
            client_auth: None,
        },
    );
    let mut rules = Vec::new();
    for i in 0..backends {
        let name = format!("b{i}");
        m.backends.insert(
            name.clone(),
            Backend {
                name: name.clone(),
                provider: Provider::OpenAI,
                endpoint: Endpoint {
                    host: format!("api{i}.example.com"),
                    port: 443,
                    tls: true,
                },
                tls: Some(UpstreamTls {
                    ca_pem: None,
                    sni: None,
                }),
                security_policy: Some(format!("k{i}")),
            },
        );
        m.policies.insert(
            format!("k{i}"),
            SecurityPolicy {
                name: format!("k{i}"),
                kind: PolicyKind::ApiKey(ApiKey {
                    source: KeySource::File(format!("/keys/{i}").into()),
                    header: None,
                    prefix: None,
                }),
            },
        );
        rules.push(Rule {
            matches: vec![Match {
                path_prefix: Some("/v1/".into()),
                headers: vec![HeaderMatch {
                    name: "x-ai-model".into(),
                    value: format!("model-{i}"),
                }],
                model: None,
            }],
            backends: vec![WeightedBackend {
                name,
                weight: 1,
                priority: 0,
            }],
            retry: tessera::model::Retry::once(),
            clients: None,
        });
    }
    m.routes.insert(
        "chat".into(),
        Route {
            name: "chat".into(),
            gateway: "gw".into(),
            rules,
        },
    );
    m
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    // Translation.
    let m = model(10_000);
    let mut runs = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let out = translate(&m);
        runs.push(t.elapsed());
        assert_eq!(out["edge"].clusters.resources.len(), 10_000);
    }
    runs.sort();
    println!(
        "translate 10,000 backends (clusters + listener + 10,000 routes): median {:?}, min {:?} (5 runs)",
        runs[2], runs[0]
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(fan_out(10_000));
}

/// 10,000 Delta streams of one gateway, each subscribed to one shared secret; one rotation.
async fn fan_out(streams: usize) {
    let cache = Arc::new(Cache::new());
    let registry = Arc::new(Registry::default());
    let m = model(10);
    let secret_name = names::credential("k0");
    let gateways = translate(&m);
    cache.publish(
        gateways,
        [generic_secret(&secret_name, Some(&SecretString::new("v1")))],
    );
    let rss_before = rss_kib();
    let mut outs = Vec::with_capacity(streams);
    let mut ins = Vec::with_capacity(streams);
    for i in 0..streams {
        let (req_tx, req_rx) = mpsc::unbounded_channel();
        let (resp_tx, resp_rx) = mpsc::channel(4);
        tokio::spawn(run_delta(
            tokio_stream::wrappers::UnboundedReceiverStream::new(req_rx),
            resp_tx,
            StreamCtx::new(&cache, &registry),
        ));
        req_tx
            .send(Ok(DeltaDiscoveryRequest {
                node: Some(Node {
                    id: format!("n{i}"),
                    cluster: "edge".into(),
                    ..Default::default()
                }),
                type_url: type_url::SECRET.into(),
                resource_names_subscribe: vec![secret_name.clone()],
                ..Default::default()
            }))
            .unwrap();
        ins.push(req_tx);
        outs.push(resp_rx);
    }
    // Everyone got the first version.
    for rx in &mut outs {
        rx.recv().await.unwrap().unwrap();
    }
    let rss_after = rss_kib();
    let t = Instant::now();
    cache.set_credentials([generic_secret(&secret_name, Some(&SecretString::new("v2")))]);
    let mut sizes = BTreeMap::new();
    for rx in &mut outs {
        let r = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        *sizes.entry(r.resource_count()).or_insert(0) += 1;
    }
    let elapsed = t.elapsed();
    println!(
        "rotation fan-out: one secret update reached {streams} Delta streams in {elapsed:?} ({:?} per stream); resources per response: {sizes:?}",
        elapsed / streams as u32
    );
    println!(
        "memory: {streams} idle streams (task, channels, per-type state) ≈ {} KiB RSS ({:.1} KiB per stream)",
        rss_after.saturating_sub(rss_before),
        rss_after.saturating_sub(rss_before) as f64 / streams as f64
    );
    drop(ins);
}
