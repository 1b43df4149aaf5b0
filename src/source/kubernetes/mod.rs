//! Kubernetes mode: Tessera's custom resources and labelled Secrets, watched with reflectors;
//! every batch of changes becomes a new snapshot; status is written back by one replica at a
//! time (`lease`, `status`, both started by `app` beside this source).

mod convert;
mod guard;
pub mod lease;
pub mod status;
mod tenancy;

pub use convert::{Objects, Snapshot, build};
pub use guard::{Guarded, Unreadable};
pub use tenancy::{AllowedDir, BadAllowedDir, Tenancy};

use super::Update;
use super::debounce::{self, Urgency};
use crate::api::{BackendResource, BackendSecurityPolicyResource, GatewayResource, RouteResource};
use crate::source::load::{Kind, ObjectRef};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

/// Only Secrets carrying this label are watched (and held in memory).
pub const CREDENTIAL_LABEL: &str = "tessera.dev/credential=true";

/// Kubernetes-mode settings.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// Watch these namespaces (each needs its own Role grants), or all when empty.
    pub namespaces: Vec<String>,
    /// What each namespace's objects may point Tessera at.
    pub tenancy: Tenancy,
    /// Where the status-writer Lease lives.
    pub lease_namespace: String,
    /// This replica's identity in the Lease.
    pub identity: String,
}

/// What changed: config objects are batched, Secrets are applied at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Config,
    Secret,
}

/// One reflector store per watched namespace (or a single one for every namespace).
pub struct Reflected<K>(Vec<Store<K>>)
where
    K: Resource + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone;

impl<K> Clone for Reflected<K>
where
    K: Resource + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<K> Reflected<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    /// Every object of every store.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.0.iter().flat_map(Store::state).collect()
    }

    /// Whether every store completed its first list (false if a reflector stopped before).
    async fn wait_until_ready(&self) -> bool {
        let ready = futures::future::join_all(self.0.iter().map(Store::wait_until_ready)).await;
        ready.iter().all(Result::is_ok)
    }
}

struct Stores {
    gateways: Reflected<Guarded<GatewayResource>>,
    backends: Reflected<Guarded<BackendResource>>,
    policies: Reflected<Guarded<BackendSecurityPolicyResource>>,
    routes: Reflected<Guarded<RouteResource>>,
    secrets: Reflected<Secret>,
}

impl Stores {
    fn objects(&self) -> Objects {
        let mut unreadable = Vec::new();
        Objects {
            gateways: split(Kind::Gateway, self.gateways.state(), &mut unreadable),
            backends: split(Kind::Backend, self.backends.state(), &mut unreadable),
            policies: split(
                Kind::BackendSecurityPolicy,
                self.policies.state(),
                &mut unreadable,
            ),
            routes: split(Kind::Route, self.routes.state(), &mut unreadable),
            secrets: self.secrets.state(),
            unreadable,
        }
    }
}

/// The readable objects of one kind; the others go to `unreadable`, named.
fn split<K: Clone>(
    kind: Kind,
    objects: Vec<Arc<Guarded<K>>>,
    unreadable: &mut Vec<(ObjectRef, String)>,
) -> Vec<Arc<K>> {
    let mut readable = Vec::new();
    for o in objects {
        match &o.0 {
            Ok(object) => readable.push(Arc::new(object.clone())),
            Err(u) => {
                let ns = u.metadata.namespace.as_deref();
                let name = u.metadata.name.clone().unwrap_or_default();
                unreadable.push((ObjectRef::new(kind, ns, name), u.error.clone()));
            }
        }
    }
    readable
}

/// One reflector of `K` per namespace in `namespaces`, or one for all when it is empty.
fn reflect_in<K>(
    client: &Client,
    namespaces: &[String],
    config: &watcher::Config,
    change: Change,
    changes: &mpsc::UnboundedSender<Change>,
) -> Reflected<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let apis: Vec<Api<K>> = if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    Reflected(
        apis.into_iter()
            .map(|api| reflect(api, config.clone(), change, changes.clone()))
            .collect(),
    )
}

