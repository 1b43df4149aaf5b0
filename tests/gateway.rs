//! End-to-end: real Tessera serving real Envoy over ADS (SotW and Delta), mock providers
//! behind it. Every test runs in both xDS modes.

use harness::*;
use std::time::{Duration, Instant};

fn gateway_yaml(listener_port: u16) -> String {
    format!(
        r#"apiVersion: tessera.dev/v1alpha1
kind: Gateway
metadata: {{name: gw}}
spec:
  nodeCluster: {NODE_CLUSTER}
  listeners:
  - {{name: http, port: {listener_port}, address: 127.0.0.1}}
"#
    )
}

fn backend_yaml(name: &str, provider: &str, endpoint: &str, policy: &str) -> String {
    format!(
        r#"---
apiVersion: tessera.dev/v1alpha1
kind: Backend
metadata: {{name: {name}}}
spec: {{provider: {provider}, endpoint: "{endpoint}", securityPolicy: {policy}}}
---
apiVersion: tessera.dev/v1alpha1
kind: BackendSecurityPolicy
metadata: {{name: {policy}}}
spec:
  type: APIKey
  apiKey: {{file: {policy}.key}}
"#
    )
}

fn model_rule(model: &str, backend: &str) -> String {
    format!(
        "  - matches: [{{pathPrefix: /v1/, headers: [{{name: x-ai-model, value: {model}}}]}}]\n    backends: [{{name: {backend}}}]\n"
    )
}

fn route_yaml(rules: &str) -> String {
    format!(
        "apiVersion: tessera.dev/v1alpha1\nkind: Route\nmetadata: {{name: chat}}\nspec:\n  gateway: gw\n  rules:\n{rules}"
    )
}

/// One gateway with one OpenAI backend whose key file holds `key`, behind a `gpt-4o` rule,
/// served to one Envoy per entry of `envoys`.
async fn single_backend(envoys: &[Mode], key: &str) -> Stack {
    Stack::builder()
        .mock("openai")
        .configure(|s| {
            let openai = s.mock("openai").endpoint();
            let yaml =
                gateway_yaml(s.listener) + &backend_yaml("openai", "OpenAI", &openai, "openai-key");
            s.write("gateway.yaml", yaml);
            s.write("openai-key.key", key);
            s.write("routes.yaml", route_yaml(&model_rule("gpt-4o", "openai")));
        })
        .envoys(envoys)
        .start()
        .await
}

// === 1. four providers, each with its own credential header ===

