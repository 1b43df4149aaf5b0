//! Azure OpenAI end to end: Tessera mints Entra ID tokens with azure_identity from an HTTPS
//! Entra stand-in (oauth2-mock-server) and pushes them to a real Envoy as bearer secrets.

use harness::*;
use std::time::{Duration, Instant};

const TENANT: &str = "contoso-tenant";
const AUDIENCE: &str = "https://cognitiveservices.azure.com";

struct Azure {
    stack: Stack,
    entra: Entra,
}

/// One Azure OpenAI backend whose policy authenticates with `auth` (a YAML fragment).
async fn setup(mode: Mode, lifetime: u32, auth: &str) -> Azure {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "entra");
    let entra = Entra::start(
        dir.path(),
        &pki,
        TENANT,
        &["tessera-app:right-secret"],
        &["tessera-fed"],
        lifetime,
    )
    .await;
    let stack = Stack::builder()
        .dir(dir)
        .mock("azure-openai")
        .config_file("config.yaml")
        .configure(|s| {
            s.write("client.secret", "right-secret\n");
            s.write("wrong.secret", "wrong-secret\n");
            s.write("federated.jwt", fake_assertion());
            s.write("config.yaml", config(s, &entra, &pki, auth));
        })
        .envoy(mode)
        .start()
        .await;
    Azure { stack, entra }
}

fn config(s: &Setup, entra: &Entra, pki: &Pki, auth: &str) -> String {
    format!(
        r#"apiVersion: tessera.dev/v1alpha1
kind: Gateway
metadata: {{name: gw}}
spec:
  nodeCluster: ai-gateway
  listeners: [{{name: http, port: {listener}, address: 127.0.0.1}}]
---
apiVersion: tessera.dev/v1alpha1
kind: Backend
metadata: {{name: azure}}
spec: {{provider: AzureOpenAI, endpoint: "{endpoint}", securityPolicy: entra}}
---
apiVersion: tessera.dev/v1alpha1
kind: BackendSecurityPolicy
metadata: {{name: entra}}
spec:
  type: AzureCredentials
  azureCredentials:
    tenantId: {TENANT}
    authorityHost: {authority}
    caFile: {ca}
    refresh: {{beforeExpiry: 5m, jitter: 0s, maxBackoff: 500ms}}
{auth}---
apiVersion: tessera.dev/v1alpha1
kind: Route
metadata: {{name: chat}}
spec:
  gateway: gw
  rules: [{{backends: [{{name: azure}}]}}]
"#,
        listener = s.listener,
        endpoint = s.mock("azure-openai").endpoint(),
        authority = entra.authority(),
        ca = pki.ca.display(),
    )
}

const SECRET_AUTH: &str = "    clientId: tessera-app\n    clientSecretFile: client.secret\n";

