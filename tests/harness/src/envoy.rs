//! The Envoy process: where its binary is, and one Envoy bootstrapped to Tessera.

use crate::http::{get_json, http, wait_ok};
use crate::process::Proc;
use crate::tessera::tessera_binary;
use crate::util::{port, repo};
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The xDS protocol an Envoy speaks to Tessera.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// State of the World (`GRPC`).
    Sotw,
    /// Incremental (`DELTA_GRPC`).
    Delta,
}

impl Mode {
    /// True for Delta xDS.
    pub fn is_delta(self) -> bool {
        self == Mode::Delta
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Sotw => "sotw",
            Mode::Delta => "delta",
        })
    }
}

/// Lets `both_modes!` call test bodies written as `async fn test(delta: bool)`.
impl From<Mode> for bool {
    fn from(mode: Mode) -> bool {
        mode.is_delta()
    }
}

/// The real Envoy binary: $TESSERA_ENVOY, or the one `testenv/setup` installed; None when the
/// file is not there. `#[needs_envoy]` applies the same rule when the tests are built.
pub fn envoy_binary() -> Option<PathBuf> {
    let path = match std::env::var_os("TESSERA_ENVOY").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => {
            let recorded = std::fs::read_to_string(repo().join("testenv/.venv/envoy-path")).ok()?;
            PathBuf::from(recorded.trim())
        }
    };
    path.exists().then_some(path)
}

/// The Envoy binary, or a failed test. Where Envoy is not installed, tests that need it are
/// ignored at build time; this panic is for CI, where they never are, and for an Envoy that
/// vanished after the build.
pub fn envoy() -> PathBuf {
    envoy_binary().unwrap_or_else(|| {
        let looked = match std::env::var_os("TESSERA_ENVOY").filter(|p| !p.is_empty()) {
            Some(p) => format!("$TESSERA_ENVOY ({})", p.to_string_lossy()),
            None => "testenv/.venv/envoy-path".to_string(),
        };
        panic!("no Envoy binary at {looked}: run testenv/setup")
    })
}

/// The earlier form of [`envoy`], kept for tests written against it: never None, since a test
/// that returned early would be reported as passed.
pub fn require_envoy(_test: &str) -> Option<PathBuf> {
    Some(envoy())
}

/// One Envoy process, bootstrapped by `tessera bootstrap`.
pub struct Envoy {
    _proc: Proc,
    pub admin_port: u16,
    pub listener_port: u16,
    pub log: PathBuf,
}

/// How to bootstrap an Envoy.
pub struct EnvoyOptions<'a> {
    pub node_cluster: &'a str,
    pub delta: bool,
    /// Extra `tessera bootstrap` flags (mTLS files).
    pub bootstrap_args: Vec<String>,
    /// Extra Envoy command-line flags (e.g. `--config-yaml` to set a runtime flag).
    pub envoy_args: Vec<String>,
}

impl Envoy {
    /// Starts Envoy from `tessera bootstrap` output and waits until it is ready; requests go to
    /// `listener_port`, which the configuration Tessera serves must open.
    pub async fn start(
        binary: &Path,
        dir: &Path,
        xds_port: u16,
        listener_port: u16,
        opts: EnvoyOptions<'_>,
    ) -> Self {
        let envoy = Self::spawn(binary, dir, xds_port, listener_port, opts);
        wait_ok(
            "envoy /ready",
            &format!("http://127.0.0.1:{}/ready", envoy.admin_port),
        )
        .await;
        envoy
    }

    /// Like [`Envoy::start`], but returns once its admin API answers, ready or not (an Envoy
    /// that Tessera refuses never becomes ready).
    pub async fn start_unready(
        binary: &Path,
        dir: &Path,
        xds_port: u16,
        listener_port: u16,
        opts: EnvoyOptions<'_>,
    ) -> Self {
        let envoy = Self::spawn(binary, dir, xds_port, listener_port, opts);
        let url = format!("http://127.0.0.1:{}/server_info", envoy.admin_port);
        crate::util::eventually("envoy admin API", crate::util::DEADLINE, || {
            let req = http().get(&url).send();
            async move { req.await.ok().map(|_| ()) }
        })
        .await;
        envoy
    }

    /// This Envoy's node id (`tessera bootstrap --node-id`).
    pub fn node_id(&self) -> String {
        format!("test-{}", self.admin_port)
    }

    fn spawn(
        binary: &Path,
        dir: &Path,
        xds_port: u16,
        listener_port: u16,
        opts: EnvoyOptions<'_>,
    ) -> Self {
        let admin_port = port();
        let mut args = vec![
            "bootstrap".to_string(),
            "--node-id".into(),
            format!("test-{admin_port}"),
            "--node-cluster".into(),
            opts.node_cluster.into(),
            "--xds-address".into(),
            format!("127.0.0.1:{xds_port}"),
            "--admin-port".into(),
            admin_port.to_string(),
        ];
        if opts.delta {
            args.push("--delta".into());
        }
        args.extend(opts.bootstrap_args);
        let out = Command::new(tessera_binary()).args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "tessera bootstrap failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bootstrap = dir.join(format!("envoy-{admin_port}.yaml"));
        std::fs::write(&bootstrap, &out.stdout).unwrap();
        let log = dir.join(format!("envoy-{admin_port}.log"));
        let mut cmd = Command::new(binary);
        cmd.arg("-c")
            .arg(&bootstrap)
            // Distinct base ids let several Envoys run at once.
            .args(["--base-id", &admin_port.to_string()])
            .args(["--concurrency", "1", "--log-level", "warning"])
            .args(&opts.envoy_args)
            .arg("--log-path")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Envoy {
            _proc: Proc::spawn(&mut cmd, "envoy"),
            admin_port,
            listener_port,
            log,
        }
    }

    /// `path` on the gateway listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.listener_port)
    }

    /// A counter or gauge from Envoy's admin `/stats` (0 when absent).
    pub async fn stat(&self, name: &str) -> u64 {
        let body = http()
            .get(format!(
                "http://127.0.0.1:{}/stats?usedonly&filter=^{}$",
                self.admin_port,
                regex_escape(name)
            ))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        body.lines()
            .filter_map(|l| l.split_once(": "))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The admin API's /config_dump.
    pub async fn config_dump(&self) -> Value {
        get_json(&format!("http://127.0.0.1:{}/config_dump", self.admin_port)).await
    }

    /// Everything Envoy logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if "\\.^$|?*+()[]{}".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}
