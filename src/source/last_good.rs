//! The last good configuration of file mode, object by object. An object whose input turns
//! invalid, or that sits in a file that cannot be read, keeps its last good version, so a bad
//! edit never leaves a node with less than it was given. The set is persisted in the state
//! directory, so this holds across restarts too. Secret values are never persisted: a Secret
//! keeps its key names only, and its values come from the configuration files again.

use super::load::{
    ConfigError, Object, ObjectRef, Origin, Parsed, Restrictions, SecretData, Spec, load_partial,
};
use crate::api;
use crate::model::Model;
use crate::state_dir::{StateDir, StateDirError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[cfg(test)]
mod tests;

/// The file in the state directory that holds the last good configuration.
pub const FILE: &str = "last-good-config.json";
/// Bumped when the persisted form changes incompatibly; another format is ignored, not misread.
const FORMAT: u32 = 1;

/// Why the persisted configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LastGoodError {
    #[error(transparent)]
    Dir(#[from] StateDirError),
    #[error("{}: not a configuration this Tessera persisted ({source}); delete it to start afresh", path.display())]
    Format {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The objects last served, by reference.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LastGood {
    objects: BTreeMap<ObjectRef, Object>,
    /// When the objects were persisted, if they were read from the state directory.
    restored_at: Option<SystemTime>,
}

/// What [`LastGood::merge`] decided.
#[derive(Debug, Clone)]
pub struct Merged {
    /// What to serve: every valid object, and the last good version of the others.
    pub model: Model,
    /// Every problem of the input, then those of last good versions that no longer fit.
    pub errors: Vec<ConfigError>,
    /// Objects served in their last good version.
    pub from_last_good: Vec<ObjectRef>,
    /// When those versions were persisted, if they were read from the state directory.
    pub restored_at: Option<SystemTime>,
    /// The objects served, to merge the next input with.
    pub next: LastGood,
}

impl LastGood {
    /// Whether nothing was served yet.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Whether an object served last came from `file`.
    pub fn has_objects_from(&self, file: &Path) -> bool {
        self.objects.values().any(|o| o.origin().file == file)
    }

    /// Merges what was read from `config` with the last good objects: an object is served in
    /// its current version when that is valid, else in its last good version (if it has one
    /// that still validates). An object that is gone from a file that was read whole is gone;
    /// one that is gone from a file that could not be read whole (`config` itself, for an
    /// unreadable directory) keeps its last good version. Dependants follow the Kubernetes
    /// mode's rule ([`load_partial`]).
    pub fn merge(&self, config: &Path, parsed: Parsed) -> Merged {
        let Parsed {
            objects,
            mut errors,
            ..
        } = parsed;
        let first = load_partial(&objects, &Restrictions::default());
        errors.extend(first.errors);
        let broken = at_fault(&errors);
        let kept: Vec<&Object> = objects.iter().filter(|o| fine(o, &broken)).collect();
        let kept_refs: BTreeSet<&ObjectRef> = kept.iter().map(|o| o.reference()).collect();
        let current: BTreeSet<&ObjectRef> = objects.iter().map(Object::reference).collect();
        // Files read only in part: an object missing from one may still be meant to exist.
        let partly_read: BTreeSet<&Path> = errors
            .iter()
            .filter(|e| e.object.as_ref().is_none_or(|o| o.name.is_empty()))
            .map(|e| e.file.as_path())
            .collect();
        let unread = |file: &Path| partly_read.contains(config) || partly_read.contains(file);
        let substitutes: BTreeMap<&ObjectRef, Object> = self
            .objects
            .iter()
            .filter(|(r, o)| {
                !kept_refs.contains(r) && (current.contains(r) || unread(&o.origin().file))
            })
            .filter_map(|(r, o)| Some((r, relabelled(o)?)))
            .collect();
        let candidates: Vec<Object> = kept
            .into_iter()
            .cloned()
            .chain(substitutes.values().cloned())
            .collect();
        let second = load_partial(&candidates, &Restrictions::default());
        let at_fault_now = at_fault(&second.errors);
        errors.extend(second.errors);
        let mut next = LastGood::default();
        let mut from_last_good = Vec::new();
        for candidate in candidates.iter().filter(|o| fine(o, &at_fault_now)) {
            let r = candidate.reference();
            let object = match self.objects.get(r) {
                Some(last) if substitutes.contains_key(r) => {
                    from_last_good.push(r.clone());
                    last.clone()
                }
                _ => candidate.clone(),
            };
            next.objects.insert(r.clone(), object);
        }
        next.restored_at = self.restored_at.filter(|_| !from_last_good.is_empty());
        Merged {
            model: second.model,
            errors,
            from_last_good,
            restored_at: next.restored_at,
            next,
        }
    }

    /// The persisted form: every object, with each Secret's values left out.
    fn stored(&self) -> Vec<Stored> {
        self.objects.values().filter_map(Stored::of).collect()
    }

    /// Reads the configuration persisted in `state` for `config`, if any; one persisted for
    /// another configuration path is not used (two Tesseras may share a state directory).
    pub fn load(state: &StateDir, config: &Path) -> Result<Option<Self>, LastGoodError> {
        let Some(bytes) = state.read(FILE)? else {
            return Ok(None);
        };
        let format = |source| LastGoodError::Format {
            path: state.path().join(FILE),
            source,
        };
        let persisted: Persisted = serde_json::from_slice(&bytes).map_err(format)?;
        if persisted.format != FORMAT {
            tracing::warn!(
                format = persisted.format,
                "the persisted configuration has another format; ignored"
            );
            return Ok(None);
        }
        if persisted.config != config {
            tracing::warn!(
                persisted_for = %persisted.config.display(),
                "the state directory holds the configuration of another path; not used"
            );
            return Ok(None);
        }
        let objects = persisted
            .objects
            .into_iter()
            .map(Stored::into_object)
            .map(|o| (o.reference().clone(), o))
            .collect();
        let saved = UNIX_EPOCH + Duration::from_millis(persisted.saved_at_ms);
        Ok(Some(Self {
            objects,
            restored_at: Some(saved),
        }))
    }

    /// Persists the objects read from `config` (atomically; never a secret value).
    pub fn save(
        &self,
        state: &StateDir,
        config: &Path,
        now: SystemTime,
    ) -> Result<(), LastGoodError> {
        let saved_at_ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let persisted = Persisted {
            format: FORMAT,
            config: config.to_path_buf(),
            saved_at_ms,
            objects: self.stored(),
        };
        let format = |source| LastGoodError::Format {
            path: state.path().join(FILE),
            source,
        };
        let bytes = serde_json::to_vec_pretty(&persisted).map_err(format)?;
        state.write_atomic(FILE, &bytes)?;
        Ok(())
    }

    /// Whether `other` persists to the same content.
    pub fn persists_as(&self, other: &LastGood) -> bool {
        self.stored() == other.stored()
    }
}

/// Every (file, document) with an error; an object there is not used.
fn at_fault(errors: &[ConfigError]) -> BTreeSet<(PathBuf, usize)> {
    errors
        .iter()
        .map(|e| (e.file.clone(), e.document))
        .collect()
}

fn fine(object: &Object, at_fault: &BTreeSet<(PathBuf, usize)>) -> bool {
    let Origin { file, document } = object.origin();
    object.spec().is_some() && !at_fault.contains(&(file.clone(), *document))
}

/// A last good object under an origin of its own, so neither its errors nor another object's
/// in the document it used to occupy are ever mistaken for each other. The directory is kept:
/// relative paths in the object resolve against it.
fn relabelled(object: &Object) -> Option<Object> {
    let Origin { file, document } = object.origin();
    let origin = Origin::new(format!("{} (last good)", file.display()), *document);
    let name = &object.reference().name;
    Some(Object::new(origin, None, name, object.spec()?.clone()))
}

/// The persisted configuration.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Persisted {
    format: u32,
    /// The configuration path the objects were read from.
    config: PathBuf,
    saved_at_ms: u64,
    objects: Vec<Stored>,
}

/// One persisted object.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Stored {
    file: PathBuf,
    document: usize,
    name: String,
    spec: StoredSpec,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
enum StoredSpec {
    Gateway(api::GatewaySpec),
    Backend(api::BackendSpec),
    BackendSecurityPolicy(Box<api::BackendSecurityPolicySpec>),
    Route(api::RouteSpec),
    /// Key names only: the values are read from the configuration again.
    Secret {
        keys: Vec<String>,
    },
}

impl Stored {
    fn of(object: &Object) -> Option<Self> {
        let spec = match object.spec()? {
            Spec::Gateway(s) => StoredSpec::Gateway(s.clone()),
            Spec::Backend(s) => StoredSpec::Backend(s.clone()),
            Spec::BackendSecurityPolicy(s) => StoredSpec::BackendSecurityPolicy(s.clone()),
            Spec::Route(s) => StoredSpec::Route(s.clone()),
            Spec::Secret(data) => StoredSpec::Secret {
                keys: data.0.keys().cloned().collect(),
            },
        };
        let Origin { file, document } = object.origin().clone();
        let name = object.reference().name.clone();
        Some(Self {
            file,
            document,
            name,
            spec,
        })
    }

    fn into_object(self) -> Object {
        let spec = match self.spec {
            StoredSpec::Gateway(s) => Spec::Gateway(s),
            StoredSpec::Backend(s) => Spec::Backend(s),
            StoredSpec::BackendSecurityPolicy(s) => Spec::BackendSecurityPolicy(s),
            StoredSpec::Route(s) => Spec::Route(s),
            // An empty value reads as revoked until the Secret's document is valid again.
            StoredSpec::Secret { keys } => Spec::Secret(SecretData(
                keys.into_iter().map(|k| (k, Vec::new())).collect(),
            )),
        };
        Object::new(
            Origin::new(self.file, self.document),
            None,
            &self.name,
            spec,
        )
    }
}
