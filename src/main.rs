//! The `tessera` command line.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tessera::app::{ServeOptions, XdsTls};
use tessera::bootstrap::{BootstrapOptions, ClientCert, XdsClientTls};
use tessera::cli::status;

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "xDS control plane for AI gateways: routes and upstream credentials for Envoy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start; boxing the large `serve` variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Serve ADS to Envoy from a configuration file or directory (reloaded on change).
    Serve {
        /// A YAML file or a directory of YAML files.
        #[arg(long, default_value = "config/example")]
        config: PathBuf,
        #[arg(long, default_value = "127.0.0.1:18000")]
        xds_address: SocketAddr,
        /// Serves /healthz, /readyz, /status and /metrics.
        #[arg(long, default_value = "127.0.0.1:18001")]
        admin_address: SocketAddr,
        /// Serves the admin gRPC API (`tessera status`, `tessera refresh`): loopback only,
        /// unless the xDS port has mTLS (then callers need a client certificate from its CA).
        #[arg(long, default_value = "127.0.0.1:18002")]
        admin_grpc_address: SocketAddr,
        /// A client certificate name (DNS or URI SAN, e.g. spiffe://…) that may use the admin
        /// gRPC API when it has mTLS; repeatable. Envoys' certificates come from the same CA,
        /// so no other certificate is admitted.
        #[arg(long = "admin-client", value_name = "SAN")]
        admin_clients: Vec<String>,
        /// Server certificate (PEM) for ADS over TLS (mTLS with --xds-client-ca).
        #[arg(long, requires = "xds_tls_key")]
        xds_tls_cert: Option<PathBuf>,
        #[arg(long, requires = "xds_tls_cert")]
        xds_tls_key: Option<PathBuf>,
        /// CA that Envoy client certificates must chain to (required with --xds-tls-cert
        /// unless --xds-token-auth authenticates clients).
        #[arg(long, requires = "xds_tls_cert")]
        xds_client_ca: Option<PathBuf>,
        /// Kubernetes mode: every xDS stream must carry Envoy's projected ServiceAccount token
        /// (audience `tessera`, `tessera bootstrap --xds-token-file`), checked with the API
        /// server's TokenReview. Needs --xds-tls-cert; the client CA becomes optional.
        #[arg(long, requires = "kubernetes")]
        xds_token_auth: bool,
        /// Kubernetes mode: let a Gateway's xdsClients name ServiceAccounts of other
        /// namespaces (by default only its own namespace's).
        #[arg(long, requires = "kubernetes")]
        allow_cross_namespace_xds_clients: bool,
        /// Allow plaintext xDS on a non-loopback address (provider keys travel in the clear).
        #[arg(long)]
        insecure_xds: bool,
        /// Read Gateways, Backends, policies, Routes and labelled Secrets from Kubernetes
        /// (in-cluster config or KUBECONFIG) instead of --config.
        #[arg(long)]
        kubernetes: bool,
        /// Kubernetes mode: watch only this namespace (repeatable; default: all namespaces).
        #[arg(long, requires = "kubernetes")]
        namespace: Vec<String>,
        /// Kubernetes mode: directories that *File fields may point into (repeatable). `DIR`
        /// gives each namespace its own `DIR/<namespace>`; `NS=DIR` gives DIR to namespace NS
        /// only. Tessera's own credentials must live outside every one of them.
        #[arg(long, requires = "kubernetes")]
        allow_file_dir: Vec<tessera::source::kubernetes::AllowedDir>,
        /// Kubernetes mode: origins (scheme://host[:port]) allowed for stsEndpoint,
        /// authorityHost, issuer, tokenEndpoint and discovered token endpoints (repeatable);
        /// none means no override is allowed.
        #[arg(long, requires = "kubernetes")]
        allow_endpoint: Vec<String>,
        /// Kubernetes mode: namespace of the Lease that elects the status writer.
        #[arg(long, default_value = "tessera-system", requires = "kubernetes")]
        lease_namespace: String,
        /// Kubernetes mode: this replica's name in the Lease (default: $HOSTNAME).
        #[arg(long, requires = "kubernetes")]
        identity: Option<String>,
        /// Re-read every key file this often (e.g. 60s, 5m), for changes no file event reports.
        #[arg(long, default_value = "60s", value_parser = parse_interval)]
        key_reread_interval: Duration,
        /// Directory for state that outlives a restart and is not configuration (never a
        /// secret value). Default: `.tessera-state` beside the configuration directory; in
        /// Kubernetes mode `/var/lib/tessera`.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// A file holding the bearer token `/status` requires (re-read at each request).
        /// Without it, `/status` is served only when --admin-address is loopback.
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
        /// Log line format on stderr: `text` for people, `json` (one object a line) for a log
        /// pipeline.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        #[command(flatten)]
        xds_limits: XdsLimitArgs,
    },
    /// Check a configuration; prints every error with file, document and field.
    Validate {
        #[arg(long, default_value = "config/example")]
        config: PathBuf,
    },
    /// Print the Envoy resources each gateway's nodes would receive, secret values redacted.
    Translate {
        #[arg(long, default_value = "config/example")]
        config: PathBuf,
        /// Only the gateway serving this node cluster (a Gateway's spec.nodeCluster).
        #[arg(long)]
        node_cluster: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
    },
    /// Print the CustomResourceDefinitions of Tessera's kinds (Kubernetes mode).
    Crds,
    /// Show every connected Envoy's xDS status (or, with `credentials`, every credential's
    /// state). Exit 0 when all are synced, 1 when a node is NACKed or stale past
    /// --stale-after (a credential failed or revoked), 2 on a usage or connection error.
    Status {
        #[arg(value_enum, default_value = "nodes")]
        what: StatusOf,
        #[command(flatten)]
        admin: AdminArgs,
        /// A node whose update stays unanswered longer than this is unhealthy.
        #[arg(long, default_value = "60s", value_parser = parse_interval)]
        stale_after: Duration,
    },
    /// Mint a short-lived credential now (AWS web identity, Azure), or re-read a key file;
    /// returns once the result is pushed, with how many nodes ACKed it so far.
    Refresh {
        /// The BackendSecurityPolicy whose credential to refresh.
        policy: String,
        /// Also wait up to this long for every node to ACK the new version (exit 1 if not).
        #[arg(long, value_parser = parse_interval)]
        wait_acks: Option<Duration>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Print an Envoy bootstrap that gets everything else from Tessera over ADS.
    Bootstrap {
        #[arg(long)]
        node_id: String,
        /// Must equal a Gateway's spec.nodeCluster.
        #[arg(long)]
        node_cluster: String,
        #[arg(long, default_value = "127.0.0.1:18000")]
        xds_address: String,
        #[arg(long, default_value_t = 9901)]
        admin_port: u16,
        /// Use incremental (DELTA_GRPC) xDS.
        #[arg(long)]
        delta: bool,
        /// Client certificate (PEM) for mTLS to Tessera.
        #[arg(long, requires_all = ["xds_tls_key", "xds_tls_ca"])]
        xds_tls_cert: Option<PathBuf>,
        #[arg(long, requires = "xds_tls_cert")]
        xds_tls_key: Option<PathBuf>,
        /// CA that Tessera's server certificate must chain to.
        #[arg(long)]
        xds_tls_ca: Option<PathBuf>,
        /// Name Tessera's certificate must carry (also sent as SNI).
        #[arg(long, requires = "xds_tls_ca")]
        xds_server_name: Option<String>,
        /// A token file (Kubernetes: a projected ServiceAccount token, audience `tessera`)
        /// that Envoy sends as `authorization: Bearer` on every new ADS stream, re-reading it
        /// each time. Uses Envoy's Google gRPC client, which only speaks TLS: needs
        /// --xds-tls-ca; the client certificate is optional.
        #[arg(long)]
        xds_token_file: Option<PathBuf>,
    },
}

