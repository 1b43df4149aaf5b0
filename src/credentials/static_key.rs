//! Long-lived credentials: API keys from files or Secret documents, AWS keys from a
//! credentials file.
//!
//! Material that is gone (file deleted or empty, Secret or key removed, profile missing) is a
//! revocation, decided at once. Any other read failure (EACCES while a volume is swapped,
//! EMFILE, EIO, …) is transient: the caller retries before treating it as a revocation.

use super::{Material, Revocation, client_keys};
use crate::model::{
    AwsKeys, AwsSource, ClientKeySource, Gateway, KeySource, PolicyKind, SecretString,
    SecurityPolicy,
};
use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// Why a read gave no material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The material is gone.
    #[error(transparent)]
    Revoked(#[from] Revocation),
    /// The read failed in a way that may pass.
    #[error("{} is unreadable: {error}", path.display())]
    Transient { path: PathBuf, error: String },
}

/// The outcome of one read of a long-lived credential.
pub type Read = Result<Material, ReadError>;

/// Where a long-lived credential is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    ApiKey(KeySource),
    AwsFile {
        path: PathBuf,
        profile: String,
    },
    /// A gateway's client keys.
    ClientKeys(ClientKeySource),
}

impl Source {
    /// The source of `policy`'s credential, if it is long-lived.
    pub fn of(policy: &SecurityPolicy) -> Option<Self> {
        match &policy.kind {
            PolicyKind::ApiKey(k) => Some(Self::ApiKey(k.source.clone())),
            PolicyKind::Aws(aws) => match &aws.source {
                AwsSource::CredentialsFile { path, profile } => Some(Self::AwsFile {
                    path: path.clone(),
                    profile: profile.clone(),
                }),
                AwsSource::WebIdentity(_) => None,
            },
            PolicyKind::Azure(_) => None,
        }
    }

    /// The source of `gateway`'s client keys, if it authenticates clients by key.
    pub fn of_gateway(gateway: &Gateway) -> Option<Self> {
        let auth = gateway.client_auth.as_ref()?;
        Some(Self::ClientKeys(auth.api_keys.clone()?))
    }

    /// The file it lives in, if any.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Self::ApiKey(KeySource::File(p))
            | Self::AwsFile { path: p, .. }
            | Self::ClientKeys(ClientKeySource::File(p)) => Some(p),
            Self::ApiKey(KeySource::Secret { .. })
            | Self::ClientKeys(ClientKeySource::Secret { .. }) => None,
        }
    }

    /// Reads the material now.
    pub fn read(&self) -> Read {
        match self {
            Self::ApiKey(source) => read_secret(source).map(Material::ApiKey),
            Self::AwsFile { path, profile } => {
                read_aws_credentials_file(path, profile).map(Material::Aws)
            }
            Self::ClientKeys(source) => client_keys::read(source).map(Material::ClientKeys),
        }
    }
}

/// Reads every long-lived credential of `model` once, by policy name (offline tools; the
/// server reads through one `reader` task per credential instead).
pub fn read_all(model: &crate::model::Model) -> BTreeMap<String, Read> {
    all(model)
        .map(|(name, source)| (name, source.read()))
        .collect()
}

/// Every long-lived credential of `model` with the name it is published under: the
/// policies', then each gateway's client keys.
pub fn all(model: &crate::model::Model) -> impl Iterator<Item = (String, Source)> + '_ {
    let policies = model
        .policies
        .values()
        .filter_map(|p| Some((p.name.clone(), Source::of(p)?)));
    let gateways = model
        .gateways
        .values()
        .filter_map(|g| Some((g.client_keys_credential(), Source::of_gateway(g)?)));
    policies.chain(gateways)
}

/// Reads a secret value: a file's trimmed content or a Secret document's key.
pub fn read_secret(source: &KeySource) -> Result<SecretString, ReadError> {
    match source {
        KeySource::File(path) => read_key_file(path),
        KeySource::Secret { name, key, value } => match value {
            Some(v) if !v.is_empty() => Ok(v.clone()),
            Some(_) => Err(Revocation::SecretKeyEmpty {
                secret: name.clone(),
                key: key.clone(),
            }
            .into()),
            None => Err(Revocation::SecretMissing {
                secret: name.clone(),
                key: key.clone(),
            }
            .into()),
        },
    }
}

