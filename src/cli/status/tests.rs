use super::*;

fn t(short: &str, status: pb::SyncStatus, stale_for_ms: u64) -> pb::TypeStatus {
    pb::TypeStatus {
        r#type: short.into(),
        sent: "2".into(),
        acked: "1".into(),
        nacked: if status == pb::SyncStatus::Nacked {
            "2".into()
        } else {
            String::new()
        },
        last_nack: if status == pb::SyncStatus::Nacked {
            "(withheld: may echo a credential)".into()
        } else {
            String::new()
        },
        status: status as i32,
        stale_for_ms,
    }
}

fn node(id: &str, types: Vec<pb::TypeStatus>) -> pb::Node {
    pb::Node {
        id: id.into(),
        gateway: "ai-gateway".into(),
        identity: String::new(),
        mode: pb::Mode::Delta as i32,
        types,
        credentials: vec![pb::HeldCredential {
            name: "credential/k".into(),
            version: "00000000000000a1".into(),
            current: true,
        }],
    }
}

#[test]
fn the_table_has_one_column_per_type_and_lists_nacks_below() {
    let nodes = vec![
        node(
            "gw-1",
            vec![
                t("cds", pb::SyncStatus::Synced, 0),
                t("sds", pb::SyncStatus::Stale, 12_000),
            ],
        ),
        node("gw-2", vec![t("ecds", pb::SyncStatus::Nacked, 0)]),
    ];
    let text = nodes_table(&nodes);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
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
    assert!(
        lines[1].starts_with("gw-1  ai-gateway  DELTA  SYNCED  -"),
        "{text}"
    );
    assert!(lines[1].contains("STALE (12s)"), "{text}");
    assert!(lines[1].ends_with("1/1 current"), "{text}");
    assert!(lines[2].contains("NACKED"), "{text}");
    assert_eq!(
        lines[3],
        "gw-2 ECDS: NACKED 2: (withheld: may echo a credential)"
    );
}

#[test]
fn exit_status_is_one_for_a_nack_or_a_node_stale_past_the_threshold() {
    let minute = Duration::from_secs(60);
    let synced = node("a", vec![t("cds", pb::SyncStatus::Synced, 0)]);
    let recent = node("b", vec![t("cds", pb::SyncStatus::Stale, 59_000)]);
    let old = node("c", vec![t("cds", pb::SyncStatus::Stale, 61_000)]);
    let nacked = node("d", vec![t("lds", pb::SyncStatus::Nacked, 0)]);
    assert_eq!(nodes_exit(&[synced.clone(), recent.clone()], minute), OK);
    assert_eq!(nodes_exit(&[synced.clone(), old], minute), UNHEALTHY);
    assert_eq!(nodes_exit(&[synced, nacked], minute), UNHEALTHY);
    assert_eq!(nodes_exit(&[recent], Duration::from_secs(10)), UNHEALTHY);
    let json = nodes_json(
        &[node("e", vec![t("sds", pb::SyncStatus::Stale, 5)])],
        minute,
    );
    assert_eq!(json["nodes"][0]["types"]["sds"]["status"], "STALE");
    assert_eq!(json["nodes"][0]["healthy"], true);
    assert_eq!(json["nodes"][0]["credentials"][0]["current"], true);
}

#[test]
fn credentials_exit_one_when_one_is_failed_or_revoked() {
    let c = |state: pb::CredentialState| pb::Credential {
        policy: "k".into(),
        state: state as i32,
        ..Default::default()
    };
    assert_eq!(
        credentials_exit(&[
            c(pb::CredentialState::Valid),
            c(pb::CredentialState::Refreshing)
        ]),
        OK
    );
    assert_eq!(
        credentials_exit(&[c(pb::CredentialState::Revoked)]),
        UNHEALTHY
    );
    assert_eq!(
        credentials_exit(&[c(pb::CredentialState::Failed)]),
        UNHEALTHY
    );
    let table = credentials_table(&[c(pb::CredentialState::Valid)]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row, ["k", "VALID", "-", "-", "-", "0/0", "-"], "{table}");
}

#[tokio::test]
async fn an_unreachable_api_is_a_connection_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conn = Connection {
        address: format!("127.0.0.1:{port}"),
        tls: None,
    };
    let err = status(&conn, false, Output::Table, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(matches!(err, CliError::Connect { .. }), "{err}");
}
