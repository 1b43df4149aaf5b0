//! Key files (`apiKey.file`, AWS `credentialsFile`), watched the same way in file and
//! Kubernetes mode: whatever way a file is replaced, the credential is re-read at once.
//!
//! * A settled event naming the key (close after writing, rename, creation, removal): an
//!   in-place write, an atomic rename, an editor's save, a deletion.
//! * A rename or removal of *another* name in the key's directory after which the key path
//!   leads to a different file (device and inode): the Kubernetes `..data` symlink swap of
//!   Secret, ConfigMap and projected volumes, where no event names the key itself.
//! * The key's directory (or one above it) removed, moved or created: the watch follows it
//!   (see [`DirWatcher`]) and every key in it is re-read.
//! * A periodic re-read of every key, the safety net for what no event reports (a symlink
//!   swapped higher up the path, a network file system); a change it finds is logged.

use super::watch::{Change, ChangeKind, DirWatcher, parent_dir};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::info;

/// The default period of the safety-net re-read.
pub const DEFAULT_REREAD_INTERVAL: Duration = Duration::from_secs(60);

/// What is known of one key file, to tell which events concern it.
#[derive(Debug, Default)]
struct Tracked {
    /// Device and inode the path led to when last re-read.
    identity: Option<(u64, u64)>,
    /// Identity, size and times when last re-read: a difference at the periodic re-read
    /// means a change no event reported.
    fingerprint: Option<[i64; 8]>,
    /// Since when the file has been written in place without being closed.
    writing_since: Option<Instant>,
}

/// Watches key files and says which to re-read; runs as one task for either source.
pub struct KeyFileWatcher {
    watcher: DirWatcher,
    changes: mpsc::UnboundedReceiver<Change>,
    interval: Duration,
    files: BTreeMap<PathBuf, Tracked>,
}

impl KeyFileWatcher {
    /// A watcher that also re-reads every key each `interval`.
    pub fn new(interval: Duration) -> notify::Result<Self> {
        let (watcher, changes) = DirWatcher::new()?;
        Ok(Self {
            watcher,
            changes,
            interval,
            files: BTreeMap::new(),
        })
    }

    /// Follows the set of key files in `files`; sends the paths to re-read on `rereads`.
    /// Ends when either channel closes.
    pub async fn run(
        mut self,
        mut files: watch::Receiver<Vec<PathBuf>>,
        rereads: mpsc::UnboundedSender<Vec<PathBuf>>,
    ) {
        let mut tick = tokio::time::interval_at(Instant::now() + self.interval, self.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let initial = files.borrow_and_update().clone();
        let mut due = self.set_files(initial);
        loop {
            if !due.is_empty() && rereads.send(std::mem::take(&mut due)).is_err() {
                return;
            }
            // Events first: a tick must not re-read a file whose write has just been reported.
            tokio::select! {
                biased;
                change = self.changes.recv() => match change {
                    Some(change) => due = self.on_change(&change),
                    None => return,
                },
                changed = files.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let set = files.borrow_and_update().clone();
                    due = self.set_files(set);
                }
                _ = tick.tick() => due = self.periodic(),
            }
        }
    }

    /// Replaces the set of key files; returns the ones to read now: new keys were read by the
    /// engine before their directory was watched, so a change in between would be lost.
    fn set_files(&mut self, set: Vec<PathBuf>) -> Vec<PathBuf> {
        let set: BTreeSet<PathBuf> = set.into_iter().collect();
        self.files.retain(|path, _| set.contains(path));
        let mut due: BTreeSet<PathBuf> = set
            .iter()
            .filter(|p| !self.files.contains_key(*p))
            .cloned()
            .collect();
        for path in &set {
            self.files.entry(path.clone()).or_default();
        }
        for dir in self.watcher.set_dirs(set.iter().map(|p| parent_dir(p))) {
            due.extend(self.files_in(&dir));
        }
        self.reread(due)
    }

    fn on_change(&mut self, change: &Change) -> Vec<PathBuf> {
        let mut due = BTreeSet::new();
        for dir in self.watcher.follow(change) {
            due.extend(self.files_in(&dir));
        }
        if change.kind == ChangeKind::Lost {
            due.extend(self.files.keys().cloned());
        }
        if let Some(tracked) = self.files.get_mut(&change.path) {
            if change.settled() {
                tracked.writing_since = None;
                due.insert(change.path.clone());
            } else {
                tracked.writing_since.get_or_insert_with(Instant::now);
            }
        }
        if change.kind == ChangeKind::Renamed {
            // Another name in a key's directory moved: the key path may lead elsewhere now.
            let dir = parent_dir(&change.path);
            for path in self.files_in(&dir) {
                let tracked = &self.files[&path];
                if tracked.writing_since.is_none() && identity(&path) != tracked.identity {
                    due.insert(path);
                }
            }
        }
        self.reread(due)
    }

    /// Every key not being written; a key written for longer than three intervals is read
    /// anyway (its writer may have died holding it open).
    fn periodic(&mut self) -> Vec<PathBuf> {
        let mut due = BTreeSet::new();
        for dir in self.watcher.retry() {
            due.extend(self.files_in(&dir));
        }
        for (path, tracked) in &self.files {
            if tracked
                .writing_since
                .is_some_and(|since| since.elapsed() < self.interval * 3)
            {
                continue;
            }
            if fingerprint(path) != tracked.fingerprint {
                info!(file = %path.display(), "key file changed without a file event; picked up by the periodic re-read");
            }
            due.insert(path.clone());
        }
        self.reread(due)
    }

    /// Records what the paths lead to now, as the engine is about to read them.
    fn reread(&mut self, due: BTreeSet<PathBuf>) -> Vec<PathBuf> {
        for path in &due {
            if let Some(tracked) = self.files.get_mut(path) {
                tracked.identity = identity(path);
                tracked.fingerprint = fingerprint(path);
                tracked.writing_since = None;
            }
        }
        due.into_iter().collect()
    }

    fn files_in(&self, dir: &Path) -> Vec<PathBuf> {
        self.files
            .keys()
            .filter(|p| parent_dir(p) == dir)
            .cloned()
            .collect()
    }
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn fingerprint(path: &Path) -> Option<[i64; 8]> {
    std::fs::metadata(path).ok().map(|m| {
        [
            m.dev() as i64,
            m.ino() as i64,
            m.size() as i64,
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
            i64::from(m.mode()),
        ]
    })
}

#[cfg(test)]
mod tests;
