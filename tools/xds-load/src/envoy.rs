//! One simulated Envoy: its subscriptions in Envoy's order, its ACKs, what it holds, and when a
//! rotated secret reached it. The protocol logic ([`Envoy`]) is shared by SotW and Delta; a
//! [`Wire`] turns its asks into the mode's requests.

use crate::grpc::Target;
use crate::refs::{self, Refs, type_url};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};

/// A key rotation under way: the value written and when the file was replaced.
#[derive(Debug)]
pub struct Rotation {
    pub index: u32,
    pub value: String,
    pub written_at: Instant,
}

/// What a simulated Envoy tells the run.
#[derive(Debug)]
pub enum Event {
    /// The stream holds its full initial configuration.
    Initial {
        stream: u32,
        elapsed: Duration,
        at: Instant,
        bytes: u64,
    },
    /// The stream ended; the simulated Envoy does not reconnect.
    Failed { stream: u32, error: String },
}

/// A stream that received the secret of rotation `index`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reached {
    pub index: u32,
    pub latency: Duration,
    pub bytes: u64,
}

/// State every simulated Envoy shares.
pub struct Shared {
    events: mpsc::UnboundedSender<Event>,
    rotation: RwLock<Option<Arc<Rotation>>>,
    // Every stream of a gateway subscribes to the same names: one copy of each list.
    names: Mutex<HashSet<Arc<[String]>>>,
    // Rotations are collected here, not sent as events: waking the run once per stream would
    // cost the generator CPU the server it measures shares (the run wakes once, when all
    // streams it waits for have been reached).
    reached: Mutex<Vec<Reached>>,
    wanted: AtomicUsize,
    arrived: Notify,
}

impl Shared {
    /// Shared state reporting to `events`.
    pub fn new(events: mpsc::UnboundedSender<Event>) -> Self {
        Self {
            events,
            rotation: RwLock::new(None),
            names: Mutex::new(HashSet::new()),
            reached: Mutex::new(Vec::new()),
            wanted: AtomicUsize::new(usize::MAX),
            arrived: Notify::new(),
        }
    }

    /// Records that a stream received the rotation under way.
    fn reached(&self, reached: Reached) {
        let mut all = self.reached.lock().unwrap_or_else(PoisonError::into_inner);
        if self.rotation().is_some_and(|r| r.index == reached.index) {
            all.push(reached);
            if all.len() >= self.wanted.load(Ordering::Relaxed) {
                self.arrived.notify_one();
            }
        }
    }

