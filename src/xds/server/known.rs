//! What a node holds of one type (Delta), or was last sent of it (SotW credentials).

use super::names::{self, NameSet, worth_sharing};
use crate::xds::cache::{GatewayConfig, TypeSet};
use crate::xds::resource::type_url;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Name → set key (name and version) of what a node holds of one type.
///
/// Per name, the names and the keys are kept apart, each shared with every stream that holds
/// the same ones (see [`names`]): a fleet's streams hold the same 100 secrets at the same
/// versions, so each keeps two pointers instead of a map; while a client changes what it
/// holds name by name, the stream keeps a map of its own (see [`names`] for when it is shared
/// again). A node that holds a wildcard type's whole set as its gateway has it (clusters and
/// listeners, nearly always) keeps only a handle to that set.
#[derive(Debug)]
pub(super) enum Known {
    /// Per name: sorted names and, aligned with them, the keys held; with the XOR of every key,
    /// so that a rotation's answer does not fold over the whole set.
    Names {
        names: NameSet,
        keys: Arc<[u64]>,
        all: u64,
    },
    /// The stream's own map, with the XOR of its keys and the names changed since it was last
    /// shared.
    Own {
        map: HashMap<Arc<str>, u64>,
        all: u64,
        changes: usize,
    },
    /// The gateway's whole set of this wildcard type (`CLUSTER` or `LISTENER`).
    Whole(Arc<GatewayConfig>, &'static str),
}

impl Default for Known {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl Known {
    /// Holding `pairs` of name and key (a later pair for a name wins).
    pub fn new(mut pairs: Vec<(Arc<str>, u64)>) -> Self {
        // Stable: of repeated names, the last pair is kept.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut deduped: Vec<(Arc<str>, u64)> = Vec::with_capacity(pairs.len());
        for pair in pairs {
            match deduped.last_mut() {
                Some(last) if last.0 == pair.0 => *last = pair,
                _ => deduped.push(pair),
            }
        }
        let all = deduped.iter().fold(0, |acc, (_, k)| acc ^ k);
        let (names, keys): (Vec<Arc<str>>, Vec<u64>) = deduped.into_iter().unzip();
        Self::Names {
            names: NameSet::new(names),
            keys: names::keys(keys),
            all,
        }
    }

    /// The set a `Whole` stands for.
    fn whole<'a>(gateway: &'a GatewayConfig, t: &str) -> &'a TypeSet {
        if t == type_url::LISTENER {
            &gateway.listeners
        } else {
            &gateway.clusters
        }
    }

    /// The set key held for `name`.
    pub fn get(&self, name: &str) -> Option<u64> {
        match self {
            Self::Names { names, keys, .. } => names.position(name).ok().map(|i| keys[i]),
            Self::Own { map, .. } => map.get(name).copied(),
            Self::Whole(g, t) => Self::whole(g, t).resources.get(name).map(|r| r.set_key),
        }
    }

    /// Every name held.
    pub fn names(&self) -> Vec<&str> {
        match self {
            Self::Names { names, .. } => names.iter().map(|n| &**n).collect(),
            Self::Own { map, .. } => map.keys().map(|n| &**n).collect(),
            Self::Whole(g, t) => Self::whole(g, t)
                .resources
                .keys()
                .map(String::as_str)
                .collect(),
        }
    }

    /// How many names are held.
    pub fn len(&self) -> usize {
        match self {
            Self::Names { names, .. } => names.len(),
            Self::Own { map, .. } => map.len(),
            Self::Whole(g, t) => Self::whole(g, t).resources.len(),
        }
    }

    /// The XOR of every set key held (a SotW-style version of what the node holds).
    pub fn key(&self) -> u64 {
        match self {
            Self::Names { all, .. } | Self::Own { all, .. } => *all,
            Self::Whole(g, t) => {
                crate::xds::resource::set_key(Self::whole(g, t).resources.values())
            }
        }
    }

    /// Every name and key held.
    fn pairs(&self) -> Vec<(Arc<str>, u64)> {
        match self {
            Self::Names { names, keys, .. } => {
                names.iter().cloned().zip(keys.iter().copied()).collect()
            }
            Self::Own { map, .. } => map.iter().map(|(n, k)| (n.clone(), *k)).collect(),
            Self::Whole(g, t) => Self::whole(g, t)
                .resources
                .values()
                .map(|r| (r.shared_name.clone(), r.set_key))
                .collect(),
        }
    }

    /// Records that `updated` are held at their keys and `removed` no longer are, in time
    /// proportional to the change unless the change is worth sharing the result.
    pub fn apply(&mut self, updated: &[(Arc<str>, u64)], removed: &[&str]) {
        if updated.is_empty() && removed.is_empty() {
            return;
        }
        // A rotation: only keys of names already held change, and the names stay shared. (The
        // server's pace: a node is sent another version of a name it holds only when the value
        // changed, or once after it reconnected.)
        if removed.is_empty()
            && let Self::Names { names, keys, all } = self
            && let Some(at) = updated
                .iter()
                .map(|(n, _)| names.position(n).ok())
                .collect::<Option<Vec<usize>>>()
        {
            let mut new = keys.to_vec();
            for (i, (_, key)) in at.into_iter().zip(updated) {
                *all ^= new[i] ^ key;
                new[i] = *key;
            }
            *keys = names::keys(new);
            return;
        }
        let count = updated.len() + removed.len();
        if !matches!(self, Self::Own { .. }) {
            if worth_sharing(count, self.len() + updated.len()) {
                let removed: BTreeSet<&str> = removed.iter().copied().collect();
                let mut pairs = self.pairs();
                pairs.retain(|(n, _)| !removed.contains(&**n));
                pairs.extend(updated.iter().cloned());
                *self = Self::new(pairs);
                return;
            }
            let pairs = self.pairs();
            let all = self.key();
            *self = Self::Own {
                map: pairs.into_iter().collect(),
                all,
                changes: 0,
            };
        }
        if let Self::Own { map, all, changes } = self {
            for name in removed {
                if let Some(old) = map.remove(*name) {
                    *all ^= old;
                }
            }
            for (name, key) in updated {
                if let Some(old) = map.insert(name.clone(), *key) {
                    *all ^= old;
                }
                *all ^= key;
            }
            *changes += count;
            if worth_sharing(*changes, map.len()) {
                self.compact();
            }
        }
    }

