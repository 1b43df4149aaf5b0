//! What the admin API may say about each credential: its state and timing, never its value.

use dashmap::DashMap;
use serde::Serialize;
use std::time::{SystemTime, UNIX_EPOCH};

/// One credential's state.
#[derive(Debug, Clone, Serialize)]
pub struct CredentialStatus {
    pub name: String,
    /// `present`, `pending` (first mint in flight), `failing` (retrying, still valid),
    /// `unavailable` (never minted), `expired` or `revoked`: all but the first two fail closed.
    pub state: &'static str,
    /// Why it is not `present`, or the last refresh error.
    pub reason: Option<String>,
    /// Expiry of short-lived credentials, seconds since the epoch.
    pub expires_unix: Option<u64>,
    pub updated_unix: u64,
}

/// Every credential's status, by resource name.
#[derive(Debug, Default)]
pub struct StatusBoard(pub DashMap<String, CredentialStatus>);

impl StatusBoard {
    /// Records a credential's state.
    pub fn set(
        &self,
        name: &str,
        state: &'static str,
        reason: Option<String>,
        expires: Option<SystemTime>,
    ) {
        self.0.insert(
            name.to_owned(),
            CredentialStatus {
                name: name.to_owned(),
                state,
                reason,
                expires_unix: expires.map(unix),
                updated_unix: unix(SystemTime::now()),
            },
        );
    }

    /// The recorded expiry of a credential that is still being served.
    pub fn live_expiry(&self, name: &str) -> Option<SystemTime> {
        let s = self.0.get(name)?;
        match s.state {
            "present" | "failing" => s
                .expires_unix
                .map(|t| UNIX_EPOCH + std::time::Duration::from_secs(t)),
            _ => None,
        }
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
