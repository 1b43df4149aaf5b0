//! ADS protocol corners found with Envoy 1.40 (research Q2), against real Envoy in SotW and
//! Delta: a gateway with nothing still initializes Envoy, and a cluster removed and re-added
//! gets its credential again.

use harness::*;
use std::time::Duration;

fn gateway_yaml(listener: u16, node_cluster: &str) -> String {
    format!(
        "apiVersion: tessera.dev/v1alpha1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  nodeCluster: {node_cluster}\n  listeners:\n  - {{name: http, port: {listener}, address: 127.0.0.1}}\n"
    )
}

fn backend_yaml(name: &str, endpoint: &str) -> String {
    format!(
        r#"---
apiVersion: tessera.dev/v1alpha1
kind: Backend
metadata: {{name: {name}}}
spec: {{provider: OpenAI, endpoint: "{endpoint}", securityPolicy: {name}-key}}
---
apiVersion: tessera.dev/v1alpha1
kind: BackendSecurityPolicy
metadata: {{name: {name}-key}}
spec:
  type: APIKey
  apiKey: {{file: {name}.key}}
"#
    )
}

fn routes_yaml(backends: &[&str]) -> String {
    let mut yaml = "apiVersion: tessera.dev/v1alpha1\nkind: Route\nmetadata: {name: chat}\nspec:\n  gateway: gw\n  rules:\n".to_string();
    for b in backends {
        yaml += &format!(
            "  - matches: [{{pathPrefix: /v1/, headers: [{{name: x-ai-model, value: {b}}}]}}]\n    backends: [{{name: {b}}}]\n"
        );
    }
    yaml
}

/// An Envoy whose gateway has no clusters or listeners (its node cluster is served by no
/// Gateway) gets empty CDS and LDS answers and so finishes initializing, instead of waiting
/// for `initial_fetch_timeout`.
async fn empty_gateway_initializes(mode: Mode) {
    let s = Stack::builder()
        .configure(|s| s.write("gateway.yaml", gateway_yaml(s.listener, "someone-else")))
        .node_cluster("nobody-serves-this")
        .envoy(mode)
        .start()
        .await;
    let envoy = s.envoy();
    assert!(
        envoy.stat("cluster_manager.cds.update_success").await >= 1,
        "CDS answered"
    );
    assert!(
        envoy.stat("listener_manager.lds.update_success").await >= 1,
        "LDS answered"
    );
    assert_eq!(
        envoy.stat("cluster_manager.cds.init_fetch_timeout").await,
        0
    );
    assert_eq!(
        envoy.stat("listener_manager.lds.init_fetch_timeout").await,
        0
    );
}
both_modes!(empty_gateway_initializes);

/// Research Q2.4: Envoy keeps nothing for a secret it stopped watching, so a cluster that is
/// removed and re-added must be sent its key again, or it stays warming (503) and then runs
/// without a key (401).
async fn readded_cluster_gets_its_key(mode: Mode) {
    let s = Stack::builder()
        .mocks(&["a", "b"])
        .configure(|s| {
            let mut yaml = gateway_yaml(s.listener, NODE_CLUSTER);
            for m in ["a", "b"] {
                yaml += &backend_yaml(m, &s.mock(m).endpoint());
                s.write(&format!("{m}.key"), format!("key-{m}\n"));
            }
            s.write("gateway.yaml", yaml);
            s.write("routes.yaml", routes_yaml(&["a", "b"]));
        })
        .envoy(mode)
        .start()
        .await;
    let url = s.envoy().url("/v1/chat/completions");
    let status_of = |model: &'static str| {
        let (client, url) = (&s.client, &url);
        async move { send(client, url, &[("x-ai-model", model)]).await }
    };
    let reply = eventually("b served", DEADLINE, || async {
        let r = status_of("b").await;
        (r.status == 200).then_some(r)
    })
    .await;
    assert_eq!(
        reply.upstream_header("authorization").as_deref(),
        Some("Bearer key-b")
    );

    write_atomic(&s.config.join("routes.yaml"), &routes_yaml(&["a"]));
    eventually("b's cluster gone", DEADLINE, || async {
        (status_of("b").await.status == 404).then_some(())
    })
    .await;
    write_atomic(&s.config.join("routes.yaml"), &routes_yaml(&["a", "b"]));
    // Well within initial_fetch_timeout (15 s), after which a keyless cluster would answer 401.
    let reply = eventually("b served again", Duration::from_secs(10), || async {
        let r = status_of("b").await;
        (r.status == 200).then_some(r)
    })
    .await;
    assert_eq!(
        reply.upstream_header("authorization").as_deref(),
        Some("Bearer key-b")
    );
    assert_eq!(status_of("a").await.status, 200);
}
both_modes!(readded_cluster_gets_its_key);
