//! Applies a validated model: translation, credentials and the cache, the same for every source.

use super::AppState;
use crate::credentials::{KeyState, Minters, StaticKeys};
use crate::model::Model;
use crate::translate::{names, translate};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tracing::{info, warn};

/// Owns the credential state that outlives one configuration.
pub struct Engine {
    pub state: Arc<AppState>,
    keys: StaticKeys,
    minters: Minters,
}

impl Engine {
    /// An engine publishing into `state`; `http` is the client for identity providers.
    pub fn new(state: Arc<AppState>, http: reqwest::Client) -> Self {
        let minters = Minters::new(state.cache.clone(), state.board.clone(), http);
        Self {
            state,
            keys: StaticKeys::default(),
            minters,
        }
    }

    /// Publishes `model` with the credentials it needs, atomically; starts or stops refresh
    /// tasks. A model equal to the served one publishes nothing (no churn in the fleet).
    pub fn apply(&mut self, model: &Model) {
        let gateways = translate(model);
        let keys = StaticKeys::load(model);
        let in_use: HashSet<String> = gateways
            .values()
            .flat_map(|g| g.credentials.iter().cloned())
            .collect();
        let plan = self.minters.plan(model, &in_use);
        let mut credentials = keys.resources();
        credentials.extend(plan.placeholders.iter().cloned());
        self.state.cache.publish(gateways, credentials);
        self.minters.start(plan);
        let policies: HashSet<String> = model
            .policies
            .keys()
            .map(|p| names::credential(p))
            .collect();
        self.state.board.0.retain(|name, _| policies.contains(name));
        for (name, key_state) in keys.states() {
            self.state.record_static(name, key_state);
        }
        self.keys = keys;
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

    /// Files holding credentials, to watch.
    pub fn key_files(&self) -> Vec<PathBuf> {
        self.keys.files().cloned().collect()
    }

    /// Whether `path` holds a credential.
    pub fn is_key_file(&self, path: &Path) -> bool {
        self.keys.files().any(|f| f == path)
    }

    /// Re-reads a credential file and pushes what changed at once: credentials never wait
    /// behind the configuration debounce.
    pub fn reread_key(&mut self, path: &Path) {
        let changed = self.keys.reread(path);
        if changed.is_empty() {
            return;
        }
        let resources: Vec<_> = changed.iter().map(|(_, _, r)| r.clone()).collect();
        self.state.cache.set_credentials(resources);
        for (name, key_state, _) in &changed {
            self.state.record_static(name, key_state);
            self.state
                .metrics
                .credential_updates
                .fetch_add(1, Ordering::Relaxed);
            match key_state {
                KeyState::Present(_) => {
                    info!(credential = %name, file = %path.display(), "credential rotated")
                }
                KeyState::Revoked(why) => {
                    warn!(credential = %name, reason = %why, "credential revoked: its backends fail closed")
                }
            }
        }
    }
}
