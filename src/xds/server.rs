//! The ADS service: State-of-the-World and Delta streams over one cache.
//!
//! Each stream is one loop that waits for either a request from Envoy or a change of the
//! cache, and diffs what the node may see against what it was last sent. The loops are generic
//! over the request stream and write to a channel, so they are testable without a socket.

use super::cache::{Cache, Denial, GatewayConfig, NodeIdentity, State, Wakeup, Wakeups};
use super::encoded::Encoded;
use super::grpc::ResponseStream;
use super::identity::token::{UntilReauth, stream_lifetime};
use super::identity::{Authenticated, Authenticator, PeerIdentity};
use super::limits::{Limits, bounded_text, nack_text};
use super::resource::{Resource, set_key, set_key_of as resource_set_key, type_url, version_of};
use super::status::{Refusal, Registry};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use futures::{Stream, StreamExt};
use rustc_hash::FxHashMap;
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

/// The tonic service; each stream's loop runs in its HTTP/2 stream's task (see [`Driven`]).
#[derive(Debug, Clone)]
pub struct AdsService {
    cache: Arc<Cache>,
    registry: Arc<Registry>,
    authenticator: Arc<Authenticator>,
    limits: Limits,
    /// One permit per open stream, over all connections.
    streams: Arc<Semaphore>,
}

impl AdsService {
    /// A service serving from `cache`, reporting into `registry`, without client
    /// authentication and with default limits.
    pub fn new(cache: Arc<Cache>, registry: Arc<Registry>) -> Self {
        Self::configured(
            cache,
            registry,
            Arc::new(Authenticator::off()),
            Limits::default(),
        )
    }

    /// A service whose streams prove who they are to `authenticator` before being served.
    pub fn with_authenticator(
        cache: Arc<Cache>,
        registry: Arc<Registry>,
        authenticator: Arc<Authenticator>,
    ) -> Self {
        Self::configured(cache, registry, authenticator, Limits::default())
    }

    /// A service with explicit limits, without client authentication.
    pub fn with_limits(cache: Arc<Cache>, registry: Arc<Registry>, limits: Limits) -> Self {
        Self::configured(cache, registry, Arc::new(Authenticator::off()), limits)
    }

    /// A service with both an authenticator and explicit limits.
    pub fn configured(
        cache: Arc<Cache>,
        registry: Arc<Registry>,
        authenticator: Arc<Authenticator>,
        limits: Limits,
    ) -> Self {
        Self {
            cache,
            registry,
            authenticator,
            limits,
            streams: Arc::new(Semaphore::new(
                limits.max_streams.min(Semaphore::MAX_PERMITS),
            )),
        }
    }

    /// Admits one more stream (refused when `max_streams` are open; the permit is taken before
    /// authenticating, so a flood of streams cannot queue up authentications), then asks the
    /// authenticator who it is: the stream's context, and how long it may be served on that
    /// proof; an error refuses the stream (logged without credentials).
    async fn context<R>(
        &self,
        request: &Request<R>,
    ) -> Result<(StreamCtx, Option<std::time::Duration>), Status> {
        let ctx = self.admit()?;
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
        Ok((ctx.with_peer(peer), lifetime))
    }

    /// Admits one more stream, or refuses it when `max_streams` are open.
    fn admit(&self) -> Result<StreamCtx, Status> {
        let permit = self.streams.clone().try_acquire_owned().map_err(|_| {
            warn!(
                max_streams = self.limits.max_streams,
                "refused an ADS stream: the limit of open streams is reached"
            );
            Status::resource_exhausted("too many open ADS streams; retry later")
        })?;
        Ok(StreamCtx::new(&self.cache, &self.registry)
            .with_limits(self.limits)
            .with_permit(permit))
    }
}

// Responses wait here while Envoy is slow to read; a small buffer keeps memory per stream low.
const OUT_BUFFER: usize = 4;

impl AdsService {
    /// Starts a SotW stream (`StreamAggregatedResources`).
    pub async fn sotw<S>(&self, request: Request<S>) -> Result<Response<ResponseStream>, Status>
    where
        S: Stream<Item = Result<DiscoveryRequest, Status>> + Send + Unpin + 'static,
    {
        // Only the head is kept across the authentication, so the body need not be `Sync`.
        let (metadata, extensions, requests) = request.into_parts();
        let head = Request::from_parts(metadata, extensions, ());
        let (ctx, lifetime) = self.context(&head).await?;
        let (tx, rx) = mpsc::channel(OUT_BUFFER);
        let responses = Driven::new(run_sotw(requests, tx, ctx), rx);
        Ok(Response::new(Box::pin(UntilReauth::new(
            responses, lifetime,
        ))))
    }

