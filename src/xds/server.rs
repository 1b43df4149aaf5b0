//! The ADS service: State-of-the-World and Delta streams over one cache.
//!
//! Each stream is one task that waits for either a request from Envoy or a change of the
//! cache, and diffs what the node may see against what it was last sent. The loops are generic
//! over the request stream and write to a channel, so they are testable without a socket.

use super::cache::{Cache, NodeIdentity, State};
use super::resource::{Resource, set_version, type_url};
use super::status::Registry;
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
}

impl AdsService {
    /// A service serving from `cache`, reporting into `registry`.
    pub fn new(cache: Arc<Cache>, registry: Arc<Registry>) -> Self {
        Self { cache, registry }
    }
}

// Responses wait here while Envoy is slow to read; a small buffer keeps memory per stream low.
const OUT_BUFFER: usize = 4;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(OUT_BUFFER);
        let ctx = StreamCtx::new(&self.cache, &self.registry);
        tokio::spawn(run_sotw(request.into_inner(), tx, ctx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(OUT_BUFFER);
        let ctx = StreamCtx::new(&self.cache, &self.registry);
        tokio::spawn(run_delta(request.into_inner(), tx, ctx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// What a stream task needs from the server.
pub struct StreamCtx {
    cache: watch::Receiver<Arc<State>>,
    registry: Arc<Registry>,
}

impl StreamCtx {
    /// Context for one new stream.
    pub fn new(cache: &Cache, registry: &Arc<Registry>) -> Self {
        Self {
            cache: cache.subscribe(),
            registry: registry.clone(),
        }
    }
}

fn identity(node: Option<&Node>) -> Result<NodeIdentity, Status> {
    match node {
        Some(n) if !n.id.is_empty() => Ok(NodeIdentity {
            id: n.id.clone(),
            cluster: n.cluster.clone(),
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

// === State of the World ===

#[derive(Default)]
struct SotwType {
    names: BTreeSet<String>,
    sent_version: Option<String>,
    sent_nonce: String,
}

/// Serves one SotW ADS stream until either side closes it.
pub async fn run_sotw<S>(
    mut requests: S,
    out: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    mut ctx: StreamCtx,
) where
    S: Stream<Item = Result<DiscoveryRequest, Status>> + Unpin,
{
    let Some(Ok(first)) = requests.next().await else {
        return;
    };
    let node = match identity(first.node.as_ref()) {
        Ok(n) => n,
        Err(status) => {
            let _ = out.send(Err(status)).await;
            return;
        }
    };
    let id = ctx.registry.open(&node.id, &node.cluster, false);
    info!(node = %node.id, node_cluster = %node.cluster, "SotW ADS stream opened");
    let mut types: HashMap<&'static str, SotwType> = HashMap::new();
    let mut nonce = 0u64;
    let mut event = Event::Request(first);
    loop {
        let ok = match event {
            Event::Request(req) => match handle_sotw_request(&node, id, &ctx, &mut types, req) {
                Some(t) => push_sotw(&node, id, &ctx, &mut types, &mut nonce, &out, t).await,
                None => true,
            },
            Event::Changed => {
                let mut ok = true;
                for t in type_url::ALL {
                    if ok && types.contains_key(t) {
                        ok = push_sotw(&node, id, &ctx, &mut types, &mut nonce, &out, t).await;
                    }
                }
                ok
            }
            Event::Closed => false,
        };
        if !ok {
            break;
        }
        event = next_event(&mut requests, &mut ctx.cache).await;
    }
    ctx.registry.close(id);
    info!(node = %node.id, "SotW ADS stream closed");
}

/// Applies a request; returns the type to consider pushing, if any.
fn handle_sotw_request(
    node: &NodeIdentity,
    id: u64,
    ctx: &StreamCtx,
    types: &mut HashMap<&'static str, SotwType>,
    req: DiscoveryRequest,
) -> Option<&'static str> {
    let Some(t) = known_type(&req.type_url) else {
        debug!(type_url = %req.type_url, "ignoring a request for a type Tessera does not serve");
        return None;
    };
    let short = type_url::short(t);
    ctx.registry.update(id, short, |s| s.requests += 1);
    let state = types.entry(t).or_default();
    if req.response_nonce.is_empty() {
        // A new subscription, or a reconnect: Envoy names the version it already holds, and
        // if that is still current nothing is resent (no churn after a control-plane restart).
        state.names = req.resource_names.into_iter().collect();
        if !req.version_info.is_empty() {
            state.sent_version = Some(req.version_info.clone());
            ctx.registry
                .update(id, short, |s| s.acked = req.version_info);
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
            log_nack(node, t, &version, &detail.message);
            ctx.registry.nacks_total.fetch_add(1, Ordering::Relaxed);
            ctx.registry.update(id, short, |s| {
                s.nacks += 1;
                s.last_nack = Some(detail.message);
            });
        }
        None => ctx
            .registry
            .update(id, short, |s| s.acked = req.version_info),
    }
    Some(t)
}

async fn push_sotw(
    node: &NodeIdentity,
    id: u64,
    ctx: &StreamCtx,
    types: &mut HashMap<&'static str, SotwType>,
    nonce: &mut u64,
    out: &mpsc::Sender<Result<DiscoveryResponse, Status>>,
    t: &'static str,
) -> bool {
    let Some(state) = types.get_mut(t) else {
        return true;
    };
    let snapshot = ctx.cache.borrow().clone();
    let visible = snapshot.visible(node, t, &state.names);
    if visible.is_empty() && !type_url::is_wildcard(t) && state.sent_version.is_none() {
        // Nothing to say yet about named resources; Envoy keeps waiting for them.
        return true;
    }
    let version = set_version(&visible);
    if state.sent_version.as_deref() == Some(version.as_str()) {
        return true;
    }
    *nonce += 1;
    let response = DiscoveryResponse {
        version_info: version.clone(),
        resources: visible.iter().map(|r| r.any.clone()).collect(),
        type_url: t.to_owned(),
        nonce: nonce.to_string(),
        ..Default::default()
    };
    state.sent_version = Some(version.clone());
    state.sent_nonce = response.nonce.clone();
    debug!(node = %node.id, xds_type = type_url::short(t), version, resources = visible.len(), "sending SotW update");
    ctx.registry.update(id, type_url::short(t), |s| {
        s.sent = version;
        s.responses += 1;
    });
    ctx.registry.responses_total.fetch_add(1, Ordering::Relaxed);
    out.send(Ok(response)).await.is_ok()
}

// === Delta ===

#[derive(Default)]
struct DeltaType {
    wildcard: bool,
    subscribed: BTreeSet<String>,
    /// What the node holds (or was last sent), name → version.
    known: HashMap<String, String>,
}

/// Serves one Delta ADS stream until either side closes it.
pub async fn run_delta<S>(
    mut requests: S,
    out: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    mut ctx: StreamCtx,
) where
    S: Stream<Item = Result<DeltaDiscoveryRequest, Status>> + Unpin,
{
    let Some(Ok(first)) = requests.next().await else {
        return;
    };
    let node = match identity(first.node.as_ref()) {
        Ok(n) => n,
        Err(status) => {
            let _ = out.send(Err(status)).await;
            return;
        }
    };
    let id = ctx.registry.open(&node.id, &node.cluster, true);
    info!(node = %node.id, node_cluster = %node.cluster, "Delta ADS stream opened");
    let mut types: HashMap<&'static str, DeltaType> = HashMap::new();
    let mut nonce = 0u64;
    let mut event = Event::Request(first);
    loop {
        let ok = match event {
            Event::Request(req) => match handle_delta_request(&node, id, &ctx, &mut types, req) {
                Some(t) => push_delta(&node, id, &ctx, &mut types, &mut nonce, &out, t).await,
                None => true,
            },
            Event::Changed => {
                let mut ok = true;
                for t in type_url::ALL {
                    if ok && types.contains_key(t) {
                        ok = push_delta(&node, id, &ctx, &mut types, &mut nonce, &out, t).await;
                    }
                }
                ok
            }
            Event::Closed => false,
        };
        if !ok {
            break;
        }
        event = next_event(&mut requests, &mut ctx.cache).await;
    }
    ctx.registry.close(id);
    info!(node = %node.id, "Delta ADS stream closed");
}

fn handle_delta_request(
    node: &NodeIdentity,
    id: u64,
    ctx: &StreamCtx,
    types: &mut HashMap<&'static str, DeltaType>,
    req: DeltaDiscoveryRequest,
) -> Option<&'static str> {
    let Some(t) = known_type(&req.type_url) else {
        debug!(type_url = %req.type_url, "ignoring a request for a type Tessera does not serve");
        return None;
    };
    let short = type_url::short(t);
    ctx.registry.update(id, short, |s| s.requests += 1);
    let state = match types.entry(t) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => {
            // Legacy wildcard: the first request of a wildcard type with no names.
            let wildcard = type_url::is_wildcard(t) && req.resource_names_subscribe.is_empty();
            e.insert(DeltaType {
                wildcard,
                known: req.initial_resource_versions.clone(),
                ..Default::default()
            })
        }
    };
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
            Some(detail) => {
                log_nack(node, t, &req.response_nonce, &detail.message);
                ctx.registry.nacks_total.fetch_add(1, Ordering::Relaxed);
                ctx.registry.update(id, short, |s| {
                    s.nacks += 1;
                    s.last_nack = Some(detail.message);
                });
            }
            None => ctx
                .registry
                .update(id, short, |s| s.acked = req.response_nonce),
        }
    }
    Some(t)
}

async fn push_delta(
    node: &NodeIdentity,
    id: u64,
    ctx: &StreamCtx,
    types: &mut HashMap<&'static str, DeltaType>,
    nonce: &mut u64,
    out: &mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    t: &'static str,
) -> bool {
    let Some(state) = types.get_mut(t) else {
        return true;
    };
    let snapshot = ctx.cache.borrow().clone();
    let mut visible: Vec<Arc<Resource>> = snapshot.visible(node, t, &state.subscribed);
    if type_url::is_wildcard(t) && !state.wildcard {
        visible.retain(|r| state.subscribed.contains(&r.name));
    }
    let changed: Vec<&Arc<Resource>> = visible
        .iter()
        .filter(|r| state.known.get(&r.name) != Some(&r.version))
        .collect();
    // Credentials are never removed: Envoy ignores the removal and keeps the old key, so a
    // revocation is always pushed as a value (see design.md, section 2).
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
        return true;
    }
    *nonce += 1;
    let response = DeltaDiscoveryResponse {
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
        removed_resources: removed.clone(),
        nonce: nonce.to_string(),
        ..Default::default()
    };
    for r in &changed {
        state.known.insert(r.name.clone(), r.version.clone());
    }
    for name in &removed {
        state.known.remove(name);
    }
    debug!(
        node = %node.id,
        xds_type = type_url::short(t),
        updated = changed.len(),
        removed = removed.len(),
        "sending Delta update"
    );
    let nonce_str = response.nonce.clone();
    ctx.registry.update(id, type_url::short(t), |s| {
        s.sent = nonce_str;
        s.responses += 1;
    });
    ctx.registry.responses_total.fetch_add(1, Ordering::Relaxed);
    out.send(Ok(response)).await.is_ok()
}

#[cfg(test)]
mod tests;
