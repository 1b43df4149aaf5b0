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
//! | admin gRPC API (`admin::grpc`) | the stream registry, the credential tracker and board | `tessera.admin.v1.Admin`; refresh requests to the applier |

use crate::admin::grpc::{AdminServer, AdminService};
use crate::source::file::FileSource;
use crate::source::key_files::KeyFileWatcher;
use crate::source::kubernetes::{KubeSource, lease, status};
use crate::source::{Snapshot, Update};
use crate::xds::csds::{self, CsdsService};
use crate::xds::identity::Authenticator;
use crate::xds::resource::VersionKey;
use crate::xds::transport::{self, ReloadingTls};
use crate::xds::{AdsServer, AdsService};
use anyhow::{Context, bail};
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_server::ClientStatusDiscoveryServiceServer;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tonic::transport::Server;
use tracing::{info, warn};

mod apply;
mod engine;
mod open_files;

pub use crate::state::{AppState, ConfigStatus, Metrics};
use apply::Applier;
use engine::Engine;

/// Files for serving ADS over TLS.
pub use crate::xds::transport::TlsFiles as XdsTls;

/// Options of `tessera serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub config: PathBuf,
    /// Kubernetes mode instead of files.
    pub kubernetes: Option<crate::source::kubernetes::KubeOptions>,
    pub xds_address: SocketAddr,
    pub admin_address: SocketAddr,
    /// `--admin-grpc-address`: the admin gRPC API (loopback, or mTLS like xDS).
    pub admin_grpc_address: SocketAddr,
    /// `--admin-client`: certificate SANs admitted to the admin gRPC API under mTLS.
    pub admin_clients: Vec<String>,
    pub tls: Option<XdsTls>,
    pub insecure_xds: bool,
    /// `--xds-token-auth` (Kubernetes mode): every xDS stream must carry a ServiceAccount
    /// token that the API server's TokenReview accepts for audience `tessera`.
    pub xds_token_auth: bool,
    /// How often every key file is re-read, whatever file events said.
    pub key_reread_interval: Duration,
    /// `--state-dir`: opened (created) at start; see [`crate::state_dir`].
    pub state_dir: PathBuf,
    /// `--admin-token-file`: the bearer token `/status` requires.
    pub admin_token_file: Option<PathBuf>,
    /// Limits of the xDS port.
    pub xds_limits: crate::xds::Limits,
}

