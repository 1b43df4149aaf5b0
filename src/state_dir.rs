//! Tessera's state directory (`serve --state-dir`): what must survive a restart but is not
//! configuration, e.g. the key that makes resource versions unguessable and the last valid
//! configuration. It never holds a secret value of a credential: those are re-read or
//! re-minted at start.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Length of the version key in bytes.
pub const VERSION_KEY_LEN: usize = 32;
const VERSION_KEY_FILE: &str = "version.key";

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("state directory {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: must hold exactly {VERSION_KEY_LEN} bytes (delete it to start afresh)", path.display())]
    BadKey { path: PathBuf },
    #[error("no secure random source: {0}")]
    Random(String),
}

/// An opened (created if missing) state directory, readable by its owner only.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// Opens `path`, creating it with mode 0700 when it does not exist.
    pub fn open(path: &Path) -> Result<Self, StateDirError> {
        let io = |source| StateDirError::Io {
            path: path.to_path_buf(),
            source,
        };
        fs::create_dir_all(path).map_err(io)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(io)?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The content of `name`, or `None` when it does not exist.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>, StateDirError> {
        let path = self.path.join(name);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateDirError::Io { path, source }),
        }
    }

    /// Replaces `name` atomically (temporary file, fsync, rename, fsync of the directory), so
    /// a crash leaves either the old or the new content, never a mix; mode 0600.
    pub fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), StateDirError> {
        let path = self.path.join(name);
        let tmp = self.path.join(format!(".{name}.tmp"));
        let io = |source| StateDirError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&tmp, &path).map_err(io)?;
        File::open(&self.path)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(())
    }

    /// The key for keyed resource versions: created from a secure random source on first use
    /// and kept, so a restarted Tessera derives the same versions and resends nothing.
    pub fn version_key(&self) -> Result<[u8; VERSION_KEY_LEN], StateDirError> {
        let path = self.path.join(VERSION_KEY_FILE);
        if let Some(bytes) = self.read(VERSION_KEY_FILE)? {
            return bytes.try_into().map_err(|_| StateDirError::BadKey { path });
        }
        let key = random_key()?;
        self.write_atomic(VERSION_KEY_FILE, &key)?;
        Ok(key)
    }
}

/// A fresh key from the TLS stack's secure random source (aws-lc-rs).
pub fn random_key() -> Result<[u8; VERSION_KEY_LEN], StateDirError> {
    let mut key = [0u8; VERSION_KEY_LEN];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut key)
        .map_err(|e| StateDirError::Random(format!("{e:?}")))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_key_is_created_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("state")).unwrap();
        let first = state.version_key().unwrap();
        assert_ne!(first, [0u8; VERSION_KEY_LEN]);
        let again = StateDir::open(state.path()).unwrap().version_key().unwrap();
        assert_eq!(first, again, "a restart must derive the same versions");
        let mode = fs::metadata(state.path().join(VERSION_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        let dir_mode = fs::metadata(state.path()).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o077, 0, "{dir_mode:o}");
    }

    #[test]
    fn a_damaged_key_is_an_error_not_a_silent_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        state.write_atomic(VERSION_KEY_FILE, b"short").unwrap();
        assert!(matches!(
            state.version_key(),
            Err(StateDirError::BadKey { .. })
        ));
    }

    #[test]
    fn atomic_write_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        assert_eq!(state.read("config.json").unwrap(), None);
        state.write_atomic("config.json", b"one").unwrap();
        state.write_atomic("config.json", b"two").unwrap();
        assert_eq!(
            state.read("config.json").unwrap().as_deref(),
            Some(&b"two"[..])
        );
        assert!(!dir.path().join(".config.json.tmp").exists());
    }
}
