//! `xds-load`: plays a fleet of Envoys against a Tessera on loopback and reports the server's
//! memory, CPU and how fast a key rotation reaches every stream.
#![forbid(unsafe_code)]

mod addr;
mod delta;
mod envoy;
mod gen_config;
mod grpc;
mod node;
mod refs;
mod report;
mod run;
mod server;
mod sotw;
mod stats;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use run::{Mode, Plan, Rotate};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_rustls::rustls::pki_types::ServerName;

/// Largest xDS response accepted: a SotW CDS answer for thousands of backends is large.
pub const MAX_MESSAGE: usize = 256 * 1024 * 1024;

#[derive(Parser)]
#[command(
    version,
    about = "Plays N Envoys over ADS against a Tessera on loopback and measures it"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a file-mode configuration: one Gateway, B OpenAI backends with a key file each.
    GenConfig {
        /// Directory to create (must be empty or absent).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 100)]
        backends: usize,
        #[arg(long, default_value = "load")]
        node_cluster: String,
        /// A DNS SAN to list in the Gateway's xdsClients (for mTLS runs); repeatable.
        #[arg(long)]
        xds_client_dns: Vec<String>,
        /// A URI SAN (SPIFFE id) to list in the Gateway's xdsClients; repeatable.
        #[arg(long)]
        xds_client_spiffe: Vec<String>,
        /// Port of the backends' loopback endpoint (nothing is sent to it).
        #[arg(long, default_value_t = 18080)]
        upstream_port: u16,
    },
    /// Connect N simulated Envoys, wait for their configuration, rotate a key, report.
    Run(Box<RunArgs>),
}

#[derive(Args)]
struct RunArgs {
    /// Simulated Envoys, one HTTP/2 connection and ADS stream each.
    #[arg(long, default_value_t = 1000)]
    streams: u32,
    /// New connections per second.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// SotW (StreamAggregatedResources) or Delta (DeltaAggregatedResources) ADS.
    #[arg(long, value_enum, default_value_t = Mode::Delta)]
    mode: Mode,
    /// node.cluster of every simulated Envoy (a Gateway's nodeCluster).
    #[arg(long, default_value = "load")]
    node_cluster: String,
    /// Extensions listed in each node (Envoy 1.40 lists 516: 57 KB encoded); 0 for a minimal node.
    #[arg(long, default_value_t = node::ENVOY_EXTENSIONS)]
    node_extensions: usize,

    /// Start this Tessera binary (`serve`) on free loopback ports; needs --config.
    #[arg(long, conflicts_with_all = ["xds", "server_pid"], requires = "config")]
    spawn: Option<PathBuf>,
    /// The configuration directory (spawned server; also where the default rotated key is).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Extra argument for the spawned server; repeatable (e.g. --server-arg=--xds-tls-cert=...).
    #[arg(long, allow_hyphen_values = true)]
    server_arg: Vec<String>,
    /// Where the spawned server logs (default: a file in the temp directory).
    #[arg(long)]
    server_log: Option<PathBuf>,
    /// Attach to a running server's xDS address (loopback only); needs --server-pid.
    #[arg(long, requires = "server_pid")]
    xds: Option<String>,
    /// The attached server's pid, for RSS and CPU.
    #[arg(long, requires = "xds")]
    server_pid: Option<u32>,

    /// CA of the server's certificate: connect with TLS.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS; needs --tls-key.
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Name to verify the server certificate against (default: the address).
    #[arg(long, requires = "tls_ca")]
    server_name: Option<String>,

    /// Key rotations after every stream holds its configuration.
    #[arg(long, default_value_t = 3)]
    rotations: u32,
    /// The key file to rotate (default: CONFIG/keys/backend-0.key, as gen-config writes it).
    #[arg(long)]
    rotate_file: Option<PathBuf>,
    /// Rotate by running this shell command instead, the new value in $XDS_LOAD_VALUE (e.g. a
    /// kubectl command updating a Secret); fan-out is timed from its start.
    #[arg(long, conflicts_with = "rotate_file")]
    rotate_command: Option<String>,
    /// Pause before each rotation.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    rotation_pause: Duration,
    /// How long a rotation may take to reach every stream.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    rotation_timeout: Duration,
    /// How long every stream may take to hold its initial configuration.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    initial_timeout: Duration,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// `250ms`, `2s` or `1.5s`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = match s.strip_suffix("ms") {
        Some(n) => (n, 0.001),
        None => (s.strip_suffix('s').unwrap_or(s), 1.0),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration such as 250ms or 2s"))?;
    Duration::try_from_secs_f64(value * unit).map_err(|e| format!("{s:?}: {e}"))
}