    /// How many streams the rotation under way has reached.
    pub fn reached_count(&self) -> usize {
        self.reached
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Waits until `wanted` streams have been reached by the rotation under way (at once if
    /// they have). May return early: check [`Shared::reached_count`].
    pub async fn reached_by(&self, wanted: usize) {
        self.wanted.store(wanted, Ordering::Relaxed);
        if self.reached_count() >= wanted {
            return;
        }
        self.arrived.notified().await;
    }

    /// The streams the rotation under way has reached so far, taken out.
    pub fn take_reached(&self) -> Vec<Reached> {
        std::mem::take(&mut *self.reached.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Makes `rotation` the one streams look for.
    pub fn set_rotation(&self, rotation: Rotation) {
        let mut reached = self.reached.lock().unwrap_or_else(PoisonError::into_inner);
        reached.clear();
        self.wanted.store(usize::MAX, Ordering::Relaxed);
        *self
            .rotation
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(rotation));
    }

    fn rotation(&self) -> Option<Arc<Rotation>> {
        self.rotation
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reports `event`; a run that stopped listening is not an error of the stream.
    pub fn report(&self, event: Event) {
        let _ = self.events.send(event);
    }

    fn intern(&self, names: BTreeSet<String>) -> Arc<[String]> {
        let names: Vec<String> = names.into_iter().collect();
        let mut set = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = set.get(names.as_slice()) {
            return known.clone();
        }
        let names: Arc<[String]> = names.into();
        set.insert(names.clone());
        names
    }
}

/// A response, whichever the mode.
pub struct Incoming {
    pub type_url: String,
    pub version: String,
    pub nonce: String,
    /// Resources by name.
    pub resources: Vec<(String, Any)>,
    /// Delta: names removed.
    pub removed: Vec<String>,
    /// SotW: the response is the whole set of its type.
    pub full_state: bool,
    /// Encoded size of the response message.
    pub size: usize,
    pub received_at: Instant,
}

/// Only the `name` field (1) every served resource type starts with.
#[derive(Clone, PartialEq, prost::Message)]
struct Named {
    #[prost(string, tag = "1")]
    name: String,
}

/// The name of an encoded resource of any served type.
pub fn resource_name(any: &Any) -> String {
    Named::decode(any.value.as_slice())
        .map(|n| n.name)
        .unwrap_or_default()
}

/// Builds the requests of one mode.
pub trait Wire {
    type Request;
    /// (Re)subscribes `type_url` to `names` (empty for a wildcard), `added`/`removed` since the
    /// previous subscription.
    fn subscribe(
        &mut self,
        type_url: &'static str,
        names: &[String],
        added: Vec<String>,
        removed: Vec<String>,
    ) -> Self::Request;
    /// Acknowledges a response; `names` is the current subscription of its type.
    fn ack(
        &mut self,
        type_url: &str,
        version: &str,
        nonce: &str,
        names: &[String],
    ) -> Self::Request;
}

/// Names subscribed for one type and which of them arrived.
#[derive(Default)]
struct Held {
    names: Option<Arc<[String]>>,
    got: Vec<bool>,
}

impl Held {
    fn names(&self) -> &[String] {
        self.names.as_deref().unwrap_or_default()
    }

    /// Subscribes to `names`; returns what was added and removed, `None` when nothing changed.
    fn set(&mut self, names: Arc<[String]>) -> Option<(Vec<String>, Vec<String>)> {
        if self.names.as_ref().is_some_and(|n| Arc::ptr_eq(n, &names)) {
            return None;
        }
        let old = self.names();
        let added: Vec<String> = names
            .iter()
            .filter(|n| old.binary_search(n).is_err())
            .cloned()
            .collect();
        let removed: Vec<String> = old
            .iter()
            .filter(|n| names.binary_search(n).is_err())
            .cloned()
            .collect();
        let got = names
            .iter()
            .map(|n| old.binary_search(n).is_ok_and(|i| self.got[i]))
            .collect();
        self.got = got;
        self.names = Some(names);
        (!added.is_empty() || !removed.is_empty()).then_some((added, removed))
    }

    fn mark(&mut self, name: &str, held: bool) {
        if let Ok(i) = self.names().binary_search_by(|n| n.as_str().cmp(name)) {
            self.got[i] = held;
        }
    }

    fn complete(&self) -> bool {
        self.got.iter().all(|&g| g)
    }
}

/// One simulated Envoy's protocol state, kept small: 10,000 of them share one process.
pub struct Envoy {
    stream: u32,
    shared: Arc<Shared>,
    started: Instant,
    bytes: u64,
    initial_reported: bool,
    have_clusters: bool,
    listeners_asked: bool,
    have_listeners: bool,
    secrets: Held,
    extension_configs: Held,
    routes: Held,
    // ECDS names come from clusters and listeners; kept apart so either can be replaced whole.
    cluster_extension_configs: Arc<[String]>,
    listener_extension_configs: Arc<[String]>,
    rotation_index: u32,
    rotation_bytes: u64,
    rotation_seen: bool,
}

impl Envoy {
    /// Simulated Envoy number `stream`, which started connecting at `started`.
    pub fn new(stream: u32, shared: Arc<Shared>, started: Instant) -> Self {
        Self {
            stream,
            shared,
            started,
            bytes: 0,
            initial_reported: false,
            have_clusters: false,
            listeners_asked: false,
            have_listeners: false,
            secrets: Held::default(),
            extension_configs: Held::default(),
            routes: Held::default(),
            cluster_extension_configs: Arc::new([]),
            listener_extension_configs: Arc::new([]),
            rotation_index: 0,
            rotation_bytes: 0,
            rotation_seen: false,
        }
    }

    /// Plays this Envoy on `target`'s ADS method `path` until the stream ends, reading
    /// responses as `R` (made [`Incoming`] by `incoming`); returns why it ended.
    pub async fn play<W, R>(
        mut self,
        target: &Target,
        path: &str,
        mut wire: W,
        incoming: fn(R, Instant) -> Incoming,
    ) -> anyhow::Result<()>
    where
        W: Wire,
        W::Request: Message,
        R: Message + Default,
    {
        let (mut stream, mut connection) = target.open(path, crate::MAX_MESSAGE).await?;
        stream.send(&self.start(&mut wire))?;
        let mut out = Vec::new();
        crate::grpc::drive(&mut connection, async {
            loop {
                let (response, _) = stream.message::<R>().await?;
                let received_at = Instant::now();
                self.on_response(incoming(response, received_at), &mut wire, &mut out);
                for request in out.drain(..) {
                    stream.send(&request)?;
                }
            }
        })
        .await
    }

    /// The first request: CDS, wildcard.
    pub fn start<W: Wire>(&mut self, wire: &mut W) -> W::Request {
        wire.subscribe(type_url::CLUSTER, &[], Vec::new(), Vec::new())
    }

    /// Handles one response, pushing the requests Envoy would send in reply onto `out`.
    pub fn on_response<W: Wire>(&mut self, inc: Incoming, wire: &mut W, out: &mut Vec<W::Request>) {
        self.bytes += inc.size as u64;
        self.account_rotation(inc.size);
        match inc.type_url.as_str() {
            type_url::CLUSTER => {
                let mut refs = Refs::default();
                for (_, any) in &inc.resources {
                    if let Ok(cluster) = Cluster::decode(any.value.as_slice()) {
                        refs::cluster(&cluster, &mut refs);
                    }
                }
                // A SotW response is the whole set; Delta ones add to what is held (removals of
                // clusters keep their secrets subscribed: enough for a load generator).
                if !inc.full_state {
                    refs.secrets.extend(self.secrets.names().iter().cloned());
                    refs.extension_configs
                        .extend(self.cluster_extension_configs.iter().cloned());
                }
                self.cluster_extension_configs = self.shared.intern(refs.extension_configs);
                self.have_clusters = true;
                // Envoy pauses SDS while it applies clusters, so their subscriptions go out
                // before the CDS ACK.
                self.resubscribe_extension_configs(wire, out);
                let secrets = self.shared.intern(refs.secrets);
                if let Some((added, removed)) = self.secrets.set(secrets) {
                    let names = self.secrets.names();
                    out.push(wire.subscribe(type_url::SECRET, names, added, removed));
                }
                out.push(wire.ack(&inc.type_url, &inc.version, &inc.nonce, &[]));
            }
            type_url::LISTENER => {
                let mut refs = Refs::default();
                for (_, any) in &inc.resources {
                    if let Ok(listener) = Listener::decode(any.value.as_slice()) {
                        refs::listener(&listener, &mut refs);
                    }
                }
                if !inc.full_state {
                    refs.route_configs
                        .extend(self.routes.names().iter().cloned());
                    refs.extension_configs
                        .extend(self.listener_extension_configs.iter().cloned());
                }
                self.listener_extension_configs = self.shared.intern(refs.extension_configs);
                self.have_listeners = true;
                self.resubscribe_extension_configs(wire, out);
                let routes = self.shared.intern(refs.route_configs);
                if let Some((added, removed)) = self.routes.set(routes) {
                    out.push(wire.subscribe(type_url::ROUTE, self.routes.names(), added, removed));
                }
                out.push(wire.ack(&inc.type_url, &inc.version, &inc.nonce, &[]));
            }
            type_url::SECRET => {
                self.hold(Kind::Secrets, &inc);
                self.check_rotation(&inc);
                let names = self.secrets.names();
                out.push(wire.ack(&inc.type_url, &inc.version, &inc.nonce, names));
            }
            type_url::EXTENSION_CONFIG => {
                self.hold(Kind::ExtensionConfigs, &inc);
                let names = self.extension_configs.names();
                out.push(wire.ack(&inc.type_url, &inc.version, &inc.nonce, names));
            }
            type_url::ROUTE => {
                self.hold(Kind::Routes, &inc);
                let names = self.routes.names();
                out.push(wire.ack(&inc.type_url, &inc.version, &inc.nonce, names));
            }
            _ => out.push(wire.ack(&inc.type_url, &inc.version, &inc.nonce, &[])),
        }
        // Envoy asks for listeners once every cluster is warm: all its secrets and configs in.
        if self.have_clusters
            && !self.listeners_asked
            && self.secrets.complete()
            && self.extension_configs.complete()
        {
            self.listeners_asked = true;
            out.push(wire.subscribe(type_url::LISTENER, &[], Vec::new(), Vec::new()));
        }
        if !self.initial_reported && self.holds_everything() {
            self.initial_reported = true;
            self.shared.report(Event::Initial {
                stream: self.stream,
                elapsed: inc.received_at.saturating_duration_since(self.started),
                at: inc.received_at,
                bytes: self.bytes,
            });
        }
    }

    fn holds_everything(&self) -> bool {
        self.have_clusters
            && self.have_listeners
            && self.secrets.complete()
            && self.extension_configs.complete()
            && self.routes.complete()
    }

    fn resubscribe_extension_configs<W: Wire>(&mut self, wire: &mut W, out: &mut Vec<W::Request>) {
        let mut all: BTreeSet<String> = self.cluster_extension_configs.iter().cloned().collect();
        all.extend(self.listener_extension_configs.iter().cloned());
        let names = self.shared.intern(all);
        if let Some((added, removed)) = self.extension_configs.set(names) {
            let names = self.extension_configs.names();
            out.push(wire.subscribe(type_url::EXTENSION_CONFIG, names, added, removed));
        }
    }

    fn hold(&mut self, kind: Kind, inc: &Incoming) {
        let held = match kind {
            Kind::Secrets => &mut self.secrets,
            Kind::ExtensionConfigs => &mut self.extension_configs,
            Kind::Routes => &mut self.routes,
        };
        for (name, _) in &inc.resources {
            held.mark(name, true);
        }
        for name in &inc.removed {
            held.mark(name, false);
        }
    }

    /// Counts `size` towards the rotation under way, starting afresh for a new one.
    fn account_rotation(&mut self, size: usize) {
        let Some(rotation) = self.shared.rotation() else {
            return;
        };
        if rotation.index != self.rotation_index {
            self.rotation_index = rotation.index;
            self.rotation_bytes = 0;
            self.rotation_seen = false;
        }
        self.rotation_bytes += size as u64;
    }

    fn check_rotation(&mut self, inc: &Incoming) {
        if self.rotation_seen {
            return;
        }
        let Some(rotation) = self.shared.rotation() else {
            return;
        };
        if rotation.index != self.rotation_index {
            return;
        }
        if inc
            .resources
            .iter()
            .any(|(_, any)| refs::secret_carries(any, &rotation.value))
        {
            self.rotation_seen = true;
            self.shared.reached(Reached {
                index: rotation.index,
                latency: inc
                    .received_at
                    .saturating_duration_since(rotation.written_at),
                bytes: self.rotation_bytes,
            });
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Secrets,
    ExtensionConfigs,
    Routes,
}

#[cfg(test)]
mod tests;
