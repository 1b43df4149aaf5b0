//! Long-lived API keys from files or Secret documents.
//!
//! A key that is gone (file deleted or empty, Secret or key removed) is a revocation: it is
//! published as an empty secret so Envoy answers 401 rather than keeping the old key.

use crate::model::{KeySource, Model, PolicyKind, SecretString};
use crate::translate::{generic_secret, names};
use crate::xds::Resource;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::warn;

/// The current value of one key, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    Present(SecretString),
    Revoked(String),
}

/// Reads a key file: trimmed content; missing or empty means revoked.
pub fn read_key_file(path: &Path) -> KeyState {
    match std::fs::read_to_string(path) {
        Ok(content) => {
            let key = SecretString::new(content);
            if key.is_empty() {
                KeyState::Revoked(format!("key file {} is empty", path.display()))
            } else {
                KeyState::Present(key)
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            KeyState::Revoked(format!("key file {} does not exist", path.display()))
        }
        Err(e) => KeyState::Revoked(format!("key file {} is unreadable: {e}", path.display())),
    }
}

fn read_source(source: &KeySource) -> KeyState {
    match source {
        KeySource::File(path) => read_key_file(path),
        KeySource::Secret { name, key, value } => match value {
            Some(v) if !v.is_empty() => KeyState::Present(v.clone()),
            Some(_) => KeyState::Revoked(format!("key {key:?} of Secret {name:?} is empty")),
            None => KeyState::Revoked(format!("Secret {name:?} or its key {key:?} does not exist")),
        },
    }
}

/// Every API key of a model, and the files they come from.
#[derive(Debug, Default)]
pub struct StaticKeys {
    /// Secret name → source.
    sources: BTreeMap<String, KeySource>,
    /// Secret name → last state read.
    states: BTreeMap<String, KeyState>,
}

impl StaticKeys {
    /// Reads every API key the model defines.
    pub fn load(model: &Model) -> Self {
        let mut keys = Self::default();
        for policy in model.policies.values() {
            let PolicyKind::ApiKey(api_key) = &policy.kind;
            let name = names::credential(&policy.name);
            let state = read_source(&api_key.source);
            if let KeyState::Revoked(why) = &state {
                warn!(credential = %name, reason = %why, "credential revoked: Envoy answers 401 for its backends until it returns");
            }
            keys.states.insert(name.clone(), state);
            keys.sources.insert(name, api_key.source.clone());
        }
        keys
    }

    /// SDS secrets for every key, revoked ones empty.
    pub fn resources(&self) -> Vec<Arc<Resource>> {
        self.states
            .iter()
            .map(|(name, state)| to_resource(name, state))
            .collect()
    }

    /// Files to watch.
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.sources.values().filter_map(|s| match s {
            KeySource::File(p) => Some(p),
            KeySource::Secret { .. } => None,
        })
    }

    /// Re-reads the keys stored in `path`; returns the secrets whose state changed.
    pub fn reread(&mut self, path: &Path) -> Vec<(String, KeyState, Arc<Resource>)> {
        let mut changed = Vec::new();
        for (name, source) in &self.sources {
            if !matches!(source, KeySource::File(p) if p == path) {
                continue;
            }
            let state = read_source(source);
            if self.states.get(name) != Some(&state) {
                self.states.insert(name.clone(), state.clone());
                let resource = to_resource(name, &state);
                changed.push((name.clone(), state, resource));
            }
        }
        changed
    }

    /// The state of every key, for status reporting (values stay redacted).
    pub fn states(&self) -> &BTreeMap<String, KeyState> {
        &self.states
    }
}

fn to_resource(name: &str, state: &KeyState) -> Arc<Resource> {
    match state {
        KeyState::Present(v) => generic_secret(name, Some(v)),
        KeyState::Revoked(_) => generic_secret(name, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_states() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        assert!(matches!(read_key_file(&path), KeyState::Revoked(_)));
        std::fs::write(&path, "  \n").unwrap();
        assert!(matches!(read_key_file(&path), KeyState::Revoked(_)));
        std::fs::write(&path, "sk-1\n").unwrap();
        assert_eq!(
            read_key_file(&path),
            KeyState::Present(SecretString::new("sk-1"))
        );
        let shown = format!("{:?}", read_key_file(&path));
        assert!(!shown.contains("sk-1"), "{shown}");
    }
}
