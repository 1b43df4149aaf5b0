//! Per-stream sets of names and keys, shared between the streams that hold the same ones.
//!
//! Every node of a gateway subscribes to the same secrets and, after each rotation, holds the
//! same versions of them. Kept per stream, those sets cost about 7 KB a stream for 100
//! secrets; interned, a stream keeps two pointers and the sets exist once per distinct value.
//!
//! Interning a set costs time in proportion to its size, and Delta clients change their sets
//! one name at a time if they like: a set a client changes is kept as a stream's own (each
//! change O(log n)) and shared again only once the changes since add up to a quarter of it,
//! or when the server's own pace says so ([`Names::compact`] on configuration and credential
//! changes). A client can thus never make a small request cost the server a whole set.

use std::collections::{BTreeSet, HashSet};
use std::hash::Hash;
use std::ops::Deref;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

/// A pool of shared values: equal values come back as one allocation.
struct Interner<T: ?Sized> {
    inner: Mutex<Pool<T>>,
}

struct Pool<T: ?Sized> {
    // SipHash with a random key, not a fast unkeyed hash: the names (and the keys of names a
    // reconnecting node claims) are chosen by clients, who must not be able to make them
    // collide into long probe chains under this process-wide lock.
    values: HashSet<Arc<T>>,
    /// The pool is swept of values nobody holds when it reaches this size.
    sweep_at: usize,
}

// Small enough that a test's leftovers are swept soon, large enough to sweep rarely.
const FIRST_SWEEP: usize = 256;

impl<T: Hash + Eq + ?Sized> Interner<T> {
    fn new() -> Self {
        Self {
            inner: Mutex::new(Pool {
                values: HashSet::default(),
                sweep_at: FIRST_SWEEP,
            }),
        }
    }

    /// The pooled value equal to `value`, made by `make` and pooled if there is none.
    fn intern(&self, value: &T, make: impl FnOnce() -> Arc<T>) -> Arc<T> {
        // Only lookups and inserts happen under the lock; none can panic half-way.
        let mut pool = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(shared) = pool.values.get(value) {
            return shared.clone();
        }
        if pool.values.len() >= pool.sweep_at {
            // Held only by the pool: no stream uses it any more.
            pool.values.retain(|v| Arc::strong_count(v) > 1);
            pool.sweep_at = (pool.values.len() * 2).max(FIRST_SWEEP);
        }
        let shared = make();
        pool.values.insert(shared.clone());
        shared
    }
}

static NAME_SETS: LazyLock<Interner<[Arc<str>]>> = LazyLock::new(Interner::new);
static KEY_LISTS: LazyLock<Interner<[u64]>> = LazyLock::new(Interner::new);

/// A sorted set of resource names, shared by every stream that holds the same set.
#[derive(Debug, Clone)]
pub(super) struct NameSet(Arc<[Arc<str>]>);

impl Default for NameSet {
    fn default() -> Self {
        Self::sorted(Vec::new())
    }
}

impl NameSet {
    /// The set of `names`, in any order and with repeats.
    pub fn new(names: impl IntoIterator<Item = Arc<str>>) -> Self {
        let mut names: Vec<Arc<str>> = names.into_iter().collect();
        names.sort_unstable();
        names.dedup();
        Self::sorted(names)
    }

    /// The set of `names`, which are sorted and unique.
    fn sorted(names: Vec<Arc<str>>) -> Self {
        Self(NAME_SETS.intern(&names, || names.clone().into()))
    }

    /// Where `name` is, or would be inserted.
    pub fn position(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|n| (**n).cmp(name))
    }

    /// Whether `name` is in the set.
    pub fn contains(&self, name: &str) -> bool {
        self.position(name).is_ok()
    }

    /// This set with `added` and without `removed`.
    pub fn changed(&self, added: impl IntoIterator<Item = Arc<str>>, removed: &[&str]) -> Self {
        let removed: BTreeSet<&str> = removed.iter().copied().collect();
        let mut names: Vec<Arc<str>> = self
            .0
            .iter()
            .filter(|n| !removed.contains(&***n))
            .cloned()
            .collect();
        names.extend(added);
        Self::new(names)
    }
}

impl Deref for NameSet {
    type Target = [Arc<str>];

    fn deref(&self) -> &[Arc<str>] {
        &self.0
    }
}

