//! File mode: a YAML file or a directory of them, loaded again (debounced) after every edit.
//! Key files are not this source's concern: `key_files` watches them in either mode.

use super::debounce::{self, Urgency};
use super::last_good::LastGood;
use super::load::{ConfigError, ConfigErrors, ErrorClass, read};
use super::watch::{Change, ChangeKind, DirWatcher, parent_dir};
use super::{Problem, Snapshot, SourceInfo, Update};
use crate::state_dir::StateDir;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// The configuration on disk, and a watch on its directory.
pub struct FileSource {
    config: PathBuf,
    dir: PathBuf,
    watcher: DirWatcher,
    changes: mpsc::UnboundedReceiver<Change>,
    /// What was served last, object by object (see `last_good`).
    last_good: LastGood,
    /// Where the last good configuration is persisted, if anywhere.
    state: Option<StateDir>,
    /// Whether `last_good` is what the state directory holds.
    persisted: bool,
}

impl FileSource {
    /// Watches `config` (a file or a directory; absolute) for edits.
    pub fn new(config: PathBuf) -> notify::Result<Self> {
        let dir = if config.is_dir() {
            config.clone()
        } else {
            parent_dir(&config)
        };
        let (mut watcher, changes) = DirWatcher::new()?;
        watcher.set_dirs([dir.clone()]);
        Ok(Self {
            config,
            dir,
            watcher,
            changes,
            last_good: LastGood::default(),
            state: None,
            persisted: false,
        })
    }

    /// Persists every configuration served in `state`, and starts from the one persisted
    /// there (an unusable one is logged and ignored).
    pub fn with_state_dir(mut self, state: StateDir) -> Self {
        match LastGood::load(&state, &self.config) {
            Ok(Some(last_good)) => {
                info!(dir = %state.path().display(), "read the last good configuration");
                self.last_good = last_good;
                self.persisted = true;
            }
            Ok(None) => {}
            Err(e) => {
                warn!(error = %e, "cannot use the persisted configuration; starting without it")
            }
        }
        self.state = Some(state);
        self
    }

    /// Reads the configuration as it is now: every valid object, and the last good version of
    /// each object whose input is invalid now. Persists what it returns to serve.
    pub fn load(&mut self) -> Update {
        let mut parsed = read(&self.config);
        // A file truncated to nothing is far more often an edit in progress than a request
        // to delete what it held: its objects keep their last good version.
        for file in &parsed.files {
            let empty = std::fs::metadata(file).is_ok_and(|m| m.len() == 0);
            if empty && self.last_good.has_objects_from(file) {
                parsed.errors.push(ConfigError {
                    file: file.clone(),
                    document: 0,
                    object: None,
                    field: String::new(),
                    message: "is empty; what it held keeps serving (delete the file to remove it)"
                        .into(),
                    class: ErrorClass::Invalid,
                });
            }
        }
        let files = parsed.files.clone();
        let merged = self.last_good.merge(&self.config, parsed);
        if merged.model == Default::default() && !merged.errors.is_empty() {
            // Nothing to serve: what is served (if anything) stays, and so does its record.
            return Update::Rejected(Arc::new(ConfigErrors(merged.errors)));
        }
        if !merged.next.persists_as(&self.last_good) {
            self.persisted = false;
        }
        self.last_good = merged.next;
        self.persist();
        let mut problems: BTreeMap<_, Vec<Problem>> = BTreeMap::new();
        for e in &merged.errors {
            if let Some(object) = e.object.as_ref().filter(|o| !o.name.is_empty()) {
                problems.entry(object.clone()).or_default().push(e.into());
            }
        }
        Update::Snapshot(Arc::new(Snapshot {
            model: merged.model,
            problems,
            info: SourceInfo {
                files,
                errors: merged.errors,
                last_good: merged.from_last_good,
                restored_at: merged.restored_at,
            },
        }))
    }

    /// Writes the last good configuration to the state directory unless it holds it already.
    fn persist(&mut self) {
        let Some(state) = &self.state else {
            return;
        };
        if self.persisted {
            return;
        }
        match self.last_good.save(state, &self.config, SystemTime::now()) {
            Ok(()) => self.persisted = true,
            // Serving goes on; only a restart with an invalid configuration would miss it.
            Err(e) => warn!(error = %e, "cannot persist the configuration served"),
        }
    }

    /// Publishes the configuration after every batch of edits, until `updates` closes or
    /// the watcher stops.
    pub async fn run(mut self, updates: mpsc::Sender<Update>) {
        loop {
            let Self {
                config,
                dir,
                watcher,
                changes,
                ..
            } = &mut self;
            let batch = debounce::next_batch(changes, |change| {
                let rescan = !watcher.follow(change).is_empty();
                if rescan || is_config_change(config, dir, change) {
                    Urgency::Batch
                } else {
                    Urgency::Ignore
                }
            });
            if batch.await.is_none() {
                return;
            }
            let update = self.load();
            if updates.send(update).await.is_err() {
                return;
            }
        }
    }
}