/// A well-formed (unsigned) assertion for the federated client, as a kubelet-projected token.
fn fake_assertion() -> String {
    use base64::Engine as _;
    let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let exp = unix_now() as u64 + 3600;
    format!(
        "{}.{}.c2ln",
        b64(r#"{"alg":"RS256","typ":"JWT"}"#),
        b64(&format!(
            r#"{{"iss":"https://k8s.example","sub":"system:serviceaccount:ai:tessera","aud":"api://AzureADTokenExchange","exp":{exp}}}"#
        ))
    )
}

impl Azure {
    async fn chat(&self) -> Reply {
        self.stack
            .send(
                "/openai/deployments/gpt-4o/chat/completions",
                &[("authorization", "Bearer stolen")],
            )
            .await
    }

    /// Requests that reached Azure OpenAI.
    async fn upstream_requests(&self) -> Vec<serde_json::Value> {
        self.stack.mock("azure-openai").requests().await
    }

    async fn until_ok(&self) -> Reply {
        eventually("a request with a token", DEADLINE, || async {
            let r = self.chat().await;
            (r.status == 200).then_some(r)
        })
        .await
    }

    fn token(reply: &Reply) -> String {
        let auth = reply.upstream_header("authorization").unwrap_or_default();
        auth.strip_prefix("Bearer ")
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no bearer token: {auth}"))
    }
}

async fn bearer_token_verifies(mode: Mode) {
    let az = setup(mode, 3600, SECRET_AUTH).await;
    let reply = az.until_ok().await;
    assert_eq!(reply.provider().as_deref(), Some("azure-openai"));
    let token = Azure::token(&reply);
    let claims = verify_jwt(
        az.stack.dir.path(),
        &az.entra.jwks().await,
        AUDIENCE,
        &token,
    )
    .expect("the token verifies against the JWKS");
    assert_eq!(claims["appid"], "tessera-app");
    assert_eq!(claims["tid"], TENANT);
    assert!(
        !reply.body.contains("stolen"),
        "the client's credential never reaches Azure"
    );
    assert_eq!(az.entra.issued().await.len(), 1);
    let logs = az.stack.tessera.logs();
    assert!(
        !logs.contains(&token) && !logs.contains("right-secret"),
        "no token or secret in the log"
    );
    let status = az.stack.tessera.status().await.to_string();
    assert!(!status.contains(&token), "no token in the admin API");
}
both_modes!(bearer_token_verifies);

async fn short_lived_tokens_are_replaced_in_place(mode: Mode) {
    // 6 s tokens, renewed at half-life: azure_identity would hand back its cached token
    // here, so this proves each refresh is a real token request.
    let az = setup(mode, 6, SECRET_AUTH).await;
    let first = Azure::token(&az.until_ok().await);
    let modified = az
        .stack
        .envoy()
        .stat("cluster_manager.cluster_modified")
        .await;
    let mut seen = vec![(first, unix_now())];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        let r = az.chat().await;
        assert_eq!(r.status, 200, "{}", r.body);
        let t = Azure::token(&r);
        if seen.last().map(|(s, _)| s != &t).unwrap_or(true) {
            seen.push((t, unix_now()));
        }
    }
    assert!(seen.len() >= 3, "at least two refreshes: {}", seen.len());
    let issued = az.entra.issued().await;
    let mut latencies = Vec::new();
    for (token, first_seen) in &seen[1..] {
        let claims = verify_jwt(az.stack.dir.path(), &az.entra.jwks().await, AUDIENCE, token)
            .expect("verifies");
        let jti = &claims["jti"];
        let minted = issued
            .iter()
            .find(|i| &i["jti"] == jti)
            .expect("issued by the stand-in");
        latencies.push((first_seen - minted["issued_at"].as_f64().unwrap()) * 1e3);
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "azure refresh ({mode}): token issued → first request carrying it over {} refreshes: min {:.1} ms, median {:.1} ms, max {:.1} ms",
        latencies.len(),
        latencies[0],
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    assert_eq!(
        az.stack
            .envoy()
            .stat("cluster_manager.cluster_modified")
            .await,
        modified,
        "no cluster modified"
    );
}
both_modes!(short_lived_tokens_are_replaced_in_place);

#[needs_envoy]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_client_secret_fails_closed_with_a_clear_error() {
    let az = setup(
        Mode::Delta,
        3600,
        "    clientId: tessera-app\n    clientSecretFile: wrong.secret\n",
    )
    .await;
    let status = eventually("the Entra error in the status", DEADLINE, || async {
        let s = az.stack.tessera.status().await;
        s["credentials"][0]["reason"]
            .as_str()
            .filter(|r| r.contains("AADSTS"))
            .map(str::to_owned)
    })
    .await;
    assert!(
        status.contains("7000215"),
        "Entra's reason is passed on: {status}"
    );
    assert!(!status.contains("wrong-secret"), "{status}");
    let r = az.chat().await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(
        az.upstream_requests().await.is_empty(),
        "nothing reached Azure OpenAI"
    );
    assert!(
        az.stack.tessera.logs().contains("AADSTS7000215"),
        "the error is logged"
    );
}

#[needs_envoy]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_assertion_from_a_token_file() {
    let az = setup(
        Mode::Sotw,
        3600,
        "    clientId: tessera-fed\n    oidcExchangeToken: {tokenFile: federated.jwt}\n",
    )
    .await;
    let token = Azure::token(&az.until_ok().await);
    let claims = verify_jwt(
        az.stack.dir.path(),
        &az.entra.jwks().await,
        AUDIENCE,
        &token,
    )
    .expect("verifies");
    assert_eq!(claims["appid"], "tessera-fed");
    assert_eq!(claims["appidacr"], "2", "issued for a client assertion");
}

async fn outage(mode: Mode) {
    let az = setup(mode, 5, SECRET_AUTH).await;
    let first = Azure::token(&az.until_ok().await);
    az.entra.mode("fail").await;
    let expires_at = az.entra.issued().await.last().unwrap()["expires_at"]
        .as_f64()
        .unwrap();
    while unix_now() < expires_at - 0.6 {
        let r = az.chat().await;
        assert_eq!(
            r.status, 200,
            "the valid token is still used during the outage: {}",
            r.body
        );
    }
    let denied = eventually("401 once the token expires", DEADLINE, || async {
        (az.chat().await.status == 401).then_some(unix_now())
    })
    .await;
    assert!(
        denied <= expires_at,
        "failed closed {:.3} s after expiry",
        denied - expires_at
    );
    az.stack.mock("azure-openai").clear().await;
    assert_eq!(az.chat().await.status, 401);
    assert!(
        az.upstream_requests().await.is_empty(),
        "nothing reaches Azure OpenAI while expired"
    );
    az.entra.mode("ok").await;
    let again = Azure::token(&az.until_ok().await);
    assert_ne!(again, first, "recovered with a new token");
}
both_modes!(outage);
