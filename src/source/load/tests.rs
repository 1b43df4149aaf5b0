use super::syntax::parse_endpoint;
use super::*;
use crate::api;
use crate::model::Provider as P;
use crate::model::{
    ApiKey, Backend, Endpoint, Gateway, HeaderMatch, KeySource, Listener, Match, PolicyKind, Route,
    Rule, SecretString, SecurityPolicy, UpstreamTls, WeightedBackend,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use std::fs;
use tempfile::TempDir;

mod bounds;
mod client_auth;
mod partial;

const V: &str = "apiVersion: tessera.dev/v1alpha1";
const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

fn dir_with(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        let path = dir.path().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
    dir
}

fn errors(dir: &TempDir) -> Vec<String> {
    match load(dir.path()) {
        Ok(loaded) => panic!("expected errors, loaded {:#?}", loaded.model),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

/// A valid config that the error cases add one broken file (`z.yaml`) to.
const BASE: &str = r#"
apiVersion: tessera.dev/v1alpha1
kind: Gateway
metadata: {name: gw}
spec:
  nodeCluster: gw
  listeners: [{name: http, port: 10000}]
---
apiVersion: tessera.dev/v1alpha1
kind: Backend
metadata: {name: openai}
spec: {provider: OpenAI, endpoint: "https://api.openai.com", securityPolicy: key}
---
apiVersion: tessera.dev/v1alpha1
kind: BackendSecurityPolicy
metadata: {name: key}
spec: {type: APIKey, apiKey: {file: openai.key}}
"#;

fn base_with(broken: &str) -> TempDir {
    dir_with(&[
        ("base.yaml", BASE),
        ("ca.pem", PEM),
        ("not-a-cert.pem", "-----BEGIN PRIVATE KEY-----\n"),
        ("z.yaml", broken),
    ])
}

fn backend(spec: &str) -> String {
    format!("{V}\nkind: Backend\nmetadata: {{name: b}}\nspec: {spec}\n")
}

fn gateway(spec: &str) -> String {
    format!("{V}\nkind: Gateway\nmetadata: {{name: g}}\nspec: {spec}\n")
}

fn policy(spec: &str) -> String {
    format!("{V}\nkind: BackendSecurityPolicy\nmetadata: {{name: p}}\nspec: {spec}\n")
}

fn route(spec: &str) -> String {
    format!("{V}\nkind: Route\nmetadata: {{name: r}}\nspec: {spec}\n")
}

/// Puts `doc` second in its file, after a valid Backend `first`.
fn second(doc: &str) -> String {
    format!(
        "{V}\nkind: Backend\nmetadata: {{name: first}}\nspec: {{provider: OpenAI, endpoint: http://first}}\n---\n{doc}"
    )
}

fn rule(rule: &str) -> String {
    route(&format!("{{gateway: gw, rules: [{rule}]}}"))
}

#[test]
fn each_rule_names_file_document_object_and_field() {
    let ipv6 = r#"{provider: OpenAI, endpoint: "http://::1"}"#;
    let cases: Vec<(String, &str)> = vec![
        // Document-level rules.
        (
            backend("{provider: OpenAI, endpoint: http://h}")
                .replace(V, "apiVersion: tessera.dev/v1"),
            r#"document 1 (Backend "b"): apiVersion: must be "tessera.dev/v1alpha1" for Backend, not "tessera.dev/v1""#,
        ),
        (
            format!("{V}\nkind: Secret\nmetadata: {{name: s}}\n"),
            r#"document 1 (Secret "s"): apiVersion: must be "v1" for Secret"#,
        ),
        (
            format!("{V}\nkind: Foo\nmetadata: {{name: x}}\n"),
            r#"document 1: kind: unknown kind "Foo" in "x""#,
        ),
        (
            format!("{V}\nmetadata: {{name: x}}\n"),
            "document 1: kind: is required",
        ),
        ("- a\n- b\n".into(), "document 1: must be a mapping"),
        (
            format!(
                "{V}\nkind: Backend\nmetadata: {{}}\nspec: {{provider: OpenAI, endpoint: http://h}}\n"
            ),
            "document 1 (Backend): metadata.name: is required",
        ),
        (
            backend("{provider: OpenAI, endpoint: http://h}").replace("name: b", "name: openai"),
            r#"document 1 (Backend "openai"): metadata.name: duplicate Backend "openai"; first defined in "#,
        ),
        (
            second(&backend("{provider: OpenAI, endpont: http://h}")),
            r#"document 2 (Backend "b"): spec.endpont: unknown field `endpont`"#,
        ),
        (
            backend("{provider: OpenAI}"),
            r#"document 1 (Backend "b"): spec.endpoint: is required"#,
        ),
        (
            backend("{provider: OpenAi, endpoint: http://h}"),
            r#"document 1 (Backend "b"): spec.provider: unknown variant `OpenAi`"#,
        ),
        (
            format!(
                "{}---\nkind: [\n",
                backend("{provider: OpenAI, endpoint: http://h}")
            ),
            "document 2: invalid YAML: ",
        ),
        // Endpoints.
        (
            backend("{provider: OpenAI, endpoint: https://h/v1}"),
            "spec.endpoint: \"https://h/v1\" must be just scheme://host[:port], without path",
        ),
        (
            backend("{provider: OpenAI, endpoint: http://h?a=1}"),
            "spec.endpoint: \"http://h?a=1\" must be just scheme://host[:port], without path, query",
        ),
        (
            backend("{provider: OpenAI, endpoint: http://u:p@h}"),
            "spec.endpoint: \"http://u:p@h\" must be just scheme://host[:port], without path, query, fragment or user",
        ),
        (
            backend("{provider: OpenAI, endpoint: ftp://h}"),
            "spec.endpoint: \"ftp://h\" must start with http:// or https://",
        ),
        (
            backend("{provider: OpenAI, endpoint: h:80}"),
            "spec.endpoint: \"h:80\" must start with",
        ),
        (
            backend("{provider: OpenAI, endpoint: http://h:0}"),
            "spec.endpoint: \"http://h:0\" must have a port between 1 and 65535",
        ),
        (
            backend("{provider: OpenAI, endpoint: http://h:70000}"),
            "spec.endpoint: \"http://h:70000\" must have a port",
        ),
        (
            backend("{provider: OpenAI, endpoint: \"http://h:\"}"),
            "spec.endpoint: \"http://h:\" must have a port",
        ),
        (
            backend("{provider: OpenAI, endpoint: http://h:+80}"),
            "spec.endpoint: \"http://h:+80\" must have a port",
        ),
        (
            backend(ipv6),
            "spec.endpoint: \"http://::1\" does not have a valid host (IPv6 addresses go in brackets)",
        ),
        (
            backend("{provider: OpenAI, endpoint: \"http://[::g]\"}"),
            "spec.endpoint: \"http://[::g]\" does not have a valid IPv6 address",
        ),
        (
            backend("{provider: OpenAI, endpoint: \"http://a b\"}"),
            "spec.endpoint: \"http://a b\" does not have a valid host",
        ),
        (
            backend("{provider: OpenAI, endpoint: \"http://\"}"),
            "spec.endpoint: \"http://\" does not have a valid host",
        ),
        // Backend references and TLS.
        (
            backend("{provider: OpenAI, endpoint: http://h, securityPolicy: nope}"),
            r#"document 1 (Backend "b"): spec.securityPolicy: BackendSecurityPolicy "nope" does not exist"#,
        ),
        (
            backend("{provider: OpenAI, endpoint: http://h, tls: {sni: h}}"),
            "spec.tls: is only allowed with an https endpoint",
        ),
        (
            backend("{provider: OpenAI, endpoint: https://h, tls: {caFile: missing.pem}}"),
            "spec.tls.caFile: cannot read ",
        ),
        (
            backend("{provider: OpenAI, endpoint: https://h, tls: {caFile: not-a-cert.pem}}"),
            "spec.tls.caFile: ",
        ),
        (
            backend("{provider: OpenAI, endpoint: https://h, tls: {sni: \"bad sni\"}}"),
            "spec.tls.sni: is not a valid host name",
        ),
        // Gateways.
        (
            gateway("{nodeCluster: g, listeners: [{name: a, port: 0}]}"),
            r#"document 1 (Gateway "g"): spec.listeners[0].port: must be between 1 and 65535"#,
        ),
        (
            gateway("{nodeCluster: g, listeners: [{name: a, port: 70000}]}"),
            "spec.listeners[0].port: must be between 1 and 65535",
        ),
        (
            gateway("{nodeCluster: g, listeners: [{name: a, port: http}]}"),
            "spec.listeners[0].port: invalid type",
        ),
        (
            gateway("{nodeCluster: g, listeners: [{name: a, port: 1}, {name: a, port: 2}]}"),
            r#"spec.listeners[1].name: duplicate listener "a" in this Gateway"#,
        ),
        (
            gateway(
                "{nodeCluster: g, listeners: [], xdsClients: [{spiffe: spiffe://x/y, dnsName: a.b}]}",
            ),
            "spec.xdsClients[0]: needs exactly one of spiffe, dnsName and serviceAccount",
        ),
        (
            gateway("{nodeCluster: g, listeners: [], xdsClients: [{}]}"),
            "spec.xdsClients[0]: needs exactly one of spiffe, dnsName and serviceAccount",
        ),
        (
            gateway(
                "{nodeCluster: g, listeners: [], xdsClients: [{dnsName: a.b}, {spiffe: https://x}]}",
            ),
            r#"spec.xdsClients[1]: spiffe "https://x" must be a spiffe:// URI"#,
        ),
        (
            gateway("{nodeCluster: g, listeners: [], xdsClients: [{dnsName: \"a.*.b\"}]}"),
            "spec.xdsClients[0]: dnsName \"a.*.b\" must be a DNS name; `*` is allowed only as the whole first label",
        ),
        (
            gateway("{nodeCluster: g, listeners: [], xdsClients: [{dnsName: \"*gw.b\"}]}"),
            "spec.xdsClients[0]: dnsName \"*gw.b\" must be a DNS name",
        ),
        (
            gateway(
                "{nodeCluster: g, listeners: [], xdsClients: [{serviceAccount: {namespace: ns}}]}",
            ),
            "spec.xdsClients[0].serviceAccount.name: is required",
        ),
        (
            gateway("{nodeCluster: g, listeners: [{name: a, port: 1, address: localhost}]}"),
            r#"spec.listeners[0].address: "localhost" is not an IP address"#,
        ),
        (
            gateway("{nodeCluster: gw, listeners: [{name: a, port: 1}]}"),
            r#"document 1 (Gateway "g"): spec.nodeCluster: "gw" is already served by Gateway "gw""#,
        ),
        (
            gateway("{nodeCluster: g, listeners: [{name: a, port: 10000, address: 0.0.0.0}]}"),
            r#"spec.listeners[0].port: 0.0.0.0:10000 is already used by listener "http" of Gateway "gw""#,
        ),
        (gateway("{listeners: []}"), "spec.nodeCluster: is required"),
        // Policies.
        (
            policy("{type: AWSCredentials}"),
            "spec.awsCredentials: is required when type is AWSCredentials",
        ),
        (
            policy("{type: AWSCredentials, awsCredentials: {region: us-east-1}}"),
            "spec.awsCredentials: needs exactly one of oidcExchangeToken and credentialsFile",
        ),
        (
            policy("{type: AWSCredentials, awsCredentials: {region: US_EAST, credentialsFile: c}}"),
            r#"spec.awsCredentials.region: "US_EAST" is not an AWS region"#,
        ),
        (
            policy(
                "{type: AWSCredentials, awsCredentials: {region: us-east-1, oidcExchangeToken: {roleArn: arn:aws:iam::1:role/r, tokenFile: t, durationSeconds: 60}}}",
            ),
            "spec.awsCredentials.oidcExchangeToken.durationSeconds: must be between 900 and 43200",
        ),
        (
            policy(
                "{type: AWSCredentials, awsCredentials: {region: us-east-1, oidcExchangeToken: {roleArn: role, tokenFile: t}}}",
            ),
            r#"spec.awsCredentials.oidcExchangeToken.roleArn: "role" is not an IAM role ARN"#,
        ),
        (
            policy(
                "{type: AWSCredentials, awsCredentials: {region: us-east-1, oidcExchangeToken: {roleArn: arn:aws:iam::1:role/r, oidc: {issuer: http://i, clientId: c}}}}",
            ),
            "spec.awsCredentials.oidcExchangeToken.oidc: needs exactly one of clientSecretFile and clientSecretRef",
        ),
        (
            policy(
                "{type: AWSCredentials, awsCredentials: {region: us-east-1, credentialsFile: c, refresh: {beforeExpiry: soon}}}",
            ),
            r#"spec.awsCredentials.refresh.beforeExpiry: "soon" is not a duration"#,
        ),
        (
            policy(
                "{type: APIKey, apiKey: {file: k}, awsCredentials: {region: us-east-1, credentialsFile: c}}",
            ),
            "spec.awsCredentials: is not allowed when type is APIKey",
        ),
        (
            policy("{type: AzureCredentials}"),
            "spec.azureCredentials: is required when type is AzureCredentials",
        ),
        (
            policy("{type: AzureCredentials, azureCredentials: {tenantId: t, clientId: c}}"),
            "spec.azureCredentials: needs exactly one of clientSecretFile, clientSecretRef and oidcExchangeToken",
        ),
        (
            policy(
                "{type: AzureCredentials, azureCredentials: {tenantId: t, clientId: c, clientSecretFile: s, authorityHost: http://login.local}}",
            ),
            r#"spec.azureCredentials.authorityHost: "http://login.local" must be an https URL"#,
        ),
        (
            policy(
                "{type: AzureCredentials, azureCredentials: {tenantId: t, clientId: c, oidcExchangeToken: {}}}",
            ),
            "spec.azureCredentials.oidcExchangeToken: needs exactly one of tokenFile and oidc",
        ),
        (
            policy("{type: Basic}"),
            "spec.type: unknown variant `Basic`",
        ),
        (
            policy("{type: APIKey}"),
            "spec.apiKey: is required when type is APIKey",
        ),
        (
            policy("{type: APIKey, apiKey: {}}"),
            "spec.apiKey: needs exactly one of file and secretRef",
        ),
        (
            policy("{type: APIKey, apiKey: {file: k, secretRef: {name: s, key: k}}}"),
            "spec.apiKey: needs exactly one of file and secretRef",
        ),
        (
            policy("{type: APIKey, apiKey: {secretRef: {name: s}}}"),
            "spec.apiKey.secretRef.key: is required",
        ),
        (
            policy("{type: APIKey, apiKey: {file: k, header: \"X Key\"}}"),
            r#"spec.apiKey.header: "X Key" is not a lowercase HTTP header name"#,
        ),
        (
            policy("{type: APIKey, apiKey: {file: k, prefix: \"Bearer\\n\"}}"),
            "spec.apiKey.prefix: is not a valid HTTP header value",
        ),
        // Secrets.
        (
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {k: \"not base64!\"}\n"
                .into(),
            r#"document 1 (Secret "s"): data.k: is not valid base64"#,
        ),
        (
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {k: \"//4=\"}\n".into(),
            "data.k: is not valid UTF-8",
        ),
        // Routes.
        (
            route("{gateway: nope, rules: [{backends: [{name: openai}]}]}"),
            r#"document 1 (Route "r"): spec.gateway: Gateway "nope" does not exist"#,
        ),
        (
            second(&rule("{backends: [{name: openai}, {name: nope}]}")),
            r#"document 2 (Route "r"): spec.rules[0].backends[1].name: Backend "nope" does not exist"#,
        ),
        (
            rule("{backends: [{name: openai, weight: 0}]}"),
            "spec.rules[0].backends: every weight is 0; at least one must be positive",
        ),
        (
            rule("{backends: []}"),
            "spec.rules[0].backends: a rule needs at least one backend",
        ),
        (rule("{matches: []}"), "spec.rules[0].backends: is required"),
        (
            rule("{backends: [{name: openai, weight: 4294967295}, {name: openai, weight: 1}]}"),
            "spec.rules[0].backends: weights add up to more than 4294967295",
        ),
        (
            rule("{matches: [{pathPrefix: /}, {pathPrefix: v1/}], backends: [{name: openai}]}"),
            r#"spec.rules[0].matches[1].pathPrefix: "v1/" must start with /"#,
        ),
        (
            rule("{matches: [{headers: [{name: X-Model, value: a}]}], backends: [{name: openai}]}"),
            r#"spec.rules[0].matches[0].headers[0].name: "X-Model" is not a lowercase HTTP header name"#,
        ),
        (
            rule(
                "{matches: [{headers: [{name: x-model, value: a}, {name: \"a b\", value: a}]}], backends: [{name: openai}]}",
            ),
            r#"spec.rules[0].matches[0].headers[1].name: "a b" is not"#,
        ),
        (
            rule("{matches: [{model: a, modelPrefix: b}], backends: [{name: openai}]}"),
            "spec.rules[0].matches[0]: model and modelPrefix exclude each other",
        ),
        (
            rule(
                "{backends: [{name: openai, priority: 0}, {name: openai, priority: 1, weight: 0}]}",
            ),
            "spec.rules[0].backends: every weight of priority 1 is 0",
        ),
        (
            rule("{backends: [{name: openai}], retry: {on: [5xx, 500]}}"),
            r#"spec.rules[0].retry.on[1]: "500" is not one of 5xx, 429, connect-failure, reset"#,
        ),
        (
            rule("{backends: [{name: openai}], retry: {perTryTimeout: 2h}}"),
            r#"spec.rules[0].retry.perTryTimeout: "2h" is longer than 1h"#,
        ),
        (
            rule("{backends: [{name: openai}], retry: {attempts: 0}}"),
            "spec.rules[0].retry.attempts",
        ),
        (
            rule("{backends: [{name: openai, priority: 16}]}"),
            "spec.rules[0].backends[0].priority",
        ),
    ];
    for (yaml, expected) in cases {
        expect_one_error(&yaml, expected);
    }
}

/// `yaml` (as `z.yaml` beside [`BASE`]) fails with exactly one error, `expected`, which
/// includes its document unless that is document 1.
fn expect_one_error(yaml: &str, expected: &str) {
    let errors = errors(&base_with(yaml));
    let found = match expected.starts_with("document") {
        true => errors
            .iter()
            .any(|e| e.contains(&format!("z.yaml: {expected}"))),
        false => errors
            .iter()
            .any(|e| e.contains("z.yaml: document 1 (") && e.contains(&format!("): {expected}"))),
    };
    assert!(found, "expected {expected:?} for\n{yaml}\ngot {errors:#?}");
    assert_eq!(
        errors.len(),
        1,
        "one error expected for\n{yaml}\ngot {errors:#?}"
    );
}

#[test]
fn error_display_has_the_documented_shape() {
    let dir = base_with(&second(&rule("{backends: [{name: openai}, {name: nope}]}")));
    let errors = errors(&dir);
    let file = dir.path().join("z.yaml");
    assert_eq!(
        errors,
        [format!(
            "{}: document 2 (Route \"r\"): spec.rules[0].backends[1].name: Backend \"nope\" does not exist",
            file.display()
        )]
    );
}

#[test]
fn broken_yaml_names_line_and_column() {
    let errors = errors(&base_with(&format!(
        "{}---\nkind: [\n",
        backend("{provider: OpenAI, endpoint: http://h}")
    )));
    assert!(
        errors[0].contains("z.yaml: document 2: invalid YAML: "),
        "{errors:?}"
    );
    assert!(errors[0].contains(" at line 7 column 1"), "{errors:?}");
}

#[test]
fn reports_every_error_at_once() {
    let dir = dir_with(&[
        ("base.yaml", BASE),
        ("a.yaml", &backend("{provider: OpenAI, endpoint: ftp://h}")),
        (
            "b.yaml",
            &format!(
                "{}---\n{}",
                rule("{backends: [{name: nope}]}"),
                gateway("{nodeCluster: g, listeners: [{name: a, port: 0}]}")
            ),
        ),
    ]);
    let errors = errors(&dir);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors[0].contains("a.yaml: document 1 (Backend \"b\"): spec.endpoint: "));
    assert!(
        errors[1].contains("b.yaml: document 1 (Route \"r\"): spec.rules[0].backends[0].name: ")
    );
    assert!(errors[2].contains("b.yaml: document 2 (Gateway \"g\"): spec.listeners[0].port: "));
    let joined = load(dir.path()).unwrap_err().to_string();
    assert_eq!(joined.lines().collect::<Vec<_>>(), errors);
}

#[test]
fn broken_object_does_not_cascade_into_missing_references() {
    // The backend fails to parse, but routes naming it should not also fail.
    let dir = base_with(&format!(
        "{}---\n{}",
        backend("{provider: Nope, endpoint: http://h}"),
        rule("{backends: [{name: b}]}")
    ));
    let errors = errors(&dir);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("spec.provider"));
}

fn full_config() -> TempDir {
    dir_with(&[
        (
            "gateways.yaml",
            r#"
# A leading comment is not a document.
apiVersion: tessera.dev/v1alpha1
kind: Gateway
metadata: {name: edge, namespace: ai, labels: {team: platform}}
spec:
  nodeCluster: edge-envoys
  caBundlePath: /etc/pki/ca.pem
  listeners:
    - {name: http, port: 8080}
    - {name: local, port: 8080, address: "::1"}
---
---
apiVersion: tessera.dev/v1alpha1
kind: Gateway
metadata: {name: internal}
spec:
  nodeCluster: internal
  listeners: [{name: http, port: 9090, address: 10.0.0.1}]
"#,
        ),
        (
            "backends.yml",
            r#"
apiVersion: tessera.dev/v1alpha1
kind: Backend
metadata: {name: openai}
spec: {provider: OpenAI, endpoint: "https://api.openai.com/", securityPolicy: openai-key}
---
apiVersion: tessera.dev/v1alpha1
kind: Backend
metadata: {name: claude}
spec:
  provider: Anthropic
  endpoint: https://anthropic.internal:8443
  securityPolicy: anthropic-key
  tls: {caFile: certs/ca.pem, sni: api.anthropic.com}
---
apiVersion: tessera.dev/v1alpha1
kind: Backend
metadata: {name: local}
spec: {provider: Generic, endpoint: "http://[::1]:11434"}
---
apiVersion: tessera.dev/v1alpha1
kind: Backend
metadata: {name: mistral}
spec: {provider: Mistral, endpoint: "http://mistral", securityPolicy: missing-secret}
"#,
        ),
        (
            "policies.yaml",
            r#"
apiVersion: tessera.dev/v1alpha1
kind: BackendSecurityPolicy
metadata: {name: openai-key}
spec: {type: APIKey, apiKey: {file: keys/openai.key}}
---
apiVersion: tessera.dev/v1alpha1
kind: BackendSecurityPolicy
metadata: {name: anthropic-key}
spec:
  type: APIKey
  apiKey:
    secretRef: {name: provider-keys, key: anthropic}
    header: x-api-key
    prefix: ""
---
apiVersion: tessera.dev/v1alpha1
kind: BackendSecurityPolicy
metadata: {name: missing-secret}
spec: {type: APIKey, apiKey: {secretRef: {name: nope, key: k}}}
---
apiVersion: tessera.dev/v1alpha1
kind: BackendSecurityPolicy
metadata: {name: missing-key}
spec: {type: APIKey, apiKey: {secretRef: {name: provider-keys, key: nope}}}
"#,
        ),
        (
            "secrets.yaml",
            &format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: provider-keys}}\ntype: Opaque\ndata: {{anthropic: {}}}\n",
                STANDARD.encode(" sk-ant-1\n")
            ),
        ),
        (
            "routes.yaml",
            r#"
apiVersion: tessera.dev/v1alpha1
kind: Route
metadata: {name: chat}
spec:
  gateway: edge
  rules:
    - matches:
        - pathPrefix: /v1/
          headers: [{name: x-ai-model, value: claude}]
        - headers: [{name: x-provider, value: anthropic}]
      backends: [{name: claude}]
    - backends: [{name: openai, weight: 3}, {name: local, weight: 0}, {name: mistral}]
"#,
        ),
        ("certs/ca.pem", PEM),
        ("keys/openai.key", "sk-openai\n"),
        // None of these are configuration.
        ("openai.key", "sk-not-yaml: ["),
        ("README.md", "# not yaml: ["),
        (".gateways.yaml.swp", "broken: ["),
        (".hidden.yaml", "broken: ["),
        ("gateways.yaml~", "broken: ["),
        ("#gateways.yaml#", "broken: ["),
        ("nested/more.yaml", "broken: ["),
    ])
}

