//! State shared by `serve`'s tasks and read by the admin API. It lives outside `app` so that
//! `admin` depends on it alone and `app` → `admin` stays a one-way edge.

use crate::credentials::StatusBoard;
use crate::credentials::reader::ReadDone;
use crate::xds::{Cache, Registry};
use dashmap::DashMap;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, RwLock};
use tokio::sync::{oneshot, watch};

/// Outcome of the last configuration load, for the admin API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConfigStatus {
    pub loaded: bool,
    pub files: Vec<PathBuf>,
    pub gateways: usize,
    pub backends: usize,
    pub routes: usize,
    /// Why the most recent edit was rejected (cleared by the next valid one).
    pub last_error: Option<String>,
    /// Every problem of the configuration read last (file mode), one per field.
    pub problems: Vec<ObjectProblem>,
    /// Why part of what is served is not the configuration as it reads now, if it is not.
    pub fallback: Option<String>,
}

/// One problem of the configuration, as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectProblem {
    /// `Kind "name"`; `None` when the problem names no object (e.g. invalid YAML).
    pub object: Option<String>,
    pub file: PathBuf,
    /// 1-based document within the file; 0 for the whole file.
    pub document: usize,
    pub field: String,
    pub message: String,
    /// Whether the object's last good version is served meanwhile.
    pub last_good_served: bool,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub reloads_ok: AtomicU64,
    pub reloads_rejected: AtomicU64,
    /// Credential values pushed with new content: first values, rotations, mints,
    /// revocations and expiries, from every credential source.
    pub credential_updates: AtomicU64,
    /// Attempts to mint each short-lived credential, by policy.
    pub credential_attempts: DashMap<String, u64>,
    /// Failed attempts, by policy and the fixed failure class (`MintError::class`).
    pub credential_failures: DashMap<(String, &'static str), u64>,
}

/// State shared by the tasks and the admin API.
#[derive(Debug, Default)]
pub struct AppState {
    pub cache: Arc<Cache>,
    pub registry: Arc<Registry>,
    pub ready: AtomicBool,
    pub config_status: RwLock<ConfigStatus>,
    /// Every credential's state (never its value), written by the engine's publisher.
    pub board: Arc<StatusBoard>,
    pub metrics: Metrics,
    /// Whether xDS clients must prove an identity (mTLS); shown on `/status`.
    pub xds_client_auth: AtomicBool,
    /// Every credential of the applied configuration, by the name its task publishes under
    /// (a policy, or a gateway's client keys).
    pub credentials: RwLock<BTreeMap<String, CredentialInfo>>,
    /// Publications of each credential's task, counted, for callers waiting for the next one.
    pub publications: Publications,
}

/// What kind of credential a policy holds and the resource it is served as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialInfo {
    /// The SDS secret or ECDS config name.
    pub resource: String,
    /// `api_key`, `aws_keys`, `aws_web_identity`, `azure` or `client_keys`.
    pub kind: &'static str,
}

/// Counts every publication of every credential task (a value, a failure, a revocation).
#[derive(Debug)]
pub struct Publications {
    counts: dashmap::DashMap<String, u64>,
    changes: watch::Sender<u64>,
}

impl Default for Publications {
    fn default() -> Self {
        Self {
            counts: DashMap::new(),
            changes: watch::channel(0).0,
        }
    }
}

impl Publications {
    /// Counts one publication for `name`.
    pub fn count(&self, name: &str) {
        *self.counts.entry(name.to_owned()).or_default() += 1;
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Publications for `name` so far.
    pub fn get(&self, name: &str) -> u64 {
        self.counts.get(name).map_or(0, |n| *n)
    }

    /// A receiver that wakes on every publication.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// The admin API asking the applier to refresh one credential now.
#[derive(Debug)]
pub struct RefreshRequest {
    /// The name the credential's task publishes under (a policy name).
    pub name: String,
    pub reply: oneshot::Sender<RefreshStarted>,
}

/// What a refresh request set off.
pub enum RefreshStarted {
    /// No credential of the configuration has that name.
    NotFound,
    /// A short-lived credential is being minted; its task publishes the outcome.
    Minting,
    /// A key file is being re-read.
    Rereading(ReadDone),
    /// The value comes with the configuration (a Secret document): nothing to re-read.
    WithConfiguration,
}

impl std::fmt::Debug for RefreshStarted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NotFound => "NotFound",
            Self::Minting => "Minting",
            Self::Rereading(_) => "Rereading",
            Self::WithConfiguration => "WithConfiguration",
        })
    }
}
