//! `tessera serve`: starts every task and wires them together.
//!
//! * source — files (`files.rs`: subscribes to file events; loads, validates and translates
//!   the config, debounced; re-reads key files at once) or Kubernetes; publishes to the cache
//!   through the `engine`.
//! * ADS server — subscribes to the cache; publishes to Envoy.
//! * admin server — reads the cache, the stream registry and the status below.

use crate::credentials::StatusBoard;
use crate::source::watch::DirWatcher;
use crate::xds::{AdsService, Cache, Registry};
use anyhow::{Context, bail};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tracing::{info, warn};

mod engine;
mod files;
mod kubernetes;

use engine::Engine;
use files::FileSource;

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
    /// Kubernetes mode instead of files.
    pub kubernetes: Option<crate::source::kubernetes::KubeOptions>,
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
    /// Credential values pushed with new content: first values, rotations, mints,
    /// revocations and expiries, from every credential source.
    pub credential_updates: AtomicU64,
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
}

/// Runs until interrupted.
pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let config = std::path::absolute(&opts.config)
        .with_context(|| format!("cannot resolve {}", opts.config.display()))?;
    if opts.kubernetes.is_none() && !config.exists() {
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

    let engine = Engine::new(state.clone(), http);
    let source: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = match opts.kubernetes.clone() {
        Some(kube_opts) => {
            let client = kube::Client::try_default()
                .await
                .context("cannot reach Kubernetes (in-cluster config or KUBECONFIG)")?;
            Box::pin(kubernetes::run(client, kube_opts, engine))
        }
        None => {
            let (watcher, changes) = DirWatcher::new().context("cannot start the file watcher")?;
            let mut files = FileSource {
                config,
                engine,
                watcher,
            };
            files.reload();
            Box::pin(files.run(changes))
        }
    };

    let xds = xds_server(&opts, state.clone()).await?;
    let admin_listener = tokio::net::TcpListener::bind(opts.admin_address)
        .await
        .with_context(|| format!("cannot bind the admin address {}", opts.admin_address))?;
    info!(address = %opts.admin_address, "admin API listening");
    let admin = axum::serve(admin_listener, crate::admin::router(state.clone()));

    tokio::select! {
        r = xds => r?,
        r = admin => r.context("admin server failed")?,
        () = source => {},
        r = shutdown_signal() => { r?; info!("shutting down"); }
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

/// SIGINT or SIGTERM (what Kubernetes and systemd send).
async fn shutdown_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}