    /// Shares what is held again if it is the stream's own map.
    pub fn compact(&mut self) {
        if let Self::Own { map, .. } = self {
            *self = Self::new(std::mem::take(map).into_iter().collect());
        }
    }

    /// Records that `name` is held at `key`.
    #[cfg(test)]
    pub fn insert(&mut self, name: Arc<str>, key: u64) {
        self.apply(&[(name, key)], &[]);
    }

    /// Records that `name` is no longer held.
    #[cfg(test)]
    pub fn remove(&mut self, name: &str) {
        if self.get(name).is_some() {
            self.apply(&[], &[name]);
        }
    }

    /// Records that the node holds exactly `gateway`'s whole set of wildcard type `t`.
    pub fn hold_whole(&mut self, gateway: Arc<GatewayConfig>, t: &'static str) {
        *self = Self::Whole(gateway, t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::Resource;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;

    fn cluster(name: &str) -> Arc<Resource> {
        let c = Cluster {
            name: name.into(),
            ..Default::default()
        };
        Resource::new(name, &c)
    }

    #[test]
    fn a_whole_set_answers_like_a_map_and_becomes_one_when_changed() {
        let (a, b) = (cluster("a"), cluster("b"));
        let g = Arc::new(GatewayConfig {
            clusters: TypeSet::new([a.clone(), b.clone()]),
            ..Default::default()
        });
        let mut whole = Known::default();
        whole.hold_whole(g, type_url::CLUSTER);
        let mut map = Known::new(vec![
            (b.shared_name.clone(), b.set_key),
            (a.shared_name.clone(), a.set_key),
        ]);
        for k in [&whole, &map] {
            assert_eq!(k.get("a"), Some(a.set_key));
            assert_eq!(k.get("c"), None);
            assert_eq!(k.key(), a.set_key ^ b.set_key);
            let mut names = k.names();
            names.sort();
            assert_eq!(names, ["a", "b"]);
        }
        whole.remove("a");
        map.remove("a");
        assert!(matches!(whole, Known::Names { .. }));
        assert_eq!(whole.names(), ["b"]);
        assert_eq!(whole.key(), map.key());
        whole.insert("c".into(), 7);
        assert_eq!(whole.get("c"), Some(7));
        // The kept key follows every change as a fold over the map would.
        whole.insert("c".into(), 9);
        assert_eq!(whole.key(), b.set_key ^ 9);
    }

    #[test]
    fn streams_holding_the_same_versions_share_one_copy_of_them() {
        let pairs = |base: u64| -> Vec<(Arc<str>, u64)> {
            (0..100)
                .map(|i| (Arc::from(format!("secret-{i}")), base + i))
                .collect()
        };
        let (mut a, mut b) = (Known::new(pairs(1)), Known::new(pairs(1)));
        // A rotation reaches both streams.
        a.insert("secret-7".into(), 999);
        b.insert("secret-7".into(), 999);
        let (
            Known::Names {
                names: na,
                keys: ka,
                all,
            },
            Known::Names {
                names: nb,
                keys: kb,
                ..
            },
        ) = (&a, &b)
        else {
            panic!("per-name sets expected");
        };
        assert!(Arc::ptr_eq(ka, kb), "the keys after a rotation are shared");
        assert_eq!(na, nb);
        let fold = pairs(1)
            .iter()
            .map(|(n, k)| if &**n == "secret-7" { 999 } else { *k })
            .fold(0, |acc, k| acc ^ k);
        assert_eq!(*all, fold);
        assert_eq!(a.get("secret-7"), Some(999));
        assert_eq!(a.get("secret-8"), Some(9));
        assert_eq!(a.len(), 100);
    }

    #[test]
    fn a_node_changing_one_name_at_a_time_gets_a_map_of_its_own_until_shared_again() {
        let pairs: Vec<(Arc<str>, u64)> = (0..100)
            .map(|i| (Arc::from(format!("secret-{i}")), i + 1))
            .collect();
        let mut k = Known::default();
        k.apply(&pairs, &[]);
        assert!(matches!(k, Known::Names { .. }), "a whole answer is shared");
        k.apply(&[], &["secret-0"]);
        assert!(
            matches!(k, Known::Own { .. }),
            "one name is a change of its own"
        );
        for i in 0..31 {
            k.apply(&[(Arc::from(format!("new-{i}")), 7)], &[]);
            assert!(matches!(k, Known::Own { .. }), "after {i}");
        }
        k.apply(&[(Arc::from("new-31"), 7)], &[]);
        assert!(
            matches!(k, Known::Names { .. }),
            "33 changes pay for sharing 131"
        );
        // 32 keys of 7 cancel out in the XOR.
        let fold = pairs[1..].iter().fold(0, |acc, (_, key)| acc ^ key);
        assert_eq!(k.key(), fold);
        assert_eq!(k.len(), 131);
        k.apply(&[], &["new-0"]);
        assert!(matches!(k, Known::Own { .. }));
        k.compact();
        assert!(matches!(k, Known::Names { .. }));
        assert_eq!(k.get("new-0"), None);
        assert_eq!(k.get("secret-5"), Some(6));
    }
}