/// What `tessera status` shows.
#[derive(Clone, Copy, clap::ValueEnum)]
enum StatusOf {
    Nodes,
    Credentials,
}

/// How to reach the admin gRPC API (`status`, `refresh`).
#[derive(clap::Args)]
struct AdminArgs {
    /// The admin gRPC API (`tessera serve --admin-grpc-address`).
    #[arg(long, default_value = "127.0.0.1:18002")]
    admin_grpc: String,
    /// CA that Tessera's certificate chains to: connect with TLS (the xDS port's certificate).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) from the xDS client CA, for mTLS.
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Name Tessera's certificate must carry.
    #[arg(long, requires = "tls_ca")]
    tls_server_name: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    output: OutputArg,
}

impl AdminArgs {
    fn connection(&self) -> status::Connection {
        status::Connection {
            address: self.admin_grpc.clone(),
            tls: self.tls_ca.clone().map(|ca| status::ClientTls {
                ca,
                cert: self.tls_cert.clone(),
                key: self.tls_key.clone(),
                server_name: self.tls_server_name.clone(),
            }),
        }
    }

    fn output(&self) -> status::Output {
        match self.output {
            OutputArg::Table => status::Output::Table,
            OutputArg::Json => status::Output::Json,
        }
    }
}

/// How `status` and `refresh` print.
#[derive(Clone, Copy, clap::ValueEnum)]
enum OutputArg {
    Table,
    Json,
}

