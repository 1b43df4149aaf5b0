//! The ADS service: State-of-the-World and Delta streams over one cache.
//!
//! Each stream is one task that waits for either a request from Envoy or a change of the
//! cache, and diffs what the node may see against what it was last sent. The loops are generic
//! over the request stream and write to a channel, so they are testable without a socket.

use super::cache::{Cache, NodeIdentity, State};
use super::identity::token::{UntilReauth, stream_lifetime};
use super::identity::{Authenticated, Authenticator, PeerIdentity};
use super::resource::{Resource, set_version, type_url};
use super::status::{Refusal, Registry};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    Resource as DeltaResource, aggregated_discovery_service_server::AggregatedDiscoveryService,
};
use futures::{Stream, StreamExt};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

/// The tonic service; one task per stream.
#[derive(Debug, Clone)]
pub struct AdsService {
    cache: Arc<Cache>,
    registry: Arc<Registry>,
    authenticator: Arc<Authenticator>,
}

impl AdsService {
    /// A service serving from `cache`, reporting into `registry`, without client
    /// authentication.
    pub fn new(cache: Arc<Cache>, registry: Arc<Registry>) -> Self {
        Self::with_authenticator(cache, registry, Arc::new(Authenticator::off()))
    }

    /// A service whose streams prove who they are to `authenticator` before being served.
    pub fn with_authenticator(
        cache: Arc<Cache>,
        registry: Arc<Registry>,
        authenticator: Arc<Authenticator>,
    ) -> Self {
        Self {
            cache,
            registry,
            authenticator,
        }
    }

    /// The stream's context once its client proved who it is, and how long it may be served
    /// on that proof; an error refuses the stream (logged without credentials).
    async fn context<R>(
        &self,
        request: &Request<R>,
    ) -> Result<(StreamCtx, Option<std::time::Duration>), Status> {
        let outcome = self
            .authenticator
            .authenticate(request.metadata(), request.extensions())
            .await;
        let remote = request.remote_addr();
        let peer = match outcome {
            Ok(peer) => peer,
            Err(status) => {
                warn!(peer = ?remote, code = ?status.code(), reason = status.message(), "xDS stream refused");
                return Err(status);
            }
        };
        if let Authenticated::Peer(identity) = &peer
            && let Some(sa) = &identity.service_account
        {
            info!(peer = ?remote, service_account = %format!("{}/{}", sa.namespace, sa.name), "xDS stream authenticated");
        }
        let lifetime = lifetime(&peer);
        Ok((
            StreamCtx::new(&self.cache, &self.registry).with_peer(peer),
            lifetime,
        ))
    }
}

// Responses wait here while Envoy is slow to read; a small buffer keeps memory per stream low.
const OUT_BUFFER: usize = 4;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream =
        UntilReauth<ReceiverStream<Result<DiscoveryResponse, Status>>>;
    type DeltaAggregatedResourcesStream =
        UntilReauth<ReceiverStream<Result<DeltaDiscoveryResponse, Status>>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (ctx, lifetime) = self.context(&request).await?;
        let (tx, rx) = mpsc::channel(OUT_BUFFER);
        tokio::spawn(run_sotw(request.into_inner(), tx, ctx));
        Ok(Response::new(UntilReauth::new(
            ReceiverStream::new(rx),
            lifetime,
        )))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (ctx, lifetime) = self.context(&request).await?;
        let (tx, rx) = mpsc::channel(OUT_BUFFER);
        tokio::spawn(run_delta(request.into_inner(), tx, ctx));
        Ok(Response::new(UntilReauth::new(
            ReceiverStream::new(rx),
            lifetime,
        )))
    }
}

/// How long a stream may be served on the proof it started with; None: for as long as it lasts.
fn lifetime(auth: &Authenticated) -> Option<std::time::Duration> {
    match auth {
        Authenticated::Peer(PeerIdentity {
            expires: Some(expires),
            ..
        }) => Some(stream_lifetime(
            *expires,
            std::time::SystemTime::now(),
            fastrand::f64(),
        )),
        _ => None,
    }
}

/// What a stream task needs from the server.
pub struct StreamCtx {
    cache: watch::Receiver<Arc<State>>,
    registry: Arc<Registry>,
    peer: Authenticated,
}

impl StreamCtx {
    /// Context for one new, unauthenticated stream.
    pub fn new(cache: &Cache, registry: &Arc<Registry>) -> Self {
        Self {
            cache: cache.subscribe(),
            registry: registry.clone(),
            peer: Authenticated::Unauthenticated,
        }
    }

    /// The same, for a stream that proved `peer`.
    pub fn with_peer(mut self, peer: Authenticated) -> Self {
        self.peer = peer;
        self
    }
}

