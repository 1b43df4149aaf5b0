//! The tests' real Kubernetes control plane (etcd + kube-apiserver, built by `testenv/setup`):
//! the shipped CRDs and RBAC apply as they are, Tessera's ServiceAccount may do what Tessera
//! does and is refused what it must not, its tokens review as a real cluster reviews them, and
//! state survives an API server restart.

use harness::kube_apiserver::{KubeApiserver, client_from, require_kube};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::discovery::Scope;
use serde_json::json;

const SA_NAMESPACE: &str = "tessera-system";
const SA_NAME: &str = "tessera";
const SA_USER: &str = "system:serviceaccount:tessera-system:tessera";
const LEASE: &str = "tessera-status-writer";
const KINDS: [(&str, &str); 4] = [
    ("Gateway", "gateways"),
    ("Backend", "backends"),
    ("BackendSecurityPolicy", "backendsecuritypolicies"),
    ("Route", "routes"),
];

async fn start(test: &str) -> Option<(tempfile::TempDir, KubeApiserver)> {
    let bins = require_kube(test)?;
    let dir = tempfile::tempdir().unwrap();
    let kube = KubeApiserver::start(bins, dir.path()).await;
    eprintln!(
        "{test}: etcd + kube-apiserver ready in {:.1} s",
        kube.startup.as_secs_f64()
    );
    Some((dir, kube))
}

