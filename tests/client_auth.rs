//! End-to-end: client authentication and per-rule client allow-lists, enforced by a real
//! Envoy configured by Tessera (SotW and Delta). API keys from a watched file, JWTs verified
//! against a JWKS served by a test peer (the OIDC issuer) and from a file.

use harness::*;
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

const PROVIDER_KEY: &str = "sk-provider-0001";

/// A gateway with client authentication `client_auth` (YAML lines under `clientAuth:`), an
/// OpenAI backend, a rule on `/v1/` that only `allowed` may use and an open rule on `/open/`.
fn config(s: &Setup<'_>, client_auth: &str, allowed: &str) {
    let openai = s.mock("openai").endpoint();
    let listener = s.listener;
    s.write(
        "gateway.yaml",
        format!(
            r#"apiVersion: tessera.dev/v1alpha1
kind: Gateway
metadata: {{name: gw}}
spec:
  nodeCluster: {NODE_CLUSTER}
  listeners: [{{name: http, port: {listener}, address: 127.0.0.1}}]
  clientAuth:
{client_auth}
---
apiVersion: tessera.dev/v1alpha1
kind: Backend
metadata: {{name: openai}}
spec: {{provider: OpenAI, endpoint: "{openai}", securityPolicy: openai-key}}
---
apiVersion: tessera.dev/v1alpha1
kind: BackendSecurityPolicy
metadata: {{name: openai-key}}
spec: {{type: APIKey, apiKey: {{file: openai.key}}}}
---
apiVersion: tessera.dev/v1alpha1
kind: Route
metadata: {{name: chat}}
spec:
  gateway: gw
  rules:
  - matches: [{{pathPrefix: /v1/}}]
    clients: [{allowed}]
    backends: [{{name: openai}}]
  - matches: [{{pathPrefix: /open/}}]
    backends: [{{name: openai}}]
"#
        ),
    );
    s.write("openai.key", PROVIDER_KEY);
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// GETs `path` through the gateway.
async fn get(client: &reqwest::Client, s: &Stack, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = client.get(s.envoy().url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    Reply {
        status: resp.status().as_u16(),
        body: resp.text().await.unwrap(),
    }
}

/// The JSON error body Envoy answered with, checked for the OpenAI shape.
fn error_code(reply: &Reply) -> String {
    let body: Value = serde_json::from_str(&reply.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", reply.body));
    let error = &body["error"];
    assert!(error["message"].is_string(), "{body}");
    assert!(error["type"].is_string(), "{body}");
    error["code"].as_str().unwrap_or_default().to_owned()
}

/// The provider saw only the provider key: no client credential, no internal identity header.
fn assert_provider_sees_only_its_key(reply: &Reply) {
    assert_eq!(
        reply.upstream_header("authorization").as_deref(),
        Some(bearer(PROVIDER_KEY).as_str()),
        "{}",
        reply.body
    );
    for h in ["x-api-key", "x-tessera-client-id"] {
        assert_eq!(reply.upstream_header(h), None, "{h} reached the provider");
    }
}

// === API keys: 200, 403, 401, in-place rotation ===

async fn api_keys(mode: Mode) {
    let s = Stack::builder()
        .mock("openai")
        .configure(|s| {
            config(s, "    apiKeys: {file: client-keys.yaml}", "team-a");
            s.write(
                "client-keys.yaml",
                "team-a: sk-team-a-0\nteam-b: sk-team-b\n",
            );
        })
        .envoy(mode)
        .start()
        .await;
    let mock = s.mock("openai");
    let a0 = bearer("sk-team-a-0");
    let reply = s
        .send("/v1/chat/completions", &[("authorization", &a0)])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_provider_sees_only_its_key(&reply);
    // The Anthropic SDK's header works too, and its value never travels on.
    let reply = s.send("/open/x", &[("x-api-key", "sk-team-b")]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_provider_sees_only_its_key(&reply);

    mock.clear().await;
    let reply = s
        .send("/v1/chat/completions", &[("x-api-key", "sk-team-b")])
        .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(error_code(&reply), "client_not_allowed");
    // A client cannot name itself: the identity header is Envoy's.
    let spoofed = [
        ("x-api-key", "sk-team-b"),
        ("x-tessera-client-id", "team-a"),
    ];
    assert_eq!(s.send("/v1/chat/completions", &spoofed).await.status, 403);
    for headers in [
        vec![],
        vec![("authorization", "Bearer sk-wrong")],
        vec![("x-api-key", "sk-wrong")],
    ] {
        let reply = s.send("/v1/chat/completions", &headers).await;
        assert_eq!(reply.status, 401, "{headers:?}: {}", reply.body);
        assert_eq!(error_code(&reply), "invalid_api_key");
    }
    assert!(
        mock.requests().await.is_empty(),
        "a refused request reached the provider"
    );
    // Per-client counts, named only by ids the configuration holds.
    let e = s.envoy();
    assert_eq!(
        e.stat("http.gw_http.rbac.policy._other.shadow_denied")
            .await,
        2
    );
    assert_eq!(e.stat("http.gw_http.rbac.policy.team-a.allowed").await, 1);
    assert_eq!(e.stat("vhost.gw.vcluster.team-a.upstream_rq_200").await, 1);

    // Rotation: the new key is applied in place, the old one refused at once.
    let stats = [
        "listener_manager.listener_modified",
        "listener_manager.lds.update_success",
        "cluster_manager.cluster_modified",
        "cluster_manager.cds.update_success",
        "listener_manager.total_filter_chains_draining",
        "http.gw_http.downstream_cx_drain_close",
    ];
    let connections = "http.gw_http.downstream_cx_total";
    // The refusals above closed their connections (Envoy had not read their bodies), maybe
    // after a delay: a fresh client has none of those in its pool.
    let client = http();
    let chat = e.url("/v1/chat/completions");
    let warm = send(&client, &chat, &[("authorization", &a0)]).await;
    assert_eq!(warm.status, 200, "{}", warm.body);
    let cx_before = e.stat(connections).await;
    let mut before = Vec::new();
    for st in stats {
        before.push(e.stat(st).await);
    }
    let keys = s.config.join("client-keys.yaml");
    let mut to_refusal = Vec::new();
    for i in 1..=10 {
        let old = bearer(&format!("sk-team-a-{}", i - 1));
        let new = bearer(&format!("sk-team-a-{i}"));
        let t0 = Instant::now();
        write_atomic(
            &keys,
            &format!("team-a: sk-team-a-{i}\nteam-b: sk-team-b\n"),
        );
        loop {
            // A GET has no body: Envoy keeps the connection open after refusing it.
            let reply = get(&client, &s, "/v1/models", &[("authorization", &old)]).await;
            if reply.status == 401 {
                break;
            }
            assert_eq!(reply.status, 200, "rotation {i}: {}", reply.body);
            assert!(
                t0.elapsed() < DEADLINE,
                "rotation {i}: the old key kept working"
            );
        }
        to_refusal.push(t0.elapsed());
        let reply = send(&client, &chat, &[("authorization", &new)]).await;
        assert_eq!(
            reply.status, 200,
            "rotation {i}: new key refused: {}",
            reply.body
        );
        assert_provider_sees_only_its_key(&reply);
    }
    to_refusal.sort();
    println!(
        "client key rotation ({mode}): key file rename → first 401 for the old key over {} rotations: p50 {:.1} ms, max {:.1} ms",
        to_refusal.len(),
        to_refusal[to_refusal.len() / 2].as_secs_f64() * 1e3,
        to_refusal[to_refusal.len() - 1].as_secs_f64() * 1e3,
    );
    for (st, b) in stats.iter().zip(before) {
        assert_eq!(
            e.stat(st).await,
            b,
            "{st} moved during client key rotations"
        );
    }
    // No connection was drained; new ones are rare (a client may reconnect on its own), and
    // shown rather than asserted.
    println!(
        "client key rotation ({mode}): {} new downstream connections over the rotations",
        e.stat(connections).await - cx_before
    );
    assert!(to_refusal[to_refusal.len() / 2] < Duration::from_millis(500));

    // Deleting the file revokes every key.
    std::fs::remove_file(&keys).unwrap();
    eventually("the deleted keys to be refused", DEADLINE, || {
        let s = &s;
        async move {
            let r = s.send("/open/x", &[("x-api-key", "sk-team-b")]).await;
            (r.status == 401).then_some(())
        }
    })
    .await;
}
both_modes!(api_keys);

// === JWTs: JWKS from a test peer, and from a file ===

/// Tokens signed by a fresh key (testenv/mint_jwts.py), and its JWKS.
fn mint(issuer: &str, claims: &[(&str, &str)]) -> Value {
    let mut cmd = Command::new(python());
    cmd.arg(repo().join("testenv/mint_jwts.py"))
        .args(["--issuer", issuer]);
    for (name, c) in claims {
        cmd.arg(format!("{name}={c}"));
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn jwt_from_file(mode: Mode) {
    const ISSUER: &str = "https://idp.test.example";
    let minted = mint(
        ISSUER,
        &[
            (
                "team_c",
                r#"{"sub":"team-c","aud":"ai-gateway","exp":"+600"}"#,
            ),
            (
                "team_d",
                r#"{"sub":"team-d","aud":"ai-gateway","exp":"+600"}"#,
            ),
            (
                "expired",
                r#"{"sub":"team-c","aud":"ai-gateway","exp":"-3600"}"#,
            ),
            (
                "wrong_aud",
                r#"{"sub":"team-c","aud":"elsewhere","exp":"+600"}"#,
            ),
        ],
    );
    let token = |name: &str| bearer(minted["tokens"][name].as_str().unwrap());
    let jwks = minted["jwks"].to_string();
    let s = Stack::builder()
        .mock("openai")
        .configure(|s| {
            let auth = format!(
                "    apiKeys: {{file: client-keys.yaml}}\n    jwt: {{issuer: \"{ISSUER}\", audiences: [ai-gateway], jwks: {{file: jwks.json}}}}\n    clientIdHeader: x-client-id"
            );
            config(s, &auth, "team-c");
            s.write("client-keys.yaml", "team-a: sk-team-a\n");
            s.write("jwks.json", &jwks);
        })
        .envoy(mode)
        .start()
        .await;
    let reply = s
        .send(
            "/v1/chat/completions",
            &[("authorization", &token("team_c"))],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.upstream_header("x-client-id").as_deref(),
        Some("team-c")
    );
    assert_provider_sees_only_its_key(&reply);
    // API keys keep working beside JWTs, and name their client in the same header.
    let reply = s
        .send("/open/x", &[("authorization", "Bearer sk-team-a")])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.upstream_header("x-client-id").as_deref(),
        Some("team-a")
    );
    let reply = s
        .send(
            "/v1/chat/completions",
            &[("authorization", &token("team_d"))],
        )
        .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(error_code(&reply), "client_not_allowed");
    for name in ["expired", "wrong_aud"] {
        let reply = s
            .send("/v1/chat/completions", &[("authorization", &token(name))])
            .await;
        assert_eq!(reply.status, 401, "{name}: {}", reply.body);
        assert_eq!(error_code(&reply), "invalid_token", "{name}");
    }
}
both_modes!(jwt_from_file);

async fn jwt_from_issuer(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let issuer = Issuer::start(dir.path(), &["team-c:secret-c", "team-d:secret-d"]).await;
    let client = http();
    let token = |id: &'static str, secret: &'static str| {
        let client = client.clone();
        let url = format!("{}/oauth2/token", issuer.url());
        async move {
            let form = [
                ("grant_type", "client_credentials"),
                ("client_id", id),
                ("client_secret", secret),
                ("audience", "ai-gateway"),
            ];
            let r: Value = client
                .post(url)
                .form(&form)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            bearer(r["access_token"].as_str().unwrap())
        }
    };
    let (team_c, team_d) = (
        token("team-c", "secret-c").await,
        token("team-d", "secret-d").await,
    );
    let url = issuer.url();
    let s = Stack::builder()
        .dir(dir)
        .mock("openai")
        .configure(|s| {
            let auth = format!(
                "    jwt: {{issuer: \"{url}\", audiences: [ai-gateway], jwks: {{uri: \"{url}/jwks\"}}}}"
            );
            config(s, &auth, "team-c");
        })
        .envoy(mode)
        .start()
        .await;
    let reply = s
        .send("/v1/chat/completions", &[("authorization", &team_c)])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_provider_sees_only_its_key(&reply);
    let reply = s
        .send("/v1/chat/completions", &[("authorization", &team_d)])
        .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(error_code(&reply), "client_not_allowed");
    assert_eq!(
        s.send("/open/x", &[("authorization", &team_d)])
            .await
            .status,
        200
    );
    // Only the Authorization header counts: a token in the URL would reach the provider.
    let in_query = format!("/open/x?access_token={}", &team_c["Bearer ".len()..]);
    assert_eq!(s.send(&in_query, &[]).await.status, 401);
    // JWTs are the only way in here: no token, or anything else, is refused.
    for headers in [vec![], vec![("authorization", "Bearer sk-not-a-jwt")]] {
        let reply = s.send("/open/x", &headers).await;
        assert_eq!(reply.status, 401, "{headers:?}: {}", reply.body);
        assert_eq!(error_code(&reply), "invalid_token");
    }
}
both_modes!(jwt_from_issuer);
