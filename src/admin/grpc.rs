//! The admin gRPC API (`tessera.admin.v1.Admin`, `proto/tessera/admin/v1/admin.proto`): the
//! fleet's xDS status, credentials' states and "refresh this credential now".
//!
//! Answers are built from the stream registry, the credential status board and the
//! credential tracker: states, versions (keyed hashes) and counts, never a value. The API maps
//! the fleet and can make Tessera call identity providers, so it is served on loopback, or with
//! the xDS port's mTLS to callers with a client certificate from its client CA.

pub mod pb;

use crate::credentials::{Closed, CredentialState};
use crate::state::{AppState, RefreshRequest, RefreshStarted};
use crate::xds::identity::{Authenticated, Authenticator};
use crate::xds::status::{StreamStatus, SyncState};
use pb::admin_server::Admin;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

pub use pb::admin_server::AdminServer;

/// How often `WatchNodes` looks for changes: at most 4 answers a second.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// How long a mint or re-read asked for by `RefreshCredential` may take: a mint attempt times
/// out after 10 s, a re-read is a file read.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest `wait_acks_ms` honoured.
const MAX_ACK_WAIT: Duration = Duration::from_secs(300);

/// The admin service.
#[derive(Clone)]
pub struct AdminService {
    state: Arc<AppState>,
    refresh: mpsc::Sender<RefreshRequest>,
    /// `Some` with mTLS: callers must present a verified client certificate naming one of
    /// these SANs.
    authenticator: Option<(Arc<Authenticator>, Vec<String>)>,
}

impl AdminService {
    /// A service answering from `state` and asking the applier for refreshes on `refresh`;
    /// with `mtls_clients` its port has the xDS port's mTLS, and callers need a client
    /// certificate with one of those SANs (Envoys' certificates come from the same CA).
    pub fn new(
        state: Arc<AppState>,
        refresh: mpsc::Sender<RefreshRequest>,
        mtls_clients: Option<Vec<String>>,
    ) -> Self {
        Self {
            state,
            refresh,
            authenticator: mtls_clients
                .map(|clients| (Arc::new(Authenticator::client_certificates()), clients)),
        }
    }

    async fn admit<R>(&self, request: &Request<R>) -> Result<(), Status> {
        let Some((authenticator, clients)) = &self.authenticator else {
            return Ok(());
        };
        match authenticator
            .authenticate(request.metadata(), request.extensions())
            .await?
        {
            Authenticated::Peer(peer) => {
                if peer
                    .dns_names
                    .iter()
                    .chain(&peer.uris)
                    .any(|n| clients.contains(n))
                {
                    Ok(())
                } else {
                    Err(Status::permission_denied(format!(
                        "{peer} is not an --admin-client of this Tessera"
                    )))
                }
            }
            Authenticated::Unauthenticated => Err(Status::unauthenticated(
                "the admin API needs a verified client certificate",
            )),
        }
    }

    async fn refresh(
        &self,
        request: pb::RefreshCredentialRequest,
    ) -> Result<pb::RefreshCredentialResponse, Status> {
        let state = &self.state;
        let name = request.policy;
        let not_found = || Status::not_found(format!("no credential in use is named {name:?}"));
        let resource = match state.credentials.read() {
            Ok(credentials) => credentials.get(&name).map(|c| c.resource.clone()),
            Err(_) => None,
        }
        .ok_or_else(not_found)?;
        let tracker = &state.registry.credentials;
        let versions_before = tracker.progress(&resource).map_or(0, |p| p.publications);
        let published_before = state.publications.get(&name);
        let mut publications = state.publications.subscribe();
        let (reply, started) = oneshot::channel();
        let asked = RefreshRequest {
            name: name.clone(),
            reply,
        };
        let unavailable = || Status::unavailable("the credential engine is not running");
        self.refresh.send(asked).await.map_err(|_| unavailable())?;
        let started = started.await.map_err(|_| unavailable())?;
        let timed_out = |_| {
            Status::deadline_exceeded(format!(
                "{name:?} was not refreshed within {REFRESH_TIMEOUT:?}"
            ))
        };
        match started {
            RefreshStarted::NotFound => return Err(not_found()),
            RefreshStarted::Minting => {
                let published = async {
                    while state.publications.get(&name) <= published_before {
                        if publications.changed().await.is_err() {
                            break;
                        }
                    }
                };
                tokio::time::timeout(REFRESH_TIMEOUT, published)
                    .await
                    .map_err(timed_out)?;
                let status = state.board.get(&resource);
                if let Some(status) = status.filter(|s| s.state != CredentialState::Present) {
                    let why = status.state.reason().unwrap_or_default();
                    return Err(Status::unavailable(format!(
                        "minting {name:?} failed: {why}"
                    )));
                }
            }
            RefreshStarted::Rereading(read) => {
                tokio::time::timeout(REFRESH_TIMEOUT, read.wait())
                    .await
                    .map_err(timed_out)?;
            }
            RefreshStarted::WithConfiguration => {}
        }
        let changed = tracker.progress(&resource).map_or(0, |p| p.publications) > versions_before;
        let wait = Duration::from_millis(request.wait_acks_ms).min(MAX_ACK_WAIT);
        if !wait.is_zero() {
            let mut acks = tracker.subscribe();
            let all_acked = async {
                while tracker
                    .progress(&resource)
                    .is_some_and(|p| p.nodes_current < p.nodes_total)
                {
                    if acks.changed().await.is_err() {
                        break;
                    }
                }
            };
            // Not every node ACKed in time: the answer's counts say how many did.
            let _ = tokio::time::timeout(wait, all_acked).await;
        }
        Ok(pb::RefreshCredentialResponse {
            credential: credentials(state).into_iter().find(|c| c.policy == name),
            changed,
        })
    }
}