    /// Starts a Delta stream (`DeltaAggregatedResources`).
    pub async fn delta<S>(&self, request: Request<S>) -> Result<Response<ResponseStream>, Status>
    where
        S: Stream<Item = Result<DeltaDiscoveryRequest, Status>> + Send + Unpin + 'static,
    {
        // Only the head is kept across the authentication, so the body need not be `Sync`.
        let (metadata, extensions, requests) = request.into_parts();
        let head = Request::from_parts(metadata, extensions, ());
        let (ctx, lifetime) = self.context(&head).await?;
        let (tx, rx) = mpsc::channel(OUT_BUFFER);
        let responses = Driven::new(run_delta(requests, tx, ctx), rx);
        Ok(Response::new(Box::pin(UntilReauth::new(
            responses, lifetime,
        ))))
    }
}

/// A stream's responses, made by its loop polled in place: the loop runs in the task that
/// writes the responses out (hyper's, one per HTTP/2 stream) instead of a task of its own,
/// which saves a task and a cross-task wake-up per response and per request, at every node.
struct Driven<F> {
    run: Option<Pin<Box<F>>>,
    out: mpsc::Receiver<Result<Encoded, Status>>,
}

impl<F: Future<Output = ()>> Driven<F> {
    fn new(run: F, out: mpsc::Receiver<Result<Encoded, Status>>) -> Self {
        Self {
            run: Some(Box::pin(run)),
            out,
        }
    }
}

impl<F: Future<Output = ()>> Stream for Driven<F> {
    type Item = Result<Encoded, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // What the loop already made goes out before it runs again. Only the loop sends, and
        // it runs here: the channel is looked at, never waited on.
        if !self.out.is_empty() {
            return self.out.poll_recv(cx);
        }
        if let Some(run) = self.run.as_mut()
            && run.as_mut().poll(cx).is_ready()
        {
            // Dropping the loop drops its sender: the channel ends once drained.
            self.run = None;
        }
        if self.run.is_none() || !self.out.is_empty() {
            return self.out.poll_recv(cx);
        }
        Poll::Pending
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
    wakeups: Arc<Wakeups>,
    registry: Arc<Registry>,
    peer: Authenticated,
    limits: Limits,
    /// Held while the stream lives; counts it against `max_streams`.
    _permit: Option<OwnedSemaphorePermit>,
}

impl StreamCtx {
    /// Context for one new, unauthenticated stream, with default limits.
    pub fn new(cache: &Cache, registry: &Arc<Registry>) -> Self {
        Self {
            cache: cache.subscribe(),
            wakeups: cache.wakeups(),
            registry: registry.clone(),
            peer: Authenticated::Unauthenticated,
            limits: Limits::default(),
            _permit: None,
        }
    }

    /// The same context with explicit limits.
    pub fn with_limits(self, limits: Limits) -> Self {
        Self { limits, ..self }
    }

    fn with_permit(self, permit: OwnedSemaphorePermit) -> Self {
        Self {
            _permit: Some(permit),
            ..self
        }
    }

    /// The same, for a stream that proved `peer`.
    pub fn with_peer(mut self, peer: Authenticated) -> Self {
        self.peer = peer;
        self
    }
}

fn identity(
    node: Option<&Node>,
    peer: &Authenticated,
    limits: &Limits,
) -> Result<NodeIdentity, Status> {
    let Some(n) = node.filter(|n| !n.id.is_empty()) else {
        return Err(Status::invalid_argument(
            "the first request of a stream must carry node.id",
        ));
    };
    // Both end up in logs, /status and every lookup of the stream: bounded and printable.
    let acceptable =
        |s: &str| s.len() <= limits.max_node_field_bytes && !s.chars().any(char::is_control);
    if !acceptable(&n.id) || !acceptable(&n.cluster) {
        return Err(Status::invalid_argument(format!(
            "node.id and node.cluster must be at most {} bytes without control characters",
            limits.max_node_field_bytes
        )));
    }
    Ok(NodeIdentity {
        id: n.id.clone(),
        cluster: n.cluster.clone(),
        peer: peer.clone(),
    })
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

async fn next_event<R, S>(
    requests: &mut S,
    config: &mut WatchStream<Arc<State>>,
    credentials: &mut Wakeup,
) -> Event<R>
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
        changed = config.next() => match changed {
            Some(_) => Event::Changed,
            None => Event::Closed,
        },
        changed = credentials.next() => match changed {
            Some(()) => Event::Changed,
            None => Event::Closed,
        },
    }
}