async fn four_providers(mode: Mode) {
    let providers = ["OpenAI", "Anthropic", "AzureOpenAI", "GoogleGemini"];
    let models = [
        "gpt-4o",
        "claude-3-5-sonnet",
        "gpt-4o-azure",
        "gemini-2.0-flash",
    ];
    let s = Stack::builder()
        .mocks(&["openai", "anthropic", "azure", "gemini"])
        .configure(|s| {
            let mut yaml = gateway_yaml(s.listener);
            let mut rules = String::new();
            for (i, m) in s.mocks.iter().enumerate() {
                let policy = format!("{}-key", m.name);
                yaml += &backend_yaml(&m.name, providers[i], &m.endpoint(), &policy);
                s.write(&format!("{policy}.key"), format!("secret-{}\n", m.name));
                rules += &model_rule(models[i], &m.name);
            }
            s.write("gateway.yaml", yaml);
            s.write("routes.yaml", route_yaml(&rules));
        })
        .envoy(mode)
        .start()
        .await;

    let expected: [(&str, String); 4] = [
        ("authorization", "Bearer secret-openai".into()),
        ("x-api-key", "secret-anthropic".into()),
        ("api-key", "secret-azure".into()),
        ("x-goog-api-key", "secret-gemini".into()),
    ];
    let smuggled = [
        ("authorization", "Bearer stolen"),
        ("x-api-key", "stolen"),
        ("api-key", "stolen"),
        ("x-goog-api-key", "stolen"),
    ];
    for (i, m) in s.mocks.iter().enumerate() {
        let mut headers = vec![("x-ai-model", models[i])];
        headers.extend(smuggled);
        let reply = s.send("/v1/chat/completions", &headers).await;
        assert_eq!(reply.status, 200, "{}: {}", m.name, reply.body);
        assert_eq!(
            reply.provider().as_deref(),
            Some(m.name.as_str()),
            "routed to the wrong provider"
        );
        let (header, value) = &expected[i];
        assert_eq!(
            reply.upstream_header(header).as_deref(),
            Some(value.as_str()),
            "{}",
            reply.body
        );
        for (other, _) in smuggled.iter().filter(|(h, _)| h != header) {
            assert_eq!(
                reply.upstream_header(other),
                None,
                "{}: client header {other} leaked: {}",
                m.name,
                reply.body
            );
        }
        assert!(
            !reply.body.contains("stolen"),
            "a client credential reached {}: {}",
            m.name,
            reply.body
        );
        assert_eq!(
            reply.upstream_header("host").as_deref(),
            Some(format!("127.0.0.1:{}", m.port).as_str())
        );
        assert_eq!(
            m.requests().await.len(),
            1,
            "{} got exactly one request",
            m.name
        );
    }
    // Anthropic gets its version header, unless the client chose one.
    let reply = s.send("/v1/messages", &[("x-ai-model", models[1])]).await;
    assert_eq!(
        reply.upstream_header("anthropic-version").as_deref(),
        Some("2023-06-01")
    );
    let reply = s
        .send(
            "/v1/messages",
            &[
                ("x-ai-model", models[1]),
                ("anthropic-version", "2024-10-22"),
            ],
        )
        .await;
    assert_eq!(
        reply.upstream_header("anthropic-version").as_deref(),
        Some("2024-10-22")
    );
    // No rule matches: Envoy answers itself, no provider is called.
    let reply = s
        .send("/v1/chat/completions", &[("x-ai-model", "unknown")])
        .await;
    assert_eq!(reply.status, 404);
    // The xDS stream is what we think it is.
    let status = s.tessera.status().await;
    assert_eq!(status["streams"][0]["delta"], mode.is_delta(), "{status}");
}
both_modes!(four_providers);

// === 2. key rotation: in place, fast, no cluster change, no dropped connection ===

async fn key_rotation(mode: Mode) {
    let s = single_backend(&[mode], "key-0\n").await;
    let key_file = s.config.join("openai-key.key");
    let url = s.envoy().url("/v1/chat/completions");
    let hdr = [("x-ai-model", "gpt-4o")];
    let reply = send(&s.client, &url, &hdr).await;
    assert_eq!(
        reply.upstream_header("authorization").as_deref(),
        Some("Bearer key-0")
    );

    let stats = [
        "cluster_manager.cluster_modified",
        "cluster.backend/openai.upstream_cx_destroy",
        "cluster_manager.cds.update_success",
        "listener_manager.lds.update_success",
    ];
    let mut before = Vec::new();
    for st in stats {
        before.push(s.envoy().stat(st).await);
    }
    let cx_before = s
        .envoy()
        .stat("cluster.backend/openai.upstream_cx_total")
        .await;

    let mut latencies = Vec::new();
    for i in 1..=20 {
        let want = format!("Bearer key-{i}");
        let t0 = Instant::now();
        // Half the rotations rename a new file in, half rewrite it in place (truncate +
        // write): neither may ever expose an empty or partial key.
        if i % 2 == 0 {
            write_atomic(&key_file, &format!("key-{i}\n"));
        } else {
            std::fs::write(&key_file, format!("key-{i}\n")).unwrap();
        }
        loop {
            let reply = send(&s.client, &url, &hdr).await;
            assert_eq!(reply.status, 200, "rotation {i}: {}", reply.body);
            let got = reply.upstream_header("authorization").unwrap_or_default();
            if got == want {
                break;
            }
            assert_eq!(
                got,
                format!("Bearer key-{}", i - 1),
                "rotation {i}: only the old or the new key may be used"
            );
            assert!(t0.elapsed() < DEADLINE, "rotation {i} never arrived");
        }
        latencies.push(t0.elapsed());
    }
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[(latencies.len() * 99).div_ceil(100) - 1];
    println!(
        "key rotation ({mode}): file write → first request with the new key over 20 rotations: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        latencies[latencies.len() - 1].as_secs_f64() * 1e3
    );
    for (st, b) in stats.iter().zip(before) {
        assert_eq!(
            s.envoy().stat(st).await,
            b,
            "{st} moved during key rotations"
        );
    }
    // Every request above rode the same upstream connection: nothing was torn down.
    assert_eq!(
        s.envoy()
            .stat("cluster.backend/openai.upstream_cx_total")
            .await,
        cx_before,
        "new upstream connections were opened"
    );
    // Generous bound: the measured figure is printed above; this catches a rotation that
    // waits behind the config debounce (100 ms) or a poll loop.
    assert!(
        p99 < Duration::from_millis(100),
        "p99 rotation latency {p99:?}"
    );
}
both_modes!(key_rotation);

