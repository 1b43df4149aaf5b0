//! Operating the fleet through the admin gRPC API against real Envoy: `tessera status` after a
//! key rotation and a NACK, `tessera refresh` on an AWS policy (moto STS), and no secret value
//! in any answer, metric or log line.

use harness::*;
use serde_json::Value;
use std::process::Output;
use std::time::Instant;

const KEY_1: &str = "sk-operations-first-key-1111";
const KEY_2: &str = "sk-operations-second-key-2222";
const SA_TOKEN: &str = "header.operations-sa-token.signature";
const CREDENTIAL: &str = "credential/openai-key";

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            stdout(out),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The version of `credential` every node holds, when every node holds the current one and
/// every xDS type of every node is synced.
fn all_synced_on(status: &Value, nodes: usize, credential: &str) -> Option<String> {
    let list = status["nodes"].as_array()?;
    if list.len() != nodes {
        return None;
    }
    let mut version = None;
    for node in list {
        let types = node["types"].as_object()?;
        if types.values().any(|t| t["status"] != "SYNCED") {
            return None;
        }
        let held = node["credentials"]
            .as_array()?
            .iter()
            .find(|c| c["name"] == credential)?;
        if held["current"] != true {
            return None;
        }
        let v = held["version"].as_str()?.to_owned();
        if version.get_or_insert_with(|| v.clone()) != &v {
            return None;
        }
    }
    version
}

/// `text` without terminal colour codes (the text log format colours field names).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Fails when any of `secrets` appears in `text`.
fn assert_no_secret(what: &str, text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "a secret value appears in {what}");
    }
}

async fn metrics(tessera: &Tessera) -> String {
    let url = format!("http://127.0.0.1:{}/metrics", tessera.admin_port);
    http().get(url).send().await.unwrap().text().await.unwrap()
}

async fn status_after_a_key_rotation(mode: Mode) {
    let stack = Stack::builder()
        .mock("openai")
        .configure(|s| {
            s.write("openai.key", KEY_1);
            s.write(
                "gateway.yaml",
                openai_key_file_config(s.listener, &s.mock("openai").endpoint()),
            );
        })
        .envoys(&[mode, mode])
        .start()
        .await;
    let t = &stack.tessera;
    let status = || t.cli(&["status", "--output", "json"]);
    let before = eventually("both nodes synced on the first key", DEADLINE, || async {
        let out = status();
        all_synced_on(&json(&out), 2, CREDENTIAL).filter(|_| out.status.code() == Some(0))
    })
    .await;

    let rotated = Instant::now();
    write_atomic(&stack.config.join("openai.key"), KEY_2);
    let (after, out) = eventually("both nodes synced on the new key", DEADLINE, || async {
        let out = status();
        let v = all_synced_on(&json(&out), 2, CREDENTIAL).filter(|v| *v != before)?;
        Some((v, out))
    })
    .await;
    let took = rotated.elapsed();
    println!("rotation → `tessera status` shows both nodes synced on it: {took:?}");
    assert_eq!(out.status.code(), Some(0));
    let r = stack.send("/v1/chat/completions", &[]).await;
    assert_eq!(r.status, 200);
    let injected = r.upstream_header("authorization");
    assert_eq!(
        injected,
        Some(format!("Bearer {KEY_2}")),
        "the new key is in use"
    );

    let table = t.cli(&["status"]);
    assert_eq!(table.status.code(), Some(0));
    let table = stdout(&table);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NODE",
            "GATEWAY",
            "MODE",
            "CDS",
            "LDS",
            "RDS",
            "SDS",
            "ECDS",
            "CREDENTIALS"
        ]
    );
    let mode_word = if mode.is_delta() { "DELTA" } else { "SOTW" };
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{table}");
    for row in &rows {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[1..4], [NODE_CLUSTER, mode_word, "SYNCED"], "{table}");
        assert!(row.ends_with("1/1 current"), "{table}");
    }

    let creds = t.cli(&["status", "credentials", "--output", "json"]);
    assert_eq!(creds.status.code(), Some(0));
    let creds_json = json(&creds);
    let key = &creds_json["credentials"][0];
    assert_eq!(key["policy"], "openai-key");
    assert_eq!(key["kind"], "api_key");
    assert_eq!(key["state"], "VALID");
    assert_eq!(key["version"], after.as_str());
    assert_eq!(
        (key["nodesCurrent"].as_u64(), key["nodesTotal"].as_u64()),
        (Some(2), Some(2))
    );
    // A key file is re-read: unchanged here, so nothing new is pushed.
    let reread = t.cli(&["refresh", "openai-key"]);
    assert_eq!(reread.status.code(), Some(0));
    let reread = stdout(&reread);
    assert!(
        reread.contains(&format!("version {after} (value unchanged), ACKed by 2/2")),
        "{reread}"
    );
    let creds_table = stdout(&t.cli(&["status", "credentials"]));
    assert!(
        creds_table.contains("openai-key") && creds_table.contains("2/2"),
        "{creds_table}"
    );

    let body = eventually(
        "the rotation's propagation in /metrics",
        DEADLINE,
        || async {
            let body = metrics(t).await;
            let all = r#"tessera_credential_propagation_seconds_count{percent="100"}"#;
            body.lines()
                .any(|l| l.strip_prefix(all).is_some_and(|n| n.trim() != "0"))
                .then_some(body)
        },
    )
    .await;
    assert!(
        body.contains(r#"tessera_xds_stale_nodes{gateway="ai-gateway"} 0"#),
        "{body}"
    );
    let logs = strip_ansi(&t.logs());
    let acked = logs
        .lines()
        .find(|l| l.contains("credential ACKed by all nodes") && l.contains(&after))
        .unwrap_or_else(|| panic!("no \"ACKed by all\" line for {after}: {logs}"));
    assert!(
        acked.contains("credential=openai-key") && acked.contains("nodes=2"),
        "{acked}"
    );

    let secrets = [KEY_1, KEY_2];
    assert_no_secret("the log", &logs, &secrets);
    assert_no_secret("status", &table, &secrets);
    assert_no_secret("status --output json", &stdout(&out), &secrets);
    assert_no_secret("status credentials", &creds_table, &secrets);
    assert_no_secret("refresh", &reread, &secrets);
    assert_no_secret("ListCredentials", &stdout(&creds), &secrets);
    assert_no_secret("/metrics", &body, &secrets);
}
both_modes!(status_after_a_key_rotation);