fn identity(node: Option<&Node>, peer: &Authenticated) -> Result<NodeIdentity, Status> {
    match node {
        Some(n) if !n.id.is_empty() => Ok(NodeIdentity {
            id: n.id.clone(),
            cluster: n.cluster.clone(),
            peer: peer.clone(),
        }),
        _ => Err(Status::invalid_argument(
            "the first request of a stream must carry node.id",
        )),
    }
}

fn known_type(t: &str) -> Option<&'static str> {
    type_url::ALL.into_iter().find(|k| *k == t)
}

/// Outcome of waiting for the next event on a stream.
enum Event<R> {
    Request(R),
    Changed,
    Closed,
}

async fn next_event<R, S>(requests: &mut S, cache: &mut watch::Receiver<Arc<State>>) -> Event<R>
where
    S: Stream<Item = Result<R, Status>> + Unpin,
{
    tokio::select! {
        req = requests.next() => match req {
            Some(Ok(r)) => Event::Request(r),
            Some(Err(e)) => {
                debug!(error = %e, "ADS stream ended with an error");
                Event::Closed
            }
            None => Event::Closed,
        },
        changed = cache.changed() => match changed {
            Ok(()) => Event::Changed,
            Err(_) => Event::Closed,
        },
    }
}

fn log_nack(node: &NodeIdentity, type_url: &str, version: &str, detail: &str) {
    warn!(
        node = %node.id,
        node_cluster = %node.cluster,
        xds_type = type_url::short(type_url),
        version,
        error = detail,
        "Envoy rejected (NACKed) an update; it keeps its last good config and the update is not resent"
    );
}

/// What differs between the SotW and Delta protocols; the stream loop is shared.
trait Protocol {
    type Req;
    type Resp;
    /// Per-type state of one stream.
    type TypeState;
    const DELTA: bool;

    fn node(req: &Self::Req) -> Option<&Node>;
    /// Applies a request; returns the type to consider pushing, if any.
    fn handle(
        stream: &StreamState,
        types: &mut HashMap<&'static str, Self::TypeState>,
        req: Self::Req,
    ) -> Option<&'static str>;
    /// The response that brings the node up to date for type `t`, if it is behind.
    fn build(
        stream: &mut StreamState,
        state: &mut Self::TypeState,
        snapshot: &State,
        t: &'static str,
    ) -> Option<Self::Resp>;
}

/// One stream's identity and bookkeeping, shared by both protocols.
struct StreamState {
    node: NodeIdentity,
    id: u64,
    registry: Arc<Registry>,
    nonce: u64,
    /// Credential names this node asked for that its gateway does not reference.
    unreferenced: BTreeSet<String>,
}

impl StreamState {
    fn next_nonce(&mut self) -> String {
        self.nonce += 1;
        self.nonce.to_string()
    }

    fn record_nack(&self, t: &str, version: &str, detail: String) {
        log_nack(&self.node, t, version, &detail);
        self.registry.nacks_total.fetch_add(1, Ordering::Relaxed);
        self.registry.update(self.id, type_url::short(t), |s| {
            s.nacks += 1;
            s.last_nack = Some(detail);
        });
    }

    /// Counts each credential name the node asked for without its gateway referencing it,
    /// once per stream: a misconfiguration, or a probe for another gateway's credentials.
    fn note_unreferenced(&mut self, snapshot: &State, t: &str, requested: &BTreeSet<String>) {
        for name in snapshot.unreferenced(&self.node, t, requested) {
            if self.unreferenced.insert(name.clone()) {
                self.registry
                    .unreferenced_credentials_total
                    .fetch_add(1, Ordering::Relaxed);
                warn!(
                    node = %self.node.id,
                    node_cluster = %self.node.cluster,
                    xds_type = type_url::short(t),
                    name = %name,
                    "node asked for a credential its gateway does not reference; nothing is sent"
                );
            }
        }
    }

