//! Routing by the requested model, end to end: the official `openai` and `anthropic` Python
//! SDKs (unmodified, `base_url` at the gateway), Gemini paths, JSON errors, and failover across
//! backend priorities with each attempt's own credential. Real Envoy, SotW and Delta.

use harness::*;
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};

/// Mocks: `openai` and `azure` serve GPT models (azure is gpt-4o's failover), `anthropic`
/// Claude, `gemini` Gemini. Every backend has its own key file `sk-<name>`.
const MOCKS: [&str; 4] = ["openai", "azure", "anthropic", "gemini"];
/// The listener's body limit in the test configuration.
const MAX_REQUEST_BYTES: usize = 65536;

fn config(s: &Setup<'_>) -> String {
    let mut yaml = format!(
        r#"apiVersion: tessera.dev/v1alpha1
kind: Gateway
metadata: {{name: gw}}
spec:
  nodeCluster: {NODE_CLUSTER}
  listeners: [{{name: http, port: {port}, address: 127.0.0.1, maxRequestBytes: {MAX_REQUEST_BYTES}}}]
---
apiVersion: tessera.dev/v1alpha1
kind: Route
metadata: {{name: models}}
spec:
  gateway: gw
  rules:
  - matches: [{{model: gpt-4o}}]
    backends:
    - {{name: openai, priority: 0}}
    - {{name: azure, priority: 1}}
    retry: {{attempts: 2, on: [5xx, 429, connect-failure, reset], perTryTimeout: 5s}}
  - matches: [{{model: gpt-4o-mini}}]
    backends: [{{name: azure}}]
  - matches: [{{modelPrefix: text-embedding-}}]
    backends: [{{name: openai}}]
  - matches: [{{model: claude-sonnet-4-5}}]
    backends: [{{name: anthropic}}]
  - matches: [{{model: gemini-2.0-flash}}]
    backends: [{{name: gemini}}]
"#,
        port = s.listener
    );
    for (name, provider) in [
        ("openai", "OpenAI"),
        ("azure", "AzureOpenAI"),
        ("anthropic", "Anthropic"),
        ("gemini", "GoogleGemini"),
    ] {
        yaml += &format!(
            r#"---
apiVersion: tessera.dev/v1alpha1
kind: Backend
metadata: {{name: {name}}}
spec: {{provider: {provider}, endpoint: "{endpoint}", securityPolicy: {name}-key}}
---
apiVersion: tessera.dev/v1alpha1
kind: BackendSecurityPolicy
metadata: {{name: {name}-key}}
spec: {{type: APIKey, apiKey: {{file: {name}.key}}}}
"#,
            endpoint = s.mock(name).endpoint()
        );
        s.write(&format!("{name}.key"), format!("sk-{name}\n"));
    }
    yaml
}

async fn stack(mode: Mode) -> Stack {
    let s = Stack::builder()
        .mocks(&MOCKS)
        .config_file("config.yaml")
        .configure(|s| s.write("config.yaml", config(s)))
        .envoy(mode)
        .start()
        .await;
    // Ready once the routes arrived: a routed model answers 200.
    eventually("model routes to be served", DEADLINE, || async {
        let r = post(&s, "/v1/chat/completions", &[], &chat("gpt-4o-mini")).await;
        (r.status == 200).then_some(())
    })
    .await;
    for m in &s.mocks {
        m.clear().await;
    }
    s
}

fn chat(model: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string()
}

async fn post(s: &Stack, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut req = s
        .client
        .post(s.envoy().url(path))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp.text().await.unwrap();
    if status >= 400 && status != 503 && status != 429 {
        assert_eq!(content_type, "application/json", "{status} {body}");
    }
    Reply { status, body }
}

