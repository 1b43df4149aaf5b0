//! Kubernetes mode end to end against a real etcd + kube-apiserver: the shipped CRDs and RBAC
//! are applied as they are, Tessera runs as the shipped ServiceAccount (so a missing grant
//! fails here), serves a real Envoy, rotates and revokes keys from Secrets, writes status, and
//! keeps tenants (namespaces) apart.

use harness::kube_apiserver::{KubeApiserver, client_from, require_kube};
use harness::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};
use std::path::Path;

const NS: &str = "team-a";
/// Another tenant, who attacks team-a.
const EVIL: &str = "team-b";
const SA_NAMESPACE: &str = "tessera-system";
const SA_NAME: &str = "tessera";

/// Starts the control plane with the shipped manifests and a namespace per tenant; `None`
/// (with a loud message) where the binaries are not built.
async fn cluster(test: &str, dir: &Path, namespaces: &[&str]) -> Option<KubeApiserver> {
    let bins = require_kube(test)?;
    let kube = KubeApiserver::start(bins, dir).await;
    eprintln!(
        "{test}: etcd + kube-apiserver ready in {:.1} s",
        kube.startup.as_secs_f64()
    );
    kube.apply_shipped().await;
    for ns in namespaces {
        apply(
            &kube,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await;
    }
    Some(kube)
}

/// Server-side applies one object as the cluster admin (a tenant, for Tessera).
async fn apply(kube: &KubeApiserver, object: Value) {
    kube.apply_yaml(&object.to_string()).await;
}

fn cr(kind: &str, ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "tessera.dev/v1alpha1", "kind": kind,
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn secret(ns: &str, key: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "provider-keys", "namespace": ns,
                     "labels": {"tessera.dev/credential": "true"}},
        "stringData": {"openai": key},
    })
}

fn cr_api(client: &kube::Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    let plural = match kind {
        "BackendSecurityPolicy" => "backendsecuritypolicies".to_string(),
        k => format!("{}s", k.to_lowercase()),
    };
    let gvk = GroupVersionKind::gvk("tessera.dev", "v1alpha1", kind);
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, &plural),
    )
}

/// The status condition `kind` of an object, once written.
async fn condition(client: &kube::Client, object: (&str, &str, &str), kind: &str) -> Option<Value> {
    let (k, ns, name) = object;
    let obj = cr_api(client, ns, k).get(name).await.ok()?;
    obj.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .cloned()
}

async fn wait_condition(
    client: &kube::Client,
    object: (&str, &str, &str),
    kind: &str,
    status: &str,
) -> Value {
    eventually(&format!("{object:?} {kind}={status}"), DEADLINE, || async {
        condition(client, object, kind)
            .await
            .filter(|c| c["status"] == status)
    })
    .await
}

/// One object's row of `kubectl get <plural>`: column name → cell, as the API server's Table
/// rendering (the CRD's `additionalPrinterColumns`) gives it.
async fn table_row(
    client: &kube::Client,
    ns: &str,
    plural: &str,
    name: &str,
) -> std::collections::BTreeMap<String, Value> {
    let request = http::Request::get(format!(
        "/apis/tessera.dev/v1alpha1/namespaces/{ns}/{plural}"
    ))
    .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
    .body(Vec::new())
    .unwrap();
    let table: Value = serde_json::from_str(&client.request_text(request).await.unwrap()).unwrap();
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    let row = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cells"][0] == name)
        .unwrap_or_else(|| panic!("no row {name} in {table}"));
    let cells = row["cells"].as_array().unwrap();
    columns
        .iter()
        .map(|c| c.to_string())
        .zip(cells.iter().cloned())
        .collect()
}