// === 3. invalid edits keep the last good config; revocation fails closed ===

async fn invalid_edit_and_revocation(mode: Mode) {
    let s = single_backend(&[mode], "key-a\n").await;
    let mock = s.mock("openai");
    let key_file = s.config.join("openai-key.key");
    let routes = s.config.join("routes.yaml");
    let url = s.envoy().url("/v1/chat/completions");
    assert_eq!(
        send(&s.client, &url, &[("x-ai-model", "gpt-4o")])
            .await
            .status,
        200
    );

    // Broken YAML.
    write_atomic(
        &routes,
        "apiVersion: tessera.dev/v1alpha1\nkind: Route\nmetadata: {name: chat\nspec: [",
    );
    let err = eventually("the broken edit to be rejected", DEADLINE, || {
        let t = &s.tessera;
        async move {
            t.status().await["config"]["last_error"]
                .as_str()
                .map(str::to_owned)
        }
    })
    .await;
    assert!(
        err.contains("routes.yaml") && err.contains("document 1"),
        "imprecise error: {err}"
    );
    assert_eq!(
        send(&s.client, &url, &[("x-ai-model", "gpt-4o")])
            .await
            .status,
        200,
        "last good config keeps serving"
    );

    // A dangling backend reference.
    write_atomic(&routes, &route_yaml(&model_rule("gpt-4o", "nonexistent")));
    let err = eventually("the dangling reference to be rejected", DEADLINE, || {
        let t = &s.tessera;
        async move {
            t.status().await["config"]["last_error"]
                .as_str()
                .filter(|e| e.contains("nonexistent"))
                .map(str::to_owned)
        }
    })
    .await;
    assert!(
        err.contains("routes.yaml") && err.contains("spec.rules[0].backends[0].name"),
        "imprecise error: {err}"
    );
    assert!(
        s.tessera.logs().contains("spec.rules[0].backends[0].name"),
        "the error is logged"
    );
    assert_eq!(
        send(&s.client, &url, &[("x-ai-model", "gpt-4o")])
            .await
            .status,
        200,
        "last good config keeps serving"
    );

    // A valid edit applies.
    write_atomic(&routes, &route_yaml(&model_rule("gpt-4o-mini", "openai")));
    eventually("the valid edit to apply", DEADLINE, || {
        let c = &s.client;
        let u = &url;
        async move { (send(c, u, &[("x-ai-model", "gpt-4o-mini")]).await.status == 200).then_some(()) }
    })
    .await;

    // Revocation: the key file disappears → 401 from Envoy, nothing reaches the provider.
    mock.clear().await;
    std::fs::remove_file(&key_file).unwrap();
    let t0 = Instant::now();
    let reply = eventually("401 after revocation", DEADLINE, || {
        let c = &s.client;
        let u = &url;
        async move {
            let r = send(c, u, &[("x-ai-model", "gpt-4o-mini")]).await;
            (r.status == 401).then_some(r)
        }
    })
    .await;
    println!(
        "revocation applied after {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    assert!(
        reply.body.contains("Failed to inject credential"),
        "{}",
        reply.body
    );
    mock.clear().await;
    for _ in 0..5 {
        assert_eq!(
            send(&s.client, &url, &[("x-ai-model", "gpt-4o-mini")])
                .await
                .status,
            401
        );
    }
    assert!(
        mock.requests().await.is_empty(),
        "a request reached the provider while revoked"
    );
    let status = s.tessera.status().await;
    assert!(
        status["credentials"].to_string().contains("revoked"),
        "{status}"
    );

    // The key returns → served again with it.
    write_atomic(&key_file, "key-b\n");
    let reply = eventually("service after the key returns", DEADLINE, || {
        let c = &s.client;
        let u = &url;
        async move {
            let r = send(c, u, &[("x-ai-model", "gpt-4o-mini")]).await;
            (r.status == 200).then_some(r)
        }
    })
    .await;
    assert_eq!(
        reply.upstream_header("authorization").as_deref(),
        Some("Bearer key-b")
    );
    assert!(
        !s.tessera.logs().contains("key-b"),
        "a key value reached the log"
    );
}
both_modes!(invalid_edit_and_revocation);

