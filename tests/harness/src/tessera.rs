//! The Tessera process under test.

use crate::http::{get_json, wait_ok};
use crate::process::Proc;
use crate::util::port;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The `tessera` binary cargo built for this test run.
pub fn tessera_binary() -> PathBuf {
    // Cargo builds a package's binaries before its integration tests and puts them one level
    // above the `deps/` directory that holds the running test binary.
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join(format!("tessera{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} does not exist: run the tests through cargo",
        bin.display()
    );
    bin
}

/// `tessera serve` on fresh loopback ports (xDS, admin HTTP, admin gRPC), logging to `log`.
pub struct Tessera {
    proc: Option<Proc>,
    pub xds_port: u16,
    pub admin_port: u16,
    pub admin_grpc_port: u16,
    pub log: PathBuf,
    config: PathBuf,
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

impl Tessera {
    /// Serves `config` with `extra` flags; returns once /readyz answers.
    pub async fn start(config: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(config, extra, &[]).await
    }

    /// Like [`Tessera::start`], with extra environment variables.
    pub async fn start_with_env(config: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let t = Self::launch(config, extra, env);
        t.wait_ready().await;
        t
    }

    /// Starts serving `config` without waiting for readiness (it may never come).
    pub fn launch(config: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut t = Tessera {
            proc: None,
            xds_port: port(),
            admin_port: port(),
            admin_grpc_port: port(),
            log: config.with_extension("tessera.log"),
            config: config.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        t.spawn();
        t
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(tessera_binary());
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config)
            .arg("--xds-address")
            .arg(format!("127.0.0.1:{}", self.xds_port))
            .arg("--admin-address")
            .arg(format!("127.0.0.1:{}", self.admin_port))
            .arg("--admin-grpc-address")
            .arg(format!("127.0.0.1:{}", self.admin_grpc_port))
            .args(&self.extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("TESSERA_LOG", "info,tessera=debug")
            .stdout(Stdio::null())
            .stderr(log);
        self.proc = Some(Proc::spawn(&mut cmd, "tessera"));
    }

    /// Waits until /readyz answers 200.
    pub async fn wait_ready(&self) {
        wait_ok(
            "tessera /readyz",
            &format!("http://127.0.0.1:{}/readyz", self.admin_port),
        )
        .await;
    }

    /// Kills the process (the log stays).
    pub fn stop(&mut self) {
        self.proc = None;
    }

    /// Restarts on the same ports and configuration.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn();
        self.wait_ready().await;
    }

    /// The status code and body of /readyz.
    pub async fn readyz(&self) -> (u16, String) {
        let url = format!("http://127.0.0.1:{}/readyz", self.admin_port);
        let r = crate::http::http().get(url).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// The admin API's /status document.
    pub async fn status(&self) -> Value {
        get_json(&format!("http://127.0.0.1:{}/status", self.admin_port)).await
    }

    /// Runs a client command (`status`, `refresh`) against this Tessera's admin gRPC API.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(tessera_binary())
            .args(args)
            .arg("--admin-grpc")
            .arg(format!("127.0.0.1:{}", self.admin_grpc_port))
            .output()
            .unwrap()
    }

    /// Everything Tessera logged so far, across restarts.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
