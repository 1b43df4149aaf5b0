//! File-system events for configuration files and key files, delivered to async code.

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher, event::ModifyKind};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Watches directories (never recursively) and reports the paths that changed in them.
pub struct DirWatcher {
    watcher: RecommendedWatcher,
    dirs: BTreeSet<PathBuf>,
}

/// A path that changed, and whether its content may now be complete.
#[derive(Debug, Clone)]
pub struct Change {
    pub path: PathBuf,
    /// False for a data write that may be followed by more (the file is still open); key
    /// files wait for the close or rename that follows, so a half-written key is never used.
    pub settled: bool,
}

impl DirWatcher {
    /// Starts a watcher whose events arrive on the returned receiver.
    pub fn new() -> notify::Result<(Self, mpsc::UnboundedReceiver<Change>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
                Ok(event) => {
                    // Only a close after writing, a rename, a creation or a removal leaves a
                    // file complete; a truncation or write may be followed by more.
                    let settled = match event.kind {
                        EventKind::Access(notify::event::AccessKind::Close(
                            notify::event::AccessMode::Write,
                        )) => true,
                        EventKind::Access(_) => return,
                        EventKind::Modify(ModifyKind::Name(_)) => true,
                        EventKind::Modify(_) => false,
                        _ => true,
                    };
                    for path in event.paths {
                        let _ = tx.send(Change { path, settled });
                    }
                }
                Err(e) => warn!(error = %e, "file watcher error"),
            })?;
        Ok((
            Self {
                watcher,
                dirs: BTreeSet::new(),
            },
            rx,
        ))
    }

    /// Makes sure exactly `dirs` are watched; a directory that cannot be watched yet (it does
    /// not exist) is retried at the next call.
    pub fn set_dirs(&mut self, dirs: impl IntoIterator<Item = PathBuf>) {
        let wanted: BTreeSet<PathBuf> = dirs.into_iter().collect();
        for gone in self.dirs.difference(&wanted).cloned().collect::<Vec<_>>() {
            let _ = self.watcher.unwatch(&gone);
            self.dirs.remove(&gone);
        }
        for dir in wanted {
            if self.dirs.contains(&dir) {
                continue;
            }
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    debug!(dir = %dir.display(), "watching");
                    self.dirs.insert(dir);
                }
                Err(e) => warn!(dir = %dir.display(), error = %e, "cannot watch directory"),
            }
        }
    }
}

/// The directory to watch for a file.
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