/// Logs a NACK; `detail` must already be made safe by [`nack_text`].
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
    /// Per-type state of one stream.
    type TypeState;
    const DELTA: bool;

    fn node(req: &Self::Req) -> Option<&Node>;
    /// Applies a request; returns the type to consider pushing, if any, or the status that
    /// ends the stream when the request breaks a limit.
    fn handle(
        stream: &StreamState,
        types: &mut FxHashMap<&'static str, Self::TypeState>,
        req: Self::Req,
        snapshot: &State,
    ) -> Result<Option<&'static str>, Status>;
    /// The response that brings the node up to date for type `t`, if it is behind: compared
    /// in full, or, with `changed`, only for those credential names.
    fn build(
        stream: &mut StreamState,
        state: &mut Self::TypeState,
        snapshot: &State,
        t: &'static str,
        changed: Option<&BTreeSet<&str>>,
    ) -> Option<Encoded>;
    /// Shares again what a client's changes made the stream's own (see `names`): called at the
    /// server's pace, on configuration and credential changes.
    fn settle(state: &mut Self::TypeState);
}

/// One stream's identity and bookkeeping, shared by both protocols.
struct StreamState {
    node: NodeIdentity,
    id: u64,
    registry: Arc<Registry>,
    limits: Limits,
    nonce: u64,
    /// Credential names this node asked for that its gateway does not reference.
    unreferenced: BTreeSet<Arc<str>>,
    /// The cache generation every type was last brought up to date with.
    seen: u64,
}

impl StreamState {
    /// Registers the stream of a node whose identity was checked and authorised.
    fn open(node: NodeIdentity, registry: &Arc<Registry>, limits: Limits, delta: bool) -> Self {
        let id = registry.open(&node.id, &node.cluster, delta);
        if let Authenticated::Peer(peer) = &node.peer {
            registry.set_identity(id, peer.to_string());
        }
        Self {
            node,
            id,
            registry: registry.clone(),
            limits,
            nonce: 0,
            unreferenced: BTreeSet::new(),
            seen: 0,
        }
    }

    fn next_nonce(&mut self) -> String {
        self.nonce += 1;
        self.nonce.to_string()
    }

    /// Whether `nonce` names a response this stream sent.
    fn sent_nonce(&self, nonce: &str) -> bool {
        nonce
            .parse::<u64>()
            .is_ok_and(|n| n >= 1 && n <= self.nonce)
    }

    /// Fails when a client-controlled set grew past the per-type limit.
    fn check_names(&self, t: &str, count: usize) -> Result<(), Status> {
        if count <= self.limits.max_names_per_type {
            return Ok(());
        }
        warn!(
            node = %self.node.id,
            xds_type = type_url::short(t),
            names = count,
            max = self.limits.max_names_per_type,
            "ending an ADS stream: too many subscribed resource names"
        );
        Err(Status::resource_exhausted(format!(
            "more than {} resource names subscribed for {}",
            self.limits.max_names_per_type,
            type_url::short(t)
        )))
    }

    fn record_nack(&self, t: &str, version: &str, detail: &str) {
        let detail = nack_text(t, detail, self.limits.max_nack_text_bytes);
        log_nack(&self.node, t, version, &detail);
        self.registry.count_nack(type_url::short(t));
        self.registry.update(self.id, type_url::short(t), |s| {
            s.nacks += 1;
            s.last_nack = Some(detail);
            s.nacked = bounded_text(version, MAX_SHOWN_VERSION);
        });
    }

    /// Records a version the node says it holds (client text: bounded before it is shown).
    fn record_acked(&self, t: &str, version: &str) {
        let version = bounded_text(version, MAX_SHOWN_VERSION);
        self.registry
            .update(self.id, type_url::short(t), |s| s.acked = version);
    }

    /// Counts each credential name the node asked for without its gateway referencing it,
    /// once per stream: a misconfiguration, or a probe for another gateway's credentials.
    fn note_unreferenced<'a>(
        &mut self,
        snapshot: &State,
        t: &str,
        requested: impl IntoIterator<Item = &'a Arc<str>>,
    ) {
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
        let at = super::status::unix_ms(std::time::SystemTime::now());
        self.registry.update(self.id, type_url::short(t), |s| {
            s.sent = sent;
            s.sent_unix_ms = at;
            s.responses += 1;
        });
        self.registry
            .responses_total
            .fetch_add(1, Ordering::Relaxed);
    }
}

// A stream's loop runs inside the task that writes its responses and is dropped with it when
// the connection goes: whatever way it ends, the stream leaves the registry here.
impl Drop for StreamState {
    fn drop(&mut self) {
        self.registry.close(self.id);
        info!(node = %self.node.id, "ADS stream closed");
    }
}

/// Tessera's versions and nonces are short; longer client text is cut before it is shown.
const MAX_SHOWN_VERSION: usize = 64;

