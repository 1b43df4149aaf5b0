//! File-system events for configuration files and key files, delivered to async code.
//!
//! Directories are watched non-recursively. A wanted directory that does not exist (yet, or
//! any more) is watched through its nearest existing ancestor, so its creation is seen; one
//! that is removed or moved away falls back the same way. Whoever owns the watcher re-scans a
//! directory whose watch was (re-)established, since events before that are lost.

use notify::event::{AccessKind, AccessMode, Flag, ModifyKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// What happened at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Data written to a file that may still be open: more may follow, so a key file waits
    /// for the close or rename that follows and a half-written key is never used.
    Writing,
    /// A file closed after writing: its content is complete.
    Written,
    /// A name appeared, disappeared or moved: a file or directory created, removed or
    /// renamed, or a symlink swapped (which is a rename).
    Renamed,
    /// The kernel dropped events (its queue overflowed): anything may have changed.
    Lost,
}

/// A path that changed, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: PathBuf,
    pub kind: ChangeKind,
}

impl Change {
    /// Whether the content at `path` may now be complete.
    pub fn settled(&self) -> bool {
        self.kind != ChangeKind::Writing
    }
}

/// Watches directories and reports the paths that changed in them.
pub struct DirWatcher {
    watcher: RecommendedWatcher,
    /// Wanted directory → the path watched for it: itself, or while it is missing its
    /// nearest existing ancestor; `None` while nothing could be watched (retried later).
    wanted: BTreeMap<PathBuf, Option<PathBuf>>,
    /// Watched path → how many wanted directories it serves.
    watched: BTreeMap<PathBuf, usize>,
}

impl DirWatcher {
    /// Starts a watcher whose events arrive on the returned receiver.
    pub fn new() -> notify::Result<(Self, mpsc::UnboundedReceiver<Change>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
                Ok(event) => {
                    let Some(kind) = classify(&event) else {
                        return;
                    };
                    if kind == ChangeKind::Lost {
                        let _ = tx.send(Change {
                            path: PathBuf::new(),
                            kind,
                        });
                    }
                    for path in event.paths {
                        let _ = tx.send(Change { path, kind });
                    }
                }
                Err(e) => warn!(error = %e, "file watcher error"),
            })?;
        Ok((
            Self {
                watcher,
                wanted: BTreeMap::new(),
                watched: BTreeMap::new(),
            },
            rx,
        ))
    }

    /// Makes `dirs` the watched set. Returns the directories newly watched themselves: what
    /// changed in them before now was not seen.
    pub fn set_dirs(&mut self, dirs: impl IntoIterator<Item = PathBuf>) -> Vec<PathBuf> {
        let dirs: std::collections::BTreeSet<PathBuf> = dirs.into_iter().collect();
        let gone: Vec<PathBuf> = self
            .wanted
            .keys()
            .filter(|d| !dirs.contains(*d))
            .cloned()
            .collect();
        for dir in gone {
            self.unplace(&dir);
            self.wanted.remove(&dir);
        }
        let mut now_watched = Vec::new();
        for dir in dirs {
            if self.wanted.contains_key(&dir) {
                continue;
            }
            self.wanted.insert(dir.clone(), None);
            if self.place(&dir) {
                now_watched.push(dir);
            }
        }
        now_watched
    }

    /// Follows a change to the directory structure: a wanted directory (or one on the way to
    /// it) created, removed or moved. Returns the wanted directories whose own watch was
    /// re-established: their content may have changed unseen.
    pub fn follow(&mut self, change: &Change) -> Vec<PathBuf> {
        let affected: Vec<PathBuf> = match change.kind {
            ChangeKind::Renamed => self
                .wanted
                .keys()
                .filter(|d| d.starts_with(&change.path))
                .cloned()
                .collect(),
            ChangeKind::Lost => self.wanted.keys().cloned().collect(),
            ChangeKind::Writing | ChangeKind::Written => return Vec::new(),
        };
        // Unplace all first, so a watch on a removed or moved inode is dropped even when
        // several wanted directories shared it.
        for dir in &affected {
            self.unplace(dir);
        }
        affected.into_iter().filter(|d| self.place(d)).collect()
    }

    /// Retries wanted directories not watched themselves (they were missing, or watching
    /// failed). Returns those now watched.
    pub fn retry(&mut self) -> Vec<PathBuf> {
        let pending: Vec<PathBuf> = self
            .wanted
            .iter()
            .filter(|(dir, at)| at.as_deref() != Some(dir.as_path()))
            .map(|(dir, _)| dir.clone())
            .collect();
        for dir in &pending {
            self.unplace(dir);
        }
        pending.into_iter().filter(|d| self.place(d)).collect()
    }

    /// Watches `dir`, or its nearest existing ancestor while it is missing; true when `dir`
    /// itself is watched.
    fn place(&mut self, dir: &Path) -> bool {
        let mut candidate = Some(dir);
        while let Some(path) = candidate {
            if path.is_dir() && self.watch(path) {
                self.wanted
                    .insert(dir.to_path_buf(), Some(path.to_path_buf()));
                if path == dir {
                    return true;
                }
                // The way to `dir` may have appeared between the check and the watch.
                if dir.is_dir() {
                    self.unplace(dir);
                    return self.place(dir);
                }
                debug!(dir = %dir.display(), through = %path.display(), "watching a missing directory through its ancestor");
                return false;
            }
            candidate = path.parent();
        }
        warn!(dir = %dir.display(), "cannot watch directory (retried periodically)");
        false
    }

    fn unplace(&mut self, dir: &Path) {
        let Some(Some(at)) = self.wanted.get_mut(dir).map(Option::take) else {
            return;
        };
        if let Some(count) = self.watched.get_mut(&at) {
            *count -= 1;
            if *count == 0 {
                self.watched.remove(&at);
                // Fails harmlessly when the watch already ended with its directory.
                let _ = self.watcher.unwatch(&at);
            }
        }
    }

    fn watch(&mut self, path: &Path) -> bool {
        if let Some(count) = self.watched.get_mut(path) {
            *count += 1;
            return true;
        }
        match self.watcher.watch(path, RecursiveMode::NonRecursive) {
            Ok(()) => {
                debug!(dir = %path.display(), "watching");
                self.watched.insert(path.to_path_buf(), 1);
                true
            }
            Err(e) => {
                debug!(dir = %path.display(), error = %e, "cannot watch");
                false
            }
        }
    }
}

