//! `clientAuth` on Gateways and `clients` on Route rules.

use super::*;
use crate::model::{ClientKeySource, Jwks};

const JWKS: &str = r#"{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}"#;

#[test]
fn client_auth_rules_name_their_field() {
    let cases = [
        (
            gateway("{nodeCluster: g, listeners: [], clientAuth: {}}"),
            "spec.clientAuth: needs apiKeys, jwt or both",
        ),
        (
            gateway("{nodeCluster: g, listeners: [], clientAuth: {apiKeys: {}}}"),
            "spec.clientAuth.apiKeys: needs exactly one of file and secretRef",
        ),
        (
            gateway(
                "{nodeCluster: g, listeners: [], clientAuth: {apiKeys: {file: k.yaml}, clientIdHeader: authorization}}",
            ),
            "spec.clientAuth.clientIdHeader: \"authorization\" is not a lowercase HTTP header name Tessera may set",
        ),
        (
            gateway(
                "{nodeCluster: g, listeners: [], clientAuth: {jwt: {issuer: i, jwks: {uri: ftp://idp/jwks}}}}",
            ),
            "spec.clientAuth.jwt.jwks.uri: \"ftp://idp/jwks\" must start with http:// or https://",
        ),
        (
            rule("{clients: [team a], backends: [{name: openai}]}"),
            "spec.rules[0].clients[0]: \"team a\" is not a client id (printable ASCII, no spaces)",
        ),
    ];
    for (yaml, expected) in cases {
        expect_one_error(&yaml, expected);
    }
    let not_jwks = gateway(
        "{nodeCluster: g, listeners: [], clientAuth: {jwt: {issuer: i, jwks: {file: ca.pem}}}}",
    );
    let errors = errors(&base_with(&not_jwks));
    assert!(
        errors.len() == 1
            && errors[0].contains("spec.clientAuth.jwt.jwks.file: ")
            && errors[0].contains("ca.pem is not JSON"),
        "{errors:#?}"
    );
}

#[test]
fn client_auth_loads_and_its_key_file_is_not_configuration() {
    let gw = r#"apiVersion: tessera.dev/v1alpha1
kind: Gateway
metadata: {name: gw}
spec:
  nodeCluster: gw
  listeners: [{name: http, port: 10000}]
  clientAuth:
    apiKeys: {file: client-keys.yaml}
    jwt: {issuer: "https://idp.example", audiences: [ai-gateway], jwks: {file: jwks.json}}
---
apiVersion: tessera.dev/v1alpha1
kind: Gateway
metadata: {name: remote}
spec:
  nodeCluster: remote
  listeners: [{name: http, port: 10001}]
  clientAuth:
    apiKeys: {secretRef: {name: team-keys}}
    jwt: {issuer: "https://idp.example", jwks: {uri: "https://idp.example:8443/keys"}, clientClaim: azp}
---
apiVersion: v1
kind: Secret
metadata: {name: team-keys}
stringData: {team-a: sk-a}
"#;
    let dir = dir_with(&[
        ("gw.yaml", gw),
        ("client-keys.yaml", "team-a: sk-a\n"),
        ("jwks.json", JWKS),
    ]);
    let loaded = load(dir.path()).unwrap();
    assert!(!loaded.files.iter().any(|f| f.ends_with("client-keys.yaml")));
    let auth = loaded.model.gateways["gw"].client_auth.clone().unwrap();
    assert_eq!(
        auth.api_keys,
        Some(ClientKeySource::File(dir.path().join("client-keys.yaml")))
    );
    let jwt = auth.jwt.unwrap();
    assert_eq!(jwt.client_claim, "sub");
    assert_eq!(jwt.audiences, ["ai-gateway"]);
    assert_eq!(jwt.jwks, Jwks::Inline(JWKS.to_owned()));
    let remote = loaded.model.gateways["remote"].client_auth.clone().unwrap();
    let Some(ClientKeySource::Secret {
        keys: Some(keys), ..
    }) = remote.api_keys
    else {
        panic!("{remote:?}");
    };
    assert_eq!(keys["team-a"].expose(), "sk-a");
    let jwt = remote.jwt.unwrap();
    assert_eq!(jwt.client_claim, "azp");
    let Jwks::Remote { endpoint, tls, .. } = jwt.jwks else {
        panic!("{:?}", jwt.jwks);
    };
    assert_eq!(
        (endpoint.host.as_str(), endpoint.port),
        ("idp.example", 8443)
    );
    assert!(tls.is_some());
    let shown = format!("{:?}", loaded.model);
    assert!(!shown.contains("sk-a"), "{shown}");
}