/// Serves one ADS stream until either side closes it.
async fn run<P, S>(mut requests: S, out: mpsc::Sender<Result<Encoded, Status>>, ctx: StreamCtx)
where
    P: Protocol,
    S: Stream<Item = Result<P::Req, Status>> + Unpin,
{
    let first = match tokio::time::timeout(ctx.limits.first_request_timeout, requests.next()).await
    {
        Ok(Some(Ok(first))) => first,
        Ok(_) => return,
        Err(_) => {
            warn!(
                timeout = ?ctx.limits.first_request_timeout,
                delta = P::DELTA,
                "ending an ADS stream: no first request in time"
            );
            let _ = out
                .send(Err(Status::deadline_exceeded(
                    "no discovery request arrived in time",
                )))
                .await;
            return;
        }
    };
    let node = match identity(P::node(&first), &ctx.peer, &ctx.limits) {
        Ok(node) => node,
        Err(status) => {
            warn!(
                delta = P::DELTA,
                error = status.message(),
                "refused an ADS stream"
            );
            let _ = out.send(Err(status)).await;
            return;
        }
    };
    let refused = refusal(&ctx.cache.borrow(), &node, &ctx.registry);
    if let Some(status) = refused {
        let _ = out.send(Err(status)).await;
        return;
    }
    // Subscribed before the first look at the state, so no credential change falls between.
    let mut credentials = ctx.wakeups.watch(&node.cluster);
    // Both change streams keep their wait registered between events (see `Wakeup`).
    let mut config = WatchStream::from_changes(ctx.cache.clone());
    let mut stream = StreamState::open(node, &ctx.registry, ctx.limits, P::DELTA);
    info!(node = %stream.node.id, node_cluster = %stream.node.cluster, delta = P::DELTA, "ADS stream opened");
    let mut types: FxHashMap<&'static str, P::TypeState> = FxHashMap::default();
    let mut event = Event::Request(first);
    'stream: loop {
        if let Event::Closed = event {
            break;
        }
        let snapshot = ctx.cache.borrow().clone();
        // A configuration change can take a gateway away from an identity mid-stream.
        if let Some(status) = refusal(&snapshot, &stream.node, &ctx.registry) {
            let _ = out.send(Err(status)).await;
            break;
        }
        // Not answering beats an answer with less than the node holds (see `State::complete`):
        // requests are still taken in (subscriptions, ACKs), nothing is built or sent.
        let answer = snapshot.answers(&stream.node);
        match step::<P>(&mut stream, &mut types, event, &snapshot, answer) {
            Ok(responses) => {
                for resp in responses {
                    if out.send(Ok(resp)).await.is_err() {
                        break 'stream;
                    }
                }
            }
            Err(status) => {
                let _ = out.send(Err(status)).await;
                break;
            }
        }
        event = next_event(&mut requests, &mut config, &mut credentials).await;
    }
}