async fn a_nack_shows_as_nacked_with_envoys_message(mode: Mode) {
    // A port the gateway's new listener cannot bind: Envoy rejects the listener update.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let stack = Stack::builder()
        .mock("openai")
        .configure(|s| {
            s.write("openai.key", KEY_1);
            s.write(
                "gateway.yaml",
                openai_key_file_config(s.listener, &s.mock("openai").endpoint()),
            );
        })
        .envoy(mode)
        .start()
        .await;
    let t = &stack.tessera;
    let config = stack.config.join("gateway.yaml");
    let yaml = std::fs::read_to_string(&config).unwrap();
    let listener = format!(
        "  - {{name: http, port: {}, address: 127.0.0.1}}\n",
        stack.listener
    );
    assert!(yaml.contains(&listener), "{yaml}");
    let extra = format!("{listener}  - {{name: taken, port: {taken_port}, address: 127.0.0.1}}\n");
    write_atomic(&config, &yaml.replace(&listener, &extra));

    let out = eventually("LDS NACKED in `tessera status`", DEADLINE, || async {
        let out = t.cli(&["status", "--output", "json"]);
        (json(&out)["nodes"][0]["types"]["lds"]["status"] == "NACKED").then_some(out)
    })
    .await;
    assert_eq!(out.status.code(), Some(1), "a NACK is unhealthy");
    let lds = json(&out)["nodes"][0]["types"]["lds"].clone();
    let message = lds["lastNack"].as_str().unwrap();
    println!("Envoy's NACK as `tessera status` shows it: {message}");
    assert!(
        message.contains(&taken_port.to_string()),
        "Envoy's message: {message}"
    );
    let table = t.cli(&["status"]);
    assert_eq!(table.status.code(), Some(1));
    let table = stdout(&table);
    assert!(table.lines().nth(1).unwrap().contains("NACKED"), "{table}");
    assert!(
        table.contains(&format!("LDS: NACKED {}:", lds["nacked"].as_str().unwrap())),
        "{table}"
    );
    assert!(table.contains(message), "{table}");
    // The old listener keeps serving.
    assert_eq!(stack.send("/v1/chat/completions", &[]).await.status, 200);
    assert_no_secret("status", &table, &[KEY_1]);
    drop(taken);
}
both_modes!(a_nack_shows_as_nacked_with_envoys_message);

const MODEL_PATH: &str = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke";

fn aws_config(listener: u16, bedrock: u16, sts: u16, token: &std::path::Path) -> String {
    bedrock_gateway(listener, bedrock, sts, token, "tessera-ops")
        + r#"---
apiVersion: tessera.dev/v1alpha1
kind: Route
metadata: {name: models}
spec:
  gateway: gw
  rules:
  - backends: [{name: bedrock}]
"#
}