// === 4. restart Tessera: Envoy reconnects and nothing is re-applied ===

async fn restart_without_churn(mode: Mode) {
    let mut s = single_backend(&[mode], "key-r\n").await;
    let url = s.envoy().url("/v1/chat/completions");
    assert_eq!(
        send(&s.client, &url, &[("x-ai-model", "gpt-4o")])
            .await
            .status,
        200
    );

    let counters = [
        "cluster_manager.cds.update_success",
        "listener_manager.lds.update_success",
        "http.gw_http.rds.route/gw/http.update_success",
        "sds.credential/openai-key.update_success",
        "cluster_manager.cluster_modified",
    ];
    let mut before = Vec::new();
    for c in counters {
        let v = s.envoy().stat(c).await;
        before.push(v);
    }
    assert!(
        before[..4].iter().all(|v| *v >= 1),
        "counters exist: {before:?}"
    );

    s.tessera.restart().await;
    // Wait until Envoy has re-subscribed to every type on the new stream.
    let status = eventually("Envoy to resubscribe to every type", DEADLINE, || {
        let t = &s.tessera;
        async move {
            let st = t.status().await;
            let types = &st["streams"][0]["types"];
            ["cds", "lds", "rds", "sds"]
                .iter()
                .all(|k| types[k]["requests"].as_u64().unwrap_or(0) >= 1)
                .then_some(st)
        }
    })
    .await;
    for t in ["cds", "lds", "rds", "sds"] {
        assert_eq!(
            status["streams"][0]["types"][t]["responses"], 0,
            "{t} was resent after restart: {status}"
        );
    }
    assert_eq!(s.envoy().stat("control_plane.connected_state").await, 1);
    for (c, b) in counters.iter().zip(&before) {
        assert_eq!(
            s.envoy().stat(c).await,
            *b,
            "{c} changed across the restart"
        );
    }
    assert_eq!(
        send(&s.client, &url, &[("x-ai-model", "gpt-4o")])
            .await
            .status,
        200
    );
    // The new Tessera still pushes rotations.
    write_atomic(&s.config.join("openai-key.key"), "key-r2\n");
    eventually("a rotation after restart", DEADLINE, || {
        let c = &s.client;
        let u = &url;
        async move {
            let r = send(c, u, &[("x-ai-model", "gpt-4o")]).await;
            (r.upstream_header("authorization").as_deref() == Some("Bearer key-r2")).then_some(())
        }
    })
    .await;
}
both_modes!(restart_without_churn);

// === 5. weighted split ===

async fn weighted_split(mode: Mode) {
    let s = Stack::builder()
        .mocks(&["primary", "secondary"])
        .configure(|s| {
            let (a, b) = (s.mock("primary"), s.mock("secondary"));
            s.write(
                "gateway.yaml",
                gateway_yaml(s.listener)
                    + &backend_yaml("primary", "OpenAI", &a.endpoint(), "primary-key")
                    + &backend_yaml("secondary", "Mistral", &b.endpoint(), "secondary-key"),
            );
            s.write("primary-key.key", "key-p");
            s.write("secondary-key.key", "key-s");
            s.write(
                "routes.yaml",
                route_yaml(
                    "  - backends: [{name: primary, weight: 3}, {name: secondary, weight: 1}]\n",
                ),
            );
        })
        .envoy(mode)
        .start()
        .await;
    let n = 400;
    let mut primary = 0;
    for _ in 0..n {
        let r = s.send("/v1/chat/completions", &[]).await;
        assert_eq!(r.status, 200);
        let want_key = if r.provider().as_deref() == Some("primary") {
            primary += 1;
            "Bearer key-p"
        } else {
            "Bearer key-s"
        };
        assert_eq!(
            r.upstream_header("authorization").as_deref(),
            Some(want_key),
            "each backend carries its own key"
        );
    }
    let share = f64::from(primary) / f64::from(n);
    println!("weighted split 3:1 over {n} requests: primary share {share:.3}");
    assert!((0.65..=0.85).contains(&share), "primary share {share}");
}
both_modes!(weighted_split);