type NodeStream =
    Pin<Box<dyn futures::Stream<Item = Result<pb::ListNodesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Admin for AdminService {
    type WatchNodesStream = NodeStream;

    async fn list_nodes(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        self.admit(&request).await?;
        Ok(Response::new(pb::ListNodesResponse {
            nodes: nodes(&self.state, SystemTime::now()),
        }))
    }

    async fn watch_nodes(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<Self::WatchNodesStream>, Status> {
        self.admit(&request).await?;
        let (tx, rx) = mpsc::channel(2);
        let state = self.state.clone();
        tokio::spawn(async move {
            let mut last: Option<Vec<pb::Node>> = None;
            loop {
                let nodes = nodes(&state, SystemTime::now());
                // How long a node has been stale grows by itself: not a change worth an answer.
                let comparable = without_ages(&nodes);
                if last.as_ref() != Some(&comparable) {
                    last = Some(comparable);
                    if tx.send(Ok(pb::ListNodesResponse { nodes })).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(WATCH_INTERVAL) => {}
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_credentials(
        &self,
        request: Request<pb::ListCredentialsRequest>,
    ) -> Result<Response<pb::ListCredentialsResponse>, Status> {
        self.admit(&request).await?;
        Ok(Response::new(pb::ListCredentialsResponse {
            credentials: credentials(&self.state),
        }))
    }

    async fn refresh_credential(
        &self,
        request: Request<pb::RefreshCredentialRequest>,
    ) -> Result<Response<pb::RefreshCredentialResponse>, Status> {
        self.admit(&request).await?;
        self.refresh(request.into_inner()).await.map(Response::new)
    }
}

/// Every connected node as the API shows it.
pub fn nodes(state: &AppState, now: SystemTime) -> Vec<pb::Node> {
    let tracker = &state.registry.credentials;
    state
        .registry
        .snapshot_with_ids()
        .into_iter()
        .map(|(id, stream)| node(&stream, tracker.held(id), now))
        .collect()
}

fn node(
    stream: &StreamStatus,
    held: Vec<crate::xds::status::credentials::Held>,
    now: SystemTime,
) -> pb::Node {
    let types = stream
        .types
        .iter()
        .map(|(short, t)| pb::TypeStatus {
            r#type: (*short).to_owned(),
            sent: t.sent.clone(),
            acked: t.acked.clone(),
            nacked: t.nacked.clone(),
            last_nack: t.last_nack.clone().unwrap_or_default(),
            status: sync(t.sync()) as i32,
            stale_for_ms: t
                .stale_for(now)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        })
        .collect();
    pb::Node {
        id: stream.node_id.clone(),
        gateway: stream.node_cluster.clone(),
        identity: stream.identity.clone().unwrap_or_default(),
        mode: if stream.delta {
            pb::Mode::Delta
        } else {
            pb::Mode::Sotw
        } as i32,
        types,
        credentials: held
            .into_iter()
            .map(|h| pb::HeldCredential {
                name: h.name,
                version: h.version,
                current: h.current,
            })
            .collect(),
    }
}

fn sync(s: SyncState) -> pb::SyncStatus {
    match s {
        SyncState::NotSent => pb::SyncStatus::NotSent,
        SyncState::Synced => pb::SyncStatus::Synced,
        SyncState::Stale => pb::SyncStatus::Stale,
        SyncState::Nacked => pb::SyncStatus::Nacked,
    }
}

fn without_ages(nodes: &[pb::Node]) -> Vec<pb::Node> {
    let mut nodes = nodes.to_vec();
    for t in nodes.iter_mut().flat_map(|n| n.types.iter_mut()) {
        t.stale_for_ms = 0;
    }
    nodes
}

/// Every credential of the applied configuration as the API shows it, by name.
pub fn credentials(state: &AppState) -> Vec<pb::Credential> {
    let infos = match state.credentials.read() {
        Ok(c) => c.clone(),
        Err(_) => return Vec::new(),
    };
    let tracker = &state.registry.credentials;
    infos
        .into_iter()
        .map(|(policy, info)| {
            let status = state.board.get(&info.resource);
            let progress = tracker.progress(&info.resource);
            let (credential_state, detail, last_error, expires) = match &status {
                Some(s) => (
                    credential_state(&s.state),
                    s.state.name(),
                    s.state.reason().unwrap_or_default(),
                    s.expires_unix().unwrap_or_default(),
                ),
                None => (pb::CredentialState::Refreshing, "pending", String::new(), 0),
            };
            pb::Credential {
                policy,
                name: info.resource,
                kind: info.kind.to_owned(),
                state: credential_state as i32,
                detail: detail.to_owned(),
                expires_unix: expires,
                last_refresh_unix: progress.as_ref().map_or(0, |p| unix(p.published)),
                last_error,
                version: progress
                    .as_ref()
                    .map(|p| p.version.clone())
                    .unwrap_or_default(),
                nodes_current: progress.as_ref().map_or(0, |p| p.nodes_current),
                nodes_total: progress.as_ref().map_or(0, |p| p.nodes_total),
            }
        })
        .collect()
}

fn credential_state(s: &CredentialState) -> pb::CredentialState {
    match s {
        CredentialState::Present => pb::CredentialState::Valid,
        CredentialState::Failing(_) | CredentialState::Closed(Closed::Pending) => {
            pb::CredentialState::Refreshing
        }
        CredentialState::Closed(Closed::Unavailable(_) | Closed::Expired(_)) => {
            pb::CredentialState::Failed
        }
        CredentialState::Closed(Closed::Revoked(_)) => pb::CredentialState::Revoked,
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
