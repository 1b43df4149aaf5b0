//! The OIDC issuer (testenv/oidc_issuer.py): client-credentials grants with controllable failures.

use crate::http::{get_json, http};
use crate::process::{Proc, parse_port, spawn_peer};
use crate::util::{python, repo};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};

/// The issuer, with its clients as `id:secret`.
pub struct Issuer {
    _proc: Proc,
    pub port: u16,
}

impl Issuer {
    /// Starts it with `clients` (`id:secret`); returns once it listens.
    pub async fn start(dir: &Path, clients: &[&str]) -> Self {
        let port_file = dir.join("issuer.port");
        let mut cmd = Command::new(python());
        cmd.arg(repo().join("testenv/oidc_issuer.py"))
            .args(["--port", "0", "--port-file"])
            .arg(&port_file);
        for c in clients {
            cmd.args(["--client", c]);
        }
        cmd.stdout(Stdio::null());
        let (proc, port) = spawn_peer(&mut cmd, "issuer", &port_file, parse_port).await;
        Issuer { _proc: proc, port }
    }

    /// The issuer URL a policy names.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Sets a client's behaviour: `ok`, `fail` or `hang`.
    pub async fn client_mode(&self, client: &str, mode: &str) {
        let r = http()
            .post(format!("{}/__control/client", self.url()))
            .json(&serde_json::json!({"client_id": client, "mode": mode}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    /// Token requests per client.
    pub async fn calls(&self) -> Value {
        get_json(&format!("{}/__control/calls", self.url())).await
    }
}
