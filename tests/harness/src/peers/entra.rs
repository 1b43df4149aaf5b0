//! The Entra ID stand-in (testenv/entra_mock.mjs) and an independent check of its tokens.

use crate::pki::Pki;
use crate::process::{Proc, parse_port, spawn_peer};
use crate::util::{python, repo};
use rcgen::ExtendedKeyUsagePurpose;
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The Entra ID stand-in over HTTPS with a test CA.
pub struct Entra {
    _proc: Proc,
    pub port: u16,
    pub tenant: String,
    client: reqwest::Client,
}

impl Entra {
    /// Starts it with a certificate from `pki`, `clients` as `id:secret`, and the
    /// `federated` client ids that may present assertions.
    pub async fn start(
        dir: &Path,
        pki: &Pki,
        tenant: &str,
        clients: &[&str],
        federated: &[&str],
        lifetime: u32,
    ) -> Self {
        let (cert, key) = pki.leaf(
            dir,
            "entra",
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let port_file = dir.join("entra.port");
        let mut cmd = Command::new("node");
        cmd.arg(repo().join("testenv/entra_mock.mjs"))
            .args(["--port", "0", "--port-file"])
            .arg(&port_file)
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .args(["--tenant", tenant])
            .args(["--token-lifetime", &lifetime.to_string()]);
        for c in clients {
            cmd.args(["--client", c]);
        }
        for f in federated {
            cmd.args(["--federated", f]);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let (proc, port) = spawn_peer(&mut cmd, "entra", &port_file, parse_port).await;
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap();
        let client = reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(ca)
            .build()
            .unwrap();
        Entra {
            _proc: proc,
            port,
            tenant: tenant.into(),
            client,
        }
    }

    /// The authority host a policy names.
    pub fn authority(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Sets the token endpoint's behaviour (`ok`, `fail`, `hang`).
    pub async fn mode(&self, mode: &str) {
        let r = self
            .client
            .post(format!("{}/__control/mode", self.authority()))
            .json(&serde_json::json!({"mode": mode}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    /// Tokens issued so far: client_id, issued_at, expires_at, jti.
    pub async fn issued(&self) -> Vec<Value> {
        let v: Value = self
            .client
            .get(format!("{}/__control/calls", self.authority()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["issued"].as_array().cloned().unwrap_or_default()
    }

    /// The signing keys, as a JWKS document.
    pub async fn jwks(&self) -> String {
        self.client
            .get(format!("{}/jwks", self.authority()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// Claims of `token` if it verifies against `jwks` for `audience` (testenv/verify_jwt.py).
pub fn verify_jwt(dir: &Path, jwks: &str, audience: &str, token: &str) -> Result<Value, String> {
    let jwks_file = dir.join("jwks.json");
    std::fs::write(&jwks_file, jwks).unwrap();
    let mut child = Command::new(python())
        .arg(repo().join("testenv/verify_jwt.py"))
        .arg(&jwks_file)
        .arg(audience)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(token.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