/// Runs a client command; its errors are exit status 2 (usage or connection).
fn client_command(
    run: impl Future<Output = Result<(String, u8), status::CliError>>,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    match runtime.block_on(run) {
        Ok((text, code)) => {
            print!("{text}");
            Ok(ExitCode::from(code))
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(status::USAGE))
        }
    }
}

/// Limits of the xDS port (`serve`); see README, "Limits of the xDS port".
#[derive(clap::Args)]
struct XdsLimitArgs {
    /// HTTP/2 streams one xDS connection may have open at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    xds_max_streams_per_connection: u32,
    /// ADS streams open at once over all connections; more are refused (RESOURCE_EXHAUSTED).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    xds_max_streams: u64,
    /// How long a new ADS stream may wait before its first request (DEADLINE_EXCEEDED).
    #[arg(long, default_value = "15s", value_parser = parse_interval)]
    xds_first_request_timeout: Duration,
    /// Resource names one stream may subscribe to per type (RESOURCE_EXHAUSTED).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    xds_max_names_per_type: u64,
}

impl From<XdsLimitArgs> for tessera::xds::Limits {
    fn from(a: XdsLimitArgs) -> Self {
        // The ranges above keep both counts far below usize::MAX on every supported target.
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Self {
            max_streams_per_connection: a.xds_max_streams_per_connection,
            max_streams: count(a.xds_max_streams),
            first_request_timeout: a.xds_first_request_timeout,
            max_names_per_type: count(a.xds_max_names_per_type),
            ..Self::default()
        }
    }
}

