use super::*;
use crate::credentials::Revocation;
use crate::state::CredentialInfo;
use crate::xds::Resource;
use crate::xds::resource::type_url::SECRET;

const V1: &str = "00000000000000a1";
const V2: &str = "00000000000000b2";

fn secret(version: &str) -> Arc<Resource> {
    Resource::from_parts("credential/k", version, Default::default())
}

/// A state with credential `k` (an AWS web identity) at V1 held by one SotW node.
fn state() -> Arc<AppState> {
    let state = Arc::new(AppState::default());
    state.credentials.write().unwrap().insert(
        "k".into(),
        CredentialInfo {
            resource: "credential/k".into(),
            kind: "aws_web_identity",
        },
    );
    state
        .board
        .set("credential/k", CredentialState::Present, None);
    let r = &state.registry;
    r.credentials.published("credential/k", "k", V1);
    let id = r.open("gw-1", "ai-gateway", false);
    r.update(id, "sds", |t| {
        t.sent = "s1".into();
        t.acked = "s1".into();
    });
    r.update(id, "lds", |t| {
        t.sent = "l2".into();
        t.acked = "l1".into();
        t.nacked = "l2".into();
        t.last_nack = Some("invalid listener".into());
    });
    r.update(id, "cds", |t| {
        t.sent = "c2".into();
        t.acked = "c1".into();
        t.sent_unix_ms = crate::xds::status::unix_ms(SystemTime::now()) - 90_000;
    });
    r.credentials.sent(id, "1", SECRET, &[&secret(V1)], true);
    r.credentials.acked(id, "1");
    state
}

fn service(state: &Arc<AppState>) -> (AdminService, mpsc::Receiver<RefreshRequest>) {
    let (tx, rx) = mpsc::channel(1);
    (AdminService::new(state.clone(), tx, None), rx)
}