impl PartialEq for NameSet {
    fn eq(&self, other: &Self) -> bool {
        // Interned: equal sets are nearly always the same allocation.
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Eq for NameSet {}

/// Whether `changes` since a set was last shared pay for sharing a set of `len` names again.
pub(super) fn worth_sharing(changes: usize, len: usize) -> bool {
    changes.saturating_mul(4) >= len
}

/// The names a Delta stream subscribed to of one type: shared while settled, its own while a
/// client changes it (see the module docs).
#[derive(Debug, Clone)]
pub(super) enum Names {
    Shared(NameSet),
    Own {
        names: BTreeSet<Arc<str>>,
        /// Names added or removed since the set was last shared.
        changes: usize,
    },
}

impl Default for Names {
    fn default() -> Self {
        Self::Shared(NameSet::default())
    }
}

impl Names {
    /// Whether `name` is in the set.
    pub fn contains(&self, name: &str) -> bool {
        match self {
            Self::Shared(set) => set.contains(name),
            Self::Own { names, .. } => names.contains(name),
        }
    }

    /// How many names there are.
    pub fn len(&self) -> usize {
        match self {
            Self::Shared(set) => set.len(),
            Self::Own { names, .. } => names.len(),
        }
    }

    /// The names, sorted.
    pub fn iter(&self) -> Box<dyn Iterator<Item = &Arc<str>> + '_> {
        match self {
            Self::Shared(set) => Box::new(set.iter()),
            Self::Own { names, .. } => Box::new(names.iter()),
        }
    }

    /// Adds `added` and takes out `removed`, in time proportional to the change (a shared
    /// set is made the stream's own first, which the changes that shared it paid for).
    pub fn change(&mut self, added: Vec<Arc<str>>, removed: &[&str]) {
        if added.is_empty() && removed.is_empty() {
            return;
        }
        let count = added.len() + removed.len();
        if let Self::Shared(set) = self {
            if worth_sharing(count, set.len() + added.len()) {
                *self = Self::Shared(set.changed(added, removed));
                return;
            }
            *self = Self::Own {
                names: set.iter().cloned().collect(),
                changes: 0,
            };
        }
        if let Self::Own { names, changes } = self {
            for name in removed {
                names.remove(*name);
            }
            names.extend(added);
            *changes += count;
            if worth_sharing(*changes, names.len()) {
                self.compact();
            }
        }
    }

    /// Shares the set again if it is the stream's own.
    pub fn compact(&mut self) {
        if let Self::Own { names, .. } = self {
            *self = Self::Shared(NameSet::sorted(std::mem::take(names).into_iter().collect()));
        }
    }
}

/// A list of set keys, shared by every stream that holds the same list.
pub(super) fn keys(keys: Vec<u64>) -> Arc<[u64]> {
    KEY_LISTS.intern(&keys, || keys.clone().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> NameSet {
        NameSet::new(names.iter().map(|n| Arc::from(*n)))
    }

    #[test]
    fn equal_sets_share_one_allocation_whatever_the_order() {
        let a = set(&["b", "a", "c", "a"]);
        let b = set(&["c", "b", "a"]);
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(
            &*a.iter().map(|n| &**n).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert!(a.contains("b") && !a.contains("d"));
        let changed = a.changed([Arc::from("d")], &["a"]);
        assert_eq!(changed, set(&["b", "c", "d"]));
        assert!(Arc::ptr_eq(&changed.0, &set(&["d", "c", "b"]).0));
        assert_ne!(changed, a);
    }

    #[test]
    fn a_set_changed_a_name_at_a_time_is_shared_again_only_when_the_changes_paid_for_it() {
        let names = |range: std::ops::Range<usize>| -> Vec<Arc<str>> {
            range.map(|i| Arc::from(format!("n{i:04}"))).collect()
        };
        let mut s = Names::default();
        // Envoy's first request names the whole set: shared at once.
        s.change(names(0..100), &[]);
        assert!(matches!(s, Names::Shared(_)));
        // One name at a time: the stream's own set, until the changes add up to a quarter.
        for i in 100..133 {
            s.change(names(i..i + 1), &[]);
            assert!(matches!(s, Names::Own { .. }), "after {i}");
        }
        s.change(names(133..134), &[]);
        assert!(
            matches!(s, Names::Shared(_)),
            "34 changes pay for sharing 134"
        );
        assert_eq!(s.len(), 134);
        assert!(s.contains("n0133") && !s.contains("n0134"));
        s.change(Vec::new(), &["n0000"]);
        assert!(!s.contains("n0000"));
        // The server's pace shares it again; the same names as anyone's are the same copy.
        s.compact();
        let Names::Shared(shared) = &s else {
            panic!("shared after compact");
        };
        let again = NameSet::new(names(1..134));
        assert!(Arc::ptr_eq(&shared.0, &again.0));
        assert_eq!(
            s.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            names(1..134)
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn equal_key_lists_share_one_allocation() {
        let a = keys(vec![1, 2, 3]);
        let b = keys(vec![1, 2, 3]);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &keys(vec![1, 2, 4])));
    }

    #[test]
    fn values_nobody_holds_are_swept() {
        let pool: Interner<[u64]> = Interner::new();
        let kept = pool.intern(&[u64::MAX], || Arc::from([u64::MAX]));
        for i in 0..(FIRST_SWEEP as u64 * 4) {
            drop(pool.intern(&[i], || Arc::from([i])));
        }
        let inner = pool.inner.lock().unwrap();
        assert!(inner.values.len() <= FIRST_SWEEP, "{}", inner.values.len());
        assert!(inner.values.contains(&*kept));
    }
}