#[test]
fn full_config_loads_into_the_model() {
    let dir = full_config();
    let d = dir.path();
    let loaded = load(d).unwrap_or_else(|e| panic!("{e}"));
    let names = [
        "backends.yml",
        "gateways.yaml",
        "policies.yaml",
        "routes.yaml",
        "secrets.yaml",
    ];
    assert_eq!(loaded.files, names.map(|n| d.join(n)));

    let listener = |name: &str, address: &str, port| Listener {
        name: name.into(),
        address: address.into(),
        port,
        max_request_bytes: crate::api::DEFAULT_MAX_REQUEST_BYTES,
    };
    let gateways = [
        Gateway {
            name: "edge".into(),
            node_cluster: "edge-envoys".into(),
            listeners: vec![
                listener("http", "0.0.0.0", 8080),
                listener("local", "::1", 8080),
            ],
            ca_bundle_path: "/etc/pki/ca.pem".into(),
            xds_clients: Vec::new(),
            client_auth: None,
        },
        Gateway {
            name: "internal".into(),
            node_cluster: "internal".into(),
            listeners: vec![listener("http", "10.0.0.1", 9090)],
            ca_bundle_path: "/etc/ssl/certs/ca-certificates.crt".into(),
            xds_clients: Vec::new(),
            client_auth: None,
        },
    ];
    let endpoint = |host: &str, port, tls| Endpoint {
        host: host.into(),
        port,
        tls,
    };
    let backends = [
        Backend {
            name: "openai".into(),
            provider: P::OpenAI,
            endpoint: endpoint("api.openai.com", 443, true),
            tls: Some(UpstreamTls {
                ca_pem: None,
                sni: None,
            }),
            security_policy: Some("openai-key".into()),
        },
        Backend {
            name: "claude".into(),
            provider: P::Anthropic,
            endpoint: endpoint("anthropic.internal", 8443, true),
            tls: Some(UpstreamTls {
                ca_pem: Some(PEM.into()),
                sni: Some("api.anthropic.com".into()),
            }),
            security_policy: Some("anthropic-key".into()),
        },
        Backend {
            name: "local".into(),
            provider: P::Generic,
            endpoint: endpoint("::1", 11434, false),
            tls: None,
            security_policy: None,
        },
        Backend {
            name: "mistral".into(),
            provider: P::Mistral,
            endpoint: endpoint("mistral", 80, false),
            tls: None,
            security_policy: Some("missing-secret".into()),
        },
    ];
    let policy = |name: &str, source, header: Option<&str>, prefix: Option<&str>| SecurityPolicy {
        name: name.into(),
        kind: PolicyKind::ApiKey(ApiKey {
            source,
            header: header.map(Into::into),
            prefix: prefix.map(Into::into),
        }),
    };
    let secret = |name: &str, key: &str, value: Option<&str>| KeySource::Secret {
        name: name.into(),
        key: key.into(),
        value: value.map(SecretString::new),
    };
    let policies = [
        policy(
            "openai-key",
            KeySource::File(d.join("keys/openai.key")),
            None,
            None,
        ),
        policy(
            "anthropic-key",
            secret("provider-keys", "anthropic", Some("sk-ant-1")),
            Some("x-api-key"),
            Some(""),
        ),
        policy("missing-secret", secret("nope", "k", None), None, None),
        policy(
            "missing-key",
            secret("provider-keys", "nope", None),
            None,
            None,
        ),
    ];
    let header = |name: &str, value: &str| HeaderMatch {
        name: name.into(),
        value: value.into(),
    };
    let weighted = |name: &str, weight| WeightedBackend {
        name: name.into(),
        weight,
        priority: 0,
    };
    let route = Route {
        name: "chat".into(),
        gateway: "edge".into(),
        rules: vec![
            Rule {
                matches: vec![
                    Match {
                        path_prefix: Some("/v1/".into()),
                        headers: vec![header("x-ai-model", "claude")],
                        model: None,
                    },
                    Match {
                        path_prefix: None,
                        headers: vec![header("x-provider", "anthropic")],
                        model: None,
                    },
                ],
                backends: vec![weighted("claude", 1)],
                retry: crate::model::Retry::once(),
                clients: None,
            },
            Rule {
                matches: vec![],
                backends: vec![
                    weighted("openai", 3),
                    weighted("local", 0),
                    weighted("mistral", 1),
                ],
                retry: crate::model::Retry::once(),
                clients: None,
            },
        ],
    };
    let expected = Model {
        gateways: gateways.map(|g| (g.name.clone(), g)).into(),
        backends: backends.map(|b| (b.name.clone(), b)).into(),
        policies: policies.map(|p| (p.name.clone(), p)).into(),
        routes: [(route.name.clone(), route)].into(),
    };
    assert_eq!(loaded.model, expected);
    // SecretString compares by value, but check the trimmed value explicitly.
    let PolicyKind::ApiKey(key) = &loaded.model.policies["anthropic-key"].kind else {
        panic!("an API key policy")
    };
    let KeySource::Secret {
        value: Some(value), ..
    } = &key.source
    else {
        panic!("{key:?}")
    };
    assert_eq!(value.expose(), "sk-ant-1");
}