#[tokio::test]
async fn nodes_show_each_type_and_the_credential_versions_held() {
    let state = state();
    let (admin, _rx) = service(&state);
    let nodes = admin
        .list_nodes(Request::new(pb::ListNodesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(nodes.len(), 1);
    let n = &nodes[0];
    assert_eq!(
        (n.id.as_str(), n.gateway.as_str(), n.mode()),
        ("gw-1", "ai-gateway", pb::Mode::Sotw)
    );
    let by_type = |short: &str| n.types.iter().find(|t| t.r#type == short).unwrap().clone();
    assert_eq!(by_type("sds").status(), pb::SyncStatus::Synced);
    let lds = by_type("lds");
    assert_eq!(
        (lds.status(), lds.last_nack.as_str()),
        (pb::SyncStatus::Nacked, "invalid listener")
    );
    let cds = by_type("cds");
    assert_eq!(cds.status(), pb::SyncStatus::Stale);
    assert!(cds.stale_for_ms >= 90_000, "{}", cds.stale_for_ms);
    assert_eq!(
        n.credentials,
        vec![pb::HeldCredential {
            name: "credential/k".into(),
            version: V1.into(),
            current: true
        }]
    );
}

#[tokio::test]
async fn credentials_show_state_version_and_how_many_nodes_hold_it() {
    let state = state();
    let (admin, _rx) = service(&state);
    let list = || async {
        admin
            .list_credentials(Request::new(pb::ListCredentialsRequest {}))
            .await
            .unwrap()
            .into_inner()
            .credentials
    };
    let c = list().await.remove(0);
    assert_eq!(
        (c.policy.as_str(), c.kind.as_str()),
        ("k", "aws_web_identity")
    );
    assert_eq!(
        (c.state(), c.detail.as_str()),
        (pb::CredentialState::Valid, "present")
    );
    assert_eq!(
        (c.version.as_str(), c.nodes_current, c.nodes_total),
        (V1, 1, 1)
    );
    assert!(c.last_refresh_unix > 0);
    state
        .registry
        .credentials
        .published("credential/k", "k", V2);
    state.board.set(
        "credential/k",
        CredentialState::Closed(Closed::Revoked(Revocation::FileEmpty("/k".into()))),
        None,
    );
    let c = list().await.remove(0);
    assert_eq!(
        (c.state(), c.last_error.as_str()),
        (pb::CredentialState::Revoked, "/k is empty")
    );
    assert_eq!(
        (c.version.as_str(), c.nodes_current, c.nodes_total),
        (V2, 0, 1)
    );
}

#[tokio::test]
async fn refreshing_an_unknown_policy_is_not_found() {
    let state = state();
    let (admin, _rx) = service(&state);
    let refresh = |policy: &str| {
        admin.refresh_credential(Request::new(pb::RefreshCredentialRequest {
            policy: policy.into(),
            wait_acks_ms: 0,
        }))
    };
    let err = refresh("nope").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

/// Answers every refresh request as a minting engine would: `Minting`, then a publication.
fn engine(
    state: Arc<AppState>,
    mut rx: mpsc::Receiver<RefreshRequest>,
    mint: Option<&'static str>,
) {
    tokio::spawn(async move {
        while let Some(request) = rx.recv().await {
            request.reply.send(RefreshStarted::Minting).unwrap();
            match mint {
                Some(version) => {
                    state
                        .registry
                        .credentials
                        .published("credential/k", "k", version);
                    state
                        .board
                        .set("credential/k", CredentialState::Present, None);
                }
                None => state.board.set(
                    "credential/k",
                    CredentialState::Failing("STS: throttled".into()),
                    None,
                ),
            }
            state.publications.count(&request.name);
        }
    });
}

#[tokio::test]
async fn a_refresh_returns_after_the_push_and_can_wait_for_acks() {
    let state = state();
    let (admin, rx) = service(&state);
    engine(state.clone(), rx, Some(V2));
    let answer = admin
        .refresh_credential(Request::new(pb::RefreshCredentialRequest {
            policy: "k".into(),
            wait_acks_ms: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.changed);
    let c = answer.credential.unwrap();
    assert_eq!(
        (c.version.as_str(), c.nodes_current, c.nodes_total),
        (V2, 0, 1)
    );

    // With a wait: the node ACKs meanwhile, and the answer counts it.
    let stream = state.registry.snapshot_with_ids()[0].0;
    let tracker = state.clone();
    let mut changes = tracker.registry.credentials.subscribe();
    let ack = tokio::spawn(async move {
        changes.changed().await.unwrap();
        let v3 = secret("00000000000000c3");
        tracker
            .registry
            .credentials
            .sent(stream, "2", SECRET, &[&v3], true);
        tracker.registry.credentials.acked(stream, "2");
    });
    let (tx, rx) = mpsc::channel(1);
    let admin = AdminService::new(state.clone(), tx, None);
    engine(state.clone(), rx, Some("00000000000000c3"));
    let answer = admin
        .refresh_credential(Request::new(pb::RefreshCredentialRequest {
            policy: "k".into(),
            wait_acks_ms: 10_000,
        }))
        .await
        .unwrap()
        .into_inner();
    ack.await.unwrap();
    let c = answer.credential.unwrap();
    assert_eq!((c.nodes_current, c.nodes_total), (1, 1));
}

#[tokio::test]
async fn a_failed_mint_is_an_error_with_its_reason() {
    let state = state();
    let (admin, rx) = service(&state);
    engine(state.clone(), rx, None);
    let err = admin
        .refresh_credential(Request::new(pb::RefreshCredentialRequest {
            policy: "k".into(),
            wait_acks_ms: 0,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(
        err.message().contains("STS: throttled"),
        "{}",
        err.message()
    );
}

async fn next(w: &mut NodeStream) -> Vec<pb::Node> {
    use futures::StreamExt;
    tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("an answer")
        .unwrap()
        .unwrap()
        .nodes
}

#[tokio::test]
async fn watch_nodes_sends_the_list_then_every_change() {
    let state = state();
    let (admin, _rx) = service(&state);
    let mut watch = admin
        .watch_nodes(Request::new(pb::ListNodesRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut watch).await.len(), 1);
    state.registry.open("gw-2", "ai-gateway", true);
    let nodes = next(&mut watch).await;
    let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["gw-1", "gw-2"]);
}