// === 6. one Tessera, a SotW and a Delta Envoy: each gets every rotation ===

#[needs_envoy]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_fleet_gets_every_rotation() {
    let s = single_backend(&[Mode::Sotw, Mode::Delta], "key-0\n").await;
    let status = s.tessera.status().await;
    let mut deltas: Vec<bool> = status["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|st| st["delta"].as_bool())
        .collect();
    deltas.sort();
    assert_eq!(deltas, [false, true], "one stream per protocol: {status}");

    let updates = "sds.credential/openai-key.update_success";
    let modified = "cluster_manager.cluster_modified";
    let mut before = Vec::new();
    for envoy in &s.envoys {
        before.push((envoy.stat(updates).await, envoy.stat(modified).await));
    }
    write_atomic(&s.config.join("openai-key.key"), "key-1\n");
    let modes = [Mode::Sotw, Mode::Delta];
    for ((envoy, mode), (updated, changed)) in s.envoys.iter().zip(modes).zip(before) {
        eventually(
            &format!("the {mode} Envoy to apply the rotation"),
            DEADLINE,
            || async { (envoy.stat(updates).await > updated).then_some(()) },
        )
        .await;
        assert_eq!(
            envoy.stat(modified).await,
            changed,
            "{mode}: a rotation changes no cluster"
        );
        assert_eq!(
            envoy.stat("listener_manager.total_listeners_active").await,
            1,
            "{mode}: the gateway listener is up"
        );
    }
    // Both Envoys listen on the gateway port; whichever takes the request uses the new key.
    let reply = s
        .send("/v1/chat/completions", &[("x-ai-model", "gpt-4o")])
        .await;
    assert_eq!(
        reply.upstream_header("authorization").as_deref(),
        Some("Bearer key-1"),
        "{}",
        reply.body
    );
}

// === 6. a rotation is sent alone; Envoy keeps every other secret ===