/// Lifts the soft limit of open files to the hard one: every simulated Envoy is a socket.
fn raise_nofile_limit() -> anyhow::Result<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    setrlimit(Resource::Nofile, limit).context("raising RLIMIT_NOFILE")?;
    Ok(limit.current.unwrap_or(u64::MAX))
}

#[tokio::main]
async fn main() -> ExitCode {
    // Dropping the run on Ctrl-C drops (and so kills) a server it spawned.
    let result = tokio::select! {
        result = main_inner() => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xds-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn main_inner() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::GenConfig {
            out,
            backends,
            node_cluster,
            xds_client_dns,
            xds_client_spiffe,
            upstream_port,
        } => {
            let spec = gen_config::Spec {
                backends,
                node_cluster,
                xds_client_dns,
                xds_client_spiffe,
                upstream_port,
            };
            gen_config::write(&out, &spec)?;
            eprintln!(
                "wrote {} ({backends} backends; rotate {})",
                out.display(),
                out.join(gen_config::key_file(0)).display()
            );
            Ok(())
        }
        Command::Run(args) => run_command(*args).await,
    }
}

async fn run_command(args: RunArgs) -> anyhow::Result<()> {
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        anyhow::bail!("--rate must be a positive number");
    }
    let nofile = raise_nofile_limit()?;
    if u64::from(args.streams) + 64 > nofile {
        eprintln!(
            "warning: {} streams need more open files than the limit {nofile}",
            args.streams
        );
    }
    let rotate = match (&args.rotate_command, &args.rotate_file, &args.config) {
        _ if args.rotations == 0 => None,
        (Some(command), _, _) => Some(Rotate::Command(command.clone())),
        (None, Some(file), _) => Some(Rotate::File(file.clone())),
        (None, None, Some(config)) => Some(Rotate::File(config.join(gen_config::key_file(0)))),
        (None, None, None) => {
            anyhow::bail!("rotations need --rotate-file, --rotate-command or --config")
        }
    };
    if let Some(Rotate::File(file)) = &rotate {
        anyhow::ensure!(
            file.is_file(),
            "the key file to rotate, {}, does not exist",
            file.display()
        );
    }

    let (mut spawned, xds, pid) = match (&args.spawn, &args.xds, args.server_pid) {
        (Some(bin), _, _) => {
            let config = args.config.as_deref().context("--spawn needs --config")?;
            let log = args.server_log.clone().unwrap_or_else(|| {
                std::env::temp_dir().join(format!("xds-load-server-{}.log", std::process::id()))
            });
            let server = server::Spawned::start(bin, config, &args.server_arg, log)?;
            eprintln!(
                "spawned {} (pid {}) on xDS {} admin {}, log {}",
                bin.display(),
                server.pid(),
                server.xds,
                server.admin,
                server.log.display()
            );
            let (xds, pid) = (server.xds, server.pid());
            (Some(server), xds, pid)
        }
        (None, Some(xds), Some(pid)) => (None, addr::resolve_loopback(xds).await?, pid),
        _ => anyhow::bail!("give --spawn BIN --config DIR, or --xds ADDR --server-pid PID"),
    };
    if let Some(server) = &mut spawned {
        // Idle figures mean a loaded configuration: wait for it.
        server.wait_ready(Duration::from_secs(60))?;
    }
    // Spawned servers listen on loopback by construction; check anyway, the address is ours to refuse.
    anyhow::ensure!(addr::is_loopback(xds.ip()), "{xds} is not loopback");

    let tls = match &args.tls_ca {
        None => None,
        Some(ca) => {
            let read =
                |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
            let identity = match (&args.tls_cert, &args.tls_key) {
                (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
                _ => None,
            };
            let connector = grpc::tls_connector(
                &read(ca)?,
                identity.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
            )?;
            let name = match &args.server_name {
                Some(name) => ServerName::try_from(name.clone())
                    .with_context(|| format!("{name:?} is not a server name"))?,
                None => ServerName::IpAddress(xds.ip().into()),
            };
            Some((connector, name))
        }
    };
    let target = grpc::Target { addr: xds, tls };

    let report = run::run(Plan {
        target,
        mode: args.mode,
        streams: args.streams,
        rate: args.rate,
        node: node::template(&args.node_cluster, args.node_extensions),
        server_pid: pid,
        rotate,
        rotations: args.rotations,
        rotation_pause: args.rotation_pause,
        rotation_timeout: args.rotation_timeout,
        initial_timeout: args.initial_timeout,
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.human());
    }
    drop(spawned);
    // Figures from a run where streams failed or missed a rotation are not comparable: say so
    // in the exit status, for scripts.
    if let Some(problem) = report.problem() {
        anyhow::bail!("{problem}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_seconds_or_milliseconds() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
