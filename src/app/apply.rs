//! The one place where what the sources publish reaches the engine: snapshots and rejections
//! from either source, and key files to re-read.

use super::engine::Engine;
use crate::source::{Snapshot, Update};
use crate::state::ConfigStatus;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::{mpsc, watch};
use tracing::error;

/// Applies updates through the engine and tells the key-file watcher what to watch.
pub struct Applier {
    engine: Engine,
    key_files: watch::Sender<Vec<PathBuf>>,
    /// The snapshot whose model the engine serves; an equal model is not applied again.
    applied: Option<Arc<Snapshot>>,
}

impl Applier {
    /// An applier publishing the engine's key files on `key_files`.
    pub fn new(engine: Engine, key_files: watch::Sender<Vec<PathBuf>>) -> Self {
        Self {
            engine,
            key_files,
            applied: None,
        }
    }

    /// Applies updates and re-reads keys until the sources stop. Key re-reads go first: a
    /// credential change never waits behind a configuration.
    pub async fn run(
        mut self,
        mut updates: mpsc::Receiver<Update>,
        mut rereads: mpsc::UnboundedReceiver<Vec<PathBuf>>,
    ) {
        loop {
            tokio::select! {
                biased;
                paths = rereads.recv() => match paths {
                    Some(paths) => self.reread(&paths),
                    None => return,
                },
                update = updates.recv() => match update {
                    Some(update) => self.apply(update),
                    None => return,
                },
            }
        }
    }

    /// Serves a snapshot (unless its model is already served), or records why an input was
    /// rejected while the last good configuration keeps serving.
    pub fn apply(&mut self, update: Update) {
        let state = self.engine.state.clone();
        match update {
            Update::Snapshot(snapshot) => {
                if self
                    .applied
                    .as_ref()
                    .is_none_or(|served| served.model != snapshot.model)
                {
                    self.engine.apply(&snapshot.model);
                    self.applied = Some(snapshot.clone());
                    let files = self.engine.key_files();
                    self.key_files.send_if_modified(|watched| {
                        let changed = *watched != files;
                        *watched = files;
                        changed
                    });
                }
                let model = &snapshot.model;
                let status = ConfigStatus {
                    loaded: true,
                    files: snapshot.info.files.clone(),
                    gateways: model.gateways.len(),
                    backends: model.backends.len(),
                    routes: model.routes.len(),
                    last_error: (!snapshot.problems.is_empty()).then(|| {
                        format!(
                            "{} object(s) have problems; see their status",
                            snapshot.problems.len()
                        )
                    }),
                };
                if let Ok(mut s) = state.config_status.write() {
                    *s = status;
                }
            }
            Update::Rejected(errors) => {
                for e in &errors.0 {
                    error!("invalid configuration: {e}");
                }
                error!(
                    errors = errors.0.len(),
                    "configuration rejected; the last good configuration keeps serving"
                );
                if let Ok(mut s) = state.config_status.write() {
                    s.last_error = Some(errors.to_string());
                }
                state
                    .metrics
                    .reloads_rejected
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn reread(&mut self, paths: &[PathBuf]) {
        // The watcher's list may lag behind a configuration just applied.
        for path in paths {
            if self.engine.is_key_file(path) {
                self.engine.reread_key(path);
            }
        }
    }
}
