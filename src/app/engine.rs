//! Applies a validated model: translation, credentials and the cache, the same for every source.
//!
//! Credential tasks publish values; the [`Publisher`] here is where they land: it turns each
//! value into its Envoy resource (`translate::credential`), pushes it to the cache at once,
//! counts it and records the credential's state.

use super::AppState;
use crate::credentials::{Closed, Minters, Publication, Publish, StaticKeys, Ticket};
use crate::model::{AwsSource, Model, PolicyKind};
use crate::state::{CredentialInfo, RefreshStarted};
use crate::translate::{CredentialForm, credential, names, translate};
use crate::xds::resource::VersionKey;
use crate::xds::{GatewayConfig, Resource};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tracing::{info, warn};

/// Owns the credential state that outlives one configuration.
pub struct Engine {
    pub state: Arc<AppState>,
    publisher: Arc<Publisher>,
    keys: StaticKeys,
    minters: Minters,
    /// Gateways without client authentication already warned about.
    warned_open: HashSet<String>,
}

impl Engine {
    /// An engine publishing into `state`; `http` is the client for identity providers; `key`
    /// versions every credential resource.
    pub fn new(state: Arc<AppState>, http: reqwest::Client, key: VersionKey) -> Self {
        let publisher = Arc::new(Publisher {
            state: state.clone(),
            key,
            inner: Mutex::default(),
        });
        let sink: Arc<dyn Publish> = publisher.clone();
        Self {
            state,
            publisher,
            keys: StaticKeys::default(),
            minters: Minters::new(sink, http),
            warned_open: HashSet::new(),
        }
    }

    /// Publishes `model` with the credentials it needs, atomically; starts or stops refresh
    /// tasks. A model equal to the served one publishes nothing (no churn in the fleet).
    /// `complete` is false when the source left objects out as invalid (nodes whose gateway
    /// is absent are then not answered: `xds::State::complete`).
    pub fn apply(&mut self, model: &Model, complete: bool) {
        let gateways = translate(model);
        let referenced: HashSet<&String> = gateways
            .values()
            .flat_map(|g| g.credentials.iter())
            .collect();
        // Policies' credentials and gateways' client keys alike.
        let in_use: HashSet<String> = credential::forms(model)
            .map(|(name, _)| name)
            .filter(|name| referenced.contains(&names::credential(name)))
            .collect();
        self.warn_open_gateways(model);
        let sink: Arc<dyn Publish> = self.publisher.clone();
        self.keys.reload(model, &sink);
        let plan = self.minters.plan(model, &in_use);
        self.publish(model, gateways, &in_use, &plan.pending, complete);
        self.keys.start();
        self.minters.start(plan);
        self.state
            .metrics
            .reloads_ok
            .fetch_add(1, Ordering::Relaxed);
        self.state.ready.store(true, Ordering::Relaxed);
        info!(
            gateways = model.gateways.len(),
            backends = model.backends.len(),
            routes = model.routes.len(),
            "configuration applied"
        );
    }

    /// Publishes the gateways with the current value of every credential, atomically; `pending`
    /// are minted credentials published failing closed until their first mint.
    fn publish(
        &self,
        model: &Model,
        gateways: HashMap<String, Arc<GatewayConfig>>,
        in_use: &HashSet<String>,
        pending: &[String],
        complete: bool,
    ) {
        // Held while the tasks' current values are read and published, so a task's newer
        // value can never be overwritten by an older one read here.
        let mut inner = self.publisher.lock();
        inner.forms = credential::forms(model).collect();
        let mut publications = self.keys.publications();
        publications.extend(
            pending
                .iter()
                .map(|name| (name.clone(), Publication::Closed(Closed::Pending))),
        );
        let resources: Vec<(&String, Arc<Resource>)> = publications
            .iter()
            .filter_map(|(name, p)| Some((name, inner.resource(&self.publisher.key, name, p)?)))
            .collect();
        let served = self.state.cache.state();
        let pushed: Vec<(&String, &Arc<Resource>)> = resources
            .iter()
            .filter(|(policy, r)| {
                in_use.contains(*policy)
                    && served.credentials.get(&r.name).map(|s| &s.version) != Some(&r.version)
            })
            .map(|(policy, r)| (*policy, r))
            .collect();
        let updates = pushed.len();
        for (policy, r) in &pushed {
            let state = publications
                .iter()
                .find(|(name, _)| name == *policy)
                .map(|(_, p)| p.state().0.name());
            info!(credential = %policy, state, version = %r.version, resources = 1, "credential pushed");
        }
        let pushed: Vec<(String, String, String)> = pushed
            .into_iter()
            .map(|(policy, r)| (r.name.clone(), policy.clone(), r.version.clone()))
            .collect();
        let resources = resources.into_iter().map(|(_, r)| r);
        self.state.cache.publish_with(gateways, resources, complete);
        // The tracker follows the cache: what it forgot, and what is new in it.
        let tracker = &self.state.registry.credentials;
        let served = self.state.cache.state();
        tracker.retain(|name| served.credentials.contains_key(name));
        for (name, policy, version) in &pushed {
            tracker.published(name, policy, version);
        }
        let info = inner
            .forms
            .keys()
            .map(|name| {
                let info = CredentialInfo {
                    resource: names::credential(name),
                    kind: kind(model, name),
                };
                (name.clone(), info)
            })
            .collect();
        if let Ok(mut credentials) = self.state.credentials.write() {
            *credentials = info;
        }
        self.state
            .metrics
            .credential_updates
            .fetch_add(updates as u64, Ordering::Relaxed);
        let known: HashSet<String> = inner.forms.keys().map(|p| names::credential(p)).collect();
        let board = &self.state.board;
        board.0.retain(|name, _| known.contains(name));
        let metrics = &self.state.metrics;
        metrics
            .credential_attempts
            .retain(|policy, _| inner.forms.contains_key(policy));
        metrics
            .credential_failures
            .retain(|(policy, _), _| inner.forms.contains_key(policy));
        for (name, p) in &publications {
            let (state, expires) = p.state();
            board.set(&names::credential(name), state, expires);
        }
    }

