//! `tessera serve`: starts every task and wires them together.
//!
//! * config reconciler — subscribes to file events; loads, validates and translates the
//!   config (debounced) and re-reads key files (immediately); publishes to the cache.
//! * ADS server — subscribes to the cache; publishes to Envoy.
//! * admin server — reads the cache, the stream registry and the status below.

use crate::credentials::{KeyState, Minters, StaticKeys, StatusBoard};
use crate::source::watch::{Change, DirWatcher, parent_dir};
use crate::source::{Loaded, load};
use crate::translate::{names, translate};
use crate::xds::{AdsService, Cache, Registry};
use anyhow::{Context, bail};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tracing::{error, info, warn};

/// Configuration edits are batched: applied once the directory is quiet this long…
const DEBOUNCE_QUIET: Duration = Duration::from_millis(100);
/// …or at the latest this long after the first edit.
const DEBOUNCE_MAX: Duration = Duration::from_secs(1);

/// Files for serving ADS over mTLS.
#[derive(Debug, Clone)]
pub struct XdsTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

/// Options of `tessera serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub config: PathBuf,
    pub xds_address: SocketAddr,
    pub admin_address: SocketAddr,
    pub tls: Option<XdsTls>,
    pub insecure_xds: bool,
}

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
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub reloads_ok: AtomicU64,
    pub reloads_rejected: AtomicU64,
    pub credential_updates: AtomicU64,
}

/// State shared by the tasks and the admin API.
#[derive(Debug, Default)]
pub struct AppState {
    pub cache: Arc<Cache>,
    pub registry: Arc<Registry>,
    pub ready: AtomicBool,
    pub config_status: RwLock<ConfigStatus>,
    pub board: Arc<StatusBoard>,
    pub metrics: Metrics,
}

impl AppState {
    fn record_static(&self, name: &str, state: &KeyState) {
        match state {
            KeyState::Present(_) => self.board.set(name, "present", None, None),
            KeyState::Revoked(why) => self.board.set(name, "revoked", Some(why.clone()), None),
        }
    }
}

/// Runs until interrupted.
pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let config = std::path::absolute(&opts.config)
        .with_context(|| format!("cannot resolve {}", opts.config.display()))?;
    if !config.exists() {
        bail!("configuration path {} does not exist", config.display());
    }
    if opts.tls.is_none() && !opts.xds_address.ip().is_loopback() {
        if !opts.insecure_xds {
            bail!(
                "refusing to serve xDS on non-loopback {} without TLS: the xDS port carries provider keys. \
                 Give --xds-tls-cert, --xds-tls-key and --xds-client-ca, or --insecure-xds to accept the risk",
                opts.xds_address
            );
        }
        warn!(address = %opts.xds_address, "serving xDS WITHOUT TLS on a non-loopback address (--insecure-xds): anyone who can reach it can read provider keys");
    }
    // One TLS crypto provider for every client (OIDC grants, STS): aws-lc-rs. It may already be
    // installed when serving in-process (tests); that is fine.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(crate::credentials::rotator::ATTEMPT_TIMEOUT)
        .build()
        .context("cannot build the HTTP client for identity providers")?;
    let state = Arc::new(AppState::default());

    let (watcher, changes) = DirWatcher::new().context("cannot start the file watcher")?;
    let mut reconciler = Reconciler {
        config,
        state: state.clone(),
        watcher,
        keys: StaticKeys::default(),
        minters: Minters::new(state.cache.clone(), state.board.clone(), http),
    };
    reconciler.reload();

    let xds = xds_server(&opts, state.clone()).await?;
    let admin_listener = tokio::net::TcpListener::bind(opts.admin_address)
        .await
        .with_context(|| format!("cannot bind the admin address {}", opts.admin_address))?;
    info!(address = %opts.admin_address, "admin API listening");
    let admin = axum::serve(admin_listener, crate::admin::router(state.clone()));

    tokio::select! {
        r = xds => r?,
        r = admin => r.context("admin server failed")?,
        () = reconciler.run(changes) => {},
        r = tokio::signal::ctrl_c() => { r?; info!("interrupted, shutting down"); }
    }
    Ok(())
}

async fn xds_server(
    opts: &ServeOptions,
    state: Arc<AppState>,
) -> anyhow::Result<impl Future<Output = anyhow::Result<()>>> {
    let service = AdsService::new(state.cache.clone(), state.registry.clone());
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if let Some(tls) = &opts.tls {
        let read =
            |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
        let identity = Identity::from_pem(read(&tls.cert)?, read(&tls.key)?);
        let config = ServerTlsConfig::new()
            .identity(identity)
            .client_ca_root(Certificate::from_pem(read(&tls.client_ca)?));
        builder = builder
            .tls_config(config)
            .context("invalid xDS TLS configuration")?;
    }
    let listener = tokio::net::TcpListener::bind(opts.xds_address)
        .await
        .with_context(|| format!("cannot bind the xDS address {}", opts.xds_address))?;
    info!(address = %opts.xds_address, mtls = opts.tls.is_some(), "xDS (ADS) listening");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let router = builder.add_service(AggregatedDiscoveryServiceServer::new(service));
    Ok(async move {
        router
            .serve_with_incoming(incoming)
            .await
            .context("xDS server failed")
    })
}