async fn refresh_mints_an_aws_credential_now(mode: Mode) {
    let dir = tempfile::tempdir().unwrap();
    let peers = AwsPeers::start(dir.path(), 3600).await;
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{SA_TOKEN}\n")).unwrap();
    let stack = Stack::builder()
        .dir(dir)
        .config_file("config.yaml")
        .configure(|s| {
            let yaml = aws_config(s.listener, peers.bedrock_port, peers.sts_port, &token);
            s.write("config.yaml", yaml);
        })
        .envoy(mode)
        .start()
        .await;
    eventually("a signed request to be accepted", DEADLINE, || async {
        (stack.send(MODEL_PATH, &[]).await.status == 200).then_some(())
    })
    .await;
    let t = &stack.tessera;
    let before = eventually("the node synced on the first mint", DEADLINE, || async {
        all_synced_on(
            &json(&t.cli(&["status", "--output", "json"])),
            1,
            "credential/aws",
        )
    })
    .await;
    let issued = peers.issued().await.len();

    let started = Instant::now();
    let out = t.cli(&["refresh", "aws", "--wait-acks", "10s", "--output", "json"]);
    let took = started.elapsed();
    println!("`tessera refresh aws --wait-acks 10s` returned after {took:?}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer = json(&out);
    assert_eq!(answer["changed"], true);
    let credential = &answer["credential"];
    assert_eq!(
        (credential["kind"].as_str(), credential["state"].as_str()),
        (Some("aws_web_identity"), Some("VALID"))
    );
    let version = credential["version"].as_str().unwrap();
    assert_ne!(version, before);
    assert_eq!(
        (
            credential["nodesCurrent"].as_u64(),
            credential["nodesTotal"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(
        peers.issued().await.len(),
        issued + 1,
        "STS was asked once more"
    );
    let status = t.cli(&["status", "--output", "json"]);
    assert_eq!(
        all_synced_on(&json(&status), 1, "credential/aws").as_deref(),
        Some(version)
    );
    assert_eq!(stack.send(MODEL_PATH, &[]).await.status, 200);

    // Without waiting for ACKs: it returns after the push, with the count so far.
    let out = t.cli(&["refresh", "aws"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).starts_with("aws: VALID version "),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("new value pushed"),
        "{}",
        stdout(&out)
    );
    assert_eq!(peers.issued().await.len(), issued + 2);

    let unknown = t.cli(&["refresh", "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("NotFound"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );

    let creds = stdout(&t.cli(&["status", "credentials", "--output", "json"]));
    let secrets = [SA_TOKEN];
    assert_no_secret("the log", &t.logs(), &secrets);
    assert_no_secret("ListCredentials", &creds, &secrets);
    assert_no_secret("refresh", &stdout(&out), &secrets);
    assert_no_secret("/metrics", &metrics(t).await, &secrets);
}
both_modes!(refresh_mints_an_aws_credential_now);

#[test]
fn admin_grpc_on_a_non_loopback_address_without_mtls_is_refused() {
    let out = std::process::Command::new(tessera_binary())
        .current_dir(repo())
        .args(["serve", "--config", "config/example"])
        .args(["--xds-address", &format!("127.0.0.1:{}", port())])
        .args(["--admin-address", &format!("127.0.0.1:{}", port())])
        .args(["--admin-grpc-address", &format!("0.0.0.0:{}", port())])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("refusing to serve the admin gRPC API on non-loopback"),
        "{stderr}"
    );
}

#[test]
fn status_without_a_running_tessera_is_a_connection_error() {
    let out = std::process::Command::new(tessera_binary())
        .args(["status", "--admin-grpc", &format!("127.0.0.1:{}", port())])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

/// With the xDS port's mTLS, the admin API needs a client certificate from its client CA that
/// names an `--admin-client`: an Envoy's certificate from the same CA is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mtls_the_admin_api_needs_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = Pki::new(d, "xds");
    let (cert, key) = pki.leaf(
        d,
        "tessera",
        &["127.0.0.1", "localhost"],
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client, client_key) = pki.leaf(
        d,
        "operator",
        &["operator.example"],
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    );
    let (envoy, envoy_key) = pki.leaf(
        d,
        "envoy",
        &["gw.example"],
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    );
    let other = Pki::new(d, "other");
    let (stranger, stranger_key) = other.leaf(
        d,
        "stranger",
        &["stranger.example"],
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    );
    let config = d.join("config.yaml");
    std::fs::write(
        &config,
        openai_key_file_config(port(), "http://127.0.0.1:9"),
    )
    .unwrap();
    std::fs::write(d.join("openai.key"), KEY_1).unwrap();
    let path = |p: &std::path::Path| p.display().to_string();
    let t = Tessera::start(
        &config,
        &[
            "--xds-tls-cert",
            &path(&cert),
            "--xds-tls-key",
            &path(&key),
            "--xds-client-ca",
            &path(&pki.ca),
            "--admin-client",
            "operator.example",
        ],
    )
    .await;
    let ca = path(&pki.ca);
    let with = |cert: &std::path::Path, key: &std::path::Path| {
        t.cli(&[
            "status",
            "credentials",
            "--output",
            "json",
            "--tls-ca",
            &ca,
            "--tls-cert",
            &path(cert),
            "--tls-key",
            &path(key),
            "--tls-server-name",
            "localhost",
        ])
    };
    let ok = with(&client, &client_key);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(json(&ok)["credentials"][0]["policy"], "openai-key");
    assert_no_secret("ListCredentials", &stdout(&ok), &[KEY_1]);
    let as_envoy = with(&envoy, &envoy_key);
    assert_eq!(as_envoy.status.code(), Some(2), "{}", stdout(&as_envoy));
    let said = String::from_utf8_lossy(&as_envoy.stderr);
    assert!(said.contains("not an --admin-client"), "{said}");
    let refused = [
        with(&stranger, &stranger_key),
        t.cli(&["status", "--tls-ca", &ca, "--tls-server-name", "localhost"]),
        t.cli(&["status"]),
    ];
    for out in refused {
        assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
        assert!(out.stdout.is_empty());
    }
}
