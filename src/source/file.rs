//! File mode: a YAML file or a directory of them, loaded again (debounced) after every edit.
//! Key files are not this source's concern: `key_files` watches them in either mode.

use super::debounce::{self, Urgency};
use super::load::{Loaded, load};
use super::watch::{Change, ChangeKind, DirWatcher, parent_dir};
use super::{Snapshot, SourceInfo, Update};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;

/// The configuration on disk, and a watch on its directory.
pub struct FileSource {
    config: PathBuf,
    dir: PathBuf,
    watcher: DirWatcher,
    changes: mpsc::UnboundedReceiver<Change>,
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
        })
    }

    /// Reads the whole configuration as it is now.
    pub fn load(&self) -> Update {
        match load(&self.config) {
            Ok(Loaded { model, files }) => Update::Snapshot(Arc::new(Snapshot {
                model,
                problems: BTreeMap::new(),
                info: SourceInfo { files },
            })),
            Err(errors) => Update::Rejected(Arc::new(errors)),
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
            } = &mut self;
            let batch = debounce::next_batch(changes, |change| {
                let rescan = !watcher.follow(change).is_empty();
                if rescan || is_config_change(config, dir, change) {
                    Urgency::Batch
                } else {
                    Urgency::Ignore
                }
            });
            if batch.await.is_none() || updates.send(self.load()).await.is_err() {
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
}
