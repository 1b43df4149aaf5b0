//! Envoy proves itself with its ServiceAccount token: a real etcd + kube-apiserver issues and
//! reviews the tokens, Tessera runs in Kubernetes mode with the shipped RBAC's ServiceAccount
//! and `--xds-token-auth`, and real Envoys bootstrapped with `--xds-token-file` (a kubelet-style
//! projected token directory) connect over TLS.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use harness::kube_apiserver::{KubeApiserver, require_kube};
use harness::*;
use k8s_openapi::api::authentication::v1::{
    BoundObjectReference, TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, PostParams};
use rcgen::ExtendedKeyUsagePurpose;
use serde_json::json;
use std::path::{Path, PathBuf};
use tokio_stream::StreamExt as _;
use tonic::Status;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

const NS: &str = "team-a";
const NODE_CLUSTER: &str = "team-a-gw";

/// What `tokenreviews: create` needs, applied by this test only while the shipped RBAC lacks
/// it (the shipped file is then what is tested).
const TOKENREVIEW_RBAC: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: tessera-tests-tokenreview}
rules:
- apiGroups: [authentication.k8s.io]
  resources: [tokenreviews]
  verbs: [create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: tessera-tests-tokenreview}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: tessera-tests-tokenreview}
subjects:
- {kind: ServiceAccount, name: tessera, namespace: tessera-system}
"#;

fn tenant(listener: u16, provider: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: envoy, namespace: {NS}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: intruder, namespace: {NS}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: envoy-token-1, namespace: {NS}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: envoy-token-2, namespace: {NS}}}
---
apiVersion: v1
kind: Secret
metadata:
  name: provider-keys
  namespace: {NS}
  labels: {{tessera.dev/credential: "true"}}
stringData: {{openai: sk-token-test}}
---
apiVersion: tessera.dev/v1alpha1
kind: Gateway
metadata: {{name: gw, namespace: {NS}}}
spec:
  nodeCluster: {NODE_CLUSTER}
  xdsClients: [{{serviceAccount: {{namespace: {NS}, name: envoy}}}}]
  listeners: [{{name: http, port: {listener}, address: 127.0.0.1}}]
---
apiVersion: tessera.dev/v1alpha1
kind: Backend
metadata: {{name: openai, namespace: {NS}}}
spec: {{provider: OpenAI, endpoint: "{provider}", securityPolicy: openai-key}}
---
apiVersion: tessera.dev/v1alpha1
kind: BackendSecurityPolicy
metadata: {{name: openai-key, namespace: {NS}}}
spec:
  type: APIKey
  apiKey: {{secretRef: {{name: provider-keys, key: openai}}}}
---
apiVersion: tessera.dev/v1alpha1
kind: Route
metadata: {{name: chat, namespace: {NS}}}
spec:
  gateway: gw
  rules: [{{backends: [{{name: openai}}]}}]
"#
    )
}

/// A token for `account` in [`NS`] with audience `audience`, bound to the Secret `bound_to`
/// (deleting it invalidates the token) when given.
async fn token(
    kube: &KubeApiserver,
    account: &str,
    audience: &str,
    bound_to: Option<&str>,
) -> String {
    let admin = kube.client().await;
    let secret_uid = match bound_to {
        Some(name) => {
            Api::<Secret>::namespaced(admin.clone(), NS)
                .get(name)
                .await
                .unwrap()
                .metadata
                .uid
        }
        None => None,
    };
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![audience.into()],
            expiration_seconds: Some(600),
            bound_object_ref: bound_to.map(|name| BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Secret".into()),
                name: Some(name.into()),
                uid: secret_uid,
            }),
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(admin, NS)
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
}

/// Whether the API server accepts `token` for audience `tessera` (asked as the admin).
async fn reviews_ok(kube: &KubeApiserver, token: &str) -> bool {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.into()),
            audiences: Some(vec!["tessera".into()]),
        },
        ..Default::default()
    };
    let answer = Api::<TokenReview>::all(kube.client().await)
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    answer.status.unwrap().authenticated == Some(true)
}

/// Writes `token` into `dir` the way the kubelet updates a projected volume: a new
/// `..<generation>` directory, `..data` swapped to it by rename, `token` a link through `..data`.
fn project(dir: &Path, token: &str, generation: u32) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let versioned = format!("..{generation}");
    std::fs::create_dir(dir.join(&versioned)).unwrap();
    std::fs::write(dir.join(&versioned).join("token"), token).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&versioned, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    let link = dir.join("token");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/token", &link).unwrap();
    }
    link
}