fn cr_api(client: &kube::Client, namespace: Option<&str>, plural: &str) -> Api<DynamicObject> {
    let kind = KINDS.iter().find(|(_, p)| *p == plural).unwrap().0;
    let gvk = GroupVersionKind::gvk("tessera.dev", "v1alpha1", kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// The HTTP status of a failed call; panics if it succeeded.
fn refused<T: std::fmt::Debug>(what: &str, result: kube::Result<T>) -> u16 {
    match result {
        Err(kube::Error::Api(status)) => status.code,
        other => panic!("{what}: expected an API error, got {other:?}"),
    }
}

/// Whether the caller of `client` may do `verb` on `resource` (a SelfSubjectAccessReview,
/// answered by the real RBAC authorizer).
async fn may(
    client: &kube::Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
) -> bool {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_string())),
        None => (resource, None),
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource,
                namespace: namespace.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    answer.status.unwrap().allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_crds_and_rbac_hold_on_a_real_apiserver() {
    let Some((_dir, kube)) = start("kube_apiserver shipped_crds_and_rbac").await else {
        return;
    };
    kube.apply_shipped().await;
    let admin = kube.client().await;

    // Every kind is served, namespaced, by the API server (apply_shipped waited for Established).
    for (kind, plural) in KINDS {
        let gvk = GroupVersionKind::gvk("tessera.dev", "v1alpha1", kind);
        let (resource, caps) = kube::discovery::pinned_kind(&admin, &gvk).await.unwrap();
        assert_eq!(resource.plural, plural);
        assert!(matches!(caps.scope, Scope::Namespaced), "{kind} scope");
    }

    kube.apply_yaml(
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: team-a}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-b}
---
apiVersion: tessera.dev/v1alpha1
kind: Gateway
metadata: {name: gw, namespace: team-a}
spec:
  nodeCluster: team-a-gateway
  listeners: [{name: http, port: 10000}]
---
apiVersion: v1
kind: Secret
metadata:
  name: provider-keys
  namespace: team-a
  labels: {tessera.dev/credential: "true"}
stringData: {openai: sk-team-a}
---
apiVersion: v1
kind: Secret
metadata: {name: unrelated, namespace: team-a}
stringData: {password: not-for-tessera}
---
apiVersion: v1
kind: Secret
metadata:
  name: provider-keys
  namespace: team-b
  labels: {tessera.dev/credential: "true"}
stringData: {openai: sk-team-b}
"#,
    )
    .await;

    let sa_kubeconfig = kube.service_account_kubeconfig(SA_NAMESPACE, SA_NAME).await;
    let sa = client_from(&sa_kubeconfig).await;

    // What Tessera does: list (and watch) its kinds and the labelled Secrets everywhere.
    for (_, plural) in KINDS {
        let listed = cr_api(&sa, None, plural)
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("ServiceAccount lists {plural}: {e}"));
        if plural == "gateways" {
            let names: Vec<_> = listed.iter().map(|o| o.metadata.name.clone()).collect();
            assert_eq!(names, [Some("gw".to_string())]);
        }
        assert!(
            may(&sa, "watch", "tessera.dev", plural, None).await,
            "watch {plural}"
        );
    }
    let secrets = Api::<Secret>::all(sa.clone())
        .list(&ListParams::default().labels("tessera.dev/credential=true"))
        .await
        .expect("ServiceAccount lists labelled Secrets");
    let mut found: Vec<String> = secrets
        .iter()
        .map(|s| {
            format!(
                "{}/{}",
                s.metadata.namespace.as_deref().unwrap_or_default(),
                s.metadata.name.as_deref().unwrap_or_default()
            )
        })
        .collect();
    found.sort();
    assert_eq!(found, ["team-a/provider-keys", "team-b/provider-keys"]);
    assert!(
        may(&sa, "watch", "", "secrets", None).await,
        "watch Secrets"
    );

    // It writes status, by merge patch of the status subresource, and nothing else of its kinds.
    let gateways = cr_api(&sa, Some("team-a"), "gateways");
    let status = json!({"status": {"observedGeneration": 1, "conditions": [{
        "type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
        "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    gateways
        .patch_status("gw", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("ServiceAccount patches Gateway status");
    let written = cr_api(&admin, Some("team-a"), "gateways")
        .get("gw")
        .await
        .unwrap();
    assert_eq!(written.data["status"]["conditions"][0]["type"], "Accepted");
    let spec_edit = json!({"spec": {"nodeCluster": "stolen"}});
    assert_eq!(
        refused(
            "patch a Gateway's spec",
            gateways
                .patch("gw", &PatchParams::default(), &Patch::Merge(&spec_edit))
                .await
        ),
        403
    );
    assert_eq!(
        refused(
            "delete a Gateway",
            gateways.delete("gw", &Default::default()).await
        ),
        403
    );

    // The status-writer Lease: create, get and compare-and-swap update, that one name only.
    let leases: Api<Lease> = Api::namespaced(sa.clone(), SA_NAMESPACE);
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": LEASE},
        "spec": {"holderIdentity": "replica-1", "leaseDurationSeconds": 15},
    }))
    .unwrap();
    leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("ServiceAccount creates the Lease");
    let mut held = leases
        .get(LEASE)
        .await
        .expect("ServiceAccount gets the Lease");
    held.spec.as_mut().unwrap().holder_identity = Some("replica-2".into());
    leases
        .replace(LEASE, &PostParams::default(), &held)
        .await
        .expect("ServiceAccount updates the Lease");
    assert_eq!(
        refused("get another Lease", leases.get("kube-scheduler").await),
        403
    );
    let elsewhere: Api<Lease> = Api::namespaced(sa.clone(), "team-a");
    assert_eq!(
        refused(
            "create a Lease in a tenant namespace",
            elsewhere.create(&PostParams::default(), &lease).await
        ),
        403
    );

    // Nothing beyond that: no Secret writes, no workloads.
    let team_a_secrets: Api<Secret> = Api::namespaced(sa.clone(), "team-a");
    let forged: Secret = serde_json::from_value(json!({
        "metadata": {"name": "forged", "labels": {"tessera.dev/credential": "true"}},
        "stringData": {"openai": "sk-forged"},
    }))
    .unwrap();
    assert_eq!(
        refused(
            "create a Secret",
            team_a_secrets.create(&PostParams::default(), &forged).await
        ),
        403
    );
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "miner"},
        "spec": {
            "selector": {"matchLabels": {"app": "miner"}},
            "template": {
                "metadata": {"labels": {"app": "miner"}},
                "spec": {"containers": [{"name": "miner", "image": "example.invalid/miner"}]},
            },
        },
    }))
    .unwrap();
    assert_eq!(
        refused(
            "create a Deployment",
            Api::<Deployment>::namespaced(sa.clone(), "team-a")
                .create(&PostParams::default(), &deployment)
                .await
        ),
        403
    );
    for verb in ["create", "update", "patch", "delete"] {
        assert!(
            !may(&sa, verb, "", "secrets", Some("team-a")).await,
            "{verb} secrets"
        );
        assert!(
            !may(&sa, verb, "tessera.dev", "routes", Some("team-a")).await,
            "{verb} routes"
        );
    }

    // Grants Tessera's code never exercises (list+watch reflectors, merge-patched status)
    // are not in the shipped RBAC; TokenReview (Envoys with ServiceAccount tokens) is.
    let mut unused = Vec::new();
    for (verb, group, resource, ns) in [
        ("get", "", "secrets", Some("kube-system")),
        ("get", "tessera.dev", "gateways", Some("team-a")),
        ("update", "tessera.dev", "gateways/status", Some("team-a")),
    ] {
        if may(&sa, verb, group, resource, ns).await {
            unused.push(format!("{verb} {resource} in {}", ns.unwrap_or("*")));
        }
    }
    assert!(
        unused.is_empty(),
        "shipped RBAC grants Tessera's code does not use: {}",
        unused.join("; ")
    );
    assert!(
        may(&sa, "create", "authentication.k8s.io", "tokenreviews", None).await,
        "create tokenreviews"
    );
}

