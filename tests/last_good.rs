//! The last good configuration survives invalid input and restarts (real Envoy, SotW and
//! Delta): a node is never answered with less than it was given because a file is invalid.

use harness::*;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A Route named `name` sending requests for each of `models` to the openai backend.
fn route_yaml(name: &str, models: &[&str]) -> String {
    let mut rules = String::new();
    for m in models {
        rules += &format!(
            "  - matches: [{{pathPrefix: /v1/, headers: [{{name: x-ai-model, value: {m}}}]}}]\n    backends: [{{name: openai}}]\n"
        );
    }
    format!(
        "apiVersion: tessera.dev/v1alpha1\nkind: Route\nmetadata: {{name: {name}}}\nspec:\n  gateway: gw\n  rules:\n{rules}"
    )
}

/// What an editor leaves behind halfway through writing `text`: cut inside a flow mapping.
fn half_written(text: &str) -> String {
    let cut = text.rfind("backends: [{name:").unwrap() + "backends: [{na".len();
    text[..cut].to_owned()
}

async fn status_of(code: u16, client: &reqwest::Client, url: &str, model: &str) -> bool {
    send(client, url, &[("x-ai-model", model)]).await.status == code
}

/// Requests sent in the background until stopped; counts what failed.
struct Traffic {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u32, Vec<String>)>,
}

impl Traffic {
    fn start(client: &reqwest::Client, url: String, model: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (client, done) = (client.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            while !done.load(Ordering::Relaxed) {
                let r = client
                    .post(&url)
                    .header("x-ai-model", model)
                    .body("{}")
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push(format!("status {}", r.status())),
                    Err(e) => failed.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, failed)
        });
        Self { stop, task }
    }

    /// Stops and asserts every request succeeded.
    async fn assert_all_ok(self) -> u32 {
        self.stop.store(true, Ordering::Relaxed);
        let (ok, failed) = self.task.await.unwrap();
        assert!(
            failed.is_empty(),
            "{} of {} failed: {failed:?}",
            failed.len(),
            ok as usize + failed.len()
        );
        assert!(ok > 10, "too few requests to tell: {ok}");
        ok
    }
}

/// The stream of the one connected Envoy, once it has asked for `short_type`.
async fn stream_asking_for(t: &Tessera, short_type: &str) -> Value {
    eventually("the Envoy's ADS stream", DEADLINE, || async move {
        let status = t.status().await;
        let stream = status["streams"].as_array()?.first()?.clone();
        (stream["types"][short_type]["requests"].as_u64()? >= 1).then_some(stream)
    })
    .await
}

async fn restart_with_a_half_written_file(mode: Mode) {
    let t0 = Instant::now();
    let s = Stack::builder()
        .mock("openai")
        .configure(|s| {
            s.write(
                "gateway.yaml",
                openai_key_file_gateway(s.listener, &s.mock("openai").endpoint()),
            );
            s.write("openai.key", "sk-restart-key\n");
            s.write("routes.yaml", route_yaml("chat", &["gpt-4o"]));
        })
        .envoy(mode)
        .start()
        .await;
    let url = s.envoy().url("/v1/chat/completions");
    assert!(status_of(200, &s.client, &url, "gpt-4o").await);
    let routes = s.config.join("routes.yaml");
    let edited = route_yaml("chat", &["gpt-4o", "gpt-4o-mini"]);
    let traffic = Traffic::start(&s.client, url.clone(), "gpt-4o");

    let mut s = s;
    s.tessera.stop();
    std::fs::write(&routes, half_written(&edited)).unwrap();
    s.tessera.restart().await;
    let (code, body) = s.tessera.readyz().await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("persisted at") && body.contains("routes.yaml") && body.contains("invalid"),
        "/readyz does not explain: {body}"
    );
    // The Envoy is back on the restarted Tessera, and still routes.
    stream_asking_for(&s.tessera, "lds").await;
    assert!(status_of(200, &s.client, &url, "gpt-4o").await);

    // The edit completes: the new rule is applied, and /readyz is plain again.
    write_atomic(&routes, &edited);
    eventually("the completed edit to apply", DEADLINE, || {
        let (c, u) = (&s.client, &url);
        async move { status_of(200, c, u, "gpt-4o-mini").await.then_some(()) }
    })
    .await;
    let (code, body) = s.tessera.readyz().await;
    assert_eq!((code, body.as_str()), (200, "ready\n"));
    let requests = traffic.assert_all_ok().await;

    let envoy = s.envoy();
    assert!(envoy.stat("listener_manager.listener_added").await >= 1);
    assert_eq!(envoy.stat("listener_manager.listener_removed").await, 0);
    assert_eq!(envoy.stat("listener_manager.lds.update_rejected").await, 0);
    println!(
        "{mode:?}: restart with a half-written file: {requests} requests, none failed; test took {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
both_modes!(restart_with_a_half_written_file);

async fn invalid_start_without_state_answers_nothing(mode: Mode) {
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mock = Mock::start(dir.path(), "openai").await;
    let listener = port();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    let gateway = openai_key_file_gateway(listener, &mock.endpoint());
    let write = |name: &str, text: &str| std::fs::write(config.join(name), text).unwrap();
    write(
        "gateway.yaml",
        &gateway[..gateway.find("listeners:").unwrap() + 14],
    );
    write("openai.key", "sk-cold-start-key\n");
    write("routes.yaml", &route_yaml("chat", &["gpt-4o"]));
    let tessera = Tessera::launch(&config, &[], &[]);

    let (code, body) = eventually("/readyz to answer", DEADLINE, || {
        let t = &tessera;
        async move {
            let url = format!("http://127.0.0.1:{}/readyz", t.admin_port);
            http().get(url).send().await.ok()?;
            Some(t.readyz().await)
        }
    })
    .await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("no valid configuration yet") && body.contains("gateway.yaml"),
        "{body}"
    );

    let (binary, envoy_dir, xds_port) = (envoy(), dir.path().to_path_buf(), tessera.xds_port);
    let delta = mode.is_delta();
    let envoy = tokio::spawn(async move {
        let opts = EnvoyOptions {
            node_cluster: NODE_CLUSTER,
            delta,
            bootstrap_args: Vec::new(),
            envoy_args: Vec::new(),
        };
        Envoy::start(&binary, &envoy_dir, xds_port, listener, opts).await
    });
    let stream = stream_asking_for(&tessera, "cds").await;
    assert_eq!(stream["types"]["cds"]["responses"], 0, "{stream}");
    let metrics = http()
        .get(format!("http://127.0.0.1:{}/metrics", tessera.admin_port))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("\ntessera_xds_responses_total 0\n"),
        "an answer was sent: {metrics}"
    );

    // A valid configuration arrives: the Envoy initialises from it and routes.
    write_atomic(&config.join("gateway.yaml"), &gateway);
    let envoy = tokio::time::timeout(DEADLINE, envoy)
        .await
        .unwrap()
        .unwrap();
    let client = http();
    let url = envoy.url("/v1/chat/completions");
    eventually("traffic to flow", DEADLINE, || {
        let (c, u) = (&client, &url);
        async move { status_of(200, c, u, "gpt-4o").await.then_some(()) }
    })
    .await;
    assert_eq!(tessera.readyz().await, (200, "ready\n".to_owned()));
    // The first CDS and LDS answers Envoy accepted were the valid configuration: none was empty.
    assert_eq!(envoy.stat("cluster_manager.cds.update_success").await, 1);
    assert_eq!(envoy.stat("listener_manager.lds.update_success").await, 1);
    println!(
        "{mode:?}: invalid start without state: test took {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    drop(envoy);
    drop(tessera);
    drop(mock);
}
both_modes!(invalid_start_without_state_answers_nothing);

