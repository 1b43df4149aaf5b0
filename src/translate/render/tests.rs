use super::*;
use crate::model::{AwsKeys, SecretString};
use crate::translate::secret::generic_secret;
use crate::translate::signer::signer_config;
use crate::xds::resource::to_any;
use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    GenericSecret, Secret, TlsCertificate, secret,
};
use envoy_types::pb::google::protobuf::Any;
use std::path::{Path, PathBuf};

/// The descriptor set envoy-types ships, for the version Cargo.lock pins.
fn upstream_descriptor_set() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lock = std::fs::read_to_string(manifest.join("Cargo.lock")).unwrap();
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"envoy-types\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .and_then(|v| v.strip_suffix('"'))
        .expect("envoy-types in Cargo.lock");
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .expect("CARGO_HOME or HOME");
    let registry = cargo_home.join("registry/src");
    let wanted = format!("envoy-types-{version}/src/generated/types.bin");
    std::fs::read_dir(&registry)
        .unwrap_or_else(|e| panic!("{}: {e}", registry.display()))
        .filter_map(|index| Some(index.ok()?.path().join(&wanted)))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no {wanted} under {}", registry.display()))
}

#[test]
fn descriptor_set_is_the_closure_of_the_roots() {
    let full = std::fs::read(upstream_descriptor_set()).unwrap();
    let regenerated = descriptors::closure(&full, descriptors::ROOTS).unwrap();
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/translate/render/envoy.binpb");
    if std::env::var_os("TESSERA_UPDATE_DESCRIPTORS").is_some() {
        std::fs::write(&committed, &regenerated).unwrap();
        println!(
            "wrote {} ({} bytes)",
            committed.display(),
            regenerated.len()
        );
        return;
    }
    assert!(
        regenerated == descriptors::ENCODED,
        "src/translate/render/envoy.binpb ({} bytes) is stale ({} bytes expected): run \
         `TESSERA_UPDATE_DESCRIPTORS=1 cargo test --lib descriptor_set`",
        descriptors::ENCODED.len(),
        regenerated.len()
    );
}

#[test]
fn every_served_type_and_root_is_in_the_pool() {
    let pool = descriptors::pool().unwrap();
    let served = type_url::ALL.map(|url| url.rsplit('/').next().unwrap());
    for name in served.iter().chain(descriptors::ROOTS) {
        assert!(pool.get_message_by_name(name).is_some(), "{name} missing");
    }
    for url in type_url::ALL {
        assert!(
            descriptors::ROOTS.contains(&url.rsplit('/').next().unwrap()),
            "{url} is served but not a root"
        );
    }
}

#[test]
fn a_type_missing_from_the_pool_fails_naming_it() {
    let config = TypedExtensionConfig {
        name: "x".into(),
        typed_config: Some(Any {
            type_url: "type.googleapis.com/tessera.test.NotInThePool".into(),
            value: vec![],
        }),
    };
    let err = resource(&Resource::new("x", &config)).unwrap_err();
    assert_eq!(
        err,
        RenderError::MissingType("tessera.test.NotInThePool".into())
    );
    assert!(
        err.to_string().contains("tessera.test.NotInThePool"),
        "{err}"
    );
}

#[test]
fn a_field_the_descriptors_do_not_know_fails() {
    let mut r = (*Resource::new("x", &TypedExtensionConfig::default())).clone();
    // Field 4000, varint 1: what a newer envoy-types could emit.
    r.any.value.extend([0x80, 0xfa, 0x01, 0x01]);
    match resource(&r) {
        Err(RenderError::UnknownFields { numbers, .. }) => assert_eq!(numbers, [4000]),
        other => panic!("{other:?}"),
    }
}

fn secret_json(r: &Arc<Resource>) -> String {
    serde_json::to_string(&resource(r).unwrap()).unwrap()
}

#[test]
fn secret_values_are_redacted_and_empty_ones_shown() {
    let key = SecretString::new("sk-live-123");
    let present = secret_json(&generic_secret("credential/k", Some(&key)));
    assert_eq!(
        present,
        r#"{"@type":"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret","genericSecret":{"secret":{"inlineString":"<redacted>"}},"name":"credential/k"}"#
    );
    let revoked = secret_json(&generic_secret("credential/k", None));
    assert!(revoked.contains(r#""inlineString":"""#), "{revoked}");
}

#[test]
fn every_aws_inline_credential_field_is_redacted() {
    let keys = AwsKeys {
        access_key_id: "AKIAEXAMPLE".into(),
        secret_access_key: SecretString::new("wJalr"),
        session_token: Some(SecretString::new("FwoG")),
    };
    let json = resource(&signer_config("credential/aws", "eu-west-1", &keys)).unwrap();
    let inline = &json["typedConfig"]["credentialProvider"]["inlineCredential"];
    for field in ["accessKeyId", "secretAccessKey", "sessionToken"] {
        assert_eq!(inline[field], REDACTED, "{field}");
    }
    assert_eq!(json["typedConfig"]["region"], "eu-west-1");
}

#[test]
fn sensitive_fields_are_redacted_wherever_they_are() {
    // Tessera does not serve certificates yet; the redaction follows the protos, not a list.
    let inline = |s: &str| DataSource {
        specifier: Some(Specifier::InlineBytes(s.as_bytes().to_vec())),
        ..Default::default()
    };
    let cert = Secret {
        name: "tls".into(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline("PUBLIC")),
            private_key: Some(inline("PRIVATE")),
            ..Default::default()
        })),
    };
    let json = resource(&Resource::new("tls", &cert)).unwrap();
    let tls = &json["tlsCertificate"];
    assert_eq!(tls["privateKey"]["inlineBytes"], REDACTED);
    // Not sensitive: shown (base64 of "PUBLIC").
    assert_eq!(tls["certificateChain"]["inlineBytes"], "UFVCTElD");
    // Inside an Any, too.
    let wrapped = TypedExtensionConfig {
        name: "w".into(),
        typed_config: Some(to_any(&GenericSecret {
            secret: Some(inline("PRIVATE")),
            ..Default::default()
        })),
    };
    let json = resource(&Resource::new("w", &wrapped)).unwrap();
    assert_eq!(json["typedConfig"]["secret"]["inlineBytes"], REDACTED);
}
