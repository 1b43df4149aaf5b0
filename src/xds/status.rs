//! What every connected Envoy has been sent and has acknowledged, for the admin API and tests.

use dashmap::DashMap;
use rustc_hash::FxBuildHasher;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod credentials;

// Enough recent refusals to diagnose a misconfigured `xdsClients`, bounded against floods.
const RECENT_REFUSALS: usize = 32;

/// Per-type progress of one stream.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeStatus {
    /// What was last sent: the type's version (SotW), or the response nonce (Delta, where
    /// versions are per resource).
    pub sent: String,
    /// What the node last ACKed, in the same terms as `sent`: a version (SotW) or the nonce of
    /// the acknowledged response (Delta).
    pub acked: String,
    /// Responses sent on this stream for this type.
    pub responses: u64,
    /// Requests received for this type (ACKs, NACKs and subscriptions).
    pub requests: u64,
    pub nacks: u64,
    /// The most recent NACK's error detail as made safe by [`super::limits::nack_text`]:
    /// withheld for credential-bearing types (it may echo the secret), else cut and escaped.
    pub last_nack: Option<String>,
    /// What the most recent NACK refused, in the same terms as `sent`.
    pub nacked: String,
    /// When `sent` was sent, in milliseconds since the Unix epoch.
    pub sent_unix_ms: u64,
}

/// Whether a node holds what it was last sent of one type: the one rule behind the admin
/// API, `tessera status`, CSDS and `tessera_xds_stale_nodes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SyncState {
    /// Nothing sent yet.
    NotSent,
    /// The node ACKed what it was last sent (or, reconnecting, named it as held).
    Synced,
    /// Sent, not answered yet.
    Stale,
    /// The node rejected what it was last sent.
    Nacked,
}

impl TypeStatus {
    /// How this type stands on its stream.
    pub fn sync(&self) -> SyncState {
        if self.sent.is_empty() {
            if self.acked.is_empty() {
                SyncState::NotSent
            } else {
                SyncState::Synced
            }
        } else if self.acked == self.sent {
            SyncState::Synced
        } else if self.nacked == self.sent {
            SyncState::Nacked
        } else {
            SyncState::Stale
        }
    }

    /// How long the unanswered response has waited, when [`SyncState::Stale`].
    pub fn stale_for(&self, now: SystemTime) -> Option<Duration> {
        (self.sync() == SyncState::Stale).then(|| {
            let sent = UNIX_EPOCH + Duration::from_millis(self.sent_unix_ms);
            now.duration_since(sent).unwrap_or_default()
        })
    }
}

/// Milliseconds since the Unix epoch, as [`TypeStatus::sent_unix_ms`] keeps them.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One ADS stream.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    pub node_id: String,
    pub node_cluster: String,
    /// What the stream proved (certificate SANs, ServiceAccount); `None` when unauthenticated.
    pub identity: Option<String>,
    pub delta: bool,
    pub types: TypeStatuses,
}