/// Tessera's log without the terminal colours tracing writes even to a file.
fn tessera_logs(stack: &Stack) -> String {
    let raw = stack.tessera.logs();
    let mut plain = String::with_capacity(raw.len());
    let mut rest = raw.as_str();
    while let Some(start) = rest.find('\x1b') {
        plain.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find('m').map_or(rest.len(), |m| m + 1);
        rest = &rest[end..];
    }
    plain.push_str(rest);
    plain
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// An Envoy presenting the token in `token_file`, started without waiting for readiness.
async fn envoy_with(stack: &Stack, mode: Mode, token_file: &Path, ca: &Path) -> Envoy {
    Envoy::start_unready(
        &envoy(),
        stack.dir.path(),
        stack.tessera.xds_port,
        port(),
        EnvoyOptions {
            node_cluster: NODE_CLUSTER,
            delta: mode.is_delta(),
            bootstrap_args: bootstrap_args(token_file, ca),
            envoy_args: Vec::new(),
        },
    )
    .await
}

/// Opens an ADS stream over TLS as node cluster [`NODE_CLUSTER`], with `authorization`
/// metadata when given, asks for clusters; returns how many came back, or the gRPC status.
async fn probe(xds_port: u16, ca: &Path, authorization: Option<&str>) -> Result<usize, Status> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .domain_name("127.0.0.1");
    let channel = Channel::from_shared(format!("https://127.0.0.1:{xds_port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let first = DiscoveryRequest {
        node: Some(Node {
            id: "probe".into(),
            cluster: NODE_CLUSTER.into(),
            ..Default::default()
        }),
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
        ..Default::default()
    };
    let (_keep, rx) = tokio::sync::mpsc::channel::<DiscoveryRequest>(1);
    let mut request = tonic::Request::new(
        tokio_stream::iter([first]).chain(tokio_stream::wrappers::ReceiverStream::new(rx)),
    );
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    let go = async {
        let mut responses = AggregatedDiscoveryServiceClient::new(channel)
            .stream_aggregated_resources(request)
            .await?
            .into_inner();
        let response = responses.message().await?;
        Ok(response.map_or(0, |r| r.resources.len()))
    };
    tokio::time::timeout(DEADLINE, go).await.unwrap()
}

fn bootstrap_args(token_file: &Path, ca: &Path) -> Vec<String> {
    vec![
        "--xds-token-file".into(),
        token_file.display().to_string(),
        "--xds-tls-ca".into(),
        ca.display().to_string(),
    ]
}

async fn service_account_tokens(mode: Mode) {
    let Some(bins) = require_kube("xds_token") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let kube = KubeApiserver::start(bins, &d).await;
    kube.apply_shipped().await;
    let shipped = std::fs::read_to_string(repo().join("config/kubernetes/rbac.yaml")).unwrap();
    if !shipped.contains("tokenreviews") {
        eprintln!(
            "NOTE: config/kubernetes/rbac.yaml lacks tokenreviews: create; granted by the test"
        );
        kube.apply_yaml(TOKENREVIEW_RBAC).await;
    }
    let mock = Mock::start(&d, "openai").await;
    let listener = port();
    kube.apply_yaml(&tenant(listener, &mock.endpoint())).await;

    // Server-authenticated TLS only: the token, not a client certificate, is Envoy's proof.
    let pki = Pki::new(&d, "xds");
    let (cert, key) = pki.leaf(
        &d,
        "tessera",
        &["127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let kubeconfig = kube
        .service_account_kubeconfig("tessera-system", "tessera")
        .await
        .display()
        .to_string();

    // The first token expires in 90 s: Tessera closes its stream about a minute before that,
    // and Envoy must come back with the token rotated in meanwhile.
    let now = unix_now() as i64;
    let issued = token(&kube, "envoy", "tessera", Some("envoy-token-1")).await;
    let first = kube.resign_token(&issued, |claims| claims["exp"] = json!(now + 90));
    let good_file = project(&d.join("tokens/good"), &first, 1);
    let (cert, key, state) = (
        cert.display().to_string(),
        key.display().to_string(),
        d.join("state").display().to_string(),
    );
    let stack = Stack::builder()
        .dir(dir)
        .listener(listener)
        .tessera_args(&[
            "--kubernetes",
            "--lease-namespace",
            "tessera-system",
            "--state-dir",
            &state,
            "--xds-token-auth",
            "--xds-tls-cert",
            &cert,
            "--xds-tls-key",
            &key,
        ])
        .tessera_env(&[("KUBECONFIG", &kubeconfig)])
        .node_cluster(NODE_CLUSTER)
        .bootstrap_args(
            &bootstrap_args(&good_file, &pki.ca)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .envoy(mode)
        .start()
        .await;

    // A valid token for the account: served, traffic flows with the key.
    let reply = stack.send("/v1/chat/completions", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.upstream_header("authorization").as_deref(),
        Some("Bearer sk-token-test")
    );
    let logs = tessera_logs(&stack);
    assert!(
        logs.contains("xDS stream authenticated") && logs.contains("service_account=team-a/envoy"),
        "{logs}"
    );
    assert!(!logs.contains(&first), "Tessera logged the token");

    // Tokens Tessera must refuse, each presented by its own Envoy.
    let expired = kube.resign_token(&issued, |claims| {
        claims["iat"] = json!(now - 7200);
        claims["nbf"] = json!(now - 7200);
        claims["exp"] = json!(now - 3600);
    });
    let wrong_audience = token(&kube, "envoy", "not-tessera", None).await;
    let intruder = token(&kube, "intruder", "tessera", None).await;
    let refused = [
        ("expired", expired, "expired"),
        ("audience", wrong_audience, "audience"),
    ];
    let mut refused_envoys = Vec::new();
    for (name, token, _) in &refused {
        let file = project(&d.join(format!("tokens/{name}")), token, 1);
        refused_envoys.push(envoy_with(&stack, mode, &file, &pki.ca).await);
    }
    let intruder_file = project(&d.join("tokens/intruder"), &intruder, 1);
    let intruder_envoy = envoy_with(&stack, mode, &intruder_file, &pki.ca).await;
    for ((name, token, reason), envoy) in refused.iter().zip(&refused_envoys) {
        eventually(&format!("the {name} token refused"), DEADLINE, || async {
            let logs = tessera_logs(&stack);
            logs.lines()
                .any(|l| {
                    l.contains("xDS stream refused")
                        && l.contains("code=Unauthenticated")
                        && l.contains(reason)
                })
                .then_some(())
        })
        .await;
        eventually(
            &format!("the {name} Envoy sees UNAUTHENTICATED"),
            DEADLINE,
            || async { envoy.logs().contains("closed: 16").then_some(()) },
        )
        .await;
        // It never got a byte of configuration: no cluster (google_grpc needs no static one).
        assert_eq!(
            envoy.stat("cluster_manager.active_clusters").await,
            0,
            "{name}"
        );
        assert!(
            !tessera_logs(&stack).contains(token.as_str()),
            "Tessera logged the {name} token"
        );
    }
    // Another account of the namespace authenticates as itself, and is not one the Gateway
    // lists: refused, with no byte of the gateway's configuration.
    eventually("the intruder refused", DEADLINE, || async {
        tessera_logs(&stack)
            .lines()
            .any(|l| {
                l.contains("PERMISSION_DENIED") && l.contains("serviceAccount team-a/intruder")
            })
            .then_some(())
    })
    .await;
    assert_eq!(
        intruder_envoy.stat("cluster_manager.active_clusters").await,
        0
    );
    drop(intruder_envoy);
    assert!(stack.envoy().stat("cluster_manager.active_clusters").await >= 1);

    // Rotation: the kubelet swaps in a new token and the old one stops being valid (its
    // bound object is deleted). Tessera ends the stream before the token in use expires, and
    // the reconnect must present the new token, read from the file again.
    // Only the main Envoy is left to connect: any refusal from here on is its.
    drop(refused_envoys);
    let before = tessera_logs(&stack);
    let (authenticated, refusals) = (
        count(&before, "service_account=team-a/envoy"),
        count(&before, "xDS stream refused"),
    );
    let second = token(&kube, "envoy", "tessera", Some("envoy-token-2")).await;
    project(&d.join("tokens/good"), &second, 2);
    Api::<Secret>::namespaced(kube.client().await, NS)
        .delete("envoy-token-1", &Default::default())
        .await
        .unwrap();
    eventually("the first token invalidated", DEADLINE, || async {
        (!reviews_ok(&kube, &first).await).then_some(())
    })
    .await;
    assert!(reviews_ok(&kube, &second).await);
    eventually(
        "the stream re-authenticated with the rotated token",
        std::time::Duration::from_secs(90),
        || async {
            let logs = tessera_logs(&stack);
            (count(&logs, "service_account=team-a/envoy") > authenticated).then_some(())
        },
    )
    .await;
    eprintln!(
        "xds_token ({mode}): stream re-authenticated {:.1} s after the first token was issued",
        unix_now() - now as f64
    );
    let reply = stack.send("/v1/chat/completions", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    // None of the main Envoy's streams after the rotation carried the old token.
    let logs = tessera_logs(&stack);
    let after = &logs[before.len()..];
    assert!(
        !after.contains("xDS stream refused"),
        "the old token was presented again:\n{after}"
    );
    assert!(refusals >= 2, "{before}");

    // Without a token, or with one that is not a JWT, nothing is served; with a valid one a
    // client is served like Envoy.
    let xds = stack.tessera.xds_port;
    for authorization in [None, Some("Bearer not-a-jwt"), Some("Basic dXNlcjpwdw==")] {
        let status = probe(xds, &pki.ca, authorization).await.unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{authorization:?}: {status:?}"
        );
    }
    let clusters = probe(xds, &pki.ca, Some(&format!("Bearer {second}")))
        .await
        .expect("a valid token is served");
    assert_eq!(clusters, 1, "the gateway's one backend cluster");
    let reasons: std::collections::BTreeSet<_> = before
        .lines()
        .filter(|l| l.contains("xDS stream refused"))
        .map(|l| l.split_once("reason=").map_or(l, |(_, r)| r))
        .collect();
    eprintln!("xds_token ({mode}): {refusals} refused streams, reasons: {reasons:?}");
    assert!(!logs.contains(&second), "Tessera logged the token");
}

both_modes!(service_account_tokens);