async fn one_broken_file_of_two(mode: Mode) {
    let t0 = Instant::now();
    let s = Stack::builder()
        .mock("openai")
        .configure(|s| {
            s.write(
                "gateway.yaml",
                openai_key_file_gateway(s.listener, &s.mock("openai").endpoint()),
            );
            s.write("openai.key", "sk-partial-key\n");
            s.write("routes.yaml", route_yaml("chat", &["gpt-4o"]));
            s.write("extra.yaml", route_yaml("extra", &["gpt-x"]));
        })
        .envoy(mode)
        .start()
        .await;
    let url = s.envoy().url("/v1/chat/completions");
    assert!(status_of(200, &s.client, &url, "gpt-x").await);

    // extra.yaml breaks (an unknown field in a new rule); routes.yaml gains a route.
    let broken =
        route_yaml("extra", &["gpt-y"]).replace("    backends:", "    bogus: 1\n    backends:");
    write_atomic(&s.config.join("extra.yaml"), &broken);
    let routes = route_yaml("chat", &["gpt-4o"]) + "---\n" + &route_yaml("chat2", &["gpt-4o-mini"]);
    write_atomic(&s.config.join("routes.yaml"), &routes);
    eventually("the new route in the valid file", DEADLINE, || {
        let (c, u) = (&s.client, &url);
        async move { status_of(200, c, u, "gpt-4o-mini").await.then_some(()) }
    })
    .await;
    assert!(status_of(200, &s.client, &url, "gpt-4o").await);
    assert!(
        status_of(200, &s.client, &url, "gpt-x").await,
        "the broken file's route keeps its last good version"
    );
    assert!(status_of(404, &s.client, &url, "gpt-y").await);

    let config = eventually("the problem in /status", DEADLINE, || {
        let t = &s.tessera;
        async move {
            let status = t.status().await;
            (!status["config"]["problems"].as_array()?.is_empty()).then(|| status["config"].clone())
        }
    })
    .await;
    let problem = &config["problems"][0];
    assert_eq!(problem["object"], "Route \"extra\"", "{config}");
    assert!(problem["file"].as_str().unwrap().ends_with("extra.yaml"));
    assert_eq!(problem["document"], 1);
    assert!(
        problem["field"].as_str().unwrap().contains("rules[0]"),
        "{problem}"
    );
    assert_eq!(problem["last_good_served"], true);
    let last_error = config["last_error"].as_str().unwrap();
    assert!(
        last_error.contains("extra.yaml") && last_error.contains("bogus"),
        "{last_error}"
    );
    assert!(s.tessera.logs().contains("bogus"), "the error is logged");
    let (code, body) = s.tessera.readyz().await;
    assert_eq!(code, 200);
    assert!(
        body.contains("last good version of Route \"extra\"") && body.contains("extra.yaml"),
        "{body}"
    );
    println!(
        "{mode:?}: one broken file of two: test took {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
both_modes!(one_broken_file_of_two);