/// The per-type status of one stream, by short type name, in name order. A stream has at most
/// five types: a sorted vector holds them in a fifth of a map's first node, which counts at
/// ten thousand streams.
#[derive(Debug, Clone, Default)]
pub struct TypeStatuses(Vec<(&'static str, TypeStatus)>);

impl TypeStatuses {
    /// The status of `short_type`, if the stream has it.
    pub fn get(&self, short_type: &str) -> Option<&TypeStatus> {
        let at = self
            .0
            .binary_search_by(|(t, _)| (*t).cmp(short_type))
            .ok()?;
        Some(&self.0[at].1)
    }

    /// The status of `short_type`, added empty if the stream did not have it.
    pub fn entry(&mut self, short_type: &'static str) -> &mut TypeStatus {
        let at = match self.0.binary_search_by(|(t, _)| (*t).cmp(short_type)) {
            Ok(at) => at,
            Err(at) => {
                self.0.insert(at, (short_type, TypeStatus::default()));
                at
            }
        };
        &mut self.0[at].1
    }

    /// Every type and its status, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &TypeStatus)> {
        self.0.iter().map(|(t, s)| (*t, s))
    }

    /// Every status, in type name order.
    pub fn values(&self) -> impl Iterator<Item = &TypeStatus> {
        self.0.iter().map(|(_, s)| s)
    }
}

impl FromIterator<(&'static str, TypeStatus)> for TypeStatuses {
    fn from_iter<I: IntoIterator<Item = (&'static str, TypeStatus)>>(iter: I) -> Self {
        let mut types = Self::default();
        for (t, status) in iter {
            *types.entry(t) = status;
        }
        types
    }
}

// The same JSON as the map it replaced: {"cds": {...}, ...}.
impl Serialize for TypeStatuses {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl StreamStatus {
    /// Whether any type has been stale for longer than `after`.
    pub fn stale(&self, now: SystemTime, after: Duration) -> bool {
        self.types
            .values()
            .any(|t| t.stale_for(now).is_some_and(|d| d > after))
    }
}

/// A stream refused because its proven identity may not have the configuration it claimed.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    /// The proven identity (certificate SANs or ServiceAccount), never a credential.
    pub identity: String,
    pub node_id: String,
    pub node_cluster: String,
    pub reason: String,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

/// All live streams plus counters that outlive them.
#[derive(Debug, Default)]
pub struct Registry {
    next_id: AtomicU64,
    pub streams: DashMap<u64, StreamStatus, FxBuildHasher>,
    pub nacks_total: AtomicU64,
    /// NACKs by short xDS type (a fixed set: `type_url::short`).
    pub nacks_by_type: DashMap<&'static str, u64>,
    pub responses_total: AtomicU64,
    /// Streams refused by authorisation (`PERMISSION_DENIED`).
    pub refused_total: AtomicU64,
    /// Credential names asked for by nodes whose gateway does not reference them (each name
    /// counted once per stream); nothing is sent for them.
    pub unreferenced_credentials_total: AtomicU64,
    refusals: Mutex<VecDeque<Refusal>>,
    /// Which credential version each stream holds, and how fast rotations propagate.
    pub credentials: credentials::Tracker,
}

impl Registry {
    /// Registers a stream and returns its id.
    pub fn open(&self, node_id: &str, node_cluster: &str, delta: bool) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.streams.insert(
            id,
            StreamStatus {
                node_id: node_id.to_owned(),
                node_cluster: node_cluster.to_owned(),
                identity: None,
                delta,
                types: TypeStatuses::default(),
            },
        );
        id
    }

    /// Updates one type's status of a stream.
    pub fn update(&self, id: u64, short_type: &'static str, f: impl FnOnce(&mut TypeStatus)) {
        if let Some(mut s) = self.streams.get_mut(&id) {
            f(s.types.entry(short_type));
        }
    }

    /// Counts a NACK of `short_type`.
    pub fn count_nack(&self, short_type: &'static str) {
        self.nacks_total.fetch_add(1, Ordering::Relaxed);
        *self.nacks_by_type.entry(short_type).or_default() += 1;
    }

    /// Records what a stream proved about itself.
    pub fn set_identity(&self, id: u64, identity: String) {
        if let Some(mut s) = self.streams.get_mut(&id) {
            s.identity = Some(identity);
        }
    }

    /// Records a refused stream.
    pub fn refuse(&self, refusal: Refusal) {
        self.refused_total.fetch_add(1, Ordering::Relaxed);
        let mut recent = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() == RECENT_REFUSALS {
            recent.pop_front();
        }
        recent.push_back(refusal);
    }

    /// The most recent refusals, oldest first.
    pub fn refusals(&self) -> Vec<Refusal> {
        let recent = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        recent.iter().cloned().collect()
    }

    /// Forgets a closed stream.
    pub fn close(&self, id: u64) {
        self.streams.remove(&id);
        self.credentials.close(id);
    }

    /// A copy of every live stream, for the admin API.
    pub fn snapshot(&self) -> Vec<StreamStatus> {
        self.snapshot_with_ids()
            .into_iter()
            .map(|(_, s)| s)
            .collect()
    }

    /// [`Registry::snapshot`] with each stream's id (to look up its credentials).
    pub fn snapshot_with_ids(&self) -> Vec<(u64, StreamStatus)> {
        let mut v: Vec<_> = self
            .streams
            .iter()
            .map(|e| (*e.key(), e.value().clone()))
            .collect();
        v.sort_by(|a, b| a.1.node_id.cmp(&b.1.node_id).then(a.0.cmp(&b.0)));
        v
    }
}
