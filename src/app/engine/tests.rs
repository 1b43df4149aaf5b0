//! The engine with real credential tasks: what reaches the cache, the board and the metrics.

use super::*;
use crate::credentials::CredentialState;
use crate::model::*;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use prost::Message;
use std::time::{Duration, Instant};

const NAME: &str = "credential/openai-key";

/// One gateway routing to one backend whose policy `openai-key` is `kind`.
fn model(kind: PolicyKind) -> Model {
    let mut m = Model::default();
    m.gateways.insert(
        "gw".into(),
        Gateway {
            name: "gw".into(),
            node_cluster: "edge".into(),
            listeners: vec![Listener {
                name: "http".into(),
                address: "127.0.0.1".into(),
                port: 10000,
                max_request_bytes: crate::api::DEFAULT_MAX_REQUEST_BYTES,
            }],
            ca_bundle_path: "/etc/ssl/certs/ca-certificates.crt".into(),
            xds_clients: Vec::new(),
            client_auth: None,
        },
    );
    m.backends.insert(
        "openai".into(),
        Backend {
            name: "openai".into(),
            provider: Provider::OpenAI,
            endpoint: Endpoint {
                host: "127.0.0.1".into(),
                port: 9,
                tls: false,
            },
            tls: None,
            security_policy: Some("openai-key".into()),
        },
    );
    m.policies.insert(
        "openai-key".into(),
        SecurityPolicy {
            name: "openai-key".into(),
            kind,
        },
    );
    m.routes.insert(
        "chat".into(),
        Route {
            name: "chat".into(),
            gateway: "gw".into(),
            rules: vec![Rule {
                matches: vec![],
                backends: vec![WeightedBackend {
                    name: "openai".into(),
                    weight: 1,
                    priority: 0,
                }],
                retry: crate::model::Retry::once(),
                clients: None,
            }],
        },
    );
    m
}

fn key_file(path: &Path) -> PolicyKind {
    PolicyKind::ApiKey(ApiKey {
        source: KeySource::File(path.to_owned()),
        header: None,
        prefix: None,
    })
}

/// Entra ID at a loopback port nobody listens on: every mint fails at once.
fn azure() -> PolicyKind {
    PolicyKind::Azure(Box::new(AzureCredentials {
        tenant_id: "t".into(),
        client_id: "c".into(),
        auth: AzureAuth::ClientSecret(KeySource::Secret {
            name: "s".into(),
            key: "k".into(),
            value: Some(SecretString::new("client-secret")),
        }),
        authority_host: "https://127.0.0.1:1".into(),
        ca_pem: None,
        scope: "https://cognitiveservices.azure.com/.default".into(),
        refresh: RefreshPolicy::default(),
    }))
}

fn engine() -> Engine {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let key = crate::xds::resource::VersionKey::new(&[7; 32]);
    Engine::new(Arc::new(AppState::default()), reqwest::Client::new(), key)
}

/// The served secret's value ("" when failing closed).
fn served(engine: &Engine) -> Option<String> {
    let state = engine.state.cache.state();
    let resource = state.credentials.get(NAME)?;
    let secret = Secret::decode(resource.any.value.as_slice()).unwrap();
    let Some(secret::Type::GenericSecret(g)) = secret.r#type else {
        panic!("not a generic secret")
    };
    match g.secret?.specifier? {
        Specifier::InlineString(s) => Some(s),
        _ => None,
    }
}

fn updates(engine: &Engine) -> u64 {
    engine
        .state
        .metrics
        .credential_updates
        .load(Ordering::Relaxed)
}

async fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn key_files_are_published_counted_and_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openai.key");
    std::fs::write(&path, "sk-1\n").unwrap();
    let mut engine = engine();
    let m = model(key_file(&path));
    engine.apply(&m, true);
    assert_eq!(served(&engine).as_deref(), Some("sk-1"));
    assert_eq!(updates(&engine), 1);
    assert_eq!(
        engine.state.board.get(NAME).unwrap().state,
        CredentialState::Present
    );
    // The same model again: nothing new is pushed or counted.
    engine.apply(&m, true);
    assert_eq!(updates(&engine), 1);
    assert!(engine.is_key_file(&path));

    std::fs::write(&path, "sk-2\n").unwrap();
    engine.reread_key(&path);
    until("the rotated key", || {
        (served(&engine).as_deref() == Some("sk-2")).then_some(())
    })
    .await;
    assert_eq!(updates(&engine), 2);

    std::fs::remove_file(&path).unwrap();
    engine.reread_key(&path);
    until("the revocation", || {
        (served(&engine).as_deref() == Some("")).then_some(())
    })
    .await;
    assert_eq!(updates(&engine), 3);
    let status = engine.state.board.get(NAME).unwrap();
    assert_eq!(
        status.state,
        CredentialState::Closed(Closed::Revoked(
            crate::credentials::Revocation::FileMissing(path.clone())
        ))
    );
}

