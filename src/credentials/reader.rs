//! Long-lived credentials of a model, with one reader task per credential file.
//!
//! A reader re-reads its file when told (a file event, a reload). A deleted key is revoked at
//! once; an emptied one once it is still empty [`EMPTY_SETTLE`] later, because a file
//! rewritten in place is empty between its truncation and its write, and a read queued by an
//! earlier event can fall in between. A transient read error is retried with backoff while
//! the last good value keeps serving, and counts as a revocation only once the file has
//! stayed unreadable for [`READ_GRACE`]. Readers keep retrying an unreadable file after that,
//! so it comes back without waiting for an event.

use super::rotator::backoff;
use super::static_key::{Read, ReadError, Source};
use super::{Closed, Material, Outlet, Publication, Publish, Revocation};
use crate::model::Model;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

/// How long a credential file may stay unreadable before its credential is revoked.
pub const READ_GRACE: Duration = Duration::from_secs(30);
/// Upper bound of the backoff between re-reads of an unreadable file.
pub const READ_MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a key file found empty keeps its last value before the emptiness counts as a
/// revocation: far longer than a rewrite takes, short enough to be a revocation still.
pub const EMPTY_SETTLE: Duration = Duration::from_millis(250);

/// What a long-lived credential currently is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyState {
    Present(Material),
    Revoked(Revocation),
    /// Found empty since `since`, perhaps mid-rewrite: `kept` is still served until the file
    /// is read empty again after [`EMPTY_SETTLE`].
    Emptied {
        revocation: Revocation,
        since: Instant,
        kept: Material,
    },
    /// Unreadable since `since`; `kept` is the last good material, still served.
    Unreadable {
        error: String,
        since: Instant,
        attempts: u32,
        kept: Option<Material>,
    },
}

impl KeyState {
    /// The state after `read`, made at `now`.
    fn next(prev: Option<&KeyState>, read: Read, now: Instant) -> Self {
        let (path, error) = match read {
            Ok(material) => return Self::Present(material),
            Err(ReadError::Revoked(r @ Revocation::FileEmpty(_))) => {
                return match prev {
                    Some(Self::Present(kept)) => Self::Emptied {
                        revocation: r,
                        since: now,
                        kept: kept.clone(),
                    },
                    Some(Self::Emptied { since, kept, .. })
                        if now.duration_since(*since) < EMPTY_SETTLE =>
                    {
                        Self::Emptied {
                            revocation: r,
                            since: *since,
                            kept: kept.clone(),
                        }
                    }
                    _ => Self::Revoked(r),
                };
            }
            Err(ReadError::Revoked(r)) => return Self::Revoked(r),
            Err(ReadError::Transient { path, error }) => (path, error),
        };
        let (since, attempts, kept) = match prev {
            Some(Self::Present(m) | Self::Emptied { kept: m, .. }) => (now, 0, Some(m.clone())),
            Some(Self::Unreadable {
                since,
                attempts,
                kept,
                ..
            }) => (*since, *attempts, kept.clone()),
            // Still unreadable: stays revoked (with the latest error) instead of flapping.
            Some(Self::Revoked(Revocation::FileUnreadable { .. })) => {
                return Self::Revoked(Revocation::FileUnreadable { path, error });
            }
            Some(Self::Revoked(_)) | None => (now, 0, None),
        };
        if now.duration_since(since) >= READ_GRACE {
            return Self::Revoked(Revocation::FileUnreadable { path, error });
        }
        Self::Unreadable {
            error: format!("{} is unreadable: {error}; retrying", path.display()),
            since,
            attempts: attempts + 1,
            kept,
        }
    }

    /// When to read again without being told.
    fn retry_in(&self) -> Option<Duration> {
        match self {
            Self::Emptied { .. } => Some(EMPTY_SETTLE),
            Self::Unreadable { attempts, .. } => {
                Some(backoff(*attempts, READ_MAX_BACKOFF, fastrand::f64()))
            }
            Self::Revoked(Revocation::FileUnreadable { .. }) => Some(READ_MAX_BACKOFF),
            _ => None,
        }
    }

    fn publication(&self) -> Publication {
        match self {
            Self::Present(material) | Self::Emptied { kept: material, .. } => Publication::Serve {
                material: material.clone(),
                expires: None,
            },
            Self::Revoked(r) => Publication::Closed(Closed::Revoked(r.clone())),
            Self::Unreadable {
                error,
                kept: Some(_),
                ..
            } => Publication::Failing {
                error: error.clone(),
                expires: None,
            },
            Self::Unreadable {
                error, kept: None, ..
            } => Publication::Closed(Closed::Unavailable(error.clone())),
        }
    }
}

/// One long-lived credential.
struct Entry {
    source: Source,
    /// How its reader publishes (file sources only).
    outlet: Option<Outlet>,
    state: watch::Receiver<KeyState>,
    reader: Reader,
}

enum Reader {
    /// Secret documents: the value comes with the model, nothing to re-read.
    None,
    /// A file reader that has not been started yet.
    Ready {
        outlet: Outlet,
        state: watch::Sender<KeyState>,
    },
    Running {
        wake: Arc<Notify>,
        task: JoinHandle<()>,
    },
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Reader::Running { task, .. } = &self.reader {
            task.abort();
        }
    }
}

