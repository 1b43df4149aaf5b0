//! Client API keys: a map client id -> key, from a YAML file or a Secret document.
//!
//! The map is one credential (one ECDS resource on the wire), so adding, rotating or deleting
//! a key is one in-place update. Entries Envoy could not use are left out, named by client id
//! only: a key is never quoted, not even in an error.

use super::Revocation;
use super::static_key::ReadError;
use crate::model::{ClientKeySource, SecretString};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use tracing::warn;

/// Client keys by client id; `Debug` shows the ids only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientKeys(BTreeMap<String, SecretString>);

impl fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl ClientKeys {
    /// Keeps the usable entries of `map`: a printable id and key without spaces, and a key no
    /// other client has (Envoy looks keys up in a map, so a shared key would name one client
    /// at random). Returns the keys and the ids left out.
    pub fn new(map: BTreeMap<String, SecretString>) -> (Self, Vec<String>) {
        let printable = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for key in map.values() {
            *seen.entry(key.expose()).or_default() += 1;
        }
        let mut left_out = Vec::new();
        let mut keys = BTreeMap::new();
        for (id, key) in &map {
            if printable(id) && printable(key.expose()) && seen[key.expose()] == 1 {
                keys.insert(id.clone(), key.clone());
            } else {
                left_out.push(id.clone());
            }
        }
        (Self(keys), left_out)
    }

    /// Client ids and keys, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &SecretString)> {
        self.0.iter().map(|(id, key)| (id.as_str(), key))
    }

    /// The client ids.
    pub fn ids(&self) -> BTreeSet<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Reads the keys now: a missing file or Secret revokes every key.
pub fn read(source: &ClientKeySource) -> Result<ClientKeys, ReadError> {
    let map = match source {
        ClientKeySource::File(path) => parse_file(path)?,
        ClientKeySource::Secret { keys: Some(k), .. } => k.clone(),
        ClientKeySource::Secret { name, keys: None } => {
            return Err(Revocation::SecretGone {
                secret: name.clone(),
            }
            .into());
        }
    };
    let (keys, left_out) = ClientKeys::new(map);
    if !left_out.is_empty() {
        warn!(clients = ?left_out, "client keys left out: empty, not printable ASCII, containing spaces, or shared with another client");
    }
    Ok(keys)
}

fn parse_file(path: &Path) -> Result<BTreeMap<String, SecretString>, ReadError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Err(Revocation::FileMissing(path.to_owned()).into());
        }
        Err(e) => {
            return Err(ReadError::Transient {
                path: path.to_owned(),
                error: e.to_string(),
            });
        }
    };
    if text.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    // serde_yaml's messages may quote the offending value, which could be a key: only the
    // position is passed on. A broken file is retried, then revoked after the read grace.
    let map: BTreeMap<String, String> = serde_yaml::from_str(&text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(" at line {} column {}", l.line(), l.column()))
            .unwrap_or_default();
        ReadError::Transient {
            path: path.to_owned(),
            error: format!("not a YAML map of client id to key{at}"),
        }
    })?;
    Ok(map
        .into_iter()
        .map(|(id, key)| (id, SecretString::new(key)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, SecretString> {
        pairs
            .iter()
            .map(|(id, key)| ((*id).to_owned(), SecretString::new(*key)))
            .collect()
    }

    #[test]
    fn unusable_entries_are_left_out_by_id() {
        let (keys, left_out) = ClientKeys::new(map(&[
            ("team-a", "sk-a"),
            ("team-b", "sk-shared"),
            ("team-c", "sk-shared"),
            ("team-d", ""),
            ("team e", "sk-e"),
            ("team-f", "sk f"),
        ]));
        assert_eq!(keys.ids(), BTreeSet::from(["team-a"]));
        assert_eq!(left_out, ["team e", "team-b", "team-c", "team-d", "team-f"]);
        let shown = format!("{keys:?}");
        assert!(!shown.contains("sk-a"), "{shown}");
    }

    #[test]
    fn files_parse_revoke_and_never_quote_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clients.yaml");
        let source = ClientKeySource::File(path.clone());
        assert_eq!(
            read(&source),
            Err(Revocation::FileMissing(path.clone()).into())
        );
        std::fs::write(&path, "team-a: sk-a\nteam-b: ' sk-b '\n").unwrap();
        let keys = read(&source).unwrap();
        let got: Vec<_> = keys.iter().map(|(id, k)| (id, k.expose())).collect();
        assert_eq!(got, [("team-a", "sk-a"), ("team-b", "sk-b")]);
        std::fs::write(&path, "").unwrap();
        assert_eq!(read(&source).unwrap(), ClientKeys::default());
        std::fs::write(&path, "- sk-secret-in-a-list\n").unwrap();
        let err = read(&source).unwrap_err();
        assert!(matches!(err, ReadError::Transient { .. }), "{err:?}");
        assert!(!err.to_string().contains("sk-secret"), "{err}");
    }

    #[test]
    fn a_missing_secret_revokes_every_key() {
        let gone = ClientKeySource::Secret {
            name: "team-keys".into(),
            keys: None,
        };
        assert!(matches!(read(&gone), Err(ReadError::Revoked(_))));
        let present = ClientKeySource::Secret {
            name: "team-keys".into(),
            keys: Some(map(&[("team-a", "sk-a")])),
        };
        assert_eq!(read(&present).unwrap().ids(), BTreeSet::from(["team-a"]));
    }
}
