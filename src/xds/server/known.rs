//! What a Delta node holds of one type.

use crate::xds::cache::{GatewayConfig, TypeSet};
use crate::xds::resource::type_url;
use std::collections::HashMap;
use std::sync::Arc;

/// Name → set key (name and version) of what a node holds of one type. A node that holds a
/// wildcard type's whole set as its gateway has it (clusters and listeners, nearly always)
/// keeps only a handle to that set, shared by every stream of the gateway: a fleet's streams
/// then hold no per-cluster entry each.
#[derive(Debug)]
pub(super) enum Known {
    /// Per name, with the XOR of every key kept as it changes, so that a rotation's answer
    /// does not fold over the whole map.
    Names(HashMap<Arc<str>, u64>, u64),
    /// The gateway's whole set of this wildcard type (`CLUSTER` or `LISTENER`).
    Whole(Arc<GatewayConfig>, &'static str),
}

impl Default for Known {
    fn default() -> Self {
        Self::Names(HashMap::new(), 0)
    }
}

impl Known {
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
            Self::Names(map, _) => map.get(name).copied(),
            Self::Whole(g, t) => Self::whole(g, t).resources.get(name).map(|r| r.set_key),
        }
    }

    /// Every name held.
    pub fn names(&self) -> Vec<&str> {
        match self {
            Self::Names(map, _) => map.keys().map(|k| &**k).collect(),
            Self::Whole(g, t) => Self::whole(g, t)
                .resources
                .keys()
                .map(String::as_str)
                .collect(),
        }
    }

    /// The XOR of every set key held (a SotW-style version of what the node holds).
    pub fn key(&self) -> u64 {
        match self {
            Self::Names(_, key) => *key,
            Self::Whole(g, t) => {
                crate::xds::resource::set_key(Self::whole(g, t).resources.values())
            }
        }
    }

    /// The per-name map and its key, made from the whole set if that is what is held.
    fn names_mut(&mut self) -> (&mut HashMap<Arc<str>, u64>, &mut u64) {
        if let Self::Whole(g, t) = self {
            let map: HashMap<Arc<str>, u64> = Self::whole(g, t)
                .resources
                .values()
                .map(|r| (r.shared_name.clone(), r.set_key))
                .collect();
            *self = map.into();
        }
        match self {
            Self::Names(map, key) => (map, key),
            Self::Whole(..) => unreachable!("just made a map"),
        }
    }

    /// Records that `name` is held at `key`.
    pub fn insert(&mut self, name: Arc<str>, key: u64) {
        let (map, all) = self.names_mut();
        if let Some(old) = map.insert(name, key) {
            *all ^= old;
        }
        *all ^= key;
    }

    /// Records that `name` is no longer held.
    pub fn remove(&mut self, name: &str) {
        let (map, all) = self.names_mut();
        if let Some(old) = map.remove(name) {
            *all ^= old;
        }
    }

    /// Records that the node holds exactly `gateway`'s whole set of wildcard type `t`.
    pub fn hold_whole(&mut self, gateway: Arc<GatewayConfig>, t: &'static str) {
        *self = Self::Whole(gateway, t);
    }
}

impl From<HashMap<Arc<str>, u64>> for Known {
    fn from(map: HashMap<Arc<str>, u64>) -> Self {
        let key = map.values().fold(0, |acc, k| acc ^ k);
        Self::Names(map, key)
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
        let mut map = Known::from(HashMap::from([
            (a.shared_name.clone(), a.set_key),
            (b.shared_name.clone(), b.set_key),
        ]));
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
        assert!(matches!(whole, Known::Names(..)));
        assert_eq!(whole.names(), ["b"]);
        assert_eq!(whole.key(), map.key());
        whole.insert("c".into(), 7);
        assert_eq!(whole.get("c"), Some(7));
        // The kept key follows every change as a fold over the map would.
        whole.insert("c".into(), 9);
        assert_eq!(whole.key(), b.set_key ^ 9);
    }
}