    fn record_sent(&self, t: &str, sent: String) {
        self.registry.update(self.id, type_url::short(t), |s| {
            s.sent = sent;
            s.responses += 1;
        });
        self.registry
            .responses_total
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// Serves one ADS stream until either side closes it.
async fn run<P, S>(mut requests: S, out: mpsc::Sender<Result<P::Resp, Status>>, mut ctx: StreamCtx)
where
    P: Protocol,
    S: Stream<Item = Result<P::Req, Status>> + Unpin,
{
    let Some(Ok(first)) = requests.next().await else {
        return;
    };
    let node = match identity(P::node(&first), &ctx.peer) {
        Ok(n) => n,
        Err(status) => {
            let _ = out.send(Err(status)).await;
            return;
        }
    };
    let refused = refusal(&ctx.cache.borrow(), &node, &ctx.registry);
    if let Some(status) = refused {
        let _ = out.send(Err(status)).await;
        return;
    }
    let id = ctx.registry.open(&node.id, &node.cluster, P::DELTA);
    info!(node = %node.id, node_cluster = %node.cluster, delta = P::DELTA, "ADS stream opened");
    let mut stream = StreamState {
        node,
        id,
        registry: ctx.registry.clone(),
        nonce: 0,
        unreferenced: BTreeSet::new(),
    };
    let mut types: HashMap<&'static str, P::TypeState> = HashMap::new();
    let mut event = Event::Request(first);
    'stream: loop {
        let to_push: Vec<&'static str> = match event {
            Event::Request(req) => P::handle(&stream, &mut types, req).into_iter().collect(),
            // Push order matters: credentials with their clusters, listeners before routes.
            Event::Changed => type_url::ALL
                .into_iter()
                .filter(|t| types.contains_key(t))
                .collect(),
            Event::Closed => break,
        };
        let snapshot = ctx.cache.borrow().clone();
        // A configuration change can take a gateway away from an identity mid-stream.
        if let Some(status) = refusal(&snapshot, &stream.node, &ctx.registry) {
            let _ = out.send(Err(status)).await;
            break;
        }
        for t in to_push {
            let Some(state) = types.get_mut(t) else {
                continue;
            };
            if let Some(resp) = P::build(&mut stream, state, &snapshot, t)
                && out.send(Ok(resp)).await.is_err()
            {
                break 'stream;
            }
        }
        event = next_event(&mut requests, &mut ctx.cache).await;
    }
    ctx.registry.close(stream.id);
    info!(node = %stream.node.id, "ADS stream closed");
}

/// The refusal of a stream whose proven identity may not have the gateway of the
/// `node.cluster` it claims: logged, counted and kept for `/status`; `None` when it may.
fn refusal(snapshot: &State, node: &NodeIdentity, registry: &Registry) -> Option<Status> {
    let denial = snapshot.authorize(node).err()?;
    let Authenticated::Peer(peer) = &node.peer else {
        return None;
    };
    warn!(
        node = %node.id,
        node_cluster = %node.cluster,
        identity = %peer,
        reason = %denial,
        "xDS stream refused (PERMISSION_DENIED)"
    );
    registry.refuse(Refusal {
        identity: peer.to_string(),
        node_id: node.id.clone(),
        node_cluster: node.cluster.clone(),
        reason: denial.to_string(),
        at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    });
    Some(Status::permission_denied(format!(
        "{peer} may not receive the configuration of node cluster {:?}: {denial}",
        node.cluster
    )))
}

// === State of the World ===

/// Serves one SotW ADS stream until either side closes it.
pub async fn run_sotw<S>(
    requests: S,
    out: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    ctx: StreamCtx,
) where
    S: Stream<Item = Result<DiscoveryRequest, Status>> + Unpin,
{
    run::<Sotw, S>(requests, out, ctx).await
}

struct Sotw;

#[derive(Default)]
struct SotwType {
    names: BTreeSet<String>,
    sent_version: Option<String>,
    sent_nonce: String,
}

impl Protocol for Sotw {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;
    type TypeState = SotwType;
    const DELTA: bool = false;

    fn node(req: &DiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn handle(
        stream: &StreamState,
        types: &mut HashMap<&'static str, SotwType>,
        req: DiscoveryRequest,
    ) -> Option<&'static str> {
        let t = known_type(&req.type_url)?;
        let short = type_url::short(t);
        stream
            .registry
            .update(stream.id, short, |s| s.requests += 1);
        let state = types.entry(t).or_default();
        if req.response_nonce.is_empty() {
            // A new subscription, or a reconnect: Envoy names the version it already holds,
            // and if that is still current nothing is resent (no churn after a restart).
            state.names = req.resource_names.into_iter().collect();
            if !req.version_info.is_empty() {
                state.sent_version = Some(req.version_info.clone());
                stream
                    .registry
                    .update(stream.id, short, |s| s.acked = req.version_info);
            }
            return Some(t);
        }
        if req.response_nonce != state.sent_nonce {
            // Superseded by a response Envoy has not seen yet; its answer to that one follows.
            return None;
        }
        state.names = req.resource_names.into_iter().collect();
        match req.error_detail {
            Some(detail) => {
                let version = state.sent_version.clone().unwrap_or_default();
                stream.record_nack(t, &version, detail.message);
            }
            None => stream
                .registry
                .update(stream.id, short, |s| s.acked = req.version_info),
        }
        Some(t)
    }

