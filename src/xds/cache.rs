//! The resource cache: the latest translated configuration and credentials, protocol-free.
//!
//! Writers replace parts of an immutable [`State`]. A configuration change wakes every ADS
//! stream, which diffs the new state against what it last sent. A credential change wakes
//! only the streams of the gateways that reference it, and each of them reads the names that
//! changed from a short log ([`State::credentials_changed_since`]): a rotation costs a stream
//! work in proportion to what changed, not to the size of its configuration.

use super::identity::{Authenticated, allows};
use super::resource::{Resource, set_version, type_url};
use crate::model::XdsClient;
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;

// Credential changes remembered for streams catching up; a stream further behind re-diffs all.
const CHANGE_LOG: usize = 64;

/// Resources of one type with their SotW version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TypeSet {
    pub version: String,
    pub resources: BTreeMap<String, Arc<Resource>>,
}

impl TypeSet {
    /// Builds a set; the version is derived from content, so it survives restarts.
    pub fn new(resources: impl IntoIterator<Item = Arc<Resource>>) -> Self {
        let resources: BTreeMap<_, _> =
            resources.into_iter().map(|r| (r.name.clone(), r)).collect();
        Self {
            version: set_version(resources.values()),
            resources,
        }
    }
}

/// Everything one gateway's nodes receive, except credential values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewayConfig {
    pub clusters: TypeSet,
    pub listeners: TypeSet,
    pub routes: TypeSet,
    /// Names of SDS secrets and ECDS configs this gateway's clusters reference: the only
    /// credential resources its nodes may receive.
    pub credentials: BTreeSet<String>,
    /// Proven identities allowed to receive this configuration when clients authenticate.
    pub xds_clients: Vec<XdsClient>,
}

/// Who is asking: what the node claims, and what its stream proved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeIdentity {
    pub id: String,
    pub cluster: String,
    pub peer: Authenticated,
}

/// Why a proven identity may not receive the configuration of the node cluster it claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No Gateway serves the claimed `node.cluster`.
    NoGateway,
    /// The Gateway lists no `xdsClients`, so it serves nobody while clients authenticate.
    NoXdsClients,
    /// The identity is not among the Gateway's `xdsClients`.
    NotListed,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Denial::NoGateway => "no Gateway serves this node cluster",
            Denial::NoXdsClients => {
                "its Gateway lists no xdsClients, so it serves nobody while xDS clients are authenticated"
            }
            Denial::NotListed => "the identity is not in its Gateway's xdsClients",
        })
    }
}

/// An immutable view of everything served; replaced whole on every change.
#[derive(Debug, Default)]
pub struct State {
    /// Gateways by the `node.cluster` they serve.
    // Looked up on every event of every stream: hashed with Fx, not SipHash (the keys are
    // the operator's configuration, not a client's choice).
    pub gateways: FxHashMap<String, Arc<GatewayConfig>>,
    /// SDS secrets and ECDS extension configs by name.
    pub credentials: FxHashMap<String, Arc<Resource>>,
    /// Whether the configuration is whole: loaded, with no object left out as invalid.
    /// While it is not, a node whose gateway is absent may be missing it only because of
    /// bad input, so it gets no answer at all: an empty CDS/LDS answer would drop its listeners.
    pub complete: bool,
    /// Counts every change of the state.
    pub generation: u64,
    /// The generation of the last change to anything but credential values.
    pub config_generation: u64,
    /// Recent credential changes, oldest first: the generation and the names it changed.
    changes: Vec<(u64, Arc<[String]>)>,
    /// Changes up to this generation may have left the log.
    log_floor: u64,
}

impl State {
    /// The gateway a node belongs to, if it may have it; the one place that maps nodes to
    /// configuration.
    pub fn gateway_for(&self, node: &NodeIdentity) -> Option<&Arc<GatewayConfig>> {
        self.authorize(node).ok().flatten()
    }

    /// Whether `node` may be served: without client authentication, by the cluster it claims
    /// (`None` when no gateway serves it yet); with it, only if its proven identity is in the
    /// claimed gateway's `xdsClients`.
    pub fn authorize(&self, node: &NodeIdentity) -> Result<Option<&Arc<GatewayConfig>>, Denial> {
        let gateway = self.gateways.get(&node.cluster);
        let Authenticated::Peer(peer) = &node.peer else {
            return Ok(gateway);
        };
        match gateway {
            None => Err(Denial::NoGateway),
            Some(g) if g.xds_clients.is_empty() => Err(Denial::NoXdsClients),
            Some(g) if !allows(&g.xds_clients, peer) => Err(Denial::NotListed),
            Some(g) => Ok(Some(g)),
        }
    }

