//! AWS Bedrock end to end: OIDC client-credentials grant → moto STS
//! `AssumeRoleWithWebIdentity` → SigV4 signer pushed to a real Envoy by ECDS → a Bedrock mock
//! that verifies every signature independently (botocore) against what STS issued.

use harness::*;
use std::time::{Duration, Instant};

const MODEL_PATH: &str = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke";

struct Aws {
    stack: Stack,
    peers: AwsPeers,
    issuer: Issuer,
}

/// One gateway; one Bedrock backend per policy name, routed by `x-ai-model: <policy>`.
async fn setup(mode: Mode, lifetime: u32, before_expiry: &str, policies: &[&str]) -> Aws {
    setup_with(mode, lifetime, before_expiry, policies, |p, issuer| {
        format!(
            "    oidcExchangeToken:\n      roleArn: arn:aws:iam::123456789012:role/bedrock-{p}\n      durationSeconds: 900\n      oidc:\n        issuer: {issuer}\n        clientId: {p}\n        clientSecretFile: {p}.secret\n        scopes: [bedrock]\n"
        )
    })
    .await
}

/// Like `setup`, with `source(policy, issuer_url)` giving each policy's credential source.
async fn setup_with(
    mode: Mode,
    lifetime: u32,
    before_expiry: &str,
    policies: &[&str],
    source: impl Fn(&str, &str) -> String,
) -> Aws {
    let dir = tempfile::tempdir().unwrap();
    let peers = AwsPeers::start(dir.path(), lifetime).await;
    let clients: Vec<String> = policies.iter().map(|p| format!("{p}:secret-{p}")).collect();
    let clients: Vec<&str> = clients.iter().map(String::as_str).collect();
    let issuer = Issuer::start(dir.path(), &clients).await;
    let stack = Stack::builder()
        .dir(dir)
        .config_file("config.yaml")
        .configure(|s| {
            for p in policies {
                s.write(&format!("{p}.secret"), format!("secret-{p}\n"));
            }
            let yaml = config(s.listener, &peers, &issuer, before_expiry, policies, source);
            s.write("config.yaml", yaml);
        })
        .envoy(mode)
        .start()
        .await;
    Aws {
        stack,
        peers,
        issuer,
    }
}

/// A gateway on `listener`, and per policy a Bedrock backend, its AWS policy and a route rule.
fn config(
    listener: u16,
    peers: &AwsPeers,
    issuer: &Issuer,
    before_expiry: &str,
    policies: &[&str],
    source: impl Fn(&str, &str) -> String,
) -> String {
    let mut yaml = format!(
        "apiVersion: tessera.dev/v1alpha1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  nodeCluster: ai-gateway\n  listeners: [{{name: http, port: {listener}, address: 127.0.0.1}}]\n"
    );
    let mut rules = String::new();
    for p in policies {
        yaml += &format!(
            r#"---
apiVersion: tessera.dev/v1alpha1
kind: Backend
metadata: {{name: bedrock-{p}}}
spec: {{provider: AWSBedrock, endpoint: "http://127.0.0.1:{bedrock}", securityPolicy: {p}}}
---
apiVersion: tessera.dev/v1alpha1
kind: BackendSecurityPolicy
metadata: {{name: {p}}}
spec:
  type: AWSCredentials
  awsCredentials:
    region: us-east-1
    stsEndpoint: http://127.0.0.1:{sts}
    refresh: {{beforeExpiry: "{before_expiry}", jitter: 0s, maxBackoff: 500ms}}
{source}"#,
            bedrock = peers.bedrock_port,
            sts = peers.sts_port,
            source = source(p, &issuer.url()),
        );
        rules += &format!(
            "  - matches: [{{pathPrefix: /model/, headers: [{{name: x-ai-model, value: {p}}}]}}]\n    backends: [{{name: bedrock-{p}}}]\n"
        );
    }
    yaml + &format!(
        "---\napiVersion: tessera.dev/v1alpha1\nkind: Route\nmetadata: {{name: bedrock}}\nspec:\n  gateway: gw\n  rules:\n{rules}"
    )
}

impl Aws {
    async fn invoke(&self, policy: &str) -> Reply {
        self.stack.send(MODEL_PATH, &[("x-ai-model", policy)]).await
    }

    /// Waits until requests for `policy` are signed and accepted; returns the reply.
    async fn until_signed(&self, policy: &str) -> Reply {
        eventually("a signed request to be accepted", DEADLINE, || async {
            let r = self.invoke(policy).await;
            (r.status == 200).then_some(r)
        })
        .await
    }

