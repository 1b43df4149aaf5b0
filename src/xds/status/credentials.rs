//! Which version of each credential resource every stream holds (has ACKed), and how fast a
//! new version reaches the nodes that need it.
//!
//! One lock guards the whole table: every operation is a few map lookups, and keeping the
//! per-credential counters next to the per-stream slots keeps them exact. Per stream only
//! interned ids and 64-bit versions are kept (16 bytes a credential), never a name.

use super::super::resource::{Resource, type_url};
use rustc_hash::FxHashMap as HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime};
use tokio::sync::watch;
use tracing::info;

/// Responses whose ACK is still awaited, per stream; older ones are forgotten (Envoy answers
/// in order, so an unanswered old response was superseded).
const MAX_IN_FLIGHT: usize = 8;

/// The shares of nodes `tessera_credential_propagation_seconds` measures, in percent.
pub const SHARES: [u32; 3] = [50, 90, 100];

/// Upper bounds of the propagation histogram's buckets, in seconds.
pub const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// A credential version as a number: keyed versions are 16 hex digits (64 bits) and are kept
/// exactly; any other text is hashed. 0 means "none".
pub fn version_id(version: &str) -> u64 {
    if version.len() == 16
        && let Ok(v) = u64::from_str_radix(version, 16)
    {
        return v.max(1);
    }
    // FNV-1a: stable and cheap; only compared within this process.
    let hash = version.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash.max(1)
}

/// How a version id is shown: the keyed version it was parsed from.
fn version_text(id: u64) -> String {
    if id == 0 {
        String::new()
    } else {
        format!("{id:016x}")
    }
}

/// One credential version held by a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub name: String,
    /// The version the node ACKed; empty while it has ACKed none.
    pub version: String,
    /// Whether that is the version served now.
    pub current: bool,
}

/// How far the version served now has spread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub policy: String,
    pub version: String,
    /// When it was pushed.
    pub published: SystemTime,
    /// Nodes that ACKed it, out of the nodes the credential was sent to.
    pub nodes_current: u32,
    pub nodes_total: u32,
    /// Versions pushed so far (grows by one at every push).
    pub publications: u64,
}

/// A histogram of propagation times per share of nodes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Observations per bucket of [`BUCKETS`] (not cumulative), then the +Inf bucket.
    pub counts: [u64; BUCKETS.len() + 1],
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        let bucket = BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum += seconds;
        self.count += 1;
    }
}

/// The credential table; see the module docs.
#[derive(Debug)]
pub struct Tracker {
    inner: Mutex<Inner>,
    /// Bumped on every push and every credential ACK, for callers waiting on either.
    changes: watch::Sender<u64>,
}

impl Default for Tracker {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            changes: watch::channel(0).0,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    ids: HashMap<Arc<str>, u32>,
    names: HashMap<u32, Arc<str>>,
    next_id: u32,
    live: HashMap<u32, Entry>,
    streams: HashMap<u64, StreamCredentials>,
    propagation: [Histogram; SHARES.len()],
}

#[derive(Debug)]
struct Entry {
    policy: Arc<str>,
    version: u64,
    published: Instant,
    published_at: SystemTime,
    publications: u64,
    /// Streams it was sent to, and those that ACKed `version`.
    needing: u32,
    on_current: u32,
    /// Whether propagation is measured for this version (nodes held the previous one), and
    /// which shares of [`SHARES`] were reached.
    measured: bool,
    reached: [bool; SHARES.len()],
}

#[derive(Debug, Default)]
struct StreamCredentials {
    /// (credential id, type, version ACKed or 0), sorted by id.
    slots: Vec<Slot>,
    in_flight: Vec<InFlight>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    id: u32,
    ecds: bool,
    held: u64,
}

#[derive(Debug)]
struct InFlight {
    nonce: u64,
    ecds: bool,
    carried: Box<[(u32, u64)]>,
}

impl Tracker {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves the counters consistent before it can panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that wakes on every push and every credential ACK.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Records that `version` of credential resource `name` (policy `policy`) is served from now.
    pub fn published(&self, name: &str, policy: &str, version: &str) {
        let version = version_id(version);
        let mut guard = self.lock();
        let inner = &mut *guard;
        let id = inner.intern(name);
        let (needing, on_current) = inner.count(id, version);
        let entry = inner.live.entry(id).or_insert_with(|| Entry {
            policy: policy.into(),
            version: 0,
            published: Instant::now(),
            published_at: SystemTime::now(),
            publications: 0,
            needing: 0,
            on_current: 0,
            measured: false,
            reached: [false; SHARES.len()],
        });
        entry.policy = policy.into();
        entry.version = version;
        entry.published = Instant::now();
        entry.published_at = SystemTime::now();
        entry.publications += 1;
        entry.needing = needing;
        entry.on_current = on_current;
        // A rotation: nodes held the previous value. A first value reaching nodes that connect
        // later is not a propagation time.
        entry.measured = needing > 0;
        entry.reached = [false; SHARES.len()];
        progress(entry, &mut inner.propagation);
        drop(guard);
        self.changed();
    }

