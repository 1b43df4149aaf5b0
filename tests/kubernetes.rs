//! Kubernetes mode end to end: Tessera watches a (fake, but rule-following) API server and
//! serves a real Envoy; Secrets rotate and revoke keys; status is written back.

use harness::*;
use serde_json::{Value, json};

const NS: &str = "team-a";
const CRS: &str = "/apis/tessera.dev/v1alpha1/namespaces/team-a";
const SECRETS: &str = "/api/v1/namespaces/team-a/secrets";

fn cr(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "tessera.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec})
}

fn secret(key: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "provider-keys", "labels": {"tessera.dev/credential": "true"}},
        "stringData": {"openai": key},
    })
}

/// The status condition `kind` of an object, once written.
async fn condition(kube: &FakeKube, path: &str, kind: &str) -> Option<Value> {
    let obj = kube.get(path).await;
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .cloned()
}

async fn wait_condition(kube: &FakeKube, path: &str, kind: &str, status: &str) -> Value {
    eventually(&format!("{path} {kind}={status}"), DEADLINE, || async {
        condition(kube, path, kind)
            .await
            .filter(|c| c["status"] == status)
    })
    .await
}

async fn cluster_flow(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut kube = FakeKube::start(d).await;
    let mock = Mock::start(d, "openai").await;
    let listener = port();
    kube.create(
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
    )
    .await;
    kube.create(SECRETS, secret("sk-k8s-1")).await;
    kube.create(
        &format!("{CRS}/gateways"),
        cr("Gateway", "gw", json!({"nodeCluster": "k8s-gateway", "listeners": [{"name": "http", "port": listener, "address": "127.0.0.1"}]})),
    )
    .await;
    kube.create(&format!("{CRS}/backends"), cr("Backend", "openai", json!({"provider": "OpenAI", "endpoint": mock.endpoint(), "securityPolicy": "openai-key"}))).await;
    kube.create(
        &format!("{CRS}/backendsecuritypolicies"),
        cr("BackendSecurityPolicy", "openai-key", json!({"type": "APIKey", "apiKey": {"secretRef": {"name": "provider-keys", "key": "openai"}}})),
    )
    .await;
    kube.create(
        &format!("{CRS}/routes"),
        cr(
            "Route",
            "chat",
            json!({"gateway": "gw", "rules": [{"backends": [{"name": "openai"}]}]}),
        ),
    )
    .await;

    let kubeconfig = kube.kubeconfig.display().to_string();
    let allowed = d.join("allowed");
    std::fs::create_dir(&allowed).unwrap();
    let allowed_arg = allowed.display().to_string();
    // Tessera reads the cluster, not its (empty) config directory.
    let stack = Stack::builder()
        .dir(dir)
        .listener(listener)
        .tessera_args(&[
            "--kubernetes",
            "--lease-namespace",
            NS,
            "--allow-file-dir",
            &allowed_arg,
        ])
        .tessera_env(&[("KUBECONFIG", &kubeconfig)])
        .node_cluster("k8s-gateway")
        .envoy(mode)
        .start()
        .await;
    let (tessera, envoy, client) = (&stack.tessera, stack.envoy(), &stack.client);
    let url = envoy.url("/v1/chat/completions");
    let reply = send(client, &url, &[("authorization", "Bearer stolen")]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.upstream_header("authorization").as_deref(),
        Some("Bearer sk-k8s-1")
    );
    // xDS names carry the namespace.
    assert!(
        envoy
            .stat("cluster.backend/team-a/openai.upstream_rq_total")
            .await
            >= 1
    );

    // Status is written back.
    let accepted =
        wait_condition(&kube, &format!("{CRS}/backends/openai"), "Accepted", "True").await;
    assert_eq!(accepted["observedGeneration"], 1);
    let ready = wait_condition(
        &kube,
        &format!("{CRS}/backendsecuritypolicies/openai-key"),
        "CredentialReady",
        "True",
    )
    .await;
    assert!(
        !ready.to_string().contains("sk-k8s"),
        "no secret in status: {ready}"
    );

    // A Secret update is one SDS update: the next requests carry the new key, no cluster change.
    let modified = envoy.stat("cluster_manager.cluster_modified").await;
    kube.patch(
        &format!("{SECRETS}/provider-keys"),
        json!({"stringData": {"openai": "sk-k8s-2"}}),
    )
    .await;
    eventually("the rotated Secret", DEADLINE, || async {
        let r = send(client, &url, &[]).await;
        (r.upstream_header("authorization").as_deref() == Some("Bearer sk-k8s-2")).then_some(())
    })
    .await;
    assert_eq!(
        envoy.stat("cluster_manager.cluster_modified").await,
        modified
    );

    // An invalid Backend gets a status saying why and disturbs nothing else.
    kube.create(
        &format!("{CRS}/backends"),
        cr(
            "Backend",
            "broken",
            json!({"provider": "OpenAI", "endpoint": "ftp://nope"}),
        ),
    )
    .await;
    let invalid = wait_condition(
        &kube,
        &format!("{CRS}/backends/broken"),
        "Accepted",
        "False",
    )
    .await;
    assert!(
        invalid["message"]
            .as_str()
            .unwrap()
            .contains("spec.endpoint"),
        "{invalid}"
    );
    // A file outside the operator's allowed directories is refused.
    kube.create(
        &format!("{CRS}/backendsecuritypolicies"),
        cr("BackendSecurityPolicy", "sneaky", json!({"type": "APIKey", "apiKey": {"file": "/var/run/secrets/kubernetes.io/serviceaccount/token"}})),
    )
    .await;
    let sneaky = wait_condition(
        &kube,
        &format!("{CRS}/backendsecuritypolicies/sneaky"),
        "Accepted",
        "False",
    )
    .await;
    assert!(
        sneaky["message"]
            .as_str()
            .unwrap()
            .contains("--allow-file-dir"),
        "{sneaky}"
    );
    // So is an endpoint override the operator did not allow (it could receive Tessera's token).
    kube.create(
        &format!("{CRS}/backendsecuritypolicies"),
        cr("BackendSecurityPolicy", "exfil", json!({"type": "AWSCredentials", "awsCredentials": {
            "region": "us-east-1", "stsEndpoint": "http://attacker.example",
            "oidcExchangeToken": {"roleArn": "arn:aws:iam::1:role/r", "tokenFile": allowed.join("token").display().to_string()}
        }})),
    )
    .await;
    let exfil = wait_condition(
        &kube,
        &format!("{CRS}/backendsecuritypolicies/exfil"),
        "Accepted",
        "False",
    )
    .await;
    assert!(
        exfil["message"]
            .as_str()
            .unwrap()
            .contains("--allow-endpoint"),
        "{exfil}"
    );
    // A second Gateway claiming the same nodeCluster loses to the older one.
    kube.create(
        &format!("{CRS}/gateways"),
        cr("Gateway", "usurper", json!({"nodeCluster": "k8s-gateway", "listeners": [{"name": "http", "port": port(), "address": "127.0.0.1"}]})),
    )
    .await;
    let usurper = wait_condition(
        &kube,
        &format!("{CRS}/gateways/usurper"),
        "Accepted",
        "False",
    )
    .await;
    assert!(
        usurper["message"].as_str().unwrap().contains("team-a/gw"),
        "{usurper}"
    );
    assert_eq!(
        send(client, &url, &[]).await.status,
        200,
        "the rest keeps serving"
    );

    // Break every watch (restart the API server): Tessera re-lists and Envoy sees nothing new.
    let counters = [
        "cluster_manager.cds.update_success",
        "listener_manager.lds.update_success",
        "sds.credential/team-a/openai-key.update_success",
    ];
    let mut before = Vec::new();
    for c in counters {
        before.push(envoy.stat(c).await);
    }
    kube.restart().await;
    // Proof that the watches resumed: a change made after the restart arrives.
    kube.patch(
        &format!("{SECRETS}/provider-keys"),
        json!({"stringData": {"openai": "sk-k8s-3"}}),
    )
    .await;
    eventually(
        "a Secret change after the API server restart",
        DEADLINE,
        || async {
            let r = send(client, &url, &[]).await;
            (r.upstream_header("authorization").as_deref() == Some("Bearer sk-k8s-3")).then_some(())
        },
    )
    .await;
    for (c, b) in counters.iter().zip(&before) {
        let now = envoy.stat(c).await;
        let expected = if c.starts_with("sds.") { b + 1 } else { *b };
        assert_eq!(
            now, expected,
            "{c}: only the Secret change reached Envoy across the re-list"
        );
    }

    // Deleting the Secret revokes: Envoy answers 401 and nothing reaches the provider.
    kube.delete(&format!("{SECRETS}/provider-keys")).await;
    eventually("401 after the Secret is deleted", DEADLINE, || async {
        (send(client, &url, &[]).await.status == 401).then_some(())
    })
    .await;
    mock.clear().await;
    assert_eq!(send(client, &url, &[]).await.status, 401);
    assert!(mock.requests().await.is_empty());
    let revoked = wait_condition(
        &kube,
        &format!("{CRS}/backendsecuritypolicies/openai-key"),
        "CredentialReady",
        "False",
    )
    .await;
    assert!(
        revoked["message"]
            .as_str()
            .unwrap()
            .contains("tessera.dev/credential=true"),
        "{revoked}"
    );
    assert!(!tessera.logs().contains("sk-k8s"), "no key in the log");
}
both_modes!(cluster_flow);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_status_writer_at_a_time() {
    use k8s_openapi::api::coordination::v1::Lease;
    use tessera::source::kubernetes::lease::try_hold;
    let dir = tempfile::tempdir().unwrap();
    let kube = FakeKube::start(dir.path()).await;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let kubeconfig = kube::config::Kubeconfig::read_from(&kube.kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let api: kube::Api<Lease> = kube::Api::namespaced(client, "default");
    assert!(
        try_hold(&api, "replica-a").await.unwrap(),
        "the first replica takes the Lease"
    );
    assert!(
        !try_hold(&api, "replica-b").await.unwrap(),
        "a second replica does not while it is held"
    );
    assert!(
        try_hold(&api, "replica-a").await.unwrap(),
        "the holder renews"
    );
    let lease = api.get("tessera-status-writer").await.unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("replica-a")
    );
}
