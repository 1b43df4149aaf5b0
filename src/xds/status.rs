//! What every connected Envoy has been sent and has acknowledged, for the admin API and tests.

use dashmap::DashMap;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Per-type progress of one stream.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeStatus {
    /// Last version (SotW) or nonce-tagged update (Delta) sent.
    pub sent: String,
    /// Last version (SotW) or nonce (Delta) the node ACKed; client text, cut and escaped.
    pub acked: String,
    /// Responses sent on this stream for this type.
    pub responses: u64,
    /// Requests received for this type (ACKs, NACKs and subscriptions).
    pub requests: u64,
    pub nacks: u64,
    /// The most recent NACK's error detail as made safe by [`super::limits::nack_text`]:
    /// withheld for credential-bearing types (it may echo the secret), else cut and escaped.
    pub last_nack: Option<String>,
}

/// One ADS stream.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    pub node_id: String,
    pub node_cluster: String,
    pub delta: bool,
    pub types: BTreeMap<&'static str, TypeStatus>,
}

/// All live streams plus counters that outlive them.
#[derive(Debug, Default)]
pub struct Registry {
    next_id: AtomicU64,
    pub streams: DashMap<u64, StreamStatus>,
    pub nacks_total: AtomicU64,
    pub responses_total: AtomicU64,
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
                delta,
                types: BTreeMap::new(),
            },
        );
        id
    }

    /// Updates one type's status of a stream.
    pub fn update(&self, id: u64, short_type: &'static str, f: impl FnOnce(&mut TypeStatus)) {
        if let Some(mut s) = self.streams.get_mut(&id) {
            f(s.types.entry(short_type).or_default());
        }
    }

    /// Forgets a closed stream.
    pub fn close(&self, id: u64) {
        self.streams.remove(&id);
    }

    /// A copy of every live stream, for the admin API.
    pub fn snapshot(&self) -> Vec<StreamStatus> {
        let mut v: Vec<_> = self.streams.iter().map(|e| e.value().clone()).collect();
        v.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        v
    }
}