/// The refusal of a stream whose proven identity may not have the gateway of the
/// `node.cluster` it claims: logged, counted and kept for `/status`; `None` when it may.
fn refusal(snapshot: &State, node: &NodeIdentity, registry: &Registry) -> Option<Status> {
    let denial = snapshot.authorize(node).err()?;
    let Authenticated::Peer(peer) = &node.peer else {
        return None;
    };
    // While the configuration is incomplete (nothing loaded yet after a start, or objects left
    // out) the gateway may still arrive: hold the stream unanswered instead of sending Envoy
    // into a reconnect backoff; the next change decides.
    if denial == Denial::NoGateway && !snapshot.complete {
        return None;
    }
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

/// What one event makes a stream send: the responses that bring the node up to date, or the
/// status that ends the stream. Synchronous and free of I/O, so it can be fuzzed.
fn step<P: Protocol>(
    stream: &mut StreamState,
    types: &mut FxHashMap<&'static str, P::TypeState>,
    event: Event<P::Req>,
    snapshot: &State,
    answer: bool,
) -> Result<Vec<Encoded>, Status> {
    // Every type a stream has is up to date with the changes up to `seen`; a stream's first
    // type starts out up to date with the state it is first answered from.
    let first = types.is_empty();
    if let Event::Changed = event {
        types.values_mut().for_each(P::settle);
    }
    let (to_push, changed): (Vec<&'static str>, _) = match event {
        // A request is answered from a full comparison of its type.
        Event::Request(req) => (
            P::handle(stream, types, req, snapshot)?
                .into_iter()
                .collect(),
            None,
        ),
        // Push order matters: credentials with their clusters, listeners before routes.
        Event::Changed => (
            type_url::ALL
                .into_iter()
                .filter(|t| types.contains_key(t))
                .collect(),
            Some(snapshot.credentials_changed_since(stream.seen)),
        ),
        Event::Closed => (Vec::new(), None),
    };
    let mut responses = Vec::new();
    if !answer {
        return Ok(responses);
    }
    if changed.is_some() || first {
        stream.seen = snapshot.generation;
    }
    let changed = changed.flatten();
    for t in to_push {
        if let Some(state) = types.get_mut(t)
            && let Some(resp) = P::build(stream, state, snapshot, t, changed.as_ref())
        {
            responses.push(resp);
        }
    }
    Ok(responses)
}

// === State of the World ===

/// Serves one SotW ADS stream until either side closes it.
pub async fn run_sotw<S>(requests: S, out: mpsc::Sender<Result<Encoded, Status>>, ctx: StreamCtx)
where
    S: Stream<Item = Result<DiscoveryRequest, Status>> + Unpin,
{
    run::<Sotw, S>(requests, out, ctx).await
}

struct Sotw;

#[derive(Default)]
struct SotwType {
    names: NameSet,
    /// Names the latest requests added: answered even when the version did not change,
    /// because Envoy keeps nothing for a name it stopped watching.
    added: BTreeSet<Arc<str>>,
    sent_version: Option<String>,
    sent_nonce: String,
    /// Credential types: the set key of what the node was last sent of each name, so that a
    /// rotation can go out alone; its key is their XOR (the version sent).
    sent: Known,
    /// Whether the last response carried only what changed.
    sent_partial: bool,
    /// Set once Envoy refused a response that carried only what changed: from then on this
    /// stream gets every requested resource in every response.
    whole_sets: bool,
    /// The next answer goes out even if its version did not change (after such a refusal).
    resend: bool,
}

impl Protocol for Sotw {
    type Req = DiscoveryRequest;
    type TypeState = SotwType;
    const DELTA: bool = false;

    fn node(req: &DiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn handle(
        stream: &StreamState,
        types: &mut FxHashMap<&'static str, SotwType>,
        req: DiscoveryRequest,
        snapshot: &State,
    ) -> Result<Option<&'static str>, Status> {
        let Some(t) = known_type(&req.type_url) else {
            return Ok(None);
        };
        stream
            .registry
            .update(stream.id, type_url::short(t), |s| s.requests += 1);
        stream.check_names(t, req.resource_names.len())?;
        let state = types.entry(t).or_default();
        let fresh = state.sent_nonce.is_empty();
        // Envoy repeats every watched name in every SotW request: the usual ACK names the
        // same set, which is checked without building a new one.
        // Envoy lists them sorted: compared in order first, sorted only if that fails.
        let same = req.resource_names.len() == state.names.len()
            && (req
                .resource_names
                .iter()
                .zip(state.names.iter())
                .all(|(a, b)| **a == **b)
                || {
                    let mut asked: Vec<&str> =
                        req.resource_names.iter().map(String::as_str).collect();
                    asked.sort_unstable();
                    asked
                        .iter()
                        .zip(state.names.iter())
                        .all(|(a, b)| *a == &**b)
                });
        let (added, names_changed) = if same {
            (Vec::new(), false)
        } else {
            let names = NameSet::new(req.resource_names.into_iter().map(|n| snapshot.intern(n)));
            let added: Vec<Arc<str>> = names
                .iter()
                .filter(|n| !state.names.contains(n))
                .cloned()
                .collect();
            let changed = names != state.names;
            state.names = names;
            (added, changed)
        };
        if fresh && req.response_nonce.is_empty() {
            // A new subscription, or a reconnect: Envoy names the version it already holds,
            // and if that is still current nothing is resent (no churn after a restart).
            if !req.version_info.is_empty() {
                stream.record_acked(t, &req.version_info);
                state.sent_version = Some(req.version_info);
            }
            return Ok(Some(t));
        }
        if !type_url::is_wildcard(t) {
            // A wildcard type's answer does not depend on the names asked for.
            state.added.extend(added);
        }
        if req.response_nonce != state.sent_nonce {
            // It crossed a response Envoy has not seen yet; Envoy answers that one next. A name
            // it newly watches is answered now all the same (see `added`).
            return Ok((!state.added.is_empty()).then_some(t));
        }
        let credentials = &stream.registry.credentials;
        match req.error_detail {
            Some(detail) => {
                let version = state.sent_version.clone().unwrap_or_default();
                stream.record_nack(t, &version, &detail.message);
                credentials.nacked(stream.id, &req.response_nonce);
                if state.sent_partial && !state.whole_sets {
                    // Envoy's unified xDS mux refuses a SotW answer that leaves out a
                    // subscribed secret; Envoy's default mux keeps what was left out.
                    state.whole_sets = true;
                    state.resend = true;
                    warn!(
                        node = %stream.node.id,
                        xds_type = type_url::short(t),
                        "Envoy refused an update carrying only the changed credential; this stream now gets every credential in every update"
                    );
                }
            }
            None => {
                stream.record_acked(t, &req.version_info);
                credentials.acked(stream.id, &req.response_nonce);
            }
        }
        // Changes are pushed as they happen, not held for ACKs: an ACK or NACK alone needs an
        // answer only when the names changed or a partial update was refused.
        Ok((names_changed || !state.added.is_empty() || state.resend).then_some(t))
    }

    fn build(
        stream: &mut StreamState,
        state: &mut SotwType,
        snapshot: &State,
        t: &'static str,
        changed: Option<&BTreeSet<&str>>,
    ) -> Option<Encoded> {
        if let Some(changed) = changed {
            // Only credential values changed since this stream last looked.
            if !type_url::carries_credentials(t) || changed.is_empty() {
                return None;
            }
            if state.sent_version.is_some()
                && !state.whole_sets
                && !state.resend
                && state.added.is_empty()
            {
                return Self::build_changed(stream, state, snapshot, t, changed);
            }
        }
        stream.note_unreferenced(snapshot, t, state.names.iter());
        let visible = snapshot.visible(&stream.node, t, state.names.iter());
        let added = std::mem::take(&mut state.added);
        if visible.is_empty() && !type_url::is_wildcard(t) && state.sent_version.is_none() {
            // Nothing to say yet about named resources; Envoy keeps waiting for them.
            return None;
        }
        let key = set_key(&visible);
        let version = version_of(key);
        let credentials = type_url::carries_credentials(t);
        if credentials && state.sent.key() != key {
            // Also after a reconnect that named the current version: what the node holds.
            state.sent = Known::new(
                visible
                    .iter()
                    .map(|r| (r.shared_name.clone(), r.set_key))
                    .collect(),
            );
        }
        let newly_watched = visible.iter().any(|r| added.contains(r.name.as_str()));
        if state.sent_version.as_deref() == Some(version.as_str())
            && !newly_watched
            && !state.resend
        {
            if credentials && state.sent_nonce.is_empty() {
                // A reconnected node named this version: it holds these values.
                let held: Vec<&Arc<Resource>> = visible.iter().collect();
                stream.registry.credentials.holds(stream.id, t, &held);
            }
            return None;
        }
        state.resend = false;
        state.sent_partial = false;
        Some(Self::respond(stream, state, t, version, &visible, true))
    }

    fn settle(state: &mut SotwType) {
        state.sent.compact();
    }
}

impl Sotw {
    /// A credential rotation as a response carrying only the changed resources: O(changes)
    /// work and bytes, and a version updated by XOR (see [`set_key`]).
    fn build_changed(
        stream: &mut StreamState,
        state: &mut SotwType,
        snapshot: &State,
        t: &'static str,
        changed: &BTreeSet<&str>,
    ) -> Option<Encoded> {
        let gateway = snapshot.gateway_for(&stream.node)?;
        let resources: Vec<Arc<Resource>> =
            changed_credentials(snapshot, gateway, t, changed, |n| state.names.contains(n))
                .filter(|r| state.sent.get(&r.name) != Some(r.set_key))
                .cloned()
                .collect();
        if resources.is_empty() {
            return None;
        }
        let updated: Vec<(Arc<str>, u64)> = resources
            .iter()
            .map(|r| (r.shared_name.clone(), r.set_key))
            .collect();
        state.sent.apply(&updated, &[]);
        state.sent_partial = resources.len() < state.sent.len();
        let version = version_of(state.sent.key());
        Some(Self::respond(stream, state, t, version, &resources, false))
    }

    /// Sends `resources` at `version`; `whole` when they are every resource the node gets.
    fn respond(
        stream: &mut StreamState,
        state: &mut SotwType,
        t: &'static str,
        version: String,
        resources: &[Arc<Resource>],
        whole: bool,
    ) -> Encoded {
        let nonce = stream.next_nonce();
        if type_url::carries_credentials(t) {
            let carried: Vec<&Arc<Resource>> = resources.iter().collect();
            (stream.registry.credentials).sent(stream.id, &nonce, t, &carried, whole);
        }
        debug!(node = %stream.node.id, xds_type = type_url::short(t), version, resources = resources.len(), "sending SotW update");
        stream.record_sent(t, version.clone());
        let response = Encoded::sotw(&version, t, &nonce, resources);
        state.sent_version = Some(version);
        state.sent_nonce = nonce;
        response
    }
}

/// The credentials of type `t` among `changed` that `node`'s gateway references and the
/// node subscribed to.
fn changed_credentials<'a>(
    snapshot: &'a State,
    gateway: &'a GatewayConfig,
    t: &'a str,
    changed: &'a BTreeSet<&str>,
    subscribed: impl Fn(&str) -> bool + 'a,
) -> impl Iterator<Item = &'a Arc<Resource>> + 'a {
    changed
        .iter()
        .filter(move |n| gateway.credentials.contains(**n) && subscribed(n))
        .filter_map(|n| snapshot.credentials.get(*n))
        .filter(move |r| r.any.type_url == t)
}

