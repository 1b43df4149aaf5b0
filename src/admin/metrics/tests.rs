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
    assert_eq!(
        states.len(),
        2 * STATES.len(),
        "every state of each credential"
    );
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
    state
        .board
        .set("credential/a\"b\\c\nd", CredentialState::Present, None);
    let body = render(&state, SystemTime::now());
    assert!(
        body.contains(r#"tessera_credential_state{credential="a\"b\\c\nd",state="present"} 1"#),
        "{body}"
    );
}

#[test]
fn every_family_has_help_and_type() {
    let state = state_with_gateway("gw");
    state
        .board
        .set("credential/k", CredentialState::Present, None);
    let body = render(&state, SystemTime::now());
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let sample = line.split(['{', ' ']).next().unwrap();
        // A histogram's samples carry a suffix after the family's name.
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| sample.strip_suffix(suffix))
            .find(|base| body.contains(&format!("# TYPE {base} histogram")))
            .unwrap_or(sample);
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "{family} has no TYPE"
        );
    }
}

/// Every `tessera_*` name in `text`.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("tessera_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Every family `render` can emit (with a credential and a gateway so none is empty).
fn families() -> String {
    let state = state_with_gateway("gw");
    state.board.set(
        "credential/k",
        CredentialState::Present,
        Some(SystemTime::now()),
    );
    state.metrics.credential_attempts.insert("k".into(), 1);
    state
        .metrics
        .credential_failures
        .insert(("k".into(), "sts"), 1);
    render(&state, SystemTime::now())
}

#[test]
fn the_alert_rules_parse_and_use_only_rendered_metrics() {
    let text = include_str!("../../../config/observability/alerts.yaml");
    let rules: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
    let rules = rules["groups"][0]["rules"].as_sequence().unwrap();
    let body = families();
    let alerts: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    for wanted in [
        "TesseraCredentialExpiringWhileRefreshFails",
        "TesseraXdsNacks",
        "TesseraGatewayWithoutNodes",
        "TesseraXdsNodesStale",
    ] {
        assert!(alerts.contains(&wanted), "{wanted} missing: {alerts:?}");
    }
    for rule in rules {
        let expr = rule["expr"].as_str().unwrap();
        assert!(!metric_names(expr).is_empty(), "{expr}");
        for name in metric_names(expr) {
            assert!(
                body.contains(&format!("# TYPE {name} ")),
                "{} uses {name}, which /metrics does not render",
                rule["alert"].as_str().unwrap()
            );
        }
    }
}

#[test]
fn the_dashboard_parses_and_uses_only_rendered_metrics() {
    let text = include_str!("../../../config/observability/grafana-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(text).unwrap();
    let body = families();
    let exprs: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    let used: Vec<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    for name in &used {
        // A histogram's buckets are named after its family.
        let histogram = name
            .strip_suffix("_bucket")
            .is_some_and(|base| body.contains(&format!("# TYPE {base} histogram")));
        assert!(
            histogram || body.contains(&format!("# TYPE {name} ")),
            "{name}"
        );
    }
    for name in [
        "tessera_credential_seconds_to_expiry",
        "tessera_credential_state",
        "tessera_credential_refresh_failures_total",
        "tessera_xds_connected_nodes",
        "tessera_xds_nacks_total",
        "tessera_xds_stale_nodes",
        "tessera_credential_propagation_seconds_bucket",
    ] {
        assert!(
            used.iter().any(|u| u == name),
            "{name} not on the dashboard"
        );
    }
}

#[test]
fn stale_nodes_count_updates_unanswered_for_over_a_minute() {
    let state = state_with_gateway("gw");
    let r = &state.registry;
    let now = crate::xds::status::unix_ms(SystemTime::now());
    let stale_for = |node: &str, ms: u64| {
        let id = r.open(node, "gw", false);
        r.update(id, "cds", |t| {
            t.sent = "2".into();
            t.acked = "1".into();
            t.sent_unix_ms = now - ms;
        });
    };
    stale_for("fresh", 5_000);
    stale_for("stuck-1", 61_000);
    stale_for("stuck-2", 3_600_000);
    let nacked = r.open("nacked", "gw", false);
    r.update(nacked, "lds", |t| {
        t.sent = "2".into();
        t.nacked = "2".into();
        t.sent_unix_ms = now - 120_000;
    });
    let body = render(&state, SystemTime::now());
    assert_eq!(
        samples(&body, "tessera_xds_stale_nodes"),
        [r#"tessera_xds_stale_nodes{gateway="gw"} 2"#],
        "a NACK is not staleness (it has its own alert)"
    );
}

#[test]
fn propagation_is_a_histogram_per_share_of_nodes() {
    use crate::xds::Resource;
    use crate::xds::resource::type_url::SECRET;
    let state = AppState::default();
    let tracker = &state.registry.credentials;
    let r = |v: &str| Resource::from_parts("credential/k", v, Default::default());
    tracker.published("credential/k", "k", "00000000000000a1");
    tracker.sent(1, "1", SECRET, &[&r("00000000000000a1")], true);
    tracker.acked(1, "1");
    tracker.published("credential/k", "k", "00000000000000b2");
    tracker.sent(1, "2", SECRET, &[&r("00000000000000b2")], true);
    tracker.acked(1, "2");
    let body = render(&state, SystemTime::now());
    for share in ["50", "90", "100"] {
        let count =
            format!(r#"tessera_credential_propagation_seconds_count{{percent="{share}"}} 1"#);
        assert!(body.contains(&count), "{body}");
        let inf = format!(
            r#"tessera_credential_propagation_seconds_bucket{{percent="{share}",le="+Inf"}} 1"#
        );
        assert!(body.contains(&inf), "{body}");
    }
    assert!(body.contains("# TYPE tessera_credential_propagation_seconds histogram"));
}