    /// Warns once per gateway that serves anyone who reaches its listeners.
    fn warn_open_gateways(&mut self, model: &Model) {
        for g in model.gateways.values().filter(|g| g.client_auth.is_none()) {
            if self.warned_open.insert(g.name.clone()) {
                warn!(gateway = %g.name, "no clientAuth: anyone who reaches this gateway's listeners spends its provider credentials");
            }
        }
    }

    /// Has the credential published as `name` (a policy) minted or re-read now.
    pub fn refresh(&self, name: &str) -> RefreshStarted {
        if self.minters.refresh_now(name) {
            return RefreshStarted::Minting;
        }
        match self.keys.reread_now(name) {
            Some(Some(read)) => RefreshStarted::Rereading(read),
            Some(None) => RefreshStarted::WithConfiguration,
            None => RefreshStarted::NotFound,
        }
    }

    /// Files holding credentials, to watch.
    pub fn key_files(&self) -> Vec<PathBuf> {
        self.keys.files().map(Path::to_path_buf).collect()
    }

    /// Whether `path` holds a credential.
    pub fn is_key_file(&self, path: &Path) -> bool {
        self.keys.files().any(|f| f == path)
    }

    /// Has the credentials stored in `path` re-read; what changed is pushed at once:
    /// credentials never wait behind the configuration debounce.
    pub fn reread_key(&mut self, path: &Path) {
        self.keys.reread(path);
    }
}

/// The kind of credential published as `name`, for the admin API.
fn kind(model: &Model, name: &str) -> &'static str {
    match model.policies.get(name).map(|p| &p.kind) {
        Some(PolicyKind::ApiKey(_)) => "api_key",
        Some(PolicyKind::Aws(aws)) if matches!(aws.source, AwsSource::WebIdentity(_)) => {
            "aws_web_identity"
        }
        Some(PolicyKind::Aws(_)) => "aws_keys",
        Some(PolicyKind::Azure(_)) => "azure",
        None => "client_keys",
    }
}

/// Where credential values land: the cache, the metrics and the status board.
struct Publisher {
    state: Arc<AppState>,
    key: VersionKey,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// How each policy's credential reaches Envoy, from the applied model.
    forms: HashMap<String, CredentialForm>,
    /// The current ticket of each credential's task.
    tickets: HashMap<String, u64>,
    next_ticket: u64,
}

impl Inner {
    /// The resource a publication changes, if any (a failing refresh keeps what is served).
    fn resource(
        &self,
        key: &VersionKey,
        policy: &str,
        publication: &Publication,
    ) -> Option<Arc<Resource>> {
        let material = match publication {
            Publication::Serve { material, .. } => Some(material),
            Publication::Closed(_) => None,
            Publication::Failing { .. } => return None,
        };
        let form = self.forms.get(policy)?;
        let resource = credential::resource(&names::credential(policy), form, material);
        Some(resource.keyed(key))
    }
}

impl Publisher {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing in the critical sections can leave `Inner` half-updated.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Publish for Publisher {
    fn register(&self, name: &str) -> Ticket {
        let mut inner = self.lock();
        inner.next_ticket += 1;
        let ticket = inner.next_ticket;
        inner.tickets.insert(name.to_owned(), ticket);
        Ticket(ticket)
    }

    fn retire(&self, name: &str, ticket: Ticket) {
        let mut inner = self.lock();
        if inner.tickets.get(name) == Some(&ticket.0) {
            inner.tickets.remove(name);
        }
    }

    fn attempted(&self, name: &str, ticket: Ticket, failure: Option<&'static str>) {
        let inner = self.lock();
        if inner.tickets.get(name) != Some(&ticket.0) {
            return;
        }
        let metrics = &self.state.metrics;
        *metrics
            .credential_attempts
            .entry(name.to_owned())
            .or_default() += 1;
        if let Some(class) = failure {
            *metrics
                .credential_failures
                .entry((name.to_owned(), class))
                .or_default() += 1;
        }
    }

    fn publish(&self, name: &str, ticket: Ticket, publication: Publication) {
        let inner = self.lock();
        if inner.tickets.get(name) != Some(&ticket.0) {
            return;
        }
        if let Some(resource) = inner.resource(&self.key, name, &publication) {
            let version = resource.version.clone();
            let resource_name = resource.name.clone();
            if self.state.cache.set_credentials([resource]) {
                (self.state.registry.credentials).published(&resource_name, name, &version);
                self.state
                    .metrics
                    .credential_updates
                    .fetch_add(1, Ordering::Relaxed);
                // The version is keyed (an HMAC): it tells values apart without revealing one.
                info!(credential = %name, state = publication.state().0.name(), version = %version, resources = 1, "credential pushed");
            }
        }
        let (state, expires) = publication.state();
        self.state
            .board
            .set(&names::credential(name), state, expires);
        self.state.publications.count(name);
    }
}

#[cfg(test)]
mod tests;
