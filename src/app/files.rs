//! File mode: a YAML file or directory, reloaded (debounced) when it changes; credential files
//! re-read at once.

use super::ConfigStatus;
use super::engine::Engine;
use crate::source::watch::{Change, DirWatcher, parent_dir};
use crate::source::{Loaded, load};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::error;

/// Configuration edits are batched: applied once the directory is quiet this long…
const DEBOUNCE_QUIET: Duration = Duration::from_millis(100);
/// …or at the latest this long after the first edit.
const DEBOUNCE_MAX: Duration = Duration::from_secs(1);

/// Keeps the cache in line with the files on disk.
pub struct FileSource {
    pub config: PathBuf,
    pub engine: Engine,
    pub watcher: DirWatcher,
}

impl FileSource {
    /// Applies file events until the watcher stops.
    pub async fn run(mut self, mut changes: mpsc::UnboundedReceiver<Change>) {
        let mut deadline: Option<(Instant, Instant)> = None; // (quiet, max)
        loop {
            let sleep_until = deadline.map(|(quiet, max)| quiet.min(max));
            let change = tokio::select! {
                c = changes.recv() => match c {
                    Some(c) => Some(c),
                    None => return,
                },
                () = sleep_opt(sleep_until) => None,
            };
            match change {
                Some(change) => {
                    if change.settled && self.engine.is_key_file(&change.path) {
                        self.engine.reread_key(&change.path);
                    }
                    if self.is_config_file(&change.path) {
                        let now = Instant::now();
                        let max = deadline.map_or(now + DEBOUNCE_MAX, |(_, m)| m);
                        deadline = Some((now + DEBOUNCE_QUIET, max));
                    }
                }
                None => {
                    deadline = None;
                    self.reload();
                }
            }
        }
    }

    fn config_dir(&self) -> PathBuf {
        if self.config.is_dir() {
            self.config.clone()
        } else {
            parent_dir(&self.config)
        }
    }

    fn is_config_file(&self, path: &Path) -> bool {
        if self.config.is_file() || !self.config.is_dir() && self.config.extension().is_some() {
            return path == self.config;
        }
        path.parent() == Some(self.config.as_path())
            && matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            )
    }

    /// Loads the whole configuration; on any error the last good one keeps serving.
    pub fn reload(&mut self) {
        let state = self.engine.state.clone();
        match load(&self.config) {
            Ok(Loaded { model, files }) => {
                self.engine.apply(&model);
                let mut dirs: Vec<PathBuf> = self
                    .engine
                    .key_files()
                    .iter()
                    .map(|f| parent_dir(f))
                    .collect();
                dirs.push(self.config_dir());
                self.watcher.set_dirs(dirs);
                if let Ok(mut s) = state.config_status.write() {
                    *s = ConfigStatus {
                        loaded: true,
                        files,
                        gateways: model.gateways.len(),
                        backends: model.backends.len(),
                        routes: model.routes.len(),
                        last_error: None,
                    };
                }
            }
            Err(errors) => {
                for e in &errors.0 {
                    error!("invalid configuration: {e}");
                }
                error!(
                    errors = errors.0.len(),
                    "configuration rejected; the last good configuration keeps serving"
                );
                // Keep watching the directory so a fix is picked up.
                if !state.ready.load(Ordering::Relaxed) {
                    self.watcher.set_dirs([self.config_dir()]);
                }
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
}

async fn sleep_opt(until: Option<Instant>) {
    match until {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