    /// Forgets every credential for which `keep` is false (no gateway references it any more).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut inner = self.lock();
        let gone: Vec<u32> = inner
            .names
            .iter()
            .filter(|(_, name)| !keep(name))
            .map(|(id, _)| *id)
            .collect();
        if gone.is_empty() {
            return;
        }
        for id in &gone {
            inner.live.remove(id);
            if let Some(name) = inner.names.remove(id) {
                inner.ids.remove(&name);
            }
        }
        for s in inner.streams.values_mut() {
            s.slots.retain(|slot| !gone.contains(&slot.id));
        }
    }

    /// Records a response on stream `stream` (nonce `nonce`) carrying `resources` of
    /// credential type `t`; `full_set` when it lists every one the node gets (SotW), so the
    /// node no longer needs those it leaves out.
    pub fn sent(
        &self,
        stream: u64,
        nonce: &str,
        t: &str,
        resources: &[&Arc<Resource>],
        full_set: bool,
    ) {
        let Ok(nonce) = nonce.parse::<u64>() else {
            return;
        };
        let ecds = t == type_url::EXTENSION_CONFIG;
        let mut guard = self.lock();
        let inner = &mut *guard;
        let carried: Box<[(u32, u64)]> = resources
            .iter()
            .map(|r| (inner.intern(&r.name), version_id(&r.version)))
            .collect();
        let mut s = inner.streams.remove(&stream).unwrap_or_default();
        if full_set {
            let (kept, dropped): (Vec<Slot>, Vec<Slot>) = s.slots.iter().partition(|slot| {
                slot.ecds != ecds || carried.iter().any(|(id, _)| *id == slot.id)
            });
            s.slots = kept;
            for slot in dropped {
                inner.unslot(slot);
            }
        }
        for (id, _) in carried.iter() {
            if let Err(at) = s.slots.binary_search_by_key(id, |slot| slot.id) {
                s.slots.insert(
                    at,
                    Slot {
                        id: *id,
                        ecds,
                        held: 0,
                    },
                );
                if let Some(e) = inner.live.get_mut(id) {
                    e.needing += 1;
                }
            }
        }
        if s.in_flight.len() == MAX_IN_FLIGHT {
            s.in_flight.remove(0);
        }
        s.in_flight.push(InFlight {
            nonce,
            ecds,
            carried,
        });
        inner.streams.insert(stream, s);
    }

    /// Records that stream `stream` ACKed the response with `nonce`: it now holds what that
    /// response carried.
    pub fn acked(&self, stream: u64, nonce: &str) {
        let Ok(nonce) = nonce.parse::<u64>() else {
            return;
        };
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(s) = inner.streams.get_mut(&stream) else {
            return;
        };
        let Some(at) = s.in_flight.iter().position(|f| f.nonce == nonce) else {
            return;
        };
        let answered = s.in_flight.remove(at);
        // Envoy answers a type's responses in order: older ones of the type were superseded.
        s.in_flight
            .retain(|f| f.ecds != answered.ecds || f.nonce > nonce);
        let mut moves = Vec::with_capacity(answered.carried.len());
        for (id, version) in answered.carried.iter() {
            if let Ok(i) = s.slots.binary_search_by_key(id, |slot| slot.id) {
                let old = std::mem::replace(&mut s.slots[i].held, *version);
                moves.push((*id, old, *version));
            }
        }
        let any = !moves.is_empty();
        for (id, old, new) in moves {
            inner.moved(id, old, new);
        }
        drop(guard);
        if any {
            self.changed();
        }
    }

    /// Records that stream `stream` rejected the response with `nonce`: it keeps what it held.
    pub fn nacked(&self, stream: u64, nonce: &str) {
        let Ok(nonce) = nonce.parse::<u64>() else {
            return;
        };
        if let Some(s) = self.lock().streams.get_mut(&stream) {
            s.in_flight.retain(|f| f.nonce != nonce);
        }
    }

    /// Records credentials a stream holds without being sent them on this stream (a node that
    /// reconnected names the versions it kept); those it was sent are left to their ACKs.
    pub fn holds(&self, stream: u64, t: &str, resources: &[&Arc<Resource>]) {
        if resources.is_empty() {
            return;
        }
        let ecds = t == type_url::EXTENSION_CONFIG;
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut s = inner.streams.remove(&stream).unwrap_or_default();
        let mut any = false;
        for r in resources {
            let id = inner.intern(&r.name);
            if let Err(at) = s.slots.binary_search_by_key(&id, |slot| slot.id) {
                let held = version_id(&r.version);
                s.slots.insert(at, Slot { id, ecds, held });
                if let Some(e) = inner.live.get_mut(&id) {
                    e.needing += 1;
                }
                inner.moved(id, 0, held);
                any = true;
            }
        }
        inner.streams.insert(stream, s);
        drop(guard);
        if any {
            self.changed();
        }
    }

    /// Records that stream `stream` no longer watches credential `name` (a Delta
    /// unsubscribe): it stops counting among the nodes that need it.
    pub fn released(&self, stream: u64, name: &str) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(&id) = inner.ids.get(name) else {
            return;
        };
        let Some(s) = inner.streams.get_mut(&stream) else {
            return;
        };
        let Ok(at) = s.slots.binary_search_by_key(&id, |slot| slot.id) else {
            return;
        };
        let slot = s.slots.remove(at);
        inner.unslot(slot);
        drop(guard);
        self.changed();
    }

    /// Forgets a closed stream; the nodes left may now all hold a version.
    pub fn close(&self, stream: u64) {
        let mut inner = self.lock();
        if let Some(s) = inner.streams.remove(&stream) {
            for slot in s.slots {
                inner.unslot(slot);
            }
        }
    }

    /// What stream `stream` holds of each credential it was sent, by name.
    pub fn held(&self, stream: u64) -> Vec<Held> {
        let inner = self.lock();
        let Some(s) = inner.streams.get(&stream) else {
            return Vec::new();
        };
        let mut held: Vec<Held> = s
            .slots
            .iter()
            .filter_map(|slot| {
                let name = inner.names.get(&slot.id)?;
                let current = inner
                    .live
                    .get(&slot.id)
                    .is_some_and(|e| slot.held != 0 && e.version == slot.held);
                Some(Held {
                    name: name.to_string(),
                    version: version_text(slot.held),
                    current,
                })
            })
            .collect();
        held.sort_by(|a, b| a.name.cmp(&b.name));
        held
    }

    /// How far the served version of credential resource `name` has spread.
    pub fn progress(&self, name: &str) -> Option<Progress> {
        let inner = self.lock();
        let e = inner.live.get(inner.ids.get(name)?)?;
        Some(Progress {
            policy: e.policy.to_string(),
            version: version_text(e.version),
            published: e.published_at,
            nodes_current: e.on_current,
            nodes_total: e.needing,
            publications: e.publications,
        })
    }

    /// The propagation histograms, one per share of [`SHARES`].
    pub fn propagation(&self) -> [Histogram; SHARES.len()] {
        self.lock().propagation.clone()
    }
}