/// Whether `change` may alter the configuration read from `config` (in `dir`).
fn is_config_change(config: &Path, dir: &Path, change: &Change) -> bool {
    if change.kind == ChangeKind::Lost {
        return true;
    }
    if change.path.parent() != Some(dir) {
        return false;
    }
    let Some(name) = change.path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    // A ConfigMap volume updates by swapping its `..data` symlink: no event names a YAML file.
    if name.starts_with("..") {
        return true;
    }
    if config != dir {
        return change.path == config;
    }
    name.ends_with(".yaml") || name.ends_with(".yml")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(path: &str, kind: ChangeKind) -> Change {
        Change {
            path: PathBuf::from(path),
            kind,
        }
    }

    #[test]
    fn which_changes_reload_a_directory() {
        let (config, dir) = (Path::new("/etc/t"), Path::new("/etc/t"));
        let reloads = |p: &str| is_config_change(config, dir, &change(p, ChangeKind::Written));
        assert!(reloads("/etc/t/routes.yaml"));
        assert!(reloads("/etc/t/gw.yml"));
        assert!(reloads("/etc/t/..data"), "ConfigMap swap");
        assert!(!reloads("/etc/t/openai.key"));
        assert!(!reloads("/etc/t/sub/routes.yaml"));
        assert!(!reloads("/etc/routes.yaml"));
        assert!(is_config_change(config, dir, &change("", ChangeKind::Lost)));
    }

    #[test]
    fn which_changes_reload_a_single_file() {
        let (config, dir) = (Path::new("/etc/t/config.yaml"), Path::new("/etc/t"));
        let reloads = |p: &str| is_config_change(config, dir, &change(p, ChangeKind::Renamed));
        assert!(reloads("/etc/t/config.yaml"));
        assert!(reloads("/etc/t/..data"));
        assert!(!reloads("/etc/t/other.yaml"));
    }

    fn gateway(name: &str) -> String {
        format!(
            "apiVersion: tessera.dev/v1alpha1\nkind: Gateway\nmetadata: {{name: {name}}}\nspec:\n  nodeCluster: {name}\n  listeners: [{{name: http, port: 10000}}]\n"
        )
    }

    /// Waits for an update serving a gateway named `name`.
    async fn serves(updates: &mut mpsc::Receiver<Update>, name: &str) {
        let wait = async {
            loop {
                if let Update::Snapshot(s) = updates.recv().await.unwrap()
                    && s.model.gateways.contains_key(name)
                {
                    return;
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), wait)
            .await
            .unwrap_or_else(|_| panic!("gateway {name} was never published"));
    }

    fn snapshot(update: Update) -> Arc<Snapshot> {
        match update {
            Update::Snapshot(s) => s,
            Update::Rejected(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_restart_serves_the_persisted_version_of_what_is_invalid() {
        let root = tempfile::tempdir().unwrap();
        let (dir, state) = (root.path().join("config"), root.path().join("state"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("a.yaml"), gateway("a")).unwrap();
        let b = gateway("b").replace("10000", "10001");
        std::fs::write(dir.join("b.yaml"), &b).unwrap();
        let source = || {
            let state = StateDir::open(&state).unwrap();
            FileSource::new(dir.clone()).unwrap().with_state_dir(state)
        };
        let first = snapshot(source().load());
        assert!(first.info.errors.is_empty(), "{:?}", first.info.errors);
        assert!(first.info.restored_at.is_none());

        // Restarted while b.yaml is half written, then while it is empty.
        std::fs::write(dir.join("b.yaml"), &b[..50]).unwrap();
        let mut restarted = source();
        let s = snapshot(restarted.load());
        assert_eq!(s.model, first.model);
        assert!(s.info.restored_at.is_some());
        assert_eq!(s.info.last_good.len(), 1);
        assert!(
            s.info.errors[0].file.ends_with("b.yaml"),
            "{:?}",
            s.info.errors
        );
        std::fs::write(dir.join("b.yaml"), "").unwrap();
        let s = snapshot(source().load());
        assert_eq!(s.model, first.model, "an emptied file keeps its objects");
        assert!(s.info.errors[0].message.contains("empty"));

        // Deleting the file is what removes its objects.
        std::fs::remove_file(dir.join("b.yaml")).unwrap();
        let s = snapshot(restarted.load());
        assert!(s.info.errors.is_empty());
        assert_eq!(s.model.gateways.keys().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn an_invalid_start_without_state_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), &gateway("a")[..50]).unwrap();
        let state = StateDir::open(&dir.path().join(".state")).unwrap();
        let mut source = FileSource::new(dir.path().to_path_buf())
            .unwrap()
            .with_state_dir(state);
        match source.load() {
            Update::Rejected(e) => assert!(e.to_string().contains("a.yaml"), "{e}"),
            Update::Snapshot(s) => panic!("served {s:?}"),
        }
    }

    #[tokio::test]
    async fn a_configmap_update_and_a_recreated_directory_reload() {
        use std::os::unix::fs::symlink;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("config");
        // A ConfigMap volume: gateway.yaml -> ..data/gateway.yaml, ..data -> ..<timestamp>.
        std::fs::create_dir_all(dir.join("..1")).unwrap();
        std::fs::write(dir.join("..1/gateway.yaml"), gateway("a")).unwrap();
        symlink("..1", dir.join("..data")).unwrap();
        symlink("..data/gateway.yaml", dir.join("gateway.yaml")).unwrap();
        let mut source = FileSource::new(dir.clone()).unwrap();
        match source.load() {
            Update::Snapshot(s) => assert!(s.model.gateways.contains_key("a")),
            Update::Rejected(e) => panic!("{e}"),
        }
        let (tx, mut updates) = mpsc::channel(16);
        tokio::spawn(source.run(tx));

        std::fs::create_dir(dir.join("..2")).unwrap();
        std::fs::write(dir.join("..2/gateway.yaml"), gateway("b")).unwrap();
        symlink("..2", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        std::fs::remove_dir_all(dir.join("..1")).unwrap();
        serves(&mut updates, "b").await;

        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("gateway.yaml"), gateway("c")).unwrap();
        serves(&mut updates, "c").await;
    }
}