#[test]
fn single_file_loads_and_missing_path_is_an_error() {
    let dir = full_config();
    let file = dir.path().join("gateways.yaml");
    let loaded = load(&file).unwrap();
    assert_eq!(loaded.files, [file]);
    assert_eq!(loaded.model.gateways.len(), 2);

    let missing = dir.path().join("nope");
    let e = load(&missing).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}: cannot read: ", missing.display())),
        "{e}"
    );
}

fn secret_value(model: &Model, policy: &str) -> Option<String> {
    let PolicyKind::ApiKey(key) = &model.policies[policy].kind else {
        panic!("an API key policy")
    };
    match &key.source {
        KeySource::Secret { value, .. } => value.as_ref().map(|v| v.expose().to_owned()),
        KeySource::File(_) => panic!("{policy} uses a file"),
    }
}

fn secret_policy(name: &str, secret: &str, key: &str) -> String {
    let spec = format!("{{type: APIKey, apiKey: {{secretRef: {{name: {secret}, key: {key}}}}}}}");
    format!("{V}\nkind: BackendSecurityPolicy\nmetadata: {{name: {name}}}\nspec: {spec}\n")
}

#[test]
fn string_data_wins_over_data() {
    let both = STANDARD.encode("from-data");
    // Kubernetes accepts base64 split over lines.
    let split = STANDARD.encode("from-data-only");
    let (head, tail) = split.split_at(8);
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\ndata:\n  both: {both}\n  data-only: {head}\n    {tail}\nstringData:\n  both: from-string-data\n  string-only: \" plain \"\n"
    );
    let policies = ["both", "data-only", "string-only", "absent"]
        .map(|k| secret_policy(k, "s", k))
        .join("---\n");
    let dir = dir_with(&[("secret.yaml", &secret), ("policies.yaml", &policies)]);
    let model = load(dir.path()).unwrap_or_else(|e| panic!("{e}")).model;
    assert_eq!(
        secret_value(&model, "both").as_deref(),
        Some("from-string-data")
    );
    assert_eq!(
        secret_value(&model, "data-only").as_deref(),
        Some("from-data-only")
    );
    assert_eq!(
        secret_value(&model, "string-only").as_deref(),
        Some("plain")
    );
    assert_eq!(secret_value(&model, "absent"), None);
}