/// Keeps the cache in line with the files on disk.
struct Reconciler {
    config: PathBuf,
    state: Arc<AppState>,
    watcher: DirWatcher,
    keys: StaticKeys,
    minters: Minters,
}

impl Reconciler {
    async fn run(mut self, mut changes: mpsc::UnboundedReceiver<Change>) {
        let mut deadline: Option<(Instant, Instant)> = None; // (quiet, max)
        loop {
            let sleep_until = deadline.map(|(quiet, max)| quiet.min(max));
            let change = tokio::select! {
                c = changes.recv() => match c {
                    Some(c) => Some(c),
                    None => return,
                },
                () = sleep_opt(sleep_until) => None,
            };
            match change {
                Some(change) => {
                    if change.settled && self.keys.files().any(|f| *f == change.path) {
                        // Credentials never wait behind the config debounce.
                        self.reread_key(&change.path);
                    }
                    if self.is_config_file(&change.path) {
                        let now = Instant::now();
                        let max = deadline.map_or(now + DEBOUNCE_MAX, |(_, m)| m);
                        deadline = Some((now + DEBOUNCE_QUIET, max));
                    }
                }
                None => {
                    deadline = None;
                    self.reload();
                }
            }
        }
    }

    fn is_config_file(&self, path: &Path) -> bool {
        if self.config.is_file() || !self.config.is_dir() && self.config.extension().is_some() {
            return path == self.config;
        }
        path.parent() == Some(self.config.as_path())
            && matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            )
    }

    fn reread_key(&mut self, path: &Path) {
        let changed = self.keys.reread(path);
        if changed.is_empty() {
            return;
        }
        let resources: Vec<_> = changed.iter().map(|(_, _, r)| r.clone()).collect();
        self.state.cache.set_credentials(resources);
        for (name, key_state, _) in &changed {
            self.state.record_static(name, key_state);
            self.state
                .metrics
                .credential_updates
                .fetch_add(1, Ordering::Relaxed);
            match key_state {
                KeyState::Present(_) => {
                    info!(credential = %name, file = %path.display(), "credential rotated")
                }
                KeyState::Revoked(why) => {
                    warn!(credential = %name, reason = %why, "credential revoked: Envoy answers 401 for its backends")
                }
            }
        }
    }

    /// Loads the whole configuration; on any error the last good one keeps serving.
    fn reload(&mut self) {
        match load(&self.config) {
            Ok(Loaded { model, files }) => {
                let gateways = translate(&model);
                let keys = StaticKeys::load(&model);
                let plan = self.minters.plan(&model);
                let mut credentials = keys.resources();
                credentials.extend(plan.placeholders.iter().cloned());
                self.state.cache.publish(gateways, credentials);
                self.minters.start(plan);
                let names: std::collections::HashSet<String> = model
                    .policies
                    .keys()
                    .map(|p| names::credential(p))
                    .collect();
                self.state.board.0.retain(|name, _| names.contains(name));
                for (name, key_state) in keys.states() {
                    self.state.record_static(name, key_state);
                }
                let mut dirs: Vec<PathBuf> = keys.files().map(|f| parent_dir(f)).collect();
                dirs.push(if self.config.is_dir() {
                    self.config.clone()
                } else {
                    parent_dir(&self.config)
                });
                self.watcher.set_dirs(dirs);
                self.keys = keys;
                info!(
                    gateways = model.gateways.len(),
                    backends = model.backends.len(),
                    routes = model.routes.len(),
                    "configuration applied"
                );
                if let Ok(mut s) = self.state.config_status.write() {
                    *s = ConfigStatus {
                        loaded: true,
                        files,
                        gateways: model.gateways.len(),
                        backends: model.backends.len(),
                        routes: model.routes.len(),
                        last_error: None,
                    };
                }
                self.state
                    .metrics
                    .reloads_ok
                    .fetch_add(1, Ordering::Relaxed);
                self.state.ready.store(true, Ordering::Relaxed);
            }
            Err(errors) => {
                for e in &errors.0 {
                    error!("invalid configuration: {e}");
                }
                error!(
                    errors = errors.0.len(),
                    "configuration rejected; the last good configuration keeps serving"
                );
                // Keep watching the directory so a fix is picked up.
                if !self.state.ready.load(Ordering::Relaxed) {
                    let dir = if self.config.is_dir() {
                        self.config.clone()
                    } else {
                        parent_dir(&self.config)
                    };
                    self.watcher.set_dirs([dir]);
                }
                if let Ok(mut s) = self.state.config_status.write() {
                    s.last_error = Some(errors.to_string());
                }
                self.state
                    .metrics
                    .reloads_rejected
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn sleep_opt(until: Option<Instant>) {
    match until {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