/// Stores a Gateway whose `listeners` is a string: the Gateway CRD's `spec` schema is made
/// schemaless for the create, then put back as shipped.
async fn store_unreadable_gateway(kube: &KubeApiserver, ns: &str, name: &str) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(kube.client().await);
    let shipped = crds.get("gateways.tessera.dev").await.unwrap();
    let mut loose = serde_json::to_value(&shipped).unwrap();
    loose["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"] =
        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    let loose: CustomResourceDefinition = serde_json::from_value(loose).unwrap();
    crds.replace("gateways.tessera.dev", &Default::default(), &loose)
        .await
        .unwrap();
    let gateways = cr_api(&kube.client().await, ns, "Gateway");
    let bad: DynamicObject = serde_json::from_value(cr(
        "Gateway",
        ns,
        name,
        json!({"nodeCluster": "elsewhere", "listeners": "oops"}),
    ))
    .unwrap();
    // The API server takes a moment to serve the looser schema.
    eventually("the unreadable Gateway stored", DEADLINE, || async {
        gateways.create(&Default::default(), &bad).await.ok()
    })
    .await;
    let mut restored = shipped;
    restored.metadata.resource_version = crds
        .get("gateways.tessera.dev")
        .await
        .unwrap()
        .metadata
        .resource_version;
    crds.replace("gateways.tessera.dev", &Default::default(), &restored)
        .await
        .unwrap();
}

