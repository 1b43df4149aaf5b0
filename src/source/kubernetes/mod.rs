//! Kubernetes mode: Tessera's custom resources and labelled Secrets, watched with reflectors;
//! every change becomes a new snapshot; status is written back by one replica at a time.

mod convert;
pub mod lease;
mod status;

pub use convert::{Objects, Problem, Snapshot, build};

use crate::api::{BackendResource, BackendSecurityPolicyResource, GatewayResource, RouteResource};
use crate::credentials::StatusBoard;
use crate::source::Restrictions;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

/// Only Secrets carrying this label are watched (and held in memory).
pub const CREDENTIAL_LABEL: &str = "tessera.dev/credential=true";

/// Kubernetes-mode settings.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// Watch one namespace, or all.
    pub namespace: Option<String>,
    pub restrictions: Restrictions,
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

/// Starts a reflector for `K`; every event (including a re-list) notifies `changes`.
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    change: Change,
    changes: mpsc::Sender<Change>,
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
                    let _ = changes.try_send(change);
                }
                // The watcher retries with backoff; the store keeps the last state meanwhile.
                Err(e) => warn!(error = %e, "Kubernetes watch failed; retrying"),
            }
        }
    });
    reader
}

/// Watches the cluster and publishes a snapshot after every change, starting only once every
/// kind has been listed completely.
pub async fn run(
    client: Client,
    opts: KubeOptions,
    snapshots: watch::Sender<Option<Arc<Snapshot>>>,
    board: Arc<StatusBoard>,
) {
    let (tx, mut rx) = mpsc::channel(64);
    let ns = opts.namespace.as_deref();
    let any = watcher::Config::default;
    let stores = Stores {
        gateways: reflect(api(&client, ns), any(), Change::Config, tx.clone()),
        backends: reflect(api(&client, ns), any(), Change::Config, tx.clone()),
        policies: reflect(api(&client, ns), any(), Change::Config, tx.clone()),
        routes: reflect(api(&client, ns), any(), Change::Config, tx.clone()),
        secrets: reflect(
            api(&client, ns),
            any().labels(CREDENTIAL_LABEL),
            Change::Secret,
            tx,
        ),
    };
    // Nothing is translated from a partial list: it would withdraw what is not listed yet.
    let ready = futures::future::join5(
        stores.gateways.wait_until_ready(),
        stores.backends.wait_until_ready(),
        stores.policies.wait_until_ready(),
        stores.routes.wait_until_ready(),
        stores.secrets.wait_until_ready(),
    );
    let (a, b, c, d, e) = ready.await;
    if a.is_err() || b.is_err() || c.is_err() || d.is_err() || e.is_err() {
        warn!("a Kubernetes reflector stopped before its first list");
        return;
    }
    info!("initial Kubernetes lists complete");
    let leader = Arc::new(AtomicBool::new(false));
    tokio::spawn(lease::lead(
        client.clone(),
        opts.lease_namespace.clone(),
        opts.identity.clone(),
        leader.clone(),
    ));
    let (status_tx, status_rx) = watch::channel(Arc::new(Snapshot::default()));
    tokio::spawn(status::write(
        client.clone(),
        stores_handle(&stores),
        status_rx,
        board,
        leader,
    ));
    let publish = |stores: &Stores| {
        let snapshot = Arc::new(build(&stores.objects(), &opts.restrictions));
        let _ = status_tx.send(snapshot.clone());
        snapshots.send_if_modified(|current| {
            let changed = current.as_ref().is_none_or(|c| c.model != snapshot.model);
            *current = Some(snapshot);
            changed
        });
    };
    publish(&stores);
    loop {
        let Some(mut change) = rx.recv().await else {
            return;
        };
        // Batch a burst of config edits (or a re-list) into one rebuild, like file mode; a
        // Secret change (a rotation or revocation) ends the wait at once.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
        while change == Change::Config {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(next)) => change = next,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        while rx.try_recv().is_ok() {}
        publish(&stores);
    }
}

/// Read handles the status writer needs.
pub struct StoreHandles {
    pub gateways: Store<GatewayResource>,
    pub backends: Store<BackendResource>,
    pub policies: Store<BackendSecurityPolicyResource>,
    pub routes: Store<RouteResource>,
}

fn stores_handle(s: &Stores) -> StoreHandles {
    StoreHandles {
        gateways: s.gateways.clone(),
        backends: s.backends.clone(),
        policies: s.policies.clone(),
        routes: s.routes.clone(),
    }
}
