//! What the admin API and Kubernetes status may say about each credential: its state and
//! timing, never its value. States are types, so no condition depends on message text.

use dashmap::DashMap;
use serde::{Serialize, Serializer};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// Why a long-lived credential's material is gone: each is a revocation, served failing closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Revocation {
    #[error("{} does not exist", .0.display())]
    FileMissing(PathBuf),
    #[error("{} is empty", .0.display())]
    FileEmpty(PathBuf),
    /// Still unreadable after every retry (or not text at all).
    #[error("{} is unreadable: {error}", path.display())]
    FileUnreadable { path: PathBuf, error: String },
    #[error("Secret {secret:?} or its key {key:?} does not exist")]
    SecretMissing { secret: String, key: String },
    /// A Secret read whole (a gateway's client keys) does not exist.
    #[error("Secret {secret:?} does not exist")]
    SecretGone { secret: String },
    #[error("key {key:?} of Secret {secret:?} is empty")]
    SecretKeyEmpty { secret: String, key: String },
    #[error("{}: profile {profile:?} has no aws_access_key_id and aws_secret_access_key", path.display())]
    ProfileMissing { path: PathBuf, profile: String },
}

/// Why nothing is served for a credential: its backends fail closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// The first value is being obtained.
    Pending,
    /// No value was ever obtained; the last error.
    Unavailable(String),
    /// The value expired and could not be replaced; the last error.
    Expired(String),
    /// The material is gone.
    Revoked(Revocation),
}

/// One credential's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialState {
    /// Served.
    Present,
    /// Still served, but its refresh (or re-read) fails and is being retried: the last error.
    Failing(String),
    /// Not served.
    Closed(Closed),
}

impl CredentialState {
    /// The lowercase name `/status` shows.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Present => "present",
            Self::Failing(_) => "failing",
            Self::Closed(Closed::Pending) => "pending",
            Self::Closed(Closed::Unavailable(_)) => "unavailable",
            Self::Closed(Closed::Expired(_)) => "expired",
            Self::Closed(Closed::Revoked(_)) => "revoked",
        }
    }

    /// Why it is not `present`, or the last refresh error.
    pub fn reason(&self) -> Option<String> {
        match self {
            Self::Present | Self::Closed(Closed::Pending) => None,
            Self::Failing(e) | Self::Closed(Closed::Unavailable(e) | Closed::Expired(e)) => {
                Some(e.clone())
            }
            Self::Closed(Closed::Revoked(r)) => Some(r.to_string()),
        }
    }
}

/// One credential's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialStatus {
    pub name: String,
    pub state: CredentialState,
    /// Expiry of short-lived credentials.
    pub expires: Option<SystemTime>,
    pub updated: SystemTime,
}

impl CredentialStatus {
    /// Expiry in seconds since the epoch.
    pub fn expires_unix(&self) -> Option<u64> {
        self.expires.map(unix)
    }
}

// `/status` keeps its flat shape: `state` (`present`, `pending`, `failing`, `unavailable`,
// `expired`, `revoked`), `reason`, `expires_unix`, `updated_unix`.
impl Serialize for CredentialStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shown<'a> {
            name: &'a str,
            state: &'static str,
            reason: Option<String>,
            expires_unix: Option<u64>,
            updated_unix: u64,
        }
        Shown {
            name: &self.name,
            state: self.state.name(),
            reason: self.state.reason(),
            expires_unix: self.expires_unix(),
            updated_unix: unix(self.updated),
        }
        .serialize(s)
    }
}

/// Every credential's status, by resource name.
#[derive(Debug, Default)]
pub struct StatusBoard(pub DashMap<String, CredentialStatus>);

impl StatusBoard {
    /// Records a credential's state.
    pub fn set(&self, name: &str, state: CredentialState, expires: Option<SystemTime>) {
        self.0.insert(
            name.to_owned(),
            CredentialStatus {
                name: name.to_owned(),
                state,
                expires,
                updated: SystemTime::now(),
            },
        );
    }

    /// A credential's status.
    pub fn get(&self, name: &str) -> Option<CredentialStatus> {
        self.0.get(name).map(|s| s.clone())
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_json_keeps_its_shape() {
        let board = StatusBoard::default();
        board.set(
            "credential/k",
            CredentialState::Closed(Closed::Revoked(Revocation::FileEmpty("/k".into()))),
            None,
        );
        let shown = serde_json::to_value(board.get("credential/k").unwrap()).unwrap();
        assert_eq!(shown["name"], "credential/k");
        assert_eq!(shown["state"], "revoked");
        assert_eq!(shown["reason"], "/k is empty");
        assert!(shown["expires_unix"].is_null());
        assert!(shown["updated_unix"].as_u64().unwrap() > 0);
        let failing = CredentialState::Failing("STS: down".into());
        assert_eq!(failing.name(), "failing");
        assert_eq!(failing.reason().as_deref(), Some("STS: down"));
        assert_eq!(CredentialState::Closed(Closed::Pending).reason(), None);
    }
}
