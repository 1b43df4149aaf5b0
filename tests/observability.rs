//! `/metrics` and `--log-format json` against real Envoy: a short-lived AWS credential (moto
//! STS, Bedrock mock) and an API key, in SotW and Delta.

use harness::*;

const MODEL_PATH: &str = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke";
const API_KEY: &str = "sk-observability-key-value-4711";
const SA_TOKEN: &str = "header.observability-sa-token.signature";

fn config(listener: u16, bedrock: u16, sts: u16, token: &std::path::Path) -> String {
    bedrock_gateway(listener, bedrock, sts, token, "tessera-obs")
        + r#"---
apiVersion: tessera.dev/v1alpha1
kind: Backend
metadata: {name: openai}
spec: {provider: OpenAI, endpoint: "http://127.0.0.1:9", securityPolicy: openai-key}
---
apiVersion: tessera.dev/v1alpha1
kind: BackendSecurityPolicy
metadata: {name: openai-key}
spec: {type: APIKey, apiKey: {file: openai.key}}
---
apiVersion: tessera.dev/v1alpha1
kind: Route
metadata: {name: models}
spec:
  gateway: gw
  rules:
  - matches: [{pathPrefix: /model/}]
    backends: [{name: bedrock}]
  - backends: [{name: openai}]
"#
}

/// The value of the one sample `name{labels}` (labels as rendered), if present.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn metrics_and_json_logs(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let peers = AwsPeers::start(dir.path(), 3600).await;
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{SA_TOKEN}\n")).unwrap();
    let stack = Stack::builder()
        .dir(dir)
        .config_file("config.yaml")
        .configure(|s| {
            s.write("openai.key", format!("{API_KEY}\n"));
            let yaml = config(s.listener, peers.bedrock_port, peers.sts_port, &token);
            s.write("config.yaml", yaml);
        })
        .tessera_args(&["--log-format", "json"])
        .envoy(mode)
        .start()
        .await;
    eventually("a signed request to be accepted", DEADLINE, || async {
        let r = stack.send(MODEL_PATH, &[]).await;
        (r.status == 200).then_some(())
    })
    .await;

    let url = format!("http://127.0.0.1:{}/metrics", stack.tessera.admin_port);
    let (this, other) = match mode {
        Mode::Sotw => ("sotw", "delta"),
        Mode::Delta => ("delta", "sotw"),
    };
    let connected =
        format!(r#"tessera_xds_connected_nodes{{gateway="{NODE_CLUSTER}",mode="{this}"}}"#);
    let body = eventually("the connected node in /metrics", DEADLINE, || async {
        let body = http().get(&url).send().await.ok()?.text().await.ok()?;
        (sample(&body, &connected) == Some(1.0)).then_some(body)
    })
    .await;
    let idle = format!(r#"tessera_xds_connected_nodes{{gateway="{NODE_CLUSTER}",mode="{other}"}}"#);
    assert_eq!(sample(&body, &idle), Some(0.0), "{body}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let expiry = sample(
        &body,
        r#"tessera_credential_expiry_timestamp_seconds{credential="aws"}"#,
    )
    .unwrap_or_else(|| panic!("{body}"));
    assert!(
        expiry > now && expiry <= now + 3600.0 + 5.0,
        "{expiry} vs {now}"
    );
    let left = sample(
        &body,
        r#"tessera_credential_seconds_to_expiry{credential="aws"}"#,
    )
    .unwrap();
    assert!(left > 3000.0 && left <= 3600.0, "{left}");
    let attempts = sample(
        &body,
        r#"tessera_credential_refresh_attempts_total{credential="aws"}"#,
    )
    .unwrap();
    assert!(attempts >= 1.0, "{body}");
    for credential in ["aws", "openai-key"] {
        let present =
            format!(r#"tessera_credential_state{{credential="{credential}",state="present"}}"#);
        assert_eq!(sample(&body, &present), Some(1.0), "{body}");
    }
    assert!(
        !body.contains("tessera_credential_expiry_timestamp_seconds{credential=\"openai-key\"}"),
        "a long-lived key has no expiry: {body}"
    );
    assert!(!body.contains(API_KEY) && !body.contains(SA_TOKEN));
    assert!(!body.contains("test-"), "no node id in /metrics: {body}");

    // Every stderr line is one JSON object; no secret in any of them.
    let logs = stack.tessera.logs();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!logs.contains(API_KEY), "API key in the log");
    assert!(!logs.contains(SA_TOKEN), "service-account token in the log");
    let minted = lines
        .iter()
        .find(|l| l["message"] == "credential minted")
        .unwrap_or_else(|| panic!("no mint logged: {logs}"));
    assert_eq!(minted["credential"], "aws");
    assert!(minted["expires_in_s"].as_u64().unwrap() > 3000);
    let pushed: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["message"] == "credential pushed" && l["credential"] == "aws")
        .collect();
    assert!(!pushed.is_empty(), "{logs}");
    let version = pushed[0]["version"].as_str().unwrap();
    assert!(!version.is_empty() && version.len() <= 64, "{version}");
    let key = lines
        .iter()
        .find(|l| l["message"] == "credential pushed" && l["credential"] == "openai-key")
        .unwrap_or_else(|| panic!("API key push not logged: {logs}"));
    assert_eq!(key["state"], "present");
}
both_modes!(metrics_and_json_logs);

/// STS is down: every failed attempt is counted under its class, and the credential shows as
/// unavailable with no expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_refreshes_are_counted_by_class() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{SA_TOKEN}\n")).unwrap();
    std::fs::write(dir.path().join("openai.key"), API_KEY).unwrap();
    // Nothing listens on the STS port: connections are refused.
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, config(port(), port(), port(), &token)).unwrap();
    let tessera = Tessera::start(&config_path, &[]).await;
    let url = format!("http://127.0.0.1:{}/metrics", tessera.admin_port);
    let failures = r#"tessera_credential_refresh_failures_total{credential="aws",reason="sts"}"#;
    let body = eventually("two failed STS attempts counted", DEADLINE, || async {
        let body = http().get(&url).send().await.ok()?.text().await.ok()?;
        (sample(&body, failures)? >= 2.0).then_some(body)
    })
    .await;
    let attempts = sample(
        &body,
        r#"tessera_credential_refresh_attempts_total{credential="aws"}"#,
    )
    .unwrap();
    assert!(attempts >= sample(&body, failures).unwrap(), "{body}");
    let unavailable = r#"tessera_credential_state{credential="aws",state="unavailable"}"#;
    assert_eq!(sample(&body, unavailable), Some(1.0), "{body}");
    assert!(
        !body.contains("tessera_credential_seconds_to_expiry{credential=\"aws\"}"),
        "{body}"
    );
}