#[tokio::test]
async fn a_minted_credential_waits_failing_closed_and_a_static_successor_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openai.key");
    std::fs::write(&path, "sk-1\n").unwrap();
    let mut engine = engine();
    engine.apply(&model(azure()), true);
    // Published with the cluster, failing closed, before the first mint.
    assert_eq!(served(&engine).as_deref(), Some(""));
    until("the failed mint", || {
        let s = engine.state.board.get(NAME)?;
        matches!(s.state, CredentialState::Closed(Closed::Unavailable(_))).then_some(())
    })
    .await;

    // The same policy becomes a key file: the stopped minter must not silence its reader.
    engine.apply(&model(key_file(&path)), true);
    assert_eq!(served(&engine).as_deref(), Some("sk-1"));
    std::fs::write(&path, "sk-2\n").unwrap();
    engine.reread_key(&path);
    until("the rotated key", || {
        (served(&engine).as_deref() == Some("sk-2")).then_some(())
    })
    .await;
    assert_eq!(
        engine.state.board.get(NAME).unwrap().state,
        CredentialState::Present
    );
}

/// The client ids the served client-key config of gateway `gw` holds.
fn served_clients(engine: &Engine) -> Option<Vec<String>> {
    use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
    use envoy_types::pb::envoy::extensions::filters::http::api_key_auth::v3::ApiKeyAuth;
    let state = engine.state.cache.state();
    let resource = state.credentials.get("credential/gw/clients")?;
    let config = TypedExtensionConfig::decode(resource.any.value.as_slice()).unwrap();
    let auth = ApiKeyAuth::decode(config.typed_config?.value.as_slice()).unwrap();
    Some(auth.credentials.into_iter().map(|c| c.client).collect())
}

#[tokio::test]
async fn client_keys_are_a_credential_of_their_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let openai = dir.path().join("openai.key");
    let clients = dir.path().join("clients.yaml");
    std::fs::write(&openai, "sk-1\n").unwrap();
    std::fs::write(&clients, "team-a: sk-a\n").unwrap();
    let mut m = model(key_file(&openai));
    for g in m.gateways.values_mut() {
        g.client_auth = Some(ClientAuth {
            api_keys: Some(ClientKeySource::File(clients.clone())),
            jwt: None,
            client_id_header: None,
        });
    }
    let mut engine = engine();
    engine.apply(&m, true);
    assert_eq!(served_clients(&engine).unwrap(), ["team-a"]);
    assert!(engine.is_key_file(&clients));
    assert_eq!(
        engine
            .state
            .board
            .get("credential/gw/clients")
            .unwrap()
            .state,
        CredentialState::Present
    );

    std::fs::write(&clients, "team-a: sk-a\nteam-b: sk-b\n").unwrap();
    engine.reread_key(&clients);
    until("the added client", || {
        (served_clients(&engine)? == ["team-a", "team-b"]).then_some(())
    })
    .await;
    std::fs::remove_file(&clients).unwrap();
    engine.reread_key(&clients);
    until("every key revoked", || {
        served_clients(&engine)?.is_empty().then_some(())
    })
    .await;

    // Without clientAuth the config is no longer served, nor shown.
    engine.apply(&model(key_file(&openai)), true);
    assert!(served_clients(&engine).is_none());
    assert!(engine.state.board.get("credential/gw/clients").is_none());
}

#[tokio::test]
async fn refresh_rereads_a_key_file_and_reports_what_it_set_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openai.key");
    std::fs::write(&path, "sk-1\n").unwrap();
    let mut engine = engine();
    engine.apply(&model(key_file(&path)), true);
    let info = engine.state.credentials.read().unwrap()["openai-key"].clone();
    assert_eq!((info.resource.as_str(), info.kind), (NAME, "api_key"));
    let first = engine.state.registry.credentials.progress(NAME).unwrap();
    assert_eq!(first.publications, 1);

    // No file event: only the refresh makes the reader look.
    std::fs::write(&path, "sk-2\n").unwrap();
    let RefreshStarted::Rereading(read) = engine.refresh("openai-key") else {
        panic!("a key file is re-read");
    };
    tokio::time::timeout(Duration::from_secs(5), read.wait())
        .await
        .unwrap();
    assert_eq!(served(&engine).as_deref(), Some("sk-2"));
    let second = engine.state.registry.credentials.progress(NAME).unwrap();
    assert_eq!(second.publications, 2);
    assert_ne!(second.version, first.version);
    assert!(matches!(engine.refresh("nope"), RefreshStarted::NotFound));
}

#[tokio::test]
async fn refresh_of_a_minted_credential_asks_its_task() {
    let mut engine = engine();
    engine.apply(&model(azure()), true);
    // Minting now is the supervisor's part (supervisor tests); here: the request reaches it.
    assert!(matches!(
        engine.refresh("openai-key"),
        RefreshStarted::Minting
    ));
    assert_eq!(
        engine.state.credentials.read().unwrap()["openai-key"].kind,
        "azure"
    );
}