    fn build(
        stream: &mut StreamState,
        state: &mut SotwType,
        snapshot: &State,
        t: &'static str,
    ) -> Option<DiscoveryResponse> {
        stream.note_unreferenced(snapshot, t, &state.names);
        let visible = snapshot.visible(&stream.node, t, &state.names);
        if visible.is_empty() && !type_url::is_wildcard(t) && state.sent_version.is_none() {
            // Nothing to say yet about named resources; Envoy keeps waiting for them.
            return None;
        }
        let version = set_version(&visible);
        if state.sent_version.as_deref() == Some(version.as_str()) {
            return None;
        }
        let nonce = stream.next_nonce();
        debug!(node = %stream.node.id, xds_type = type_url::short(t), version, resources = visible.len(), "sending SotW update");
        stream.record_sent(t, version.clone());
        state.sent_version = Some(version.clone());
        state.sent_nonce = nonce.clone();
        Some(DiscoveryResponse {
            version_info: version,
            resources: visible.iter().map(|r| r.any.clone()).collect(),
            type_url: t.to_owned(),
            nonce,
            ..Default::default()
        })
    }
}

// === Delta ===

/// Serves one Delta ADS stream until either side closes it.
pub async fn run_delta<S>(
    requests: S,
    out: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    ctx: StreamCtx,
) where
    S: Stream<Item = Result<DeltaDiscoveryRequest, Status>> + Unpin,
{
    run::<Delta, S>(requests, out, ctx).await
}

struct Delta;

#[derive(Default)]
struct DeltaType {
    wildcard: bool,
    subscribed: BTreeSet<String>,
    /// What the node holds (or was last sent), name → version.
    known: HashMap<String, String>,
}

impl Protocol for Delta {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;
    type TypeState = DeltaType;
    const DELTA: bool = true;

    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn handle(
        stream: &StreamState,
        types: &mut HashMap<&'static str, DeltaType>,
        req: DeltaDiscoveryRequest,
    ) -> Option<&'static str> {
        let t = known_type(&req.type_url)?;
        let short = type_url::short(t);
        stream
            .registry
            .update(stream.id, short, |s| s.requests += 1);
        let state = types.entry(t).or_insert_with(|| DeltaType {
            // Legacy wildcard: the first request of a wildcard type with no names.
            wildcard: type_url::is_wildcard(t) && req.resource_names_subscribe.is_empty(),
            // What a reconnecting node already holds is not sent again.
            known: req.initial_resource_versions.clone(),
            ..Default::default()
        });
        for name in req.resource_names_subscribe {
            if name == "*" {
                state.wildcard = true;
            } else {
                state.subscribed.insert(name);
            }
        }
        for name in req.resource_names_unsubscribe {
            if name == "*" {
                state.wildcard = false;
            } else {
                state.subscribed.remove(&name);
                state.known.remove(&name);
            }
        }
        if !req.response_nonce.is_empty() {
            match req.error_detail {
                Some(detail) => stream.record_nack(t, &req.response_nonce, detail.message),
                None => stream
                    .registry
                    .update(stream.id, short, |s| s.acked = req.response_nonce),
            }
        }
        Some(t)
    }

    fn build(
        stream: &mut StreamState,
        state: &mut DeltaType,
        snapshot: &State,
        t: &'static str,
    ) -> Option<DeltaDiscoveryResponse> {
        stream.note_unreferenced(snapshot, t, &state.subscribed);
        let mut visible: Vec<Arc<Resource>> = snapshot.visible(&stream.node, t, &state.subscribed);
        if type_url::is_wildcard(t) && !state.wildcard {
            visible.retain(|r| state.subscribed.contains(&r.name));
        }
        let changed: Vec<&Arc<Resource>> = visible
            .iter()
            .filter(|r| state.known.get(&r.name) != Some(&r.version))
            .collect();
        // Credentials are never removed: Envoy ignores the removal and keeps the old key, so
        // a revocation is always pushed as a value (see design.md, section 2).
        let mut removed: Vec<String> = if type_url::carries_credentials(t) {
            Vec::new()
        } else {
            state
                .known
                .keys()
                .filter(|k| !visible.iter().any(|r| &r.name == *k))
                .cloned()
                .collect()
        };
        removed.sort();
        if changed.is_empty() && removed.is_empty() {
            return None;
        }
        for r in &changed {
            state.known.insert(r.name.clone(), r.version.clone());
        }
        for name in &removed {
            state.known.remove(name);
        }
        let nonce = stream.next_nonce();
        debug!(
            node = %stream.node.id,
            xds_type = type_url::short(t),
            updated = changed.len(),
            removed = removed.len(),
            "sending Delta update"
        );
        stream.record_sent(t, nonce.clone());
        Some(DeltaDiscoveryResponse {
            system_version_info: set_version(&visible),
            resources: changed
                .iter()
                .map(|r| DeltaResource {
                    name: r.name.clone(),
                    version: r.version.clone(),
                    resource: Some(r.any.clone()),
                    ..Default::default()
                })
                .collect(),
            type_url: t.to_owned(),
            removed_resources: removed,
            nonce,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod identity_tests;
#[cfg(test)]
mod tests;