/// Every long-lived credential of the served model.
#[derive(Default)]
pub struct StaticKeys {
    entries: BTreeMap<String, Entry>,
}

impl StaticKeys {
    /// Takes `model`'s long-lived credentials: one whose source is unchanged keeps its reader
    /// and state; a new or changed one is read now. Start new readers with [`Self::start`]
    /// once the publications were published.
    pub fn reload(&mut self, model: &Model, sink: &Arc<dyn Publish>) {
        let mut old = std::mem::take(&mut self.entries);
        for (name, source) in super::static_key::all(model) {
            if let Some(entry) = old.remove(&name).filter(|e| e.source == source) {
                self.entries.insert(name, entry);
                continue;
            }
            let state = KeyState::next(None, source.read(), Instant::now());
            log_change(&name, None, &state);
            let (tx, rx) = watch::channel(state);
            let outlet = source.file().map(|_| Outlet::register(sink, &name));
            let reader = match &outlet {
                Some(outlet) => Reader::Ready {
                    outlet: outlet.clone(),
                    state: tx,
                },
                None => Reader::None,
            };
            self.entries.insert(
                name,
                Entry {
                    source,
                    outlet,
                    state: rx,
                    reader,
                },
            );
        }
        // A reader being dropped may be mid-publication on another thread: retire it.
        for entry in old.values() {
            if let Some(outlet) = &entry.outlet {
                outlet.retire();
            }
        }
    }

    /// What every credential should be served as now.
    pub fn publications(&self) -> Vec<(String, Publication)> {
        self.entries
            .iter()
            .map(|(name, e)| (name.clone(), e.state.borrow().publication()))
            .collect()
    }

    /// Starts the readers of new credential files; the others re-read theirs.
    pub fn start(&mut self) {
        for entry in self.entries.values_mut() {
            match std::mem::replace(&mut entry.reader, Reader::None) {
                Reader::Ready { outlet, state } => {
                    let wake = Arc::new(Notify::new());
                    let task =
                        tokio::spawn(read_loop(entry.source.clone(), state, wake.clone(), outlet));
                    entry.reader = Reader::Running { wake, task };
                }
                Reader::Running { wake, task } => {
                    wake.notify_one();
                    entry.reader = Reader::Running { wake, task };
                }
                Reader::None => {}
            }
        }
    }

    /// Files holding credentials.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.entries.values().filter_map(|e| e.source.file())
    }

    /// Has credential `name`'s file re-read now. `None` when `name` is no long-lived
    /// credential; `Some(None)` when it has no file to re-read (a Secret document, whose value
    /// comes with the configuration).
    pub fn reread_now(&self, name: &str) -> Option<Option<ReadDone>> {
        let entry = self.entries.get(name)?;
        let Reader::Running { wake, .. } = &entry.reader else {
            return Some(None);
        };
        let mut read = entry.state.clone();
        read.mark_unchanged();
        wake.notify_one();
        Some(Some(ReadDone(read)))
    }

    /// Tells the readers of `path` to re-read it; they publish what changed at once.
    pub fn reread(&self, path: &Path) {
        for entry in self.entries.values() {
            if entry.source.file() == Some(path)
                && let Reader::Running { wake, .. } = &entry.reader
            {
                wake.notify_one();
            }
        }
    }
}

/// The re-read [`StaticKeys::reread_now`] asked for.
pub struct ReadDone(watch::Receiver<KeyState>);

impl ReadDone {
    /// Returns once the file was read again (and what changed published).
    pub async fn wait(mut self) {
        // An error means the reader stopped (the credential left the configuration).
        let _ = self.0.changed().await;
    }
}

/// Re-reads `source` whenever woken, and on its own while it is unreadable.
async fn read_loop(
    source: Source,
    state: watch::Sender<KeyState>,
    wake: Arc<Notify>,
    outlet: Outlet,
) {
    let mut retry = state.borrow().retry_in().map(|d| Instant::now() + d);
    loop {
        tokio::select! {
            () = wake.notified() => {}
            () = sleep_until(retry) => {}
        }
        let prev = state.borrow().clone();
        let next = KeyState::next(Some(&prev), source.read(), Instant::now());
        retry = next.retry_in().map(|d| Instant::now() + d);
        let publication = next.publication();
        let changed = publication != prev.publication();
        if changed {
            log_change(outlet.name(), Some(&prev), &next);
        }
        // The state first, then the publication: a reload that reads the state in between
        // publishes the new value itself.
        state.send_replace(next);
        if changed {
            outlet.publish(publication);
        }
    }
}

fn log_change(name: &str, prev: Option<&KeyState>, next: &KeyState) {
    match next {
        KeyState::Present(_) if prev.is_some() => info!(credential = %name, "credential rotated"),
        KeyState::Present(_) => {}
        KeyState::Revoked(why) => {
            warn!(credential = %name, reason = %why, "credential revoked: its backends fail closed until it returns")
        }
        KeyState::Emptied { .. } => {}
        KeyState::Unreadable { error, kept, .. } => {
            warn!(credential = %name, reason = %error, still_serving_last_value = kept.is_some(), "credential file unreadable")
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
