//! `tessera serve`: starts every long-running task from one list (in [`serve`]) and wires
//! them together with channels. None is expected to end: the first that does, or panics,
//! ends the process with an error naming it.
//!
//! | task | subscribes to | publishes |
//! |---|---|---|
//! | file source (`source::file`) | file events in the config directory | [`Update`]s, debounced |
//! | Kubernetes source (`source::kubernetes`; one reflector task per kind) | the API server's lists and watches | [`Update`]s and status snapshots, debounced; Secret changes at once |
//! | Lease (`source::kubernetes::lease`, Kubernetes mode) | the `tessera-status-writer` Lease | whether this replica writes status |
//! | status writer (`source::kubernetes::status`, Kubernetes mode) | status snapshots, the credential board, the Lease | object status |
//! | key-file watcher (`source::key_files`) | the key files in use, file events in their directories, a periodic tick | key files to re-read |
//! | applier (`apply`) | [`Update`]s, key files to re-read | the cache, the credential board, `/status`, the key files in use; starts and stops the engine's credential refresh tasks (one per minted credential) |
//! | xDS server | the cache | ADS to Envoy (one task per stream) |
//! | admin API | the cache, the stream registry, the status | `/healthz`, `/readyz`, `/status`, `/metrics` |

use crate::source::file::FileSource;
use crate::source::key_files::KeyFileWatcher;
use crate::source::kubernetes::{KubeSource, lease, status};
use crate::source::{Snapshot, Update};
use crate::xds::AdsService;
use anyhow::{Context, bail};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tracing::{info, warn};

mod apply;
mod engine;

pub use crate::state::{AppState, ConfigStatus, Metrics};
use apply::Applier;
use engine::Engine;

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
    /// How often every key file is re-read, whatever file events said.
    pub key_reread_interval: Duration,
    /// `--state-dir`: opened (created) at start; see [`crate::state_dir`].
    pub state_dir: PathBuf,
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
    let http = crate::credentials::oidc::identity_client()
        .context("cannot build the HTTP client for identity providers")?;
    let state = Arc::new(AppState::default());

    let (updates_tx, updates) = mpsc::channel::<Update>(16);
    let (key_files_tx, key_files) = watch::channel(Vec::new());
    let (rereads_tx, rereads) = mpsc::unbounded_channel();
    let mut applier = Applier::new(Engine::new(state.clone(), http), key_files_tx);
    let mut tasks = Tasks::default();
    match &opts.kubernetes {
        Some(kube_opts) => {
            let client = kube::Client::try_default()
                .await
                .context("cannot reach Kubernetes (in-cluster config or KUBECONFIG)")?;
            let source = KubeSource::start(&client, kube_opts);
            let (status_tx, status_rx) = watch::channel(Arc::new(Snapshot::default()));
            let leader = Arc::new(AtomicBool::new(false));
            tasks.spawn(
                "Lease",
                once_listed(
                    source.listed(),
                    lease::lead(
                        client.clone(),
                        kube_opts.lease_namespace.clone(),
                        kube_opts.identity.clone(),
                        leader.clone(),
                    ),
                ),
            );
            tasks.spawn(
                "status writer",
                once_listed(
                    source.listed(),
                    status::write(
                        client,
                        source.status_stores(),
                        status_rx,
                        state.board.clone(),
                        leader,
                    ),
                ),
            );
            tasks.spawn("Kubernetes source", source.run(updates_tx, status_tx));
        }
        None => {
            let source = FileSource::new(config).context("cannot start the file watcher")?;
            // Applied before the xDS port opens, so a reconnecting Envoy is never answered
            // with an empty configuration.
            applier.apply(source.load());
            tasks.spawn("file source", source.run(updates_tx));
        }
    }
    let key_watcher = KeyFileWatcher::new(opts.key_reread_interval)
        .context("cannot start the key-file watcher")?;
    tasks.spawn("key-file watcher", key_watcher.run(key_files, rereads_tx));
    tasks.spawn("applier", applier.run(updates, rereads));
    // The xDS server borrows the options, so it runs in the select below, not as a task.
    let xds = xds_server(&opts, state.clone()).await?;
    let admin_listener = tokio::net::TcpListener::bind(opts.admin_address)
        .await
        .with_context(|| format!("cannot bind the admin address {}", opts.admin_address))?;
    info!(address = %opts.admin_address, "admin API listening");
    let admin = axum::serve(admin_listener, crate::admin::router(state.clone()));
    tasks.spawn_fallible("admin API", async move {
        admin.await.context("admin server failed")
    });

    tokio::select! {
        r = xds => r.and_then(|()| bail!("xDS server stopped")),
        r = tasks.first_end() => r,
        r = shutdown_signal() => {
            r?;
            info!("shutting down");
            Ok(())
        }
    }
}

/// Runs `task` once the Kubernetes source has listed every kind (status written from a
/// partial list would be wrong); returns at once if the source stops before that.
async fn once_listed(mut listed: watch::Receiver<bool>, task: impl Future<Output = ()>) {
    if listed.wait_for(|listed| *listed).await.is_ok() {
        task.await;
    }
}

/// The long-running tasks of `serve`, by name.
#[derive(Default)]
struct Tasks {
    set: JoinSet<anyhow::Result<()>>,
    names: HashMap<tokio::task::Id, &'static str>,
}

impl Tasks {
    fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.spawn_fallible(name, async move {
            task.await;
            Ok(())
        });
    }

    fn spawn_fallible(
        &mut self,
        name: &'static str,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        let handle = self.set.spawn(task);
        self.names.insert(handle.id(), name);
    }

    /// Waits for the first task to end; every outcome is an error, since none should end.
    async fn first_end(&mut self) -> anyhow::Result<()> {
        let name = |id| self.names.get(&id).copied().unwrap_or("a task");
        match self.set.join_next_with_id().await {
            None => bail!("no tasks were started"),
            Some(Ok((id, Ok(())))) => bail!("{} stopped", name(id)),
            Some(Ok((id, Err(e)))) => Err(e.context(format!("{} failed", name(id)))),
            Some(Err(e)) if e.is_panic() => bail!("{} panicked", name(e.id())),
            Some(Err(e)) => bail!("{} was cancelled", name(e.id())),
        }
    }
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