/// Runs testenv/sdk_client.py: an official SDK call, unmodified, through the gateway.
fn sdk(call: &str, base_url: &str, model: &str) -> Value {
    let out = Command::new(python())
        .arg(repo().join("testenv/sdk_client.py"))
        .args([call, base_url, model])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sdk_client {call} {model}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn sdk_async(call: &'static str, base_url: String, model: &'static str) -> Value {
    tokio::task::spawn_blocking(move || sdk(call, &base_url, model))
        .await
        .unwrap()
}

/// Header pairs the mock `name` received, one entry per request.
async fn received(s: &Stack, name: &str) -> Vec<Value> {
    s.mock(name).requests().await
}

fn header<'a>(request: &'a Value, name: &str) -> Vec<&'a str> {
    request["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p[0] == name)
        .filter_map(|p| p[1].as_str())
        .collect()
}

/// Every header value `request` carried, to look for a credential anywhere.
fn all_values(request: &Value) -> String {
    request["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}: {}\n", p[0].as_str().unwrap(), p[1].as_str().unwrap()))
        .collect()
}

/// The only request `name` received, asserting it carried exactly its own credential.
async fn one_request_with_own_key(s: &Stack, name: &str, header_name: &str, value: &str) -> Value {
    let requests = received(s, name).await;
    assert_eq!(requests.len(), 1, "{name} received {requests:#?}");
    let r = requests[0].clone();
    assert_eq!(
        header(&r, header_name),
        [value],
        "{name}: {}",
        all_values(&r)
    );
    let all = all_values(&r);
    assert!(
        !all.contains("sk-client"),
        "{name} got the client's key:\n{all}"
    );
    for other in MOCKS.iter().filter(|m| **m != name) {
        assert!(
            !all.contains(&format!("sk-{other}")),
            "{name} got {other}'s key:\n{all}"
        );
    }
    r
}

async fn clear(s: &Stack) {
    for m in &s.mocks {
        m.clear().await;
    }
}

