//! Long-lived credentials: API keys from files or Secret documents, AWS keys from a
//! credentials file.
//!
//! Material that is gone (file deleted or empty, Secret or key removed, profile missing) is a
//! revocation: an API key is published as an empty secret (Envoy answers 401), AWS keys as the
//! deny config (403); never as a removal, which Envoy would ignore.

use crate::model::{AwsKeys, AwsSource, KeySource, Model, PolicyKind, SecretString};
use crate::translate::{deny_config, generic_secret, names, signer_config};
use crate::xds::Resource;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::warn;

/// The current material of one credential, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    Present(Material),
    Revoked(String),
}

/// Credential material; every secret part redacts itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Material {
    ApiKey(SecretString),
    Aws(AwsKeys),
}

/// Where a long-lived credential is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    ApiKey(KeySource),
    AwsFile {
        path: PathBuf,
        profile: String,
        region: String,
    },
}

impl Source {
    fn file(&self) -> Option<&PathBuf> {
        match self {
            Source::ApiKey(KeySource::File(p)) | Source::AwsFile { path: p, .. } => Some(p),
            Source::ApiKey(KeySource::Secret { .. }) => None,
        }
    }

    fn read(&self) -> KeyState {
        match self {
            Source::ApiKey(source) => match read_secret(source) {
                Ok(v) => KeyState::Present(Material::ApiKey(v)),
                Err(why) => KeyState::Revoked(why),
            },
            Source::AwsFile { path, profile, .. } => match read_aws_credentials_file(path, profile)
            {
                Ok(keys) => KeyState::Present(Material::Aws(keys)),
                Err(why) => KeyState::Revoked(why),
            },
        }
    }

    fn resource(&self, name: &str, state: &KeyState) -> Arc<Resource> {
        match (self, state) {
            (Source::ApiKey(_), KeyState::Present(Material::ApiKey(v))) => {
                generic_secret(name, Some(v))
            }
            (Source::AwsFile { region, .. }, KeyState::Present(Material::Aws(keys))) => {
                signer_config(name, region, keys)
            }
            (Source::ApiKey(_), _) => generic_secret(name, None),
            (Source::AwsFile { .. }, _) => deny_config(name),
        }
    }
}

/// Reads a secret value: a file's trimmed content or a Secret document's key; missing or
/// empty is an error (the caller decides whether that is a revocation).
pub fn read_secret(source: &KeySource) -> Result<SecretString, String> {
    match source {
        KeySource::File(path) => read_key_file(path),
        KeySource::Secret { name, key, value } => match value {
            Some(v) if !v.is_empty() => Ok(v.clone()),
            Some(_) => Err(format!("key {key:?} of Secret {name:?} is empty")),
            None => Err(format!("Secret {name:?} or its key {key:?} does not exist")),
        },
    }
}

/// Reads a key file: trimmed content; missing or empty is an error.
pub fn read_key_file(path: &Path) -> Result<SecretString, String> {
    match std::fs::read_to_string(path) {
        Ok(content) => {
            let key = SecretString::new(content);
            if key.is_empty() {
                Err(format!("{} is empty", path.display()))
            } else {
                Ok(key)
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("{} does not exist", path.display()))
        }
        Err(e) => Err(format!("{} is unreadable: {e}", path.display())),
    }
}

/// Reads one profile of a standard AWS credentials file (INI).
pub fn read_aws_credentials_file(path: &Path, profile: &str) -> Result<AwsKeys, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut in_profile = false;
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let section = section.trim();
            in_profile = section == profile || section.strip_prefix("profile ") == Some(profile);
            continue;
        }
        if in_profile && let Some((k, v)) = line.split_once('=') {
            values.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let get = |k: &str| values.get(k).filter(|v| !v.is_empty()).cloned();
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(id), Some(secret)) => Ok(AwsKeys {
            access_key_id: id,
            secret_access_key: SecretString::new(secret),
            session_token: get("aws_session_token").map(SecretString::new),
        }),
        _ => Err(format!(
            "{}: profile {profile:?} has no aws_access_key_id and aws_secret_access_key",
            path.display()
        )),
    }
}