    /// Credential names of type `type_url` that `node` asked for but its gateway does not
    /// reference: they are never sent, and the asking is worth counting.
    pub fn unreferenced<'a, N: AsRef<str> + 'a>(
        &self,
        node: &NodeIdentity,
        type_url: &str,
        requested: impl IntoIterator<Item = &'a N>,
    ) -> Vec<&'a N> {
        if !type_url::carries_credentials(type_url) {
            return Vec::new();
        }
        let referenced = self.gateway_for(node).map(|g| &g.credentials);
        requested
            .into_iter()
            .filter(|n| referenced.is_none_or(|r| !r.contains(n.as_ref())))
            .collect()
    }

    /// `name` as the shared name of the credential resource it names, so that streams
    /// subscribed to it hold no copy of their own; a fresh one for any other name.
    pub fn intern(&self, name: String) -> Arc<str> {
        match self.credentials.get(&name) {
            Some(r) => r.shared_name.clone(),
            None => name.into(),
        }
    }

    /// The credential names changed after generation `seen`, when nothing else changed since
    /// and the log still covers it; `None` means: compare everything.
    pub fn credentials_changed_since(&self, seen: u64) -> Option<BTreeSet<&str>> {
        if seen < self.config_generation || seen < self.log_floor {
            return None;
        }
        let start = self.changes.partition_point(|(g, _)| *g <= seen);
        Some(
            self.changes[start..]
                .iter()
                .flat_map(|(_, names)| names.iter().map(String::as_str))
                .collect(),
        )
    }

    /// Whether `node` is answered at all (see [`State::complete`]).
    pub fn answers(&self, node: &NodeIdentity) -> bool {
        self.complete || self.gateway_for(node).is_some()
    }

    /// The resources of `type_url` a node may see, restricted to `requested` for named types.
    pub fn visible<'a, N: AsRef<str> + 'a>(
        &self,
        node: &NodeIdentity,
        type_url: &str,
        requested: impl IntoIterator<Item = &'a N>,
    ) -> Vec<Arc<Resource>> {
        let Some(gateway) = self.gateway_for(node) else {
            return Vec::new();
        };
        match type_url {
            type_url::CLUSTER => gateway.clusters.resources.values().cloned().collect(),
            type_url::LISTENER => gateway.listeners.resources.values().cloned().collect(),
            type_url::ROUTE => requested
                .into_iter()
                .filter_map(|n| gateway.routes.resources.get(n.as_ref()).cloned())
                .collect(),
            t if type_url::carries_credentials(t) => requested
                .into_iter()
                .filter(|n| gateway.credentials.contains(n.as_ref()))
                .filter_map(|n| self.credentials.get(n.as_ref()))
                .filter(|r| r.any.type_url == t)
                .cloned()
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// One stream's wake-up on credential changes of its gateway. Dropping it, however the stream
/// ends, releases it: node clusters are client-chosen names, so none may stay behind.
///
/// A stream of changes (ending when the cache is gone). It keeps its wait registered between
/// polls: a stream's loop looks at it after every request, and registering anew each time
/// would take the gateway-wide waiter list's lock twice per ACK, at every node.
pub struct Wakeup {
    // Taken in `drop`, so that it no longer counts when the release looks.
    changes: Option<WatchStream<()>>,
    wakeups: Arc<Wakeups>,
    node_cluster: String,
}

impl fmt::Debug for Wakeup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wakeup")
            .field("node_cluster", &self.node_cluster)
            .finish_non_exhaustive()
    }
}

impl futures::Stream for Wakeup {
    type Item = ();

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<()>> {
        match self.changes.as_mut() {
            Some(changes) => std::pin::Pin::new(changes).poll_next(cx),
            None => std::task::Poll::Ready(None),
        }
    }
}

impl Drop for Wakeup {
    fn drop(&mut self) {
        drop(self.changes.take());
        self.wakeups.release(&self.node_cluster);
    }
}

/// Shared handle to the served state.
#[derive(Debug)]
pub struct Cache {
    /// Notifies on configuration changes; credential changes update it silently.
    tx: watch::Sender<Arc<State>>,
    wakeups: Arc<Wakeups>,
}

/// Per node cluster, the wake-up of streams when a credential their gateway references changed.
#[derive(Debug, Default)]
pub struct Wakeups(Mutex<HashMap<String, watch::Sender<()>>>);

impl Wakeups {
    /// A wake-up for when a credential referenced by the gateway of `node_cluster` changes;
    /// it stops counting once dropped.
    pub fn watch(self: &Arc<Self>, node_cluster: &str) -> Wakeup {
        let mut senders = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let rx = match senders.get(node_cluster) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(());
                senders.insert(node_cluster.to_owned(), tx);
                rx
            }
        };
        Wakeup {
            changes: Some(WatchStream::from_changes(rx)),
            wakeups: self.clone(),
            node_cluster: node_cluster.to_owned(),
        }
    }

    /// The node clusters with a live wake-up (for tests).
    #[cfg(test)]
    pub fn clusters(&self) -> Vec<String> {
        let senders = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut clusters: Vec<String> = senders.keys().cloned().collect();
        clusters.sort();
        clusters
    }

    /// Forgets the wake-up of `node_cluster` when no stream listens to it any more.
    fn release(&self, node_cluster: &str) {
        let mut senders = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if senders
            .get(node_cluster)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            senders.remove(node_cluster);
        }
    }

    fn notify(&self, node_clusters: &[String]) {
        let senders = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for cluster in node_clusters {
            if let Some(tx) = senders.get(cluster) {
                tx.send_replace(());
            }
        }
    }
}