/// The message of a condition, which must name `needle`.
fn says(condition: &Value, needle: &str) {
    let message = condition["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "{needle:?} not in {condition}");
}

async fn cluster_flow(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let Some(mut kube) = cluster("kubernetes cluster_flow", &d, &[NS, EVIL]).await else {
        return;
    };
    let admin = kube.client().await;
    let mock = Mock::start(&d, "openai").await;
    let listener = port();
    apply(&kube, secret(NS, "sk-k8s-1")).await;
    apply(&kube, cr("Gateway", NS, "gw", json!({"nodeCluster": "k8s-gateway", "listeners": [{"name": "http", "port": listener, "address": "127.0.0.1"}]}))).await;
    apply(&kube, cr("Backend", NS, "openai", json!({"provider": "OpenAI", "endpoint": mock.endpoint(), "securityPolicy": "openai-key"}))).await;
    apply(&kube, cr("BackendSecurityPolicy", NS, "openai-key", json!({"type": "APIKey", "apiKey": {"secretRef": {"name": "provider-keys", "key": "openai"}}}))).await;
    apply(
        &kube,
        cr(
            "Route",
            NS,
            "chat",
            json!({"gateway": "gw", "rules": [{"backends": [{"name": "openai"}]}]}),
        ),
    )
    .await;

    // Tessera runs as the shipped ServiceAccount: every call it makes is authorised by the
    // shipped RBAC, nothing more. Its own credential (that kubeconfig) is outside every
    // tenant's directory; each tenant gets `<allowed>/<namespace>`.
    let kubeconfig = kube.service_account_kubeconfig(SA_NAMESPACE, SA_NAME).await;
    let allowed = d.join("allowed");
    for ns in [NS, EVIL] {
        std::fs::create_dir_all(allowed.join(ns)).unwrap();
    }
    let team_a_file = allowed.join(NS).join("token");
    std::fs::write(&team_a_file, "team-a-token").unwrap();
    let evil_file = allowed.join(EVIL).join("token");
    std::fs::write(&evil_file, "team-b-token").unwrap();
    let allowed_arg = allowed.display().to_string();
    let kubeconfig_arg = kubeconfig.display().to_string();
    let stack = Stack::builder()
        .dir(dir)
        .listener(listener)
        .tessera_args(&[
            "--kubernetes",
            "--allow-file-dir",
            &allowed_arg,
            "--allow-endpoint",
            "https://sts.amazonaws.com",
        ])
        .tessera_env(&[("KUBECONFIG", &kubeconfig_arg)])
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

    // Status is written back (through the status subresource, as the ServiceAccount).
    let accepted = wait_condition(&admin, ("Backend", NS, "openai"), "Accepted", "True").await;
    assert_eq!(accepted["observedGeneration"], 1);
    let policy = ("BackendSecurityPolicy", NS, "openai-key");
    let ready = wait_condition(&admin, policy, "CredentialReady", "True").await;
    assert!(
        !ready.to_string().contains("sk-k8s"),
        "no secret in status: {ready}"
    );

    // `kubectl get backendsecuritypolicies` shows the conditions (the CRD's printer columns,
    // as the API server renders them for kubectl).
    let row = table_row(&admin, NS, "backendsecuritypolicies", "openai-key").await;
    assert_eq!(row["Type"], "APIKey", "{row:?}");
    assert_eq!(row["Accepted"], "True", "{row:?}");
    assert_eq!(row["Ready"], "True", "{row:?}");
    assert_eq!(row["Credential"], ready["message"], "{row:?}");

    // A Secret update is one SDS update: the next requests carry the new key, no cluster change.
    let modified = envoy.stat("cluster_manager.cluster_modified").await;
    apply(&kube, secret(NS, "sk-k8s-2")).await;
    eventually("the rotated Secret", DEADLINE, || async {
        let r = send(client, &url, &[]).await;
        (r.upstream_header("authorization").as_deref() == Some("Bearer sk-k8s-2")).then_some(())
    })
    .await;
    assert_eq!(
        envoy.stat("cluster_manager.cluster_modified").await,
        modified
    );

    // An invalid Backend (the schema lets the scheme through, Tessera does not) gets a status
    // saying why and disturbs nothing else.
    apply(
        &kube,
        cr(
            "Backend",
            NS,
            "broken",
            json!({"provider": "OpenAI", "endpoint": "ftp://nope"}),
        ),
    )
    .await;
    let invalid = wait_condition(&admin, ("Backend", NS, "broken"), "Accepted", "False").await;
    says(&invalid, "spec.endpoint");

    // Tenant attacks, each from team-b, each refused with the reason in its own status.
    let attacks = [
        // Tessera's own credential (its kubeconfig, i.e. its ServiceAccount token).
        (
            "own-token",
            json!({"type": "APIKey", "apiKey": {"file": kubeconfig_arg}}),
            "--allow-file-dir",
        ),
        // Another tenant's file, inside the operator's allowed directory.
        (
            "team-a-file",
            json!({"type": "APIKey", "apiKey": {"file": team_a_file.display().to_string()}}),
            "--allow-file-dir",
        ),
        // A look-alike of an allowed STS endpoint (a text prefix match would let it in).
        (
            "lookalike-sts",
            json!({"type": "AWSCredentials", "awsCredentials": {
                "region": "us-east-1", "stsEndpoint": "https://sts.amazonaws.com.evil.net",
                "oidcExchangeToken": {"roleArn": "arn:aws:iam::1:role/r", "tokenFile": evil_file.display().to_string()}}}),
            "--allow-endpoint",
        ),
        // An Entra authority of the attacker's choosing (it would receive the client secret).
        (
            "evil-authority",
            json!({"type": "AzureCredentials", "azureCredentials": {
                "tenantId": "t", "clientId": "c", "clientSecretFile": evil_file.display().to_string(),
                "authorityHost": "https://login.evil.example"}}),
            "--allow-endpoint",
        ),
    ];
    for (name, spec, _) in &attacks {
        apply(&kube, cr("BackendSecurityPolicy", EVIL, name, spec.clone())).await;
    }
    for (name, _, flag) in &attacks {
        let refused = wait_condition(
            &admin,
            ("BackendSecurityPolicy", EVIL, name),
            "Accepted",
            "False",
        )
        .await;
        assert_eq!(refused["reason"], "NotAllowed", "{name}: {refused}");
        says(&refused, flag);
    }
    // A Gateway the API server stored but Tessera's types cannot read (created while the CRD
    // schema was looser, as after a CRD downgrade): reported, and the Gateway watch goes on
    // (the squatter below is only seen through it).
    store_unreadable_gateway(&kube, NS, "mangled").await;
    let mangled = wait_condition(&admin, ("Gateway", NS, "mangled"), "Accepted", "False").await;
    assert_eq!(mangled["reason"], "Invalid", "{mangled}");
    says(&mangled, "spec.listeners");

    // Squatting team-a's nodeCluster: the newcomer is refused, and team-a is told.
    apply(&kube, cr("Gateway", EVIL, "squat", json!({"nodeCluster": "k8s-gateway", "listeners": [{"name": "http", "port": port(), "address": "127.0.0.1"}]}))).await;
    let squat = wait_condition(&admin, ("Gateway", EVIL, "squat"), "Accepted", "False").await;
    assert_eq!(squat["reason"], "NodeClusterConflict");
    says(&squat, "team-a/gw");
    let told = wait_condition(&admin, ("Gateway", NS, "gw"), "Conflicted", "True").await;
    says(&told, "team-b/squat");
    let victim = wait_condition(&admin, ("Gateway", NS, "gw"), "Accepted", "True").await;
    assert_eq!(victim["reason"], "Accepted");
    let r = send(client, &url, &[]).await;
    assert_eq!(r.status, 200, "the victim keeps serving");
    assert_eq!(
        r.upstream_header("authorization").as_deref(),
        Some("Bearer sk-k8s-2")
    );

    // Break every watch (restart the API server, etcd kept): Tessera re-lists and Envoy sees
    // no new cluster or listener version.
    let counters = [
        "cluster_manager.cds.update_success",
        "listener_manager.lds.update_success",
        "sds.credential/team-a/openai-key.update_success",
    ];
    let mut before = Vec::new();
    for c in counters {
        before.push(envoy.stat(c).await);
    }
    // Right after a restart the API server's RBAC cache may still be empty and refuse
    // anything (Tessera retries); the shipped grants are judged on what came before.
    let before_restart = tessera.logs();
    assert!(
        !before_restart.contains("forbidden"),
        "the shipped RBAC refused Tessera something:\n{before_restart}"
    );
    let took = kube.restart_apiserver().await;
    eprintln!("kube-apiserver restarted in {:.1} s", took.as_secs_f64());
    // Proof that the watches resumed: a change made after the restart arrives.
    apply(&kube, secret(NS, "sk-k8s-3")).await;
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
    Api::<Secret>::namespaced(admin.clone(), NS)
        .delete("provider-keys", &Default::default())
        .await
        .unwrap();
    eventually("401 after the Secret is deleted", DEADLINE, || async {
        (send(client, &url, &[]).await.status == 401).then_some(())
    })
    .await;
    mock.clear().await;
    assert_eq!(send(client, &url, &[]).await.status, 401);
    assert!(mock.requests().await.is_empty());
    let revoked = wait_condition(&admin, policy, "CredentialReady", "False").await;
    says(&revoked, "tessera.dev/credential=true");
    assert!(!tessera.logs().contains("sk-k8s"), "no key in the log");
}
both_modes!(cluster_flow);

/// The status-writer Lease, as the shipped ServiceAccount: one holder at a time, renewals, and
/// a hand-over once the holder stops renewing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_status_writer_at_a_time() {
    use tessera::source::kubernetes::lease::{LEASE_NAME, try_hold};
    let dir = tempfile::tempdir().unwrap();
    let Some(kube) = cluster("kubernetes one_status_writer", dir.path(), &[]).await else {
        return;
    };
    let sa = client_from(&kube.service_account_kubeconfig(SA_NAMESPACE, SA_NAME).await).await;
    let api: Api<Lease> = Api::namespaced(sa, SA_NAMESPACE);
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
    let lease = api.get(LEASE_NAME).await.unwrap();
    assert_eq!(
        lease.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("replica-a")
    );
    // replica-a stops renewing: age its last renewal past the lease duration (as the admin,
    // rather than waiting 15 s), and replica-b takes over.
    let admin: Api<Lease> = Api::namespaced(kube.client().await, SA_NAMESPACE);
    let stale =
        k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(60);
    let patch =
        json!({"spec": {"renewTime": stale.strftime("%Y-%m-%dT%H:%M:%S.000000Z").to_string()}});
    admin
        .patch(LEASE_NAME, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert!(
        try_hold(&api, "replica-b").await.unwrap(),
        "an expired Lease changes hands"
    );
    let lease = api.get(LEASE_NAME).await.unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("replica-b"));
    assert_eq!(spec.lease_transitions, Some(1));
    assert!(
        !try_hold(&api, "replica-a").await.unwrap(),
        "the old holder does not take it back"
    );
}

