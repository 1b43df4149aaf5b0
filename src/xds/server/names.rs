//! Per-stream sets of names and keys, shared between the streams that hold the same ones.
//!
//! Every node of a gateway subscribes to the same secrets and, after each rotation, holds the
//! same versions of them. Kept per stream, those sets cost about 7 KB a stream for 100
//! secrets; interned, a stream keeps two pointers and the sets exist once per distinct value.

use rustc_hash::FxBuildHasher;
use std::collections::HashSet;
use std::hash::Hash;
use std::ops::Deref;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

/// A pool of shared values: equal values come back as one allocation.
struct Interner<T: ?Sized> {
    inner: Mutex<Pool<T>>,
}

struct Pool<T: ?Sized> {
    values: HashSet<Arc<T>, FxBuildHasher>,
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
        let mut names: Vec<Arc<str>> = self
            .0
            .iter()
            .filter(|n| !removed.contains(&&***n))
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
