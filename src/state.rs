//! State shared by `serve`'s tasks and read by the admin API. It lives outside `app` so that
//! `admin` depends on it alone and `app` → `admin` stays a one-way edge.

use crate::credentials::StatusBoard;
use crate::xds::{Cache, Registry};
use dashmap::DashMap;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, RwLock};

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
}