#[test]
fn missing_secret_and_missing_key_file_are_revocations_not_errors() {
    let policies = [
        secret_policy("no-secret", "nope", "k"),
        policy("{type: APIKey, apiKey: {file: /does/not/exist.key}}"),
    ]
    .join("---\n");
    let dir = dir_with(&[("policies.yaml", &policies)]);
    let model = load(dir.path()).unwrap_or_else(|e| panic!("{e}")).model;
    assert_eq!(secret_value(&model, "no-secret"), None);
    let PolicyKind::ApiKey(key) = &model.policies["p"].kind else {
        panic!("an API key policy")
    };
    assert_eq!(key.source, KeySource::File("/does/not/exist.key".into()));
}

#[test]
fn secret_values_never_appear_in_errors_or_debug_output() {
    let secret = |name: &str, body: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\n{body}\n")
    };
    let mut non_utf8 = vec![0xff];
    non_utf8.extend_from_slice(b"SUPERSECRET");
    let broken = [
        secret("a", "data: {k: \"U1VQRVJTRUNSRVQ=!\"}"),
        secret("b", "data: {k: 987654321}"),
        secret("c", "data: SUPERSECRET"),
        secret("d", "stringData: {k: [SUPERSECRET]}"),
        secret(
            "e",
            &format!("data: {{k: \"{}\"}}", STANDARD.encode(non_utf8)),
        ),
        secret("f", "stringData: {k: {SUPERSECRET: 1}}"),
    ]
    .join("---\n");
    let text = load(dir_with(&[("s.yaml", &broken)]).path())
        .unwrap_err()
        .to_string();
    assert_eq!(text.lines().count(), 6, "{text}");
    for leak in ["SUPERSECRET", "U1VQRVJTRUNSRVQ", "987654321"] {
        assert!(!text.contains(leak), "{leak} leaked: {text}");
    }

    let valid = [
        secret(
            "s",
            &format!(
                "data: {{k: {}}}\nstringData: {{j: sk-live-SUPERSECRET}}",
                STANDARD.encode("sk-live-SUPERSECRET")
            ),
        ),
        secret_policy("p1", "s", "k"),
        secret_policy("p2", "s", "j"),
    ]
    .join("---\n");
    let dir = dir_with(&[("s.yaml", &valid)]);
    let loaded = load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        secret_value(&loaded.model, "p1").as_deref(),
        Some("sk-live-SUPERSECRET")
    );
    let debug = format!("{loaded:?} {:#?}", loaded.model);
    let json = serde_json::to_string(&loaded.model).unwrap();
    let parsed: api::Secret = serde_yaml::from_str(valid.split("---\n").next().unwrap()).unwrap();
    let api_debug = format!("{parsed:?}");
    for text in [debug, json, api_debug] {
        assert!(!text.contains("SUPERSECRET"), "{text}");
        assert!(!text.contains("c2stbGl2ZS1TVVBFUlNFQ1JFVA"), "{text}");
    }
}