// === Delta ===

/// Serves one Delta ADS stream until either side closes it.
pub async fn run_delta<S>(requests: S, out: mpsc::Sender<Result<Encoded, Status>>, ctx: StreamCtx)
where
    S: Stream<Item = Result<DeltaDiscoveryRequest, Status>> + Unpin,
{
    run::<Delta, S>(requests, out, ctx).await
}

struct Delta;

#[derive(Default)]
struct DeltaType {
    wildcard: bool,
    subscribed: Names,
    /// What the node holds (or was last sent): name → set key of name and version.
    known: Known,
    /// Whether this type needs no first answer: a new node's wildcard subscription is
    /// answered once, even with nothing, or Envoy never finishes initializing.
    answered: bool,
    /// Set once the type's first request was taken in.
    started: bool,
    /// Whether the credentials a reconnected node named were recorded as held.
    claims_recorded: bool,
}

impl Protocol for Delta {
    type Req = DeltaDiscoveryRequest;
    type TypeState = DeltaType;
    const DELTA: bool = true;

    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn handle(
        stream: &StreamState,
        types: &mut FxHashMap<&'static str, DeltaType>,
        req: DeltaDiscoveryRequest,
        snapshot: &State,
    ) -> Result<Option<&'static str>, Status> {
        let Some(t) = known_type(&req.type_url) else {
            return Ok(None);
        };
        let short = type_url::short(t);
        stream
            .registry
            .update(stream.id, short, |s| s.requests += 1);
        stream.check_names(t, req.initial_resource_versions.len())?;
        let state = types.entry(t).or_insert_with(|| DeltaType {
            // Legacy wildcard: the first request of a wildcard type with no names.
            wildcard: type_url::is_wildcard(t) && req.resource_names_subscribe.is_empty(),
            // A node that holds resources is past initializing: it needs no empty answer.
            answered: !req.initial_resource_versions.is_empty(),
            // What a reconnecting node already holds is not sent again.
            known: Known::new(
                req.initial_resource_versions
                    .into_iter()
                    .map(|(name, version)| {
                        let key = resource_set_key(&name, &version);
                        (snapshot.intern(name), key)
                    })
                    .collect(),
            ),
            ..Default::default()
        });
        let fresh = !state.started;
        let changes_subscription =
            !req.resource_names_subscribe.is_empty() || !req.resource_names_unsubscribe.is_empty();
        state.started = true;
        let subscribe: Vec<String> = req
            .resource_names_subscribe
            .into_iter()
            .filter(|name| {
                let star = name == "*";
                state.wildcard |= star;
                !star
            })
            .collect();
        // A request past the limit on its own is refused before any set is built from it.
        stream.check_names(t, subscribe.len())?;
        let unsubscribe: Vec<&str> = req
            .resource_names_unsubscribe
            .iter()
            .map(String::as_str)
            .filter(|name| {
                let star = *name == "*";
                state.wildcard &= !star;
                !star
            })
            .collect();
        if !subscribe.is_empty() || !unsubscribe.is_empty() {
            // A name in both lists ends up unsubscribed, as if subscribed, then unsubscribed.
            let leaving: BTreeSet<&str> = unsubscribe.iter().copied().collect();
            let added: Vec<Arc<str>> = subscribe
                .into_iter()
                .filter(|n| !leaving.contains(n.as_str()))
                .map(|n| snapshot.intern(n))
                .filter(|n| !state.subscribed.contains(n))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            // Checked before the set grows.
            stream.check_names(t, state.subscribed.len() + added.len())?;
            state.subscribed.change(added, &unsubscribe);
            let held: Vec<&str> = unsubscribe
                .iter()
                .copied()
                .filter(|n| state.known.get(n).is_some())
                .collect();
            state.known.apply(&[], &held);
        }
        if type_url::carries_credentials(t) {
            for name in &unsubscribe {
                stream.registry.credentials.released(stream.id, name);
            }
        }
        if stream.sent_nonce(&req.response_nonce) {
            let credentials = &stream.registry.credentials;
            match req.error_detail {
                Some(detail) => {
                    stream.record_nack(t, &req.response_nonce, &detail.message);
                    credentials.nacked(stream.id, &req.response_nonce);
                }
                None => {
                    stream.record_acked(t, &req.response_nonce);
                    credentials.acked(stream.id, &req.response_nonce);
                }
            }
        }
        // Changes are pushed as they happen: a request that only ACKs or NACKs needs no answer.
        Ok((fresh || changes_subscription).then_some(t))
    }

    fn build(
        stream: &mut StreamState,
        state: &mut DeltaType,
        snapshot: &State,
        t: &'static str,
        changed: Option<&BTreeSet<&str>>,
    ) -> Option<Encoded> {
        if let Some(changed) = changed {
            // Only credential values changed since this stream last looked.
            if !type_url::carries_credentials(t) || changed.is_empty() {
                return None;
            }
            let gateway = snapshot.gateway_for(&stream.node)?;
            let updated: Vec<Arc<Resource>> =
                changed_credentials(snapshot, gateway, t, changed, |n| {
                    state.subscribed.contains(n)
                })
                .filter(|r| state.known.get(&r.name) != Some(r.set_key))
                .cloned()
                .collect();
            return Self::respond(stream, state, t, &updated, Vec::new(), false);
        }
        stream.note_unreferenced(snapshot, t, state.subscribed.iter());
        let mut visible: Vec<Arc<Resource>> =
            snapshot.visible(&stream.node, t, state.subscribed.iter());
        if type_url::is_wildcard(t) && !state.wildcard {
            visible.retain(|r| state.subscribed.contains(r.name.as_str()));
        }
        if type_url::carries_credentials(t) && !state.claims_recorded && !visible.is_empty() {
            // Unchanged before anything was sent: a reconnected node named these versions.
            let named: Vec<&Arc<Resource>> = visible
                .iter()
                .filter(|r| state.known.get(&r.name) == Some(r.set_key))
                .collect();
            stream.registry.credentials.holds(stream.id, t, &named);
            state.claims_recorded = true;
        }
        // Credentials are never removed: Envoy ignores the removal and keeps the old key, so
        // a revocation is always pushed as a value (see design.md, section 2).
        let mut removed: Vec<String> = if type_url::carries_credentials(t) {
            Vec::new()
        } else {
            let names: BTreeSet<&str> = visible.iter().map(|r| r.name.as_str()).collect();
            state
                .known
                .names()
                .into_iter()
                .filter(|k| !names.contains(k))
                .map(str::to_owned)
                .collect()
        };
        removed.sort();
        // After this answer a wildcard node holds its gateway's whole set: kept as a handle.
        let whole = (type_url::is_wildcard(t) && state.wildcard)
            .then(|| snapshot.gateway_for(&stream.node).cloned())
            .flatten();
        visible.retain(|r| state.known.get(&r.name) != Some(r.set_key));
        let first_wildcard_answer = state.wildcard && !state.answered;
        let response = Self::respond(stream, state, t, &visible, removed, first_wildcard_answer);
        if let Some(gateway) = whole {
            state.known.hold_whole(gateway, t);
        }
        response
    }

    fn settle(state: &mut DeltaType) {
        state.subscribed.compact();
        state.known.compact();
    }
}