async fn sdks_route_by_model(mode: Mode) {
    let s = stack(mode).await;
    let v1 = s.envoy().url("/v1");

    let r = sdk_async("openai-chat", v1.clone(), "gpt-4o").await;
    assert_eq!(r["text"], "from openai");
    let req = one_request_with_own_key(&s, "openai", "authorization", "Bearer sk-openai").await;
    assert_eq!(req["path"], "/v1/chat/completions");
    // The body reaches the provider unchanged.
    let body: Value = serde_json::from_str(req["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["model"], "gpt-4o");
    assert_eq!(body["messages"][0]["content"], "hi");
    clear(&s).await;

    let r = sdk_async("openai-chat", v1.clone(), "gpt-4o-mini").await;
    assert_eq!(r["text"], "from azure");
    one_request_with_own_key(&s, "azure", "api-key", "sk-azure").await;
    assert!(received(&s, "openai").await.is_empty());
    clear(&s).await;

    let r = sdk_async("openai-embed", v1.clone(), "text-embedding-3-small").await;
    assert_eq!(r["text"], 2);
    let req = one_request_with_own_key(&s, "openai", "authorization", "Bearer sk-openai").await;
    assert_eq!(req["path"], "/v1/embeddings");
    clear(&s).await;

    let base = s.envoy().url("");
    let base = base.trim_end_matches('/').to_owned();
    let r = sdk_async("anthropic-message", base, "claude-sonnet-4-5").await;
    assert_eq!(r["text"], "from anthropic");
    let req = one_request_with_own_key(&s, "anthropic", "x-api-key", "sk-anthropic").await;
    assert_eq!(req["path"], "/v1/messages");
    // The SDK's own anthropic-version is kept, not replaced by the gateway's default.
    assert_eq!(header(&req, "anthropic-version").len(), 1);
    clear(&s).await;

    // Streaming: the client sees the first chunk before the mock sent the last one.
    let r = sdk_async("openai-stream", v1, "gpt-4o").await;
    let chunks: Vec<&str> = r["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(chunks, ["openai-0 ", "openai-1 ", "openai-2 ", "openai-3 "]);
    let req = one_request_with_own_key(&s, "openai", "authorization", "Bearer sk-openai").await;
    let sent = req["chunks_sent_at"].as_array().unwrap();
    let last_sent = sent.last().unwrap().as_f64().unwrap();
    let first_received = r["received_at"][0].as_f64().unwrap();
    assert!(
        first_received < last_sent,
        "first chunk received at {first_received}, after the last was sent at {last_sent}: buffered"
    );
}
both_modes!(sdks_route_by_model);

async fn paths_headers_and_json_errors(mode: Mode) {
    let s = stack(mode).await;

    // Gemini: the model is in the path.
    let gemini = "/v1beta/models/gemini-2.0-flash:generateContent";
    let body = r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#;
    let r = post(&s, gemini, &[], body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.provider().as_deref(), Some("gemini"));
    one_request_with_own_key(&s, "gemini", "x-goog-api-key", "sk-gemini").await;
    let r = post(&s, "/v1beta/models/gemini-9:generateContent", &[], body).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    assert!(r.body.contains("gemini-9"), "{}", r.body);

    // x-ai-model wins over the body.
    let r = post(
        &s,
        "/v1/chat/completions",
        &[("x-ai-model", "claude-sonnet-4-5")],
        &chat("gpt-4o"),
    )
    .await;
    assert_eq!(r.provider().as_deref(), Some("anthropic"), "{}", r.body);

    // Unknown model: a JSON 404 naming it.
    let r = post(&s, "/v1/chat/completions", &[], &chat("gpt-9\"x")).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let e = r.json();
    assert_eq!(e["error"]["code"], "model_not_found", "{}", r.body);
    assert!(
        e["error"]["message"].as_str().unwrap().contains("gpt-9\"x"),
        "{}",
        r.body
    );

    // Not JSON: a JSON 400, never a default route.
    let r = post(&s, "/v1/chat/completions", &[], "{\"model\": \"gpt-4o\",").await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "invalid_json", "{}", r.body);

    // Above the listener's maxRequestBytes: a JSON 413; below it, served.
    let filler = "x".repeat(MAX_REQUEST_BYTES + 1024);
    let big = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": filler}]});
    let r = post(&s, "/v1/chat/completions", &[], &big.to_string()).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "request_too_large", "{}", r.body);
    let filler = "x".repeat(MAX_REQUEST_BYTES / 2);
    let fits = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": filler}]});
    let r = post(&s, "/v1/chat/completions", &[], &fits.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.provider().as_deref(), Some("azure"));
}
both_modes!(paths_headers_and_json_errors);

async fn failover_uses_each_backends_own_credential(mode: Mode) {
    let s = stack(mode).await;
    let azure_host = format!("127.0.0.1:{}", s.mock("azure").port);
    for failure in ["503", "429", "close"] {
        clear(&s).await;
        s.mock("openai").fail(failure).await;
        // Client-sent credentials of any provider, SigV4 ones included, reach no backend.
        let client_headers = [
            ("authorization", "Bearer sk-client-x"),
            ("x-api-key", "sk-client-x"),
            ("x-amz-security-token", "sk-client-token"),
        ];
        let r = post(&s, "/v1/chat/completions", &client_headers, &chat("gpt-4o")).await;
        assert_eq!(r.status, 200, "primary {failure}: {}", r.body);
        assert_eq!(r.provider().as_deref(), Some("azure"), "primary {failure}");
        one_request_with_own_key(&s, "openai", "authorization", "Bearer sk-openai").await;
        let req = one_request_with_own_key(&s, "azure", "api-key", "sk-azure").await;
        assert!(
            header(&req, "authorization").is_empty(),
            "{}",
            all_values(&req)
        );
        assert!(!all_values(&req).contains("x-amz-"), "{}", all_values(&req));
        assert_eq!(
            header(&req, "host"),
            [azure_host.as_str()],
            "primary {failure}"
        );
    }

    // Both fail: the client gets the last answer, promptly.
    clear(&s).await;
    s.mock("openai").fail("503").await;
    s.mock("azure").fail("429").await;
    let start = Instant::now();
    let r = post(&s, "/v1/chat/completions", &[], &chat("gpt-4o")).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("azure is failing"), "{}", r.body);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(received(&s, "openai").await.len(), 1);
    assert_eq!(received(&s, "azure").await.len(), 1);
}
both_modes!(failover_uses_each_backends_own_credential);