/// Reads a key file: its trimmed content.
pub fn read_key_file(path: &Path) -> Result<SecretString, ReadError> {
    let key = SecretString::new(read_text(path)?);
    if key.is_empty() {
        Err(Revocation::FileEmpty(path.to_owned()).into())
    } else {
        Ok(key)
    }
}

fn read_text(path: &Path) -> Result<String, ReadError> {
    std::fs::read_to_string(path).map_err(|e| classify(path, &e))
}

/// A missing file (or a path through something that is no longer a directory) is gone;
/// content that is not text will not become text by waiting; anything else may pass.
fn classify(path: &Path, e: &std::io::Error) -> ReadError {
    match e.kind() {
        ErrorKind::NotFound | ErrorKind::NotADirectory => {
            Revocation::FileMissing(path.to_owned()).into()
        }
        ErrorKind::InvalidData => Revocation::FileUnreadable {
            path: path.to_owned(),
            error: "not UTF-8 text".to_owned(),
        }
        .into(),
        _ => ReadError::Transient {
            path: path.to_owned(),
            error: e.to_string(),
        },
    }
}

/// Reads one profile of a standard AWS credentials file (INI).
pub fn read_aws_credentials_file(path: &Path, profile: &str) -> Result<AwsKeys, ReadError> {
    let text = read_text(path)?;
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
        _ => Err(Revocation::ProfileMissing {
            path: path.to_owned(),
            profile: profile.to_owned(),
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_states() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        assert_eq!(
            read_key_file(&path),
            Err(Revocation::FileMissing(path.clone()).into())
        );
        std::fs::write(&path, "  \n").unwrap();
        assert_eq!(
            read_key_file(&path),
            Err(Revocation::FileEmpty(path.clone()).into())
        );
        std::fs::write(&path, "sk-1\n").unwrap();
        assert_eq!(read_key_file(&path), Ok(SecretString::new("sk-1")));
        let shown = format!("{:?}", read_key_file(&path));
        assert!(!shown.contains("sk-1"), "{shown}");
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(matches!(
            read_key_file(&path),
            Err(ReadError::Revoked(Revocation::FileUnreadable { .. }))
        ));
        // A path through a file is as gone as a missing file.
        let through = path.join("k");
        assert_eq!(
            read_key_file(&through),
            Err(Revocation::FileMissing(through.clone()).into())
        );
    }

    #[test]
    fn read_errors_that_may_pass_are_transient() {
        let path = Path::new("/keys/k");
        // EACCES, EIO, EMFILE, ENFILE, EAGAIN, ELOOP: a volume mid-swap, a disk hiccup, a
        // process or system out of descriptors.
        for errno in [13, 5, 24, 23, 11, 40] {
            let e = std::io::Error::from_raw_os_error(errno);
            assert!(
                matches!(classify(path, &e), ReadError::Transient { .. }),
                "errno {errno}: {e}"
            );
        }
        // ENOENT, ENOTDIR: gone.
        for errno in [2, 20] {
            let e = std::io::Error::from_raw_os_error(errno);
            assert_eq!(
                classify(path, &e),
                Revocation::FileMissing(path.into()).into(),
                "errno {errno}"
            );
        }
        // A real one: a key path that is a directory.
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_key_file(dir.path()),
            Err(ReadError::Transient { .. })
        ));
    }

    #[test]
    fn secret_documents() {
        let source = |value: Option<&str>| KeySource::Secret {
            name: "keys".into(),
            key: "openai".into(),
            value: value.map(SecretString::new),
        };
        assert_eq!(
            read_secret(&source(Some("sk"))),
            Ok(SecretString::new("sk"))
        );
        assert_eq!(
            read_secret(&source(Some(""))),
            Err(Revocation::SecretKeyEmpty {
                secret: "keys".into(),
                key: "openai".into()
            }
            .into())
        );
        assert_eq!(
            read_secret(&source(None)),
            Err(Revocation::SecretMissing {
                secret: "keys".into(),
                key: "openai".into()
            }
            .into())
        );
    }

    #[test]
    fn aws_credentials_file_profiles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        assert_eq!(
            read_aws_credentials_file(&path, "default"),
            Err(Revocation::FileMissing(path.clone()).into())
        );
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
        assert_eq!(
            missing,
            Revocation::ProfileMissing {
                path: path.clone(),
                profile: "nope".into()
            }
            .into()
        );
        assert!(!missing.to_string().contains("s1"), "{missing}");
    }
}