impl Inner {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let name: Arc<str> = name.into();
        self.ids.insert(name.clone(), id);
        self.names.insert(id, name);
        id
    }

    /// Streams that were sent credential `id`, and those that hold `version` of it.
    fn count(&self, id: u32, version: u64) -> (u32, u32) {
        let mut needing = 0;
        let mut on = 0;
        for s in self.streams.values() {
            if let Ok(i) = s.slots.binary_search_by_key(&id, |slot| slot.id) {
                needing += 1;
                on += u32::from(s.slots[i].held == version);
            }
        }
        (needing, on)
    }

    /// A stream's slot went away.
    fn unslot(&mut self, slot: Slot) {
        if let Some(e) = self.live.get_mut(&slot.id) {
            e.needing = e.needing.saturating_sub(1);
            if slot.held == e.version {
                e.on_current = e.on_current.saturating_sub(1);
            }
            progress(e, &mut self.propagation);
        }
    }

    /// A stream now holds `new` of credential `id` instead of `old`.
    fn moved(&mut self, id: u32, old: u64, new: u64) {
        let Some(e) = self.live.get_mut(&id) else {
            return;
        };
        if old == new {
            return;
        }
        if old == e.version {
            e.on_current = e.on_current.saturating_sub(1);
        }
        if new == e.version {
            e.on_current += 1;
        }
        progress(e, &mut self.propagation);
    }
}

/// Records the shares of nodes a rotation newly reached; logs once when every node has it.
fn progress(e: &mut Entry, propagation: &mut [Histogram; SHARES.len()]) {
    if !e.measured || e.needing == 0 {
        return;
    }
    for (i, share) in SHARES.iter().enumerate() {
        let reached = u64::from(e.on_current) * 100 >= u64::from(*share) * u64::from(e.needing);
        if reached && !e.reached[i] {
            e.reached[i] = true;
            let seconds = e.published.elapsed().as_secs_f64();
            propagation[i].observe(seconds);
            if *share == 100 {
                // The version is keyed (an HMAC): it tells values apart without revealing one.
                info!(
                    credential = %e.policy,
                    version = %version_text(e.version),
                    nodes = e.needing,
                    propagation_ms = (seconds * 1000.0) as u64,
                    "credential ACKed by all nodes"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