/// Starts a reflector for `K` (a task of its own); every event (including a re-list) notifies
/// `changes`.
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    change: Change,
    changes: mpsc::UnboundedSender<Change>,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    if changes.send(change).is_err() {
                        return;
                    }
                }
                // The watcher retries with backoff; the store keeps the last state meanwhile.
                Err(e) => warn!(error = %e, "Kubernetes watch failed; retrying"),
            }
        }
    });
    reader
}

/// The cluster as a source: one reflector per kind, and the snapshots built from them.
pub struct KubeSource {
    stores: Stores,
    changes: mpsc::UnboundedReceiver<Change>,
    tenancy: Tenancy,
    listed: watch::Sender<bool>,
}

impl KubeSource {
    /// Starts watching every kind (one reflector task per kind and namespace).
    pub fn start(client: &Client, opts: &KubeOptions) -> Self {
        let (tx, changes) = mpsc::unbounded_channel();
        let ns = &opts.namespaces;
        let any = watcher::Config::default();
        let labelled = watcher::Config::default().labels(CREDENTIAL_LABEL);
        let config = Change::Config;
        let stores = Stores {
            gateways: reflect_in(client, ns, &any, config, &tx),
            backends: reflect_in(client, ns, &any, config, &tx),
            policies: reflect_in(client, ns, &any, config, &tx),
            routes: reflect_in(client, ns, &any, config, &tx),
            secrets: reflect_in(client, ns, &labelled, Change::Secret, &tx),
        };
        Self {
            stores,
            changes,
            tenancy: opts.tenancy.clone(),
            listed: watch::channel(false).0,
        }
    }

    /// Becomes true once every kind has been listed completely.
    pub fn listed(&self) -> watch::Receiver<bool> {
        self.listed.subscribe()
    }

    /// Read handles for the status writer.
    pub fn status_stores(&self) -> StoreHandles {
        StoreHandles {
            gateways: self.stores.gateways.clone(),
            backends: self.stores.backends.clone(),
            policies: self.stores.policies.clone(),
            routes: self.stores.routes.clone(),
        }
    }

    /// Publishes a snapshot to `updates` and `status` once every kind is listed, then after
    /// every batch of changes (a Secret change at once). Ends when `updates` closes or a
    /// reflector stops before its first list.
    pub async fn run(
        mut self,
        updates: mpsc::Sender<Update>,
        status: watch::Sender<Arc<Snapshot>>,
    ) {
        // Nothing is translated from a partial list: it would withdraw what is not listed yet.
        let s = &self.stores;
        let (a, b, c, d, e) = futures::future::join5(
            s.gateways.wait_until_ready(),
            s.backends.wait_until_ready(),
            s.policies.wait_until_ready(),
            s.routes.wait_until_ready(),
            s.secrets.wait_until_ready(),
        )
        .await;
        if !(a && b && c && d && e) {
            warn!("a Kubernetes reflector stopped before its first list");
            return;
        }
        info!("initial Kubernetes lists complete");
        self.listed.send_replace(true);
        // What arrived during the lists is in the first snapshot already.
        while self.changes.try_recv().is_ok() {}
        loop {
            let snapshot = Arc::new(build(&self.stores.objects(), &self.tenancy));
            let _ = status.send(snapshot.clone());
            if updates.send(Update::Snapshot(snapshot)).await.is_err() {
                return;
            }
            let batch = debounce::next_batch(&mut self.changes, |change| match change {
                Change::Config => Urgency::Batch,
                Change::Secret => Urgency::Now,
            });
            if batch.await.is_none() {
                return;
            }
        }
    }
}

/// Read handles the status writer needs.
pub struct StoreHandles {
    pub gateways: Reflected<Guarded<GatewayResource>>,
    pub backends: Reflected<Guarded<BackendResource>>,
    pub policies: Reflected<Guarded<BackendSecurityPolicyResource>>,
    pub routes: Reflected<Guarded<RouteResource>>,
}