/// The namespace-scoped install: `rbac-namespaced.yaml` with its Role per watched namespace,
/// Tessera with `--namespace` twice. It serves and writes status in those namespaces, never
/// needs a cluster-wide grant, and leaves every other namespace alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_scoped_install() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some(bins) = require_kube("kubernetes namespace_scoped_install") else {
        return;
    };
    let kube = KubeApiserver::start(bins, d).await;
    kube.apply_crds().await;
    kube.apply_file("config/kubernetes/namespace.yaml").await;
    let rbac =
        std::fs::read_to_string(repo().join("config/kubernetes/rbac-namespaced.yaml")).unwrap();
    let watched = ["team-a", "team-c"];
    for ns in watched.iter().chain(&["team-x"]) {
        apply(
            &kube,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await;
    }
    // As the install guide says: the file once per watched namespace.
    for ns in watched {
        kube.apply_yaml(&rbac.replace("namespace: team-a", &format!("namespace: {ns}")))
            .await;
    }
    for (i, ns) in watched.iter().chain(&["team-x"]).enumerate() {
        apply(
            &kube,
            cr(
                "Backend",
                ns,
                "openai",
                json!({"provider": "OpenAI", "endpoint": format!("http://127.0.0.1:{}", 9000 + i)}),
            ),
        )
        .await;
    }
    let kubeconfig = kube.service_account_kubeconfig(SA_NAMESPACE, SA_NAME).await;
    let sa = client_from(&kubeconfig).await;
    assert_eq!(
        Api::<Secret>::all(sa.clone())
            .list(&Default::default())
            .await
            .err()
            .map(|e| e.to_string().contains("forbidden")),
        Some(true),
        "no cluster-wide Secret list in the namespace-scoped install"
    );
    let kubeconfig_arg = kubeconfig.display().to_string();
    let tessera = Tessera::start_with_env(
        &d.join("unused"),
        &[
            "--kubernetes",
            "--namespace",
            "team-a",
            "--namespace",
            "team-c",
        ],
        &[("KUBECONFIG", &kubeconfig_arg)],
    )
    .await;
    let admin = kube.client().await;
    for ns in watched {
        wait_condition(&admin, ("Backend", ns, "openai"), "Accepted", "True").await;
    }
    // Both were written, so status writing has had its turn: the unwatched one has none.
    let untouched = cr_api(&admin, "team-x", "Backend")
        .get("openai")
        .await
        .unwrap();
    assert!(untouched.data.get("status").is_none(), "{untouched:?}");
    let logs = tessera.logs();
    assert!(!logs.contains("forbidden"), "{logs}");
}