/// Every long-lived credential of a model, and the files they come from.
#[derive(Debug, Default)]
pub struct StaticKeys {
    /// Resource name → source.
    sources: BTreeMap<String, Source>,
    /// Resource name → last state read.
    states: BTreeMap<String, KeyState>,
}

impl StaticKeys {
    /// Reads every long-lived credential the model defines.
    pub fn load(model: &Model) -> Self {
        let mut keys = Self::default();
        for policy in model.policies.values() {
            let source = match &policy.kind {
                PolicyKind::ApiKey(k) => Source::ApiKey(k.source.clone()),
                PolicyKind::Aws(aws) => match &aws.source {
                    AwsSource::CredentialsFile { path, profile } => Source::AwsFile {
                        path: path.clone(),
                        profile: profile.clone(),
                        region: aws.region.clone(),
                    },
                    AwsSource::WebIdentity(_) => continue,
                },
                PolicyKind::Azure(_) => continue,
            };
            let name = names::credential(&policy.name);
            let state = source.read();
            if let KeyState::Revoked(why) = &state {
                warn!(credential = %name, reason = %why, "credential revoked: its backends fail closed until it returns");
            }
            keys.states.insert(name.clone(), state);
            keys.sources.insert(name, source);
        }
        keys
    }

    /// xDS resources for every credential, revoked ones failing closed.
    pub fn resources(&self) -> Vec<Arc<Resource>> {
        self.sources
            .iter()
            .filter_map(|(name, source)| Some(source.resource(name, self.states.get(name)?)))
            .collect()
    }

    /// Files to watch.
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.sources.values().filter_map(Source::file)
    }

    /// Re-reads the credentials stored in `path`; returns those whose state changed.
    pub fn reread(&mut self, path: &Path) -> Vec<(String, KeyState, Arc<Resource>)> {
        let mut changed = Vec::new();
        for (name, source) in &self.sources {
            if source.file().map(PathBuf::as_path) != Some(path) {
                continue;
            }
            let state = source.read();
            if self.states.get(name) != Some(&state) {
                self.states.insert(name.clone(), state.clone());
                changed.push((name.clone(), state.clone(), source.resource(name, &state)));
            }
        }
        changed
    }

    /// The state of every credential, for status reporting (values stay redacted).
    pub fn states(&self) -> &BTreeMap<String, KeyState> {
        &self.states
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_states() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        assert!(read_key_file(&path).is_err());
        std::fs::write(&path, "  \n").unwrap();
        assert!(read_key_file(&path).is_err());
        std::fs::write(&path, "sk-1\n").unwrap();
        assert_eq!(read_key_file(&path), Ok(SecretString::new("sk-1")));
        let shown = format!("{:?}", read_key_file(&path));
        assert!(!shown.contains("sk-1"), "{shown}");
    }

    #[test]
    fn aws_credentials_file_profiles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(
            &path,
            "[default]\naws_access_key_id = AKIA1\naws_secret_access_key = s1\n\n[profile ci]\naws_access_key_id=AKIA2\naws_secret_access_key=s2\naws_session_token=t2\n",
        )
        .unwrap();
        let d = read_aws_credentials_file(&path, "default").unwrap();
        assert_eq!(d.access_key_id, "AKIA1");
        assert_eq!(d.session_token, None);
        let ci = read_aws_credentials_file(&path, "ci").unwrap();
        assert_eq!(ci.secret_access_key.expose(), "s2");
        assert_eq!(ci.session_token.unwrap().expose(), "t2");
        let missing = read_aws_credentials_file(&path, "nope").unwrap_err();
        assert!(!missing.contains("s1"), "{missing}");
    }
}