fn classify(event: &notify::Event) -> Option<ChangeKind> {
    Some(match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => ChangeKind::Written,
        // Opening or reading (our own reads included) changes nothing.
        EventKind::Access(_) => return None,
        EventKind::Modify(ModifyKind::Name(_)) | EventKind::Create(_) | EventKind::Remove(_) => {
            ChangeKind::Renamed
        }
        // A truncation or write may be followed by more; so may a permission change.
        EventKind::Modify(_) => ChangeKind::Writing,
        EventKind::Other if event.flag() == Some(Flag::Rescan) => ChangeKind::Lost,
        EventKind::Any | EventKind::Other => return None,
    })
}

/// The directory to watch for a file.
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Waits for a change at `path` of a kind in `kinds`, ignoring others.
    async fn expect(rx: &mut mpsc::UnboundedReceiver<Change>, path: &Path, kinds: &[ChangeKind]) {
        let wait = async {
            loop {
                let c = rx.recv().await.unwrap();
                if c.path == path && kinds.contains(&c.kind) {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .unwrap_or_else(|_| panic!("no {kinds:?} event for {}", path.display()));
    }

    #[tokio::test]
    async fn a_missing_directory_is_watched_once_it_appears() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        let (mut w, mut rx) = DirWatcher::new().unwrap();
        assert!(
            w.set_dirs([dir.clone()]).is_empty(),
            "dir does not exist yet"
        );
        std::fs::create_dir(root.path().join("a")).unwrap();
        expect(&mut rx, &root.path().join("a"), &[ChangeKind::Renamed]).await;
        assert!(
            w.follow(&Change {
                path: root.path().join("a"),
                kind: ChangeKind::Renamed
            })
            .is_empty()
        );
        std::fs::create_dir(&dir).unwrap();
        expect(&mut rx, &dir, &[ChangeKind::Renamed]).await;
        let rescan = w.follow(&Change {
            path: dir.clone(),
            kind: ChangeKind::Renamed,
        });
        assert_eq!(rescan, vec![dir.clone()]);
        std::fs::write(dir.join("key"), "k").unwrap();
        expect(&mut rx, &dir.join("key"), &[ChangeKind::Written]).await;
    }

    #[tokio::test]
    async fn a_directory_removed_and_recreated_is_watched_again() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("keys");
        std::fs::create_dir(&dir).unwrap();
        let (mut w, mut rx) = DirWatcher::new().unwrap();
        assert_eq!(w.set_dirs([dir.clone()]), vec![dir.clone()]);
        std::fs::remove_dir(&dir).unwrap();
        expect(&mut rx, &dir, &[ChangeKind::Renamed]).await;
        assert!(
            w.follow(&Change {
                path: dir.clone(),
                kind: ChangeKind::Renamed
            })
            .is_empty()
        );
        std::fs::create_dir(&dir).unwrap();
        expect(&mut rx, &dir, &[ChangeKind::Renamed]).await;
        assert_eq!(
            w.follow(&Change {
                path: dir.clone(),
                kind: ChangeKind::Renamed
            }),
            vec![dir.clone()]
        );
        std::fs::write(dir.join("key"), "k").unwrap();
        expect(&mut rx, &dir.join("key"), &[ChangeKind::Written]).await;
    }

    #[tokio::test]
    async fn a_directory_moved_away_is_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("keys");
        std::fs::create_dir(&dir).unwrap();
        let (mut w, mut rx) = DirWatcher::new().unwrap();
        w.set_dirs([dir.clone()]);
        std::fs::rename(&dir, root.path().join("old")).unwrap();
        expect(&mut rx, &dir, &[ChangeKind::Renamed]).await;
        w.follow(&Change {
            path: dir.clone(),
            kind: ChangeKind::Renamed,
        });
        std::fs::create_dir(&dir).unwrap();
        expect(&mut rx, &dir, &[ChangeKind::Renamed]).await;
        w.follow(&Change {
            path: dir.clone(),
            kind: ChangeKind::Renamed,
        });
        // A write in the old directory must not be reported under the new one's name.
        std::fs::write(root.path().join("old/key"), "old").unwrap();
        std::fs::write(dir.join("key"), "new").unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let c = rx.recv().await.unwrap();
                if c.kind == ChangeKind::Written {
                    return c;
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(first.path, dir.join("key"));
    }
}