/// Runs until interrupted.
pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    open_files::raise();
    let config = std::path::absolute(&opts.config)
        .with_context(|| format!("cannot resolve {}", opts.config.display()))?;
    if opts.kubernetes.is_none() && !config.exists() {
        bail!("configuration path {} does not exist", config.display());
    }
    if opts.xds_token_auth {
        if opts.kubernetes.is_none() {
            bail!(
                "--xds-token-auth needs --kubernetes: tokens are checked with the API server's TokenReview"
            );
        }
        if opts.tls.is_none() {
            bail!(
                "--xds-token-auth needs TLS on the xDS port (--xds-tls-cert and --xds-tls-key): \
                 a bearer token must not cross the network in the clear, and Envoy sends it only over TLS"
            );
        }
    } else if opts.tls.as_ref().is_some_and(|t| t.client_ca.is_none()) {
        bail!(
            "--xds-client-ca is required with --xds-tls-cert unless --xds-token-auth authenticates clients"
        );
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
    let admin_mtls = opts.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    if !admin_mtls && !opts.admin_grpc_address.ip().is_loopback() {
        bail!(
            "refusing to serve the admin gRPC API on non-loopback {} without mTLS: it maps the fleet and \
             triggers credential refreshes. Use a loopback --admin-grpc-address, or give --xds-tls-cert, \
             --xds-tls-key and --xds-client-ca (the admin API then needs a client certificate from that CA)",
            opts.admin_grpc_address
        );
    }
    if admin_mtls && opts.admin_clients.is_empty() {
        warn!(
            address = %opts.admin_grpc_address,
            "the admin gRPC API has mTLS and no --admin-client: it admits no caller (Envoys' certificates come from the same CA and must not operate Tessera)"
        );
    }
    if opts.tls.is_none() {
        warn!(
            address = %opts.xds_address,
            "xDS clients are not authenticated: any local process can read credentials by claiming a node cluster. \
             In production give --xds-tls-cert, --xds-tls-key and --xds-client-ca and list each Gateway's xdsClients"
        );
    }
    // One TLS crypto provider for every client (OIDC grants, STS): aws-lc-rs. It may already be
    // installed when serving in-process (tests); that is fine.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let http = crate::credentials::oidc::identity_client()
        .context("cannot build the HTTP client for identity providers")?;
    let state = Arc::new(AppState::default());
    state
        .xds_client_auth
        .store(opts.tls.is_some(), Ordering::Relaxed);
    let version_key = version_key(&opts.state_dir)?;

    let (updates_tx, updates) = mpsc::channel::<Update>(16);
    let (key_files_tx, key_files) = watch::channel(Vec::new());
    let (rereads_tx, rereads) = mpsc::unbounded_channel();
    let (refresh_tx, refreshes) = mpsc::channel(8);
    let mut applier = Applier::new(Engine::new(state.clone(), http, version_key), key_files_tx);
    let mut tasks = Tasks::default();
    // The client TokenReviews go through, with --xds-token-auth.
    let mut token_review = None;
    match &opts.kubernetes {
        Some(kube_opts) => {
            let client = kube::Client::try_default()
                .await
                .context("cannot reach Kubernetes (in-cluster config or KUBECONFIG)")?;
            if opts.xds_token_auth {
                token_review = Some(client.clone());
            }
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
            let mut source = FileSource::new(config).context("cannot start the file watcher")?;
            // Without a usable state directory Tessera still serves; only a restart with an
            // invalid configuration then has nothing persisted to fall back on.
            match crate::state_dir::StateDir::open(&opts.state_dir) {
                Ok(state_dir) => source = source.with_state_dir(state_dir),
                Err(e) => warn!(
                    error = %e,
                    "state directory unusable: the last good configuration is not persisted across restarts"
                ),
            }
            // Applied before the xDS port opens, so a reconnecting Envoy is never answered
            // with an empty configuration.
            applier.apply(source.load());
            tasks.spawn("file source", source.run(updates_tx));
        }
    }
    let key_watcher = KeyFileWatcher::new(opts.key_reread_interval)
        .context("cannot start the key-file watcher")?;
    tasks.spawn("key-file watcher", key_watcher.run(key_files, rereads_tx));
    tasks.spawn("applier", applier.run(updates, rereads, refreshes));
    // The xDS server borrows the options, so it runs in the select below, not as a task.
    let (xds, tls) = xds_server(&opts, state.clone(), token_review).await?;
    let admin_grpc = admin_grpc_server(
        opts.admin_grpc_address,
        AdminService::new(
            state.clone(),
            refresh_tx,
            admin_mtls.then(|| opts.admin_clients.clone()),
        ),
        tls.clone().filter(|_| admin_mtls),
    )
    .await?;
    tasks.spawn_fallible("admin gRPC API", admin_grpc);
    if let Some(tls) = tls {
        tasks.spawn(
            "xDS TLS file watcher",
            tls.watch(transport::RELOAD_INTERVAL),
        );
    }
    let admin_listener = tokio::net::TcpListener::bind(opts.admin_address)
        .await
        .with_context(|| format!("cannot bind the admin address {}", opts.admin_address))?;
    info!(address = %opts.admin_address, "admin API listening");
    let access =
        crate::admin::StatusAccess::for_address(opts.admin_address, opts.admin_token_file.clone());
    if matches!(access, crate::admin::StatusAccess::Closed) {
        warn!(address = %opts.admin_address, "admin API on a non-loopback address without --admin-token-file: /status is refused");
    }
    let admin = axum::serve(admin_listener, crate::admin::router(state.clone(), access));
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

/// The key of credential resource versions, kept in the state directory so a restart
/// derives the same versions; without a usable directory, a key for this run only.
fn version_key(dir: &Path) -> anyhow::Result<VersionKey> {
    let kept = crate::state_dir::StateDir::open(dir).and_then(|d| d.version_key());
    let key = match kept {
        Ok(key) => key,
        Err(e) => {
            warn!(
                error = %e,
                "cannot keep the version key in the state directory: using one for this run only, \
                 so Envoys are sent their credentials once more after a restart"
            );
            crate::state_dir::random_key().context("cannot create a version key")?
        }
    };
    Ok(VersionKey::new(&key))
}

/// The ADS server future, and the TLS configuration whose files must be watched (mTLS only).
async fn xds_server(
    opts: &ServeOptions,
    state: Arc<AppState>,
    token_review: Option<kube::Client>,
) -> anyhow::Result<(
    impl Future<Output = anyhow::Result<()>>,
    Option<Arc<ReloadingTls>>,
)> {
    let tls = match &opts.tls {
        Some(files) => Some(Arc::new(
            ReloadingTls::load(files.clone()).context("invalid xDS TLS configuration")?,
        )),
        None => None,
    };
    let client_certificates = opts.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    let mut authenticator = if client_certificates {
        Authenticator::client_certificates()
    } else {
        Authenticator::off()
    };
    if let Some(with_tokens) = token_review {
        authenticator = authenticator.with_token_review(with_tokens);
    }
    let authenticator = Arc::new(authenticator);
    let service = AdsService::configured(
        state.cache.clone(),
        state.registry.clone(),
        authenticator.clone(),
        opts.xds_limits,
    );
    let status_service = CsdsService::new(
        state.cache.clone(),
        state.registry.clone(),
        authenticator,
        if opts.xds_address.ip().is_loopback() {
            csds::Unauthenticated::Allow
        } else {
            csds::Unauthenticated::Deny
        },
    );
    let mut builder = Server::builder()
        .max_concurrent_streams(Some(opts.xds_limits.max_streams_per_connection))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    let listener = tokio::net::TcpListener::bind(opts.xds_address)
        .await
        .with_context(|| format!("cannot bind the xDS address {}", opts.xds_address))?;
    info!(
        address = %opts.xds_address,
        tls = tls.is_some(),
        client_certificates,
        service_account_tokens = opts.xds_token_auth,
        "xDS (ADS) listening"
    );
    let incoming = transport::incoming(listener, tls.clone());
    let router = builder
        .add_service(AdsServer::new(service))
        .add_service(ClientStatusDiscoveryServiceServer::new(status_service));
    let server = async move {
        router
            .serve_with_incoming(incoming)
            .await
            .context("xDS server failed")
    };
    Ok((server, tls))
}

/// The admin gRPC server future, bound to `address`; over `tls` (the xDS port's, with client
/// certificates) when given.
async fn admin_grpc_server(
    address: SocketAddr,
    service: AdminService,
    tls: Option<Arc<ReloadingTls>>,
) -> anyhow::Result<impl Future<Output = anyhow::Result<()>> + Send + 'static> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot bind the admin gRPC address {address}"))?;
    info!(%address, mtls = tls.is_some(), "admin gRPC API listening");
    let incoming = transport::incoming(listener, tls);
    let router = Server::builder().add_service(AdminServer::new(service));
    Ok(async move {
        router
            .serve_with_incoming(incoming)
            .await
            .context("admin gRPC server failed")
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
