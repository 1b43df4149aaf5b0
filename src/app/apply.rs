//! The one place where what the sources publish reaches the engine: snapshots and rejections
//! from either source, and key files to re-read.

use super::engine::Engine;
use crate::source::{ConfigErrors, Snapshot, SourceInfo, Update};
use crate::state::{ConfigStatus, ObjectProblem, RefreshRequest};
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

    /// Applies updates, re-reads keys and refreshes credentials on request until the sources
    /// stop. Key re-reads and refreshes go first: a credential change never waits behind a
    /// configuration.
    pub async fn run(
        mut self,
        mut updates: mpsc::Receiver<Update>,
        mut rereads: mpsc::UnboundedReceiver<Vec<PathBuf>>,
        mut refreshes: mpsc::Receiver<RefreshRequest>,
    ) {
        loop {
            tokio::select! {
                biased;
                paths = rereads.recv() => match paths {
                    Some(paths) => self.reread(&paths),
                    None => return,
                },
                // Without an admin API the channel closes and this branch is disabled.
                Some(request) = refreshes.recv() => {
                    // The caller may have given up: nothing to tell it then.
                    let _ = request.reply.send(self.engine.refresh(&request.name));
                }
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
                let complete = is_complete(&snapshot);
                if self.applied.as_ref().is_none_or(|served| {
                    served.model != snapshot.model || is_complete(served) != complete
                }) {
                    self.engine.apply(&snapshot.model, complete);
                    self.applied = Some(snapshot.clone());
                    let files = self.engine.key_files();
                    self.key_files.send_if_modified(|watched| {
                        let changed = *watched != files;
                        *watched = files;
                        changed
                    });
                }
                let errors = &snapshot.info.errors;
                for e in errors {
                    error!("invalid configuration: {e}");
                }
                if !errors.is_empty() {
                    error!(
                        errors = errors.len(),
                        objects_in_last_good_version = snapshot.info.last_good.len(),
                        "configuration partly invalid; the rest, and the last good version of what is invalid, keep serving"
                    );
                    state
                        .metrics
                        .reloads_rejected
                        .fetch_add(1, Ordering::Relaxed);
                }
                let model = &snapshot.model;
                let last_error = if errors.is_empty() {
                    (!snapshot.problems.is_empty()).then(|| {
                        format!(
                            "{} object(s) have problems; see their status",
                            snapshot.problems.len()
                        )
                    })
                } else {
                    Some(ConfigErrors(errors.clone()).to_string())
                };
                let status = ConfigStatus {
                    loaded: true,
                    files: snapshot.info.files.clone(),
                    gateways: model.gateways.len(),
                    backends: model.backends.len(),
                    routes: model.routes.len(),
                    last_error,
                    problems: problems(&snapshot.info),
                    fallback: fallback(&snapshot.info),
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
                    s.problems = problems(&SourceInfo {
                        errors: errors.0.clone(),
                        ..Default::default()
                    });
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

/// Whether a snapshot holds every object of its input (see `xds::State::complete`).
fn is_complete(snapshot: &Snapshot) -> bool {
    snapshot.problems.is_empty() && snapshot.info.errors.is_empty()
}

/// Every error, for `/status`.
fn problems(info: &SourceInfo) -> Vec<ObjectProblem> {
    info.errors
        .iter()
        .map(|e| {
            let object = e.object.as_ref().filter(|o| !o.name.is_empty());
            ObjectProblem {
                object: object.map(|o| format!("{} {:?}", o.kind, o.name)),
                file: e.file.clone(),
                document: e.document,
                field: e.field.clone(),
                message: e.message.clone(),
                last_good_served: object.is_some_and(|o| info.last_good.contains(o)),
            }
        })
        .collect()
}

/// Why what is served differs from the input as it reads now, for `/readyz` and `/status`.
fn fallback(info: &SourceInfo) -> Option<String> {
    let files: std::collections::BTreeSet<String> = info
        .errors
        .iter()
        .map(|e| e.file.display().to_string())
        .collect();
    let files = files.into_iter().collect::<Vec<_>>().join(", ");
    let is = if files.contains(", ") { "are" } else { "is" };
    if info.last_good.is_empty() {
        let invalid = !info.errors.is_empty();
        return invalid.then(|| format!("serving what is valid; {files} {is} invalid"));
    }
    const SHOWN: usize = 5;
    let mut objects: Vec<String> = info
        .last_good
        .iter()
        .take(SHOWN)
        .map(|o| format!("{} {:?}", o.kind, o.name))
        .collect();
    if info.last_good.len() > SHOWN {
        objects.push(format!("{} more", info.last_good.len() - SHOWN));
    }
    let objects = objects.join(", ");
    Some(match info.restored_at {
        Some(at) => format!(
            "serving the configuration persisted at {} for {objects} because {files} {is} invalid",
            httpdate::fmt_http_date(at)
        ),
        None => format!("serving the last good version of {objects} because {files} {is} invalid"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ConfigError;
    use crate::source::load::{ErrorClass, Kind, ObjectRef};
    use std::time::{Duration, UNIX_EPOCH};

    fn info(last_good: &[&str], restored: bool) -> SourceInfo {
        let route = |name: &str| ObjectRef::new(Kind::Route, None, name);
        SourceInfo {
            files: Vec::new(),
            errors: vec![ConfigError {
                file: "/c/routes.yaml".into(),
                document: 2,
                object: Some(route("chat")),
                field: "spec.rules".into(),
                message: "is required".into(),
                class: ErrorClass::Invalid,
            }],
            last_good: last_good.iter().map(|n| route(n)).collect(),
            restored_at: restored.then(|| UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
        }
    }

    #[test]
    fn readiness_says_what_is_served_instead_of_the_input() {
        assert_eq!(fallback(&SourceInfo::default()), None);
        assert_eq!(
            fallback(&info(&[], false)).unwrap(),
            "serving what is valid; /c/routes.yaml is invalid"
        );
        assert_eq!(
            fallback(&info(&["chat"], false)).unwrap(),
            "serving the last good version of Route \"chat\" because /c/routes.yaml is invalid"
        );
        assert_eq!(
            fallback(&info(&["chat"], true)).unwrap(),
            "serving the configuration persisted at Fri, 15 Jan 2027 08:00:00 GMT for Route \"chat\" because /c/routes.yaml is invalid"
        );
        let many: Vec<String> = (0..7).map(|i| format!("r{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(
            fallback(&info(&many, false))
                .unwrap()
                .contains("Route \"r4\", 2 more because")
        );
    }

    #[test]
    fn status_lists_every_problem_and_whether_its_last_good_version_serves() {
        let p = problems(&info(&["chat"], false));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].object.as_deref(), Some("Route \"chat\""));
        assert_eq!((p[0].document, p[0].field.as_str()), (2, "spec.rules"));
        assert!(p[0].last_good_served);
        assert!(!problems(&info(&[], false))[0].last_good_served);
    }
}