/// The version Envoy's config dump gives each dynamic secret, by name.
async fn secret_versions(envoy: &Envoy) -> std::collections::BTreeMap<String, String> {
    let dump = envoy.config_dump().await;
    dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["@type"] == "type.googleapis.com/envoy.admin.v3.SecretsConfigDump")
        .flat_map(|c| {
            c["dynamic_active_secrets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_owned(),
                s["version_info"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Two OpenAI backends with their own key files (`a-key`, `b-key`) behind `gpt-4o` and
/// `mistral-large`, served to one Envoy started with `envoy_args`.
async fn two_keys(mode: Mode, envoy_args: &[&str]) -> Stack {
    Stack::builder()
        .mocks(&["openai", "mistral"])
        .configure(|s| {
            let mut yaml = gateway_yaml(s.listener);
            yaml += &backend_yaml("openai", "OpenAI", &s.mock("openai").endpoint(), "a-key");
            yaml += &backend_yaml("mistral", "OpenAI", &s.mock("mistral").endpoint(), "b-key");
            s.write("gateway.yaml", yaml);
            s.write("a-key.key", "a-0\n");
            s.write("b-key.key", "b-0\n");
            let rules = model_rule("gpt-4o", "openai") + &model_rule("mistral-large", "mistral");
            s.write("routes.yaml", route_yaml(&rules));
        })
        .envoy(mode)
        .envoy_args(envoy_args)
        .start()
        .await
}

/// The key Envoy attaches for `model`.
async fn key_for(s: &Stack, model: &str) -> String {
    s.send("/v1/chat/completions", &[("x-ai-model", model)])
        .await
        .upstream_header("authorization")
        .unwrap_or_default()
}

async fn a_rotation_is_sent_alone_and_envoy_keeps_the_other_secrets(mode: Mode) {
    let s = two_keys(mode, &[]).await;
    let key = |model: &'static str| key_for(&s, model);
    assert_eq!(key("gpt-4o").await, "Bearer a-0");
    assert_eq!(key("mistral-large").await, "Bearer b-0");
    let before = secret_versions(s.envoy()).await;
    let (a, b) = ("credential/a-key", "credential/b-key");
    assert!(
        before.contains_key(a) && before.contains_key(b),
        "{before:?}"
    );
    let updates_before = s.envoy().stat("sds.credential/b-key.update_success").await;

    write_atomic(&s.config.join("a-key.key"), "a-1\n");
    eventually("the rotated key in use", DEADLINE, || async {
        (key("gpt-4o").await == "Bearer a-1").then_some(())
    })
    .await;
    // The untouched secret is still there and still used...
    assert_eq!(key("mistral-large").await, "Bearer b-0");
    let after = secret_versions(s.envoy()).await;
    assert_ne!(after[a], before[a], "the rotated secret arrived");
    // ...and it was not in the update: in SotW a whole set would have stamped it with the new
    // response's version and counted an update of its subscription.
    assert_eq!(after[b], before[b], "{after:?}");
    assert_eq!(
        s.envoy().stat("sds.credential/b-key.update_success").await,
        updates_before
    );
    assert_eq!(
        s.envoy().stat("cluster_manager.cds.update_rejected").await,
        0
    );
    let status = s.tessera.status().await;
    let streams = status["streams"].as_array().cloned().unwrap_or_default();
    assert!(
        streams
            .iter()
            .all(|st| st["types"]["sds"]["nacks"].as_u64().unwrap_or(0) == 0),
        "Envoy refused an update: {status}"
    );
}
both_modes!(a_rotation_is_sent_alone_and_envoy_keeps_the_other_secrets);

/// Envoy's unified xDS mux (off by default in 1.40, Envoy's stated direction) refuses a SotW
/// SDS answer that leaves a watched secret out: Tessera answers the refusal with the whole set,
/// once, and sends that stream whole sets from then on.
#[needs_envoy]
#[tokio::test]
async fn under_the_unified_mux_a_refused_partial_rotation_is_resent_whole() {
    let unified = "{layered_runtime: {layers: [{name: unified, static_layer: {envoy.reloadable_features.unified_mux: true}}]}}";
    let s = two_keys(Mode::Sotw, &["--config-yaml", unified]).await;
    assert_eq!(key_for(&s, "gpt-4o").await, "Bearer a-0");
    assert_eq!(key_for(&s, "mistral-large").await, "Bearer b-0");
    let runtime: serde_json::Value = get_json(&format!(
        "http://127.0.0.1:{}/runtime",
        s.envoy().admin_port
    ))
    .await;
    assert_eq!(
        runtime["entries"]["envoy.reloadable_features.unified_mux"]["final_value"], "true",
        "the runtime flag is on: {runtime}"
    );
    let nacks = |status: &serde_json::Value| status["streams"][0]["types"]["sds"]["nacks"].as_u64();
    for i in 1..=2 {
        write_atomic(&s.config.join("a-key.key"), &format!("a-{i}\n"));
        eventually("the rotated key in use", DEADLINE, || async {
            (key_for(&s, "gpt-4o").await == format!("Bearer a-{i}")).then_some(())
        })
        .await;
        assert_eq!(key_for(&s, "mistral-large").await, "Bearer b-0");
        // Envoy applies the key it was sent and then refuses the update: wait for that refusal
        // to reach Tessera before the next rotation.
        eventually("the first partial update refused", DEADLINE, || async {
            (nacks(&s.tessera.status().await) == Some(1)).then_some(())
        })
        .await;
    }
    // One refusal (the first partial answer); the second rotation went out whole and was
    // ACKed: what Envoy last acknowledged is what it was last sent.
    let status = eventually("the second rotation acknowledged", DEADLINE, || async {
        let status = s.tessera.status().await;
        let sds = &status["streams"][0]["types"]["sds"];
        (sds["acked"] == sds["sent"]).then_some(status)
    })
    .await;
    assert_eq!(nacks(&status), Some(1), "{status}");
}
