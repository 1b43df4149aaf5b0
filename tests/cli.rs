//! The `tessera` command line through the real binary: `validate` locates every error,
//! `serve` will not send keys in the clear, and `bootstrap` writes what Envoy accepts.

use harness::*;
use std::ffi::OsStr;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const TESSERA: &str = env!("CARGO_BIN_EXE_tessera");

/// Runs `tessera ARGS` in `dir` to completion.
fn tessera_in(dir: &Path, args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Output {
    Command::new(TESSERA)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// === validate ===

#[test]
fn validate_accepts_the_example_config() {
    let out = tessera_in(&repo(), ["validate", "--config", "config/example"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("valid"), "{}", text(&out.stdout));
}

#[test]
fn validate_names_file_document_and_field_of_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let write = |file: &str, yaml: &str| std::fs::write(dir.path().join(file), yaml).unwrap();
    write(
        "backends.yaml",
        r#"apiVersion: tessera.dev/v1alpha1
kind: Backend
metadata: {name: good}
spec: {provider: OpenAI, endpoint: "http://127.0.0.1:1"}
---
apiVersion: tessera.dev/v1alpha1
kind: Backend
metadata: {name: typo}
spec: {provider: OpenAI, endpont: "http://127.0.0.1:1"}
"#,
    );
    write(
        "routes.yaml",
        r#"apiVersion: tessera.dev/v1alpha1
kind: Gateway
metadata: {name: gw}
spec: {nodeCluster: c, listeners: [{name: http, port: 10000}]}
---
apiVersion: tessera.dev/v1alpha1
kind: Route
metadata: {name: chat}
spec:
  gateway: gw
  rules: [{backends: [{name: good}, {name: missing}]}]
"#,
    );
    write("broken.yaml", "kind: Backend\nmetadata: {name: [unclosed\n");

    let out = tessera_in(
        &repo(),
        [
            OsStr::new("validate"),
            "--config".as_ref(),
            dir.path().as_ref(),
        ],
    );
    assert!(!out.status.success(), "a broken config validated");
    let stderr = text(&out.stderr);
    // Exactly one error per file, naming the file, the document and the field.
    let error_in = |file: &str| {
        let path = dir.path().join(file).display().to_string();
        let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(&path)).collect();
        assert_eq!(lines.len(), 1, "one error about {file} expected:\n{stderr}");
        lines[0].to_owned()
    };
    let backend = error_in("backends.yaml");
    assert!(backend.contains("document 2"), "{backend}");
    assert!(backend.contains(": spec.endpont:"), "{backend}");
    let route = error_in("routes.yaml");
    assert!(route.contains("document 2"), "{route}");
    assert!(
        route.contains(": spec.rules[0].backends[1].name:"),
        "{route}"
    );
    assert!(route.contains(r#"Backend "missing""#), "{route}");
    let broken = error_in("broken.yaml");
    assert!(broken.contains("document 1"), "{broken}");
    assert!(broken.contains("invalid YAML"), "{broken}");
}

/// Input that once panicked `tessera validate` (exit 101), or could exhaust memory, is a
/// located error and exit code 1.
#[test]
fn validate_turns_hostile_input_into_located_errors() {
    let policy = r#"apiVersion: tessera.dev/v1alpha1
kind: BackendSecurityPolicy
metadata: {name: aws}
spec:
  type: AWSCredentials
  awsCredentials:
    region: us-east-1
    credentialsFile: creds
    refresh: {maxBackoff: 18446744073709551615s1s}
"#;
    let laughs = (1..12).fold(
        "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n".to_owned(),
        |t, i| {
            let refs = vec![format!("*a{}", i - 1); 9].join(", ");
            format!("{t}a{i}: &a{i} [{refs}]\n")
        },
    );
    let cases = [
        (
            policy.to_owned(),
            r#"document 1 (BackendSecurityPolicy "aws"): spec.awsCredentials.refresh.maxBackoff: "18446744073709551615s1s" is longer than 24h"#,
        ),
        (
            "a: *nowhere\n".to_owned(),
            "document 1: invalid YAML: unknown anchor",
        ),
        (
            laughs,
            "document 1: invalid YAML: repetition limit exceeded",
        ),
        (
            "[".repeat(1 << 20),
            "invalid YAML: [ and { nest more than 100 deep",
        ),
        (
            format!("#{}\n", "x".repeat(1 << 20)),
            "is larger than 1 MiB",
        ),
    ];
    for (yaml, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, &yaml).unwrap();
        let started = Instant::now();
        let out = tessera_in(dir.path(), ["validate", "--config", "c.yaml"]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{expected}:\n{stderr}");
        assert!(
            stderr.contains(&format!("c.yaml: {expected}")),
            "{expected}:\n{stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{expected}: {:?}",
            started.elapsed()
        );
    }
}

// === translate ===

#[test]
fn translate_prints_the_example_as_json_without_key_values() {
    let out = tessera_in(&repo(), ["translate", "--config", "config/example"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let gateway = &json["ai-gateway"];
    let names = |kind: &str| -> Vec<String> {
        let list = gateway[kind]
            .as_array()
            .unwrap_or_else(|| panic!("{kind}: {json}"));
        list.iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names("clusters"), ["backend/anthropic", "backend/openai"]);
    assert_eq!(names("listeners"), ["listener/ai-gateway/http"]);
    assert_eq!(names("routes"), ["route/ai-gateway/http"]);
    assert_eq!(
        names("secrets"),
        ["credential/anthropic-key", "credential/openai-key"]
    );
    for secret in gateway["secrets"].as_array().unwrap() {
        assert_eq!(
            secret["genericSecret"]["secret"]["inlineString"],
            "<redacted>"
        );
    }
    let mut keys = 0;
    for entry in std::fs::read_dir(repo().join("config/example")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "key") {
            let key = std::fs::read_to_string(&path).unwrap();
            assert!(
                key.trim().len() >= 8,
                "{}: too short to search for",
                path.display()
            );
            assert!(!stdout.contains(key.trim()), "{} leaked", path.display());
            keys += 1;
        }
    }
    assert_eq!(keys, 2);
}

#[test]
fn translate_prints_what_the_golden_files_hold() {
    let testdata = repo().join("src/translate/testdata");
    let mut cases = 0;
    for entry in std::fs::read_dir(&testdata).unwrap() {
        let case = entry.unwrap().path();
        let Ok(expected) = std::fs::read_to_string(case.join("translated.json")) else {
            continue;
        };
        let out = tessera_in(
            &repo(),
            [
                OsStr::new("translate"),
                "--config".as_ref(),
                case.as_os_str(),
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout) == expected,
            "{}: output differs from translated.json",
            case.display()
        );
        cases += 1;
    }
    assert!(cases >= 6, "{cases} golden cases");
}

#[test]
fn translate_one_node_cluster_as_yaml() {
    let all = tessera_in(&repo(), ["translate", "--config", "config/example"]);
    let all: serde_json::Value = serde_json::from_slice(&all.stdout).unwrap();
    let args = ["--node-cluster", "ai-gateway", "--format", "yaml"];
    let out = tessera_in(
        &repo(),
        ["translate", "--config", "config/example"]
            .iter()
            .chain(&args),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let yaml: serde_json::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    assert_eq!(yaml, all["ai-gateway"]);
    let unknown = [
        "translate",
        "--config",
        "config/example",
        "--node-cluster",
        "nope",
    ];
    let out = tessera_in(&repo(), unknown);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(r#"node cluster "nope""#),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn translate_reports_an_invalid_config_like_validate() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("route.yaml"),
        "apiVersion: tessera.dev/v1alpha1\nkind: Route\nmetadata: {name: r}\nspec: {gateway: none, rules: []}\n",
    )
    .unwrap();
    let run = |command: &str| {
        tessera_in(
            &repo(),
            [
                OsStr::new(command),
                "--config".as_ref(),
                dir.path().as_ref(),
            ],
        )
    };
    let (validate, translate) = (run("validate"), run("translate"));
    assert!(!translate.status.success());
    assert!(translate.stdout.is_empty(), "{}", text(&translate.stdout));
    assert!(
        text(&translate.stderr).contains(r#"Gateway "none" does not exist"#),
        "{}",
        text(&translate.stderr)
    );
    assert_eq!(text(&translate.stderr), text(&validate.stderr));
}

// === serve ===

#[test]
fn serve_refuses_plaintext_xds_on_a_non_loopback_address() {
    let mut child = Command::new(TESSERA)
        .current_dir(repo())
        .args(["serve", "--config", "config/example"])
        .args(["--xds-address", &format!("0.0.0.0:{}", port())])
        .args(["--admin-address", &format!("127.0.0.1:{}", port())])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tessera still serves plaintext xDS on 0.0.0.0 after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("TLS"), "{stderr}");
    assert!(stderr.contains("--insecure-xds"), "{stderr}");
}

// === bootstrap ===

/// `tessera bootstrap --node-id ID --node-cluster CLUSTER EXTRA`, run in `dir`.
fn bootstrap(dir: &Path, id: &str, cluster: &str, extra: &[&str]) -> String {
    let args = ["bootstrap", "--node-id", id, "--node-cluster", cluster];
    let out = tessera_in(dir, args.iter().chain(extra));
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// Client certificate, key and CA as real PEM files in `dir`, passed by relative path.
const MTLS: [&str; 8] = [
    "--xds-tls-cert",
    "client.pem",
    "--xds-tls-key",
    "client-key.pem",
    "--xds-tls-ca",
    "ca.pem",
    "--xds-server-name",
    "tessera.local",
];

fn write_pems(dir: &Path) {
    let client = rcgen::generate_simple_self_signed(["envoy.local".to_owned()]).unwrap();
    let ca = rcgen::generate_simple_self_signed(["tessera.local".to_owned()]).unwrap();
    std::fs::write(dir.join("client.pem"), client.cert.pem()).unwrap();
    std::fs::write(
        dir.join("client-key.pem"),
        client.signing_key.serialize_pem(),
    )
    .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.cert.pem()).unwrap();
}

/// `envoy --mode validate`: parses the bootstrap and loads its files without serving.
/// Runs from the repository, not the bootstrap's directory, so relative paths would fail.
fn assert_envoy_accepts(envoy: &Path, dir: &Path, name: &str, yaml: &str) {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(envoy)
        .current_dir(repo())
        .args(["--mode", "validate", "--log-level", "warning", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "Envoy rejects the {name} bootstrap:\n{yaml}\n{}",
        text(&out.stderr)
    );
}

#[needs_envoy]
#[test]
fn bootstrap_sotw_is_accepted_by_envoy() {
    let envoy = envoy();
    let dir = tempfile::tempdir().unwrap();
    let yaml = bootstrap(dir.path(), "n", "c", &[]);
    assert!(yaml.contains(r#""api_type": "GRPC""#), "{yaml}");
    assert_envoy_accepts(&envoy, dir.path(), "sotw", &yaml);
}

#[needs_envoy]
#[test]
fn bootstrap_delta_is_accepted_by_envoy() {
    let envoy = envoy();
    let dir = tempfile::tempdir().unwrap();
    let yaml = bootstrap(dir.path(), "n", "c", &["--delta"]);
    assert!(yaml.contains(r#""api_type": "DELTA_GRPC""#), "{yaml}");
    assert_envoy_accepts(&envoy, dir.path(), "delta", &yaml);
}

#[needs_envoy]
#[test]
fn bootstrap_with_mtls_is_accepted_by_envoy() {
    let envoy = envoy();
    let dir = tempfile::tempdir().unwrap();
    write_pems(dir.path());
    let yaml = bootstrap(dir.path(), "n", "c", &MTLS);
    assert!(yaml.contains("UpstreamTlsContext"), "{yaml}");
    assert_envoy_accepts(&envoy, dir.path(), "mtls", &yaml);
}

/// YAML 1.1, which Envoy reads, takes plain y/n/yes/no/on/off (any case) for booleans.
#[needs_envoy]
#[test]
fn bootstrap_node_names_that_look_like_yaml_booleans_stay_strings() {
    let envoy = envoy();
    let dir = tempfile::tempdir().unwrap();
    for name in ["y", "No", "yes", "on", "OFF"] {
        let yaml = bootstrap(dir.path(), name, name, &[]);
        assert_envoy_accepts(&envoy, dir.path(), name, &yaml);
    }
}

/// A static cluster referring to an ADS-delivered secret crashes Envoy at start.
#[test]
fn bootstrap_never_uses_sds() {
    let dir = tempfile::tempdir().unwrap();
    write_pems(dir.path());
    let variants = [
        vec![],
        vec!["--delta"],
        MTLS.to_vec(),
        [&["--delta"][..], &MTLS].concat(),
        [&["--xds-token-file", "token"][..], &MTLS].concat(),
    ];
    for extra in &variants {
        let yaml = bootstrap(dir.path(), "n", "c", extra);
        assert!(!yaml.contains("sds_config"), "{extra:?}:\n{yaml}");
    }
}

/// Server-authenticated TLS plus the token file, as a Kubernetes Envoy runs it.
const TOKEN_TLS: [&str; 6] = [
    "--xds-token-file",
    "token",
    "--xds-tls-ca",
    "ca.pem",
    "--xds-server-name",
    "tessera.local",
];

#[needs_envoy]
#[test]
fn bootstrap_with_a_token_file_is_accepted_by_envoy() {
    let envoy = envoy();
    let dir = tempfile::tempdir().unwrap();
    write_pems(dir.path());
    std::fs::write(dir.path().join("token"), "header.payload.signature").unwrap();
    let token_path = dir.path().join("token").display().to_string();
    for (name, extra) in [
        ("token-sotw", TOKEN_TLS.to_vec()),
        ("token-delta", [&["--delta"][..], &TOKEN_TLS].concat()),
        ("token-mtls", [&TOKEN_TLS[..2], &MTLS].concat()),
    ] {
        let yaml = bootstrap(dir.path(), "n", "c", &extra);
        assert!(
            yaml.contains("envoy.grpc_credentials.file_based_metadata"),
            "{yaml}"
        );
        // Made absolute: Envoy does not run where the bootstrap was written.
        assert!(yaml.contains(&format!("{token_path:?}")), "{yaml}");
        assert_eq!(yaml.contains("cert_chain"), name == "token-mtls", "{yaml}");
        assert_envoy_accepts(&envoy, dir.path(), name, &yaml);
    }
}

#[test]
fn bootstrap_refuses_to_send_a_token_in_the_clear() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["bootstrap", "--node-id", "n", "--node-cluster", "c"];
    let out = tessera_in(
        dir.path(),
        args.iter().chain(&["--xds-token-file", "token"]),
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(stderr.contains("--xds-tls-ca"), "{stderr}");
    assert!(stderr.contains("TLS"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn serve_token_auth_needs_kubernetes_and_tls() {
    let serve = |extra: &[&str]| {
        let xds = format!("127.0.0.1:{}", port());
        let admin = format!("127.0.0.1:{}", port());
        let base = ["serve", "--xds-address", &xds, "--admin-address", &admin];
        tessera_in(&repo(), base.iter().chain(extra))
    };
    let out = serve(&["--xds-token-auth"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--kubernetes"),
        "{}",
        text(&out.stderr)
    );
    // Refused before any connection to Kubernetes is tried.
    let out = serve(&["--kubernetes", "--xds-token-auth"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("needs TLS"), "{stderr}");
    let out = serve(&[
        "--config",
        "config/example",
        "--xds-tls-cert",
        "c.pem",
        "--xds-tls-key",
        "k.pem",
    ]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--xds-client-ca"), "{stderr}");
}

#[test]
fn checked_in_crds_match_the_types() {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("crds")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/crd/tessera.dev.yaml");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        generated == checked_in,
        "config/crd/tessera.dev.yaml is out of date: run `cargo run -- crds > config/crd/tessera.dev.yaml`"
    );
    for kind in ["Gateway", "Backend", "BackendSecurityPolicy", "Route"] {
        assert!(generated.contains(&format!("kind: {kind}\n")), "{kind} CRD");
    }
    assert!(generated.contains("status: {}"), "status subresource");
}