impl Delta {
    /// Sends `updated` and `removed` (if either is not empty, or `always`) and records that
    /// the node now holds them.
    fn respond(
        stream: &mut StreamState,
        state: &mut DeltaType,
        t: &'static str,
        updated: &[Arc<Resource>],
        removed: Vec<String>,
        always: bool,
    ) -> Option<Encoded> {
        if updated.is_empty() && removed.is_empty() && !always {
            return None;
        }
        state.answered = true;
        let held: Vec<(Arc<str>, u64)> = updated
            .iter()
            .map(|r| (r.shared_name.clone(), r.set_key))
            .collect();
        let gone: Vec<&str> = removed.iter().map(String::as_str).collect();
        state.known.apply(&held, &gone);
        let nonce = stream.next_nonce();
        if type_url::carries_credentials(t) && !updated.is_empty() {
            let carried: Vec<&Arc<Resource>> = updated.iter().collect();
            (stream.registry.credentials).sent(stream.id, &nonce, t, &carried, false);
        }
        debug!(
            node = %stream.node.id,
            xds_type = type_url::short(t),
            updated = updated.len(),
            removed = removed.len(),
            "sending Delta update"
        );
        stream.record_sent(t, nonce.clone());
        // What the node holds of this type, in the terms of a SotW version.
        let held = version_of(state.known.key());
        Some(Encoded::delta(&held, t, &nonce, updated, &removed))
    }
}

/// Decodes a stream's responses as `M`, for tests that read them as Envoy would.
#[cfg(test)]
fn decoded<M: prost::Message + Default + 'static>(
    mut rx: mpsc::Receiver<Result<Encoded, Status>>,
) -> mpsc::Receiver<Result<M, Status>> {
    let (tx, out) = mpsc::channel(1);
    tokio::spawn(async move {
        while let Some(item) = rx.recv().await {
            let item = item.map(|e| M::decode(e.to_bytes()).expect("a well-formed response"));
            if tx.send(item).await.is_err() {
                break;
            }
        }
    });
    out
}

mod known;
mod names;
use known::Known;
use names::{NameSet, Names};

#[cfg(test)]
mod ads_fuzz;
#[cfg(test)]
mod credential_tests;
#[cfg(test)]
mod identity_tests;
#[cfg(test)]
mod tests;