impl Default for Cache {
    fn default() -> Self {
        Self::new()
    }
}

impl Cache {
    /// An empty cache: no node is answered until the first configuration is published.
    pub fn new() -> Self {
        let (tx, _) = watch::channel(Arc::new(State::default()));
        Self {
            tx,
            wakeups: Arc::default(),
        }
    }

    /// A receiver that wakes on every configuration change (not on credential changes: see
    /// [`Cache::wakeups`]).
    pub fn subscribe(&self) -> watch::Receiver<Arc<State>> {
        self.tx.subscribe()
    }

    /// The per-gateway wake-ups of credential changes.
    pub fn wakeups(&self) -> Arc<Wakeups> {
        self.wakeups.clone()
    }

    /// The current state.
    pub fn state(&self) -> Arc<State> {
        self.tx.borrow().clone()
    }

    /// Publishes a new, complete configuration together with the credentials it needs,
    /// atomically, so no node ever sees a cluster whose credential has not arrived.
    pub fn publish(
        &self,
        gateways: HashMap<String, Arc<GatewayConfig>>,
        credentials: impl IntoIterator<Item = Arc<Resource>>,
    ) {
        self.publish_with(gateways, credentials, true);
    }

    /// [`Cache::publish`], saying whether the configuration is complete ([`State::complete`]).
    pub fn publish_with(
        &self,
        gateways: HashMap<String, Arc<GatewayConfig>>,
        credentials: impl IntoIterator<Item = Arc<Resource>>,
        complete: bool,
    ) {
        self.apply(
            Some((gateways.into_iter().collect(), complete)),
            credentials.into_iter().collect(),
        );
    }

    /// Replaces credential resources (a rotation or revocation); returns whether anything changed.
    pub fn set_credentials(&self, credentials: impl IntoIterator<Item = Arc<Resource>>) -> bool {
        self.apply(None, credentials.into_iter().collect())
    }

    /// Applies a change; only a configuration change notifies every stream.
    fn apply(
        &self,
        config: Option<(FxHashMap<String, Arc<GatewayConfig>>, bool)>,
        credentials: Vec<Arc<Resource>>,
    ) -> bool {
        let mut notify: Vec<String> = Vec::new();
        let mut modified = false;
        self.tx.send_if_modified(|state| {
            let (mut creds, mut changed) = merged(&state.credentials, credentials);
            let (gateways, complete) = match config {
                Some((gateways, complete)) => {
                    // A credential no gateway references any more is forgotten, not kept.
                    creds.retain(|name, _| gateways.values().any(|g| g.credentials.contains(name)));
                    (gateways, complete)
                }
                None => (state.gateways.clone(), state.complete),
            };
            changed.retain(|n| creds.contains_key(n));
            let forgotten = state.credentials.keys().any(|k| !creds.contains_key(k));
            let config_changed =
                forgotten || state.gateways != gateways || state.complete != complete;
            if !config_changed && changed.is_empty() {
                return false;
            }
            modified = true;
            let generation = state.generation + 1;
            let mut changes = state.changes.clone();
            let mut log_floor = state.log_floor;
            if !changed.is_empty() {
                changes.push((generation, changed.clone().into()));
                if changes.len() > CHANGE_LOG {
                    log_floor = changes.remove(0).0;
                }
            }
            if !config_changed {
                notify = gateways
                    .iter()
                    .filter(|(_, g)| changed.iter().any(|n| g.credentials.contains(n)))
                    .map(|(cluster, _)| cluster.clone())
                    .collect();
            }
            *state = Arc::new(State {
                gateways,
                credentials: creds,
                complete,
                generation,
                config_generation: if config_changed {
                    generation
                } else {
                    state.config_generation
                },
                changes,
                log_floor,
            });
            // Credential values alone change silently: only the referencing gateways wake.
            config_changed
        });
        if !notify.is_empty() {
            self.wakeups.notify(&notify);
        }
        modified
    }
}

/// `current` with `updates` applied, and the names of the resources that actually changed.
fn merged(
    current: &FxHashMap<String, Arc<Resource>>,
    updates: Vec<Arc<Resource>>,
) -> (FxHashMap<String, Arc<Resource>>, Vec<String>) {
    let mut map = current.clone();
    let mut changed = Vec::new();
    for r in updates {
        let same = map
            .get(&r.name)
            .is_some_and(|old| old.version == r.version && old.any.type_url == r.any.type_url);
        if !same {
            changed.push(r.name.clone());
            map.insert(r.name.clone(), r);
        }
    }
    (map, changed)
}