    /// Credentials STS issued for `policy`'s role session.
    async fn issued_for(&self, policy: &str) -> Vec<serde_json::Value> {
        let session = format!("tessera-{policy}");
        self.peers
            .issued()
            .await
            .into_iter()
            .filter(|i| i["session_name"] == session.as_str())
            .collect()
    }
}

// === signed requests, verified against what STS issued ===

async fn signed_requests(mode: Mode) {
    let aws = setup(mode, 3600, "5m", &["team-a"]).await;
    let reply = aws.until_signed("team-a").await;
    let issued = aws.issued_for("team-a").await;
    assert_eq!(issued.len(), 1, "one exchange: {issued:?}");
    assert_eq!(
        reply.json()["access_key_id"],
        issued[0]["access_key_id"],
        "signed with what STS issued"
    );
    assert_eq!(
        reply.json()["path"],
        MODEL_PATH,
        "the model id's colon stays encoded as SDKs send it"
    );
    // Client-supplied credentials and x-amz-* headers never reach AWS (the mock would reject a
    // foreign session token, and a signed bogus date would not verify).
    let reply = aws
        .stack
        .send(
            MODEL_PATH,
            &[
                ("x-ai-model", "team-a"),
                ("authorization", "Bearer stolen"),
                ("x-amz-security-token", "stolen-token"),
                ("x-amz-date", "20000101T000000Z"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(!reply.body.contains("stolen"), "{}", reply.body);
    // Every request the mock saw verified.
    let requests = aws.peers.requests().await;
    assert!(requests.len() >= 2);
    assert!(requests.iter().all(|r| r["status"] == 200), "{requests:?}");
    // The OIDC grant was made once, and no secret reached Tessera's log.
    assert_eq!(aws.issuer.calls().await["team-a"], 1);
    let logs = aws.stack.tessera.logs();
    assert!(!logs.contains("secret-team-a"), "client secret in the log");
    let token = issued[0]["web_identity_token"].as_str().unwrap();
    assert!(!logs.contains(token), "web identity token in the log");
}
both_modes!(signed_requests);

// === refresh before expiry, applied in place ===

async fn refresh_in_place(mode: Mode) {
    // 6 s credentials, renewed at half-life (beforeExpiry is capped at half the lifetime).
    let aws = setup(mode, 6, "5m", &["team-a"]).await;
    aws.until_signed("team-a").await;
    let modified = aws
        .stack
        .envoy()
        .stat("cluster_manager.cluster_modified")
        .await;
    let cds = aws
        .stack
        .envoy()
        .stat("cluster_manager.cds.update_success")
        .await;
    let start = Instant::now();
    let mut statuses = Vec::new();
    while start.elapsed() < Duration::from_secs(8) {
        statuses.push(aws.invoke("team-a").await.status);
    }
    assert!(
        statuses.iter().all(|s| *s == 200),
        "every request during refreshes succeeded"
    );
    let issued = aws.issued_for("team-a").await;
    assert!(
        issued.len() >= 3,
        "at least two refreshes in 8 s of 6 s credentials: {}",
        issued.len()
    );
    let requests = aws.peers.requests().await;
    // STS returned → first request signed with the new key, for each refresh.
    let mut latencies = Vec::new();
    // A credential STS issued as the request loop ended had no request left to sign: judge
    // only those issued well before the last request.
    let last_request = requests
        .iter()
        .filter_map(|r| r["time"].as_f64())
        .fold(f64::NEG_INFINITY, f64::max);
    for cred in &issued[1..] {
        let key = &cred["access_key_id"];
        let issued_at = cred["issued_at"].as_f64().unwrap();
        if issued_at > last_request - 0.5 {
            continue;
        }
        let first = requests
            .iter()
            .filter(|r| &r["access_key_id"] == key)
            .filter_map(|r| r["time"].as_f64())
            .fold(f64::INFINITY, f64::min);
        assert!(first.is_finite(), "credential {key} was never used");
        latencies.push((first - issued_at) * 1e3);
    }
    assert!(
        !latencies.is_empty(),
        "no refresh happened early enough to be judged"
    );
    latencies.sort_by(f64::total_cmp);
    println!(
        "aws refresh ({mode}): STS returned → first request signed with the new key over {} refreshes: min {:.1} ms, median {:.1} ms, max {:.1} ms",
        latencies.len(),
        latencies[0],
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    assert_eq!(
        aws.stack
            .envoy()
            .stat("cluster_manager.cluster_modified")
            .await,
        modified,
        "no cluster modified"
    );
    assert_eq!(
        aws.stack
            .envoy()
            .stat("cluster_manager.cds.update_success")
            .await,
        cds,
        "CDS untouched"
    );
}
both_modes!(refresh_in_place);

// === STS outage: old key until expiry, then fail closed, then recovery ===

async fn sts_outage(mode: Mode) {
    let aws = setup(mode, 5, "5m", &["team-a"]).await;
    aws.until_signed("team-a").await;
    aws.peers.sts_mode("down").await;
    let issued = aws.issued_for("team-a").await;
    let last = issued.last().unwrap().clone();
    let expires_at = last["expires_at"].as_f64().unwrap();
    // Until shortly before expiry, the still-valid credential keeps signing (Tessera stops
    // using it a tenth of its lifetime, at most 2 s, before it expires).
    while unix_now() < expires_at - 0.6 {
        let r = aws.invoke("team-a").await;
        assert_eq!(
            r.status, 200,
            "the valid credential is still used during the outage: {}",
            r.body
        );
    }
    // Past expiry: Envoy refuses without calling the provider.
    let denied = eventually("fail closed after expiry", DEADLINE, || async {
        let r = aws.invoke("team-a").await;
        (r.status == 403 && r.body.contains("RBAC")).then_some(unix_now())
    })
    .await;
    println!(
        "aws outage ({mode}): failed closed {:.0} ms before expiry",
        (expires_at - denied) * 1e3
    );
    assert!(
        denied <= expires_at,
        "failed closed {:.3} s after expiry",
        denied - expires_at
    );
    let before = aws.peers.requests().await.len();
    for _ in 0..5 {
        assert_eq!(aws.invoke("team-a").await.status, 403);
    }
    let requests = aws.peers.requests().await;
    assert_eq!(
        requests.len(),
        before,
        "nothing reaches the provider while failed closed"
    );
    assert!(
        requests.iter().all(|r| r["status"] == 200),
        "an expired or bad signature reached the provider: {requests:?}"
    );
    let status = aws.stack.tessera.status().await;
    assert!(
        status["credentials"].to_string().contains("expired"),
        "{status}"
    );
    // STS returns: recovery without intervention.
    aws.peers.sts_mode("up").await;
    let reply = aws.until_signed("team-a").await;
    assert_ne!(
        reply.json()["access_key_id"],
        last["access_key_id"],
        "a new credential"
    );
}
both_modes!(sts_outage);

// === one hanging issuer does not delay another credential ===

#[needs_envoy]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_issuer_is_isolated() {
    let aws = setup(Mode::Delta, 4, "5m", &["team-a", "team-b"]).await;
    aws.until_signed("team-a").await;
    aws.until_signed("team-b").await;
    aws.issuer.client_mode("team-a", "hang").await;
    let b_before = aws.issued_for("team-b").await.len();
    let a_before = aws.issued_for("team-a").await.len();
    // Over three of team-b's lifetimes' worth of refreshes, team-b keeps renewing and serving.
    let start = Instant::now();
    let mut a_denied = false;
    while start.elapsed() < Duration::from_secs(6) {
        let b = aws.invoke("team-b").await;
        assert_eq!(b.status, 200, "team-b kept serving: {}", b.body);
        let a = aws.invoke("team-a").await;
        a_denied |= a.status == 403;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b_after = aws.issued_for("team-b").await.len();
    assert!(
        b_after >= b_before + 2,
        "team-b refreshed while team-a hung: {b_before} → {b_after}"
    );
    assert_eq!(
        aws.issued_for("team-a").await.len(),
        a_before,
        "team-a could not exchange"
    );
    assert!(a_denied, "team-a failed closed at expiry");
}

// === a projected service-account token file ===

#[needs_envoy]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projected_token_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("token"),
        "header.kubernetes-sa-token.signature\n",
    )
    .unwrap();
    let token_path = dir.path().join("token");
    let aws = setup_with(Mode::Sotw, 3600, "5m", &["sa"], |_, _| {
        format!(
            "    oidcExchangeToken:\n      roleArn: arn:aws:iam::123456789012:role/bedrock\n      roleSessionName: tessera-sa\n      tokenFile: {}\n",
            token_path.display()
        )
    })
    .await;
    let reply = aws.until_signed("sa").await;
    let issued = aws.issued_for("sa").await;
    assert_eq!(
        issued[0]["web_identity_token"], "header.kubernetes-sa-token.signature",
        "the trimmed file content"
    );
    assert_eq!(reply.json()["access_key_id"], issued[0]["access_key_id"]);
    assert_eq!(
        aws.issuer.calls().await.as_object().map(|m| m.len()),
        Some(0),
        "no OIDC grant"
    );
}

// === static keys from an AWS credentials file: rotate and revoke by editing it ===

#[needs_envoy]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_file_rotation_and_revocation() {
    let holder = tempfile::tempdir().unwrap();
    let creds_file = holder.path().join("credentials");
    let creds_path = creds_file.clone();
    let aws = setup_with(Mode::Delta, 3600, "5m", &["static"], move |_, _| {
        format!(
            "    credentialsFile: {}\n    profile: bedrock\n",
            creds_path.display()
        )
    })
    .await;
    // Nothing yet: fail closed.
    let r = aws.invoke("static").await;
    assert_eq!(r.status, 403, "{}", r.body);
    // Keys that STS (moto) knows, so the mock can verify the signature.
    let first = assume_role(&aws).await;
    write_atomic(&creds_file, &credentials_ini(&first));
    let reply = aws.until_signed("static").await;
    assert_eq!(
        reply.json()["access_key_id"].as_str(),
        Some(first[0].as_str())
    );
    let second = assume_role(&aws).await;
    write_atomic(&creds_file, &credentials_ini(&second));
    eventually("the rotated keys to sign", DEADLINE, || async {
        let r = aws.invoke("static").await;
        (r.json()["access_key_id"].as_str() == Some(second[0].as_str())).then_some(())
    })
    .await;
    std::fs::remove_file(&creds_file).unwrap();
    eventually("fail closed when the file is gone", DEADLINE, || async {
        (aws.invoke("static").await.status == 403).then_some(())
    })
    .await;
}

/// Calls moto's STS directly (unsigned, like any web-identity exchange); returns
/// [access key id, secret, session token].
async fn assume_role(aws: &Aws) -> [String; 3] {
    let body = http()
        .post(format!("http://127.0.0.1:{}/", aws.peers.sts_port))
        .form(&[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", "arn:aws:iam::123456789012:role/static"),
            ("RoleSessionName", "test-static"),
            ("WebIdentityToken", "token"),
            ("DurationSeconds", "3600"),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let tag = |t: &str| {
        let start = body.find(&format!("<{t}>")).unwrap() + t.len() + 2;
        let end = body[start..].find(&format!("</{t}>")).unwrap() + start;
        body[start..end].to_string()
    };
    [
        tag("AccessKeyId"),
        tag("SecretAccessKey"),
        tag("SessionToken"),
    ]
}

fn credentials_ini(keys: &[String; 3]) -> String {
    format!(
        "[default]\naws_access_key_id = AKIAIGNORED\naws_secret_access_key = ignored\n\n[bedrock]\naws_access_key_id = {}\naws_secret_access_key = {}\naws_session_token = {}\n",
        keys[0], keys[1], keys[2]
    )
}

// === the model in the Bedrock path routes, and the signature still verifies ===

async fn bedrock_path_routes_by_model(mode: Mode) {
    let aws = setup(mode, 3600, "5m", &["team-a"]).await;
    aws.until_signed("team-a").await;
    // Same backend, now selected by the model in the path instead of a header.
    let yaml = std::fs::read_to_string(&aws.stack.config).unwrap();
    let by_header = "{pathPrefix: /model/, headers: [{name: x-ai-model, value: team-a}]}";
    assert!(yaml.contains(by_header));
    let by_model = r#"{model: "anthropic.claude-3-haiku-20240307-v1:0"}"#;
    write_atomic(&aws.stack.config, &yaml.replace(by_header, by_model));
    let reply = eventually("the path to route by model", DEADLINE, || async {
        let r = aws.stack.send(MODEL_PATH, &[]).await;
        (r.status == 200).then_some(r)
    })
    .await;
    assert_eq!(reply.json()["path"], MODEL_PATH);
    // boto3 encodes the colon; other clients do not.
    let plain = MODEL_PATH.replace("%3A", ":");
    let reply = aws.stack.send(&plain, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    // Every request the mock saw passed its SigV4 verification.
    let requests = aws.peers.requests().await;
    assert!(requests.len() >= 3);
    assert!(requests.iter().all(|r| r["status"] == 200), "{requests:?}");
    // Another model in the path: a JSON 404, not another backend.
    let other = MODEL_PATH.replace("haiku", "opus");
    let reply = aws.stack.send(&other, &[]).await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    assert_eq!(
        reply.json()["error"]["code"],
        "model_not_found",
        "{}",
        reply.body
    );
}
both_modes!(bedrock_path_routes_by_model);
