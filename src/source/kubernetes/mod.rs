//! Kubernetes mode: Tessera's custom resources and labelled Secrets, watched with reflectors;
//! every batch of changes becomes a new snapshot; status is written back by one replica at a
//! time (`lease`, `status`, both started by `app` beside this source).

mod convert;
pub mod lease;
pub mod status;
mod tenancy;

pub use convert::{Objects, Snapshot, build};
pub use tenancy::{AllowedDir, BadAllowedDir, Tenancy};

use super::Update;
use super::debounce::{self, Urgency};
use crate::api::{BackendResource, BackendSecurityPolicyResource, GatewayResource, RouteResource};
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
    /// Watch one namespace, or all.
    pub namespace: Option<String>,
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

struct Stores {
    gateways: Store<GatewayResource>,
    backends: Store<BackendResource>,
    policies: Store<BackendSecurityPolicyResource>,
    routes: Store<RouteResource>,
    secrets: Store<Secret>,
}

impl Stores {
    fn objects(&self) -> Objects {
        Objects {
            gateways: self.gateways.state(),
            backends: self.backends.state(),
            policies: self.policies.state(),
            routes: self.routes.state(),
            secrets: self.secrets.state(),
        }
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
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
    /// Starts watching every kind (one reflector task each).
    pub fn start(client: &Client, opts: &KubeOptions) -> Self {
        let (tx, changes) = mpsc::unbounded_channel();
        let ns = opts.namespace.as_deref();
        let any = watcher::Config::default;
        let stores = Stores {
            gateways: reflect(api(client, ns), any(), Change::Config, tx.clone()),
            backends: reflect(api(client, ns), any(), Change::Config, tx.clone()),
            policies: reflect(api(client, ns), any(), Change::Config, tx.clone()),
            routes: reflect(api(client, ns), any(), Change::Config, tx.clone()),
            secrets: reflect(
                api(client, ns),
                any().labels(CREDENTIAL_LABEL),
                Change::Secret,
                tx,
            ),
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
        if a.is_err() || b.is_err() || c.is_err() || d.is_err() || e.is_err() {
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
    pub gateways: Store<GatewayResource>,
    pub backends: Store<BackendResource>,
    pub policies: Store<BackendSecurityPolicyResource>,
    pub routes: Store<RouteResource>,
}