/// How `translate` prints.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    /// Proto3 canonical JSON.
    Json,
    /// The same document as YAML.
    Yaml,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            config,
            xds_address,
            admin_address,
            admin_grpc_address,
            admin_clients,
            xds_tls_cert,
            xds_tls_key,
            xds_client_ca,
            xds_token_auth,
            allow_cross_namespace_xds_clients,
            insecure_xds,
            kubernetes,
            namespace,
            allow_file_dir,
            allow_endpoint,
            lease_namespace,
            identity,
            key_reread_interval,
            state_dir,
            admin_token_file,
            log_format,
            xds_limits,
        } => {
            init_logging(log_format);
            let state_dir = state_dir.unwrap_or_else(|| default_state_dir(&config, kubernetes));
            let endpoints = tessera::model::AllowedEndpoints::parse(&allow_endpoint)?;
            let kubernetes = kubernetes.then(|| tessera::source::kubernetes::KubeOptions {
                namespaces: namespace,
                tenancy: tessera::source::kubernetes::Tenancy {
                    file_dirs: allow_file_dir,
                    endpoints,
                    cross_namespace_xds_clients: allow_cross_namespace_xds_clients,
                },
                lease_namespace,
                identity: identity
                    .or_else(|| std::env::var("HOSTNAME").ok())
                    .unwrap_or_else(|| format!("tessera-{}", std::process::id())),
            });
            let tls = match (xds_tls_cert, xds_tls_key) {
                (Some(cert), Some(key)) => Some(XdsTls {
                    cert,
                    key,
                    client_ca: xds_client_ca,
                }),
                _ => None,
            };
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            runtime.block_on(tessera::app::serve(ServeOptions {
                config,
                kubernetes,
                xds_address,
                admin_address,
                admin_grpc_address,
                admin_clients,
                tls,
                insecure_xds,
                xds_token_auth,
                key_reread_interval,
                state_dir,
                admin_token_file,
                xds_limits: xds_limits.into(),
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { config } => {
            let Some(loaded) = load_or_report(&config) else {
                return Ok(ExitCode::FAILURE);
            };
            for gateway in loaded.model.gateways.values() {
                if gateway.xds_clients.is_empty() {
                    eprintln!(
                        "warning: Gateway {:?} (nodeCluster {:?}) lists no spec.xdsClients: while xDS clients \
                         are authenticated (mTLS) no Envoy may receive its configuration",
                        gateway.name, gateway.node_cluster
                    );
                }
            }
            println!(
                "{}: valid ({} gateways, {} backends, {} security policies, {} routes)",
                config.display(),
                loaded.model.gateways.len(),
                loaded.model.backends.len(),
                loaded.model.policies.len(),
                loaded.model.routes.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Translate {
            config,
            node_cluster,
            format,
        } => {
            let Some(loaded) = load_or_report(&config) else {
                return Ok(ExitCode::FAILURE);
            };
            translate(&loaded.model, node_cluster.as_deref(), format)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            what,
            admin,
            stale_after,
        } => {
            let conn = admin.connection();
            let credentials = matches!(what, StatusOf::Credentials);
            client_command(status::status(
                &conn,
                credentials,
                admin.output(),
                stale_after,
            ))
        }
        Command::Refresh {
            policy,
            wait_acks,
            admin,
        } => {
            let conn = admin.connection();
            client_command(status::refresh(&conn, &policy, wait_acks, admin.output()))
        }
        Command::Crds => {
            print!("{}", tessera::api::crds_yaml()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bootstrap {
            node_id,
            node_cluster,
            xds_address,
            admin_port,
            delta,
            xds_tls_cert,
            xds_tls_key,
            xds_tls_ca,
            xds_server_name,
            xds_token_file,
        } => {
            let (host, port) = split_host_port(&xds_address)?;
            let client = match (xds_tls_cert, xds_tls_key) {
                (Some(cert), Some(key)) => Some(ClientCert {
                    cert: std::path::absolute(cert)?,
                    key: std::path::absolute(key)?,
                }),
                _ => None,
            };
            let tls = match xds_tls_ca {
                Some(ca) => Some(XdsClientTls {
                    client,
                    ca: std::path::absolute(ca)?,
                    server_name: xds_server_name,
                }),
                None => None,
            };
            let token_file = xds_token_file.map(std::path::absolute).transpose()?;
            let yaml = tessera::bootstrap::render(&BootstrapOptions {
                node_id,
                node_cluster,
                xds_host: host,
                xds_port: port,
                admin_port,
                delta,
                tls,
                token_file,
            })?;
            print!("{yaml}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Where state lives unless `--state-dir` says otherwise.
fn default_state_dir(config: &std::path::Path, kubernetes: bool) -> PathBuf {
    if kubernetes {
        return PathBuf::from("/var/lib/tessera");
    }
    let config = std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf());
    let dir = if config.is_dir() {
        config.as_path()
    } else {
        config.parent().unwrap_or(std::path::Path::new("."))
    };
    dir.parent()
        .unwrap_or(std::path::Path::new("."))
        .join(".tessera-state")
}

/// A positive duration of at most a day, e.g. `60s`, `500ms`, `5m`.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let parsed: k8s_openapi::jiff::SignedDuration = text
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as \"60s\" or \"5m\""))?;
    match Duration::try_from(parsed) {
        Ok(d) if !d.is_zero() && d <= Duration::from_secs(24 * 3600) => Ok(d),
        _ => Err(format!("{text:?} must be more than 0 and at most 24h")),
    }
}

/// Loads a configuration, or prints every error (as `validate` does) and returns `None`.
fn load_or_report(config: &std::path::Path) -> Option<tessera::source::Loaded> {
    match tessera::source::load(config) {
        Ok(loaded) => Some(loaded),
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!("{}: {} error(s)", config.display(), errors.0.len());
            None
        }
    }
}

/// Prints what `tessera serve` would send each gateway's nodes right after it started.
fn translate(
    model: &tessera::model::Model,
    node_cluster: Option<&str>,
    format: Format,
) -> anyhow::Result<()> {
    let mut materials = std::collections::BTreeMap::new();
    for (policy, read) in tessera::credentials::static_key::read_all(model) {
        let name = tessera::translate::names::credential(&policy);
        match read {
            Ok(material) => drop(materials.insert(name, material)),
            Err(why) => {
                eprintln!("note: {name} cannot be served ({why}): its backends fail closed")
            }
        }
    }
    let mut gateways = tessera::translate::render::offline(model, &materials)?;
    let output = match node_cluster {
        None => serde_json::to_value(gateways)?,
        Some(cluster) => gateways.remove(cluster).with_context(|| {
            let known: Vec<_> = model
                .gateways
                .values()
                .map(|g| g.node_cluster.as_str())
                .collect();
            format!("no Gateway serves node cluster {cluster:?} (served: {known:?})")
        })?,
    };
    let text = match format {
        Format::Json => serde_json::to_string_pretty(&output)? + "\n",
        Format::Yaml => serde_yaml::to_string(&output)?,
    };
    print!("{text}");
    Ok(())
}

fn split_host_port(address: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = address
        .rsplit_once(':')
        .with_context(|| format!("--xds-address {address:?} must be HOST:PORT"))?;
    let port = port
        .parse()
        .with_context(|| format!("--xds-address {address:?}: invalid port"))?;
    Ok((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
    ))
}

/// How `serve` writes its log lines.
#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        // Fields at the top level, so a pipeline can filter on `credential` or `node` directly.
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
