//! The resource cache: the latest translated configuration and credentials, protocol-free.
//!
//! Writers replace parts of an immutable [`State`]; every ADS stream holds a `watch` receiver
//! and diffs the new state against what it last sent, so a rotation costs each stream a few
//! map lookups and sends only what changed.

use super::identity::{Authenticated, allows};
use super::resource::{Resource, set_version, type_url};
use crate::model::XdsClient;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use tokio::sync::watch;

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
    pub gateways: HashMap<String, Arc<GatewayConfig>>,
    /// SDS secrets and ECDS extension configs by name.
    pub credentials: HashMap<String, Arc<Resource>>,
    /// Whether the configuration is whole: loaded, with no object left out as invalid.
    /// While it is not, a node whose gateway is absent may be missing it only because of
    /// bad input, so it gets no answer at all: an empty CDS/LDS answer would drop its listeners.
    pub complete: bool,
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
    pub fn unreferenced<'a>(
        &self,
        node: &NodeIdentity,
        type_url: &str,
        requested: &'a BTreeSet<String>,
    ) -> Vec<&'a String> {
        if !type_url::carries_credentials(type_url) {
            return Vec::new();
        }
        let referenced = self.gateway_for(node).map(|g| &g.credentials);
        requested
            .iter()
            .filter(|n| referenced.is_none_or(|r| !r.contains(*n)))
            .collect()
    }

    /// Whether `node` is answered at all (see [`State::complete`]).
    pub fn answers(&self, node: &NodeIdentity) -> bool {
        self.complete || self.gateway_for(node).is_some()
    }

    /// The resources of `type_url` a node may see, restricted to `requested` for named types.
    pub fn visible(
        &self,
        node: &NodeIdentity,
        type_url: &str,
        requested: &BTreeSet<String>,
    ) -> Vec<Arc<Resource>> {
        let Some(gateway) = self.gateway_for(node) else {
            return Vec::new();
        };
        let pick = |set: &TypeSet| -> Vec<Arc<Resource>> {
            requested
                .iter()
                .filter_map(|n| set.resources.get(n).cloned())
                .collect()
        };
        match type_url {
            type_url::CLUSTER => gateway.clusters.resources.values().cloned().collect(),
            type_url::LISTENER => gateway.listeners.resources.values().cloned().collect(),
            type_url::ROUTE => pick(&gateway.routes),
            t if type_url::carries_credentials(t) => requested
                .iter()
                .filter(|n| gateway.credentials.contains(*n))
                .filter_map(|n| self.credentials.get(n))
                .filter(|r| r.any.type_url == t)
                .cloned()
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Shared handle to the served state.
#[derive(Debug)]
pub struct Cache {
    tx: watch::Sender<Arc<State>>,
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
        Self { tx }
    }

    /// A receiver that wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<State>> {
        self.tx.subscribe()
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
        let credentials: Vec<_> = credentials.into_iter().collect();
        self.tx.send_if_modified(|state| {
            let (mut creds, mut changed) = merged(&state.credentials, credentials);
            // A credential no gateway references any more is forgotten, not kept in memory.
            let before = creds.len();
            creds.retain(|name, _| gateways.values().any(|g| g.credentials.contains(name)));
            changed |= creds.len() != before;
            if !changed && state.gateways == gateways && state.complete == complete {
                return false;
            }
            *state = Arc::new(State {
                gateways,
                credentials: creds,
                complete,
            });
            true
        });
    }

    /// Replaces credential resources (a rotation or revocation); returns whether anything changed.
    pub fn set_credentials(&self, credentials: impl IntoIterator<Item = Arc<Resource>>) -> bool {
        let credentials: Vec<_> = credentials.into_iter().collect();
        self.tx.send_if_modified(|state| {
            let (creds, changed) = merged(&state.credentials, credentials);
            if changed {
                *state = Arc::new(State {
                    gateways: state.gateways.clone(),
                    credentials: creds,
                    complete: state.complete,
                });
            }
            changed
        })
    }
}

/// `current` with `updates` applied, and whether any resource actually changed.
fn merged(
    current: &HashMap<String, Arc<Resource>>,
    updates: Vec<Arc<Resource>>,
) -> (HashMap<String, Arc<Resource>>, bool) {
    let mut map = current.clone();
    let mut changed = false;
    for r in updates {
        let same = map
            .get(&r.name)
            .is_some_and(|old| old.version == r.version && old.any.type_url == r.any.type_url);
        if !same {
            map.insert(r.name.clone(), r);
            changed = true;
        }
    }
    (map, changed)
}