#[test]
fn endpoints_parse() {
    let ok = [
        ("https://api.openai.com", "api.openai.com", 443, true),
        ("https://api.openai.com/", "api.openai.com", 443, true),
        ("http://example.com", "example.com", 80, false),
        ("http://127.0.0.1:18080", "127.0.0.1", 18080, false),
        ("https://[2001:db8::1]:8443", "2001:db8::1", 8443, true),
        ("http://[::1]", "::1", 80, false),
        (
            "http://my_host.internal:65535",
            "my_host.internal",
            65535,
            false,
        ),
    ];
    for (input, host, port, tls) in ok {
        let endpoint = parse_endpoint(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(
            endpoint,
            Endpoint {
                host: host.into(),
                port,
                tls
            },
            "{input}"
        );
    }
    for bad in [
        "http://999.1.1.1",
        "http://-a.com",
        "http://a..b",
        "http://[::1",
        "http://[::1]x",
        "https://h:1:2",
    ] {
        assert!(parse_endpoint(bad).is_err(), "{bad}");
    }
}

#[test]
fn example_config_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example");
    let loaded = load(&dir).unwrap_or_else(|e| panic!("{e}"));
    let model = loaded.model;
    assert_eq!(loaded.files.len(), 3);
    let gateway = &model.gateways["ai-gateway"];
    assert_eq!(gateway.node_cluster, "ai-gateway");
    assert_eq!(
        gateway.listeners,
        [Listener {
            name: "http".into(),
            address: "127.0.0.1".into(),
            port: 10000,
            max_request_bytes: crate::api::DEFAULT_MAX_REQUEST_BYTES,
        }]
    );
    for (backend, provider) in [("openai", P::OpenAI), ("anthropic", P::Anthropic)] {
        let b = &model.backends[backend];
        assert_eq!(
            (b.provider, b.endpoint.authority(), b.tls.as_ref()),
            (provider, "127.0.0.1:18080".into(), None)
        );
        let PolicyKind::ApiKey(key) = &model.policies[b.security_policy.as_deref().unwrap()].kind
        else {
            panic!("an API key policy")
        };
        let KeySource::File(file) = &key.source else {
            panic!("{key:?}")
        };
        assert_eq!(file, &dir.join(format!("{backend}.key")));
        assert!(
            fs::read_to_string(file)
                .unwrap()
                .starts_with(&format!("sk-demo-{backend}-"))
        );
    }
    let rules = &model.routes["chat"].rules;
    let summary: Vec<_> = rules
        .iter()
        .map(|r| {
            (
                r.matches[0].path_prefix.as_deref(),
                r.matches[0].headers[0].value.as_str(),
                r.backends[0].name.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (Some("/v1/"), "gpt-4o-mini", "openai"),
            (Some("/v1/"), "claude-3-5-haiku", "anthropic")
        ]
    );
}

#[test]
fn aws_signed_backends_need_one_host_per_rule() {
    let bedrock = |name: &str, region: &str| {
        format!(
            "{V}\nkind: Backend\nmetadata: {{name: {name}}}\nspec: {{provider: AWSBedrock, endpoint: https://bedrock-runtime.{region}.amazonaws.com, securityPolicy: p}}\n"
        )
    };
    let aws_policy = policy(
        "{type: AWSCredentials, awsCredentials: {region: us-east-1, credentialsFile: creds}}",
    );
    let rule = route("{gateway: gw, rules: [{backends: [{name: east}, {name: west}]}]}");
    let aws = [
        aws_policy,
        bedrock("east", "us-east-1"),
        bedrock("west", "us-west-2"),
        rule,
    ]
    .join("---\n");
    let found = errors(&base_with(&aws));
    assert!(
        found
            .iter()
            .any(|e| e.contains("spec.rules[0].backends: a backend signed with AWSCredentials")),
        "{found:#?}"
    );
    // AWS credentials only sign for Bedrock.
    let openai = format!(
        "{}---\n{}",
        policy(
            "{type: AWSCredentials, awsCredentials: {region: us-east-1, credentialsFile: creds}}"
        ),
        backend("{provider: OpenAI, endpoint: https://api.openai.com, securityPolicy: p}"),
    );
    let found = errors(&base_with(&openai));
    assert!(
        found
            .iter()
            .any(|e| e.contains("spec.securityPolicy: AWSCredentials sign for Bedrock")),
        "{found:#?}"
    );
}

#[test]
fn xds_clients_load_in_order() {
    let doc = gateway(
        r#"{nodeCluster: payments-gw, listeners: [], xdsClients: [
            {spiffe: "spiffe://corp.example/ns/payments/sa/envoy"},
            {dnsName: "*.Payments.corp.example"},
            {serviceAccount: {namespace: payments, name: envoy}}]}"#,
    );
    let dir = dir_with(&[("g.yaml", &doc)]);
    let loaded = load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    use crate::model::XdsClient;
    assert_eq!(
        loaded.model.gateways["g"].xds_clients,
        [
            XdsClient::Spiffe("spiffe://corp.example/ns/payments/sa/envoy".into()),
            XdsClient::DnsName("*.payments.corp.example".into()),
            XdsClient::ServiceAccount {
                namespace: "payments".into(),
                name: "envoy".into()
            },
        ]
    );
}