/// The CRDs' own rules (bounds, patterns, CEL) refuse at the API server what Tessera would
/// refuse later, and accept what it accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_rules_hold_on_the_api_server() {
    let dir = tempfile::tempdir().unwrap();
    let Some(kube) = cluster("kubernetes crd_rules", dir.path(), &[NS]).await else {
        return;
    };
    let admin = kube.client().await;
    let create = |kind: &'static str, name: &'static str, spec: Value| {
        let admin = admin.clone();
        async move {
            let object: DynamicObject = serde_json::from_value(cr(kind, NS, name, spec)).unwrap();
            cr_api(&admin, NS, kind)
                .create(&Default::default(), &object)
                .await
                .map(|_| ())
        }
    };
    let refused = |result: kube::Result<()>| match result {
        Err(kube::Error::Api(status)) => (status.code, status.message),
        other => panic!("expected a refusal, got {other:?}"),
    };
    // Exactly one key source (CEL).
    let (code, message) = refused(
        create(
            "BackendSecurityPolicy",
            "two-sources",
            json!({"type": "APIKey", "apiKey": {"file": "/k", "secretRef": {"name": "s", "key": "k"}}}),
        )
        .await,
    );
    assert_eq!(code, 422, "{message}");
    assert!(
        message.contains("needs exactly one of file and secretRef"),
        "{message}"
    );
    // A port out of range (bounds).
    let (code, message) = refused(
        create(
            "Gateway",
            "port",
            json!({"nodeCluster": "gw", "listeners": [{"name": "http", "port": 70000}]}),
        )
        .await,
    );
    assert_eq!(code, 422, "{message}");
    assert!(message.contains("port"), "{message}");
    // A duration that is not one (pattern).
    let (code, message) = refused(
        create(
            "BackendSecurityPolicy",
            "duration",
            json!({"type": "AWSCredentials", "awsCredentials": {"region": "us-east-1",
                "credentialsFile": "/c", "refresh": {"maxBackoff": "soon"}}}),
        )
        .await,
    );
    assert_eq!(code, 422, "{message}");
    // And the valid ones go through.
    create(
        "BackendSecurityPolicy",
        "one-source",
        json!({"type": "APIKey", "apiKey": {"secretRef": {"name": "s", "key": "k"}}}),
    )
    .await
    .unwrap();
    create(
        "Gateway",
        "gw",
        json!({"nodeCluster": "gw", "listeners": [{"name": "http", "port": 10000}]}),
    )
    .await
    .unwrap();
}