async fn review(admin: &kube::Client, token: &str, audiences: &[&str]) -> (bool, Option<String>) {
    let request = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.into()),
            audiences: Some(audiences.iter().map(|s| s.to_string()).collect()),
        },
        ..Default::default()
    };
    let answer = Api::<TokenReview>::all(admin.clone())
        .create(&PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap();
    let user = answer.user.and_then(|u| u.username);
    (answer.authenticated == Some(true), user)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_review_by_audience_and_expiry() {
    let Some((_dir, kube)) = start("kube_apiserver token_review").await else {
        return;
    };
    kube.apply_file("config/kubernetes/namespace.yaml").await;
    kube.apply_file("config/kubernetes/rbac.yaml").await;
    let admin = kube.client().await;

    let token = kube
        .service_account_token(SA_NAMESPACE, SA_NAME, &["tessera"], 600)
        .await;
    assert_eq!(
        review(&admin, &token, &["tessera"]).await,
        (true, Some(SA_USER.to_string()))
    );

    let other = kube
        .service_account_token(SA_NAMESPACE, SA_NAME, &["not-tessera"], 600)
        .await;
    assert!(
        !review(&admin, &other, &["tessera"]).await.0,
        "a token for another audience is not Tessera's"
    );

    // Re-signing the same claims reproduces the server's token byte for byte, and a copy with
    // other (still current) times authenticates: so the expired copy below is refused for its
    // expiry alone.
    assert_eq!(kube.resign_token(&token, |_| {}), token);
    let now = harness::unix_now() as i64;
    let shifted = kube.resign_token(&token, |claims| {
        claims["iat"] = json!(now - 60);
        claims["nbf"] = json!(now - 60);
        claims["exp"] = json!(now + 300);
    });
    assert!(review(&admin, &shifted, &["tessera"]).await.0);
    let expired = kube.resign_token(&token, |claims| {
        claims["iat"] = json!(now - 7200);
        claims["nbf"] = json!(now - 7200);
        claims["exp"] = json!(now - 3600);
    });
    assert!(
        !review(&admin, &expired, &["tessera"]).await.0,
        "an expired token is not authenticated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_restart_keeps_objects_and_tokens() {
    let Some((_dir, mut kube)) = start("kube_apiserver restart").await else {
        return;
    };
    kube.apply_shipped().await;
    kube.apply_yaml(
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: team-a}
---
apiVersion: tessera.dev/v1alpha1
kind: Route
metadata: {name: chat, namespace: team-a}
spec:
  gateway: gw
  rules: [{backends: [{name: openai}]}]
"#,
    )
    .await;
    let sa_kubeconfig = kube.service_account_kubeconfig(SA_NAMESPACE, SA_NAME).await;
    let before = cr_api(&client_from(&sa_kubeconfig).await, None, "routes")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(before.items.len(), 1);

    let old_pid = kube.apiserver_pid();
    let took = kube.restart_apiserver().await;
    assert_ne!(
        kube.apiserver_pid(),
        old_pid,
        "a new kube-apiserver process"
    );
    eprintln!(
        "kube_apiserver restart: kube-apiserver ready again in {:.1} s",
        took.as_secs_f64()
    );

    // The token minted before the restart still authenticates (same signing key), and etcd
    // kept the object, with its identity.
    let after = cr_api(&client_from(&sa_kubeconfig).await, None, "routes")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(after.items.len(), 1);
    assert_eq!(after.items[0].metadata.uid, before.items[0].metadata.uid);
}
