use super::*;
use crate::credentials::{Closed, CredentialState};
use crate::xds::GatewayConfig;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

fn state_with_gateway(gateway: &str) -> AppState {
    let state = AppState::default();
    let gateways = HashMap::from([(gateway.to_owned(), Arc::new(GatewayConfig::default()))]);
    state.cache.publish_with(gateways, [], true);
    state
}

/// The samples of `family`, as (labels, value) lines.
fn samples<'a>(body: &'a str, family: &str) -> Vec<&'a str> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(family))
        .collect()
}

#[test]
fn connected_nodes_fold_unknown_clusters_and_never_name_a_node() {
    let state = state_with_gateway("gw");
    let r = &state.registry;
    r.open("node-secret-id-1", "gw", false);
    r.open("node-secret-id-2", "gw", true);
    r.open("node-secret-id-3", "gw", true);
    r.open("node-secret-id-4", "attacker-chosen-1", false);
    r.open("node-secret-id-5", "attacker-chosen-2", false);
    let body = render(&state, SystemTime::now());
    let nodes = samples(&body, "tessera_xds_connected_nodes");
    assert_eq!(
        nodes,
        [
            r#"tessera_xds_connected_nodes{gateway="_unknown",mode="sotw"} 2"#,
            r#"tessera_xds_connected_nodes{gateway="gw",mode="delta"} 2"#,
            r#"tessera_xds_connected_nodes{gateway="gw",mode="sotw"} 1"#,
        ]
    );
    assert!(!body.contains("node-secret-id"), "{body}");
    assert!(!body.contains("attacker-chosen"), "{body}");
}

#[test]
fn a_gateway_without_nodes_reports_zero_in_both_modes() {
    let body = render(&state_with_gateway("gw"), SystemTime::now());
    assert_eq!(
        samples(&body, "tessera_xds_connected_nodes"),
        [
            r#"tessera_xds_connected_nodes{gateway="gw",mode="delta"} 0"#,
            r#"tessera_xds_connected_nodes{gateway="gw",mode="sotw"} 0"#,
        ]
    );
}

#[test]
fn nacks_are_counted_by_fixed_type() {
    let state = AppState::default();
    state.registry.count_nack("sds");
    state.registry.count_nack("sds");
    state.registry.count_nack("unknown");
    let body = render(&state, SystemTime::now());
    let nacks = samples(&body, "tessera_xds_nacks_total");
    assert!(nacks.contains(&r#"tessera_xds_nacks_total{type="sds"} 2"#));
    assert!(nacks.contains(&r#"tessera_xds_nacks_total{type="cds"} 0"#));
    assert!(nacks.contains(&r#"tessera_xds_nacks_total{type="unknown"} 1"#));
    assert_eq!(nacks.len(), 6);
}

#[test]
fn credentials_report_state_expiry_and_attempts_without_their_errors() {
    let state = AppState::default();
    let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
    state.board.set(
        "credential/aws",
        CredentialState::Failing("STS: sk-leaked-in-an-error".into()),
        Some(now + Duration::from_secs(300)),
    );
    state.board.set(
        "credential/key",
        CredentialState::Closed(Closed::Pending),
        None,
    );
    state.metrics.credential_attempts.insert("aws".into(), 3);
    state
        .metrics
        .credential_failures
        .insert(("aws".into(), "sts"), 2);
    let body = render(&state, now);
    assert!(!body.contains("sk-leaked"), "{body}");
    let states = samples(&body, "tessera_credential_state");
    assert_eq!(states.len(), 2 * STATES.len(), "every state of each credential");
    assert!(states.contains(&r#"tessera_credential_state{credential="aws",state="failing"} 1"#));
    assert!(states.contains(&r#"tessera_credential_state{credential="aws",state="present"} 0"#));
    assert!(states.contains(&r#"tessera_credential_state{credential="key",state="pending"} 1"#));
    assert_eq!(
        samples(&body, "tessera_credential_seconds_to_expiry"),
        [r#"tessera_credential_seconds_to_expiry{credential="aws"} 300"#]
    );
    assert_eq!(
        samples(&body, "tessera_credential_expiry_timestamp_seconds"),
        [r#"tessera_credential_expiry_timestamp_seconds{credential="aws"} 1000300"#]
    );
    assert_eq!(
        samples(&body, "tessera_credential_refresh_attempts_total"),
        [r#"tessera_credential_refresh_attempts_total{credential="aws"} 3"#]
    );
    assert_eq!(
        samples(&body, "tessera_credential_refresh_failures_total"),
        [r#"tessera_credential_refresh_failures_total{credential="aws",reason="sts"} 2"#]
    );
}

#[test]
fn label_values_from_configuration_are_escaped() {
    let state = AppState::default();
    state.board.set(
        "credential/a\"b\\c\nd",
        CredentialState::Present,
        None,
    );
    let body = render(&state, SystemTime::now());
    assert!(
        body.contains(r#"tessera_credential_state{credential="a\"b\\c\nd",state="present"} 1"#),
        "{body}"
    );
}

#[test]
fn every_family_has_help_and_type() {
    let state = state_with_gateway("gw");
    state.board.set("credential/k", CredentialState::Present, None);
    let body = render(&state, SystemTime::now());
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let family = line.split(['{', ' ']).next().unwrap();
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "{family} has no TYPE"
        );
    }
}
