//! A mock LLM provider (testenv/mock_provider.py) that echoes what it received.

use crate::http::{get_json, http};
use crate::process::{Proc, parse_port, spawn_peer};
use crate::util::{python, repo};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};

/// A mock provider over HTTP, or HTTPS with a given certificate.
pub struct Mock {
    _proc: Proc,
    pub port: u16,
    pub name: String,
    scheme: &'static str,
}

impl Mock {
    /// Starts a plain-HTTP mock that answers as provider `name`.
    pub async fn start(dir: &Path, name: &str) -> Self {
        Self::spawn(dir, name, None).await
    }

    /// Starts an HTTPS mock with `cert` and `key`.
    pub async fn start_tls(dir: &Path, name: &str, cert: &Path, key: &Path) -> Self {
        Self::spawn(dir, name, Some((cert, key))).await
    }

    async fn spawn(dir: &Path, name: &str, tls: Option<(&Path, &Path)>) -> Self {
        let port_file = dir.join(format!("mock-{name}.port"));
        let mut cmd = Command::new(python());
        cmd.arg(repo().join("testenv/mock_provider.py"))
            .args(["--name", name, "--port", "0", "--port-file"])
            .arg(&port_file)
            .stdout(Stdio::null());
        if let Some((cert, key)) = tls {
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        let (proc, port) = spawn_peer(&mut cmd, name, &port_file, parse_port).await;
        Mock {
            _proc: proc,
            port,
            name: name.into(),
            scheme: if tls.is_some() { "https" } else { "http" },
        }
    }

    /// The base URL a Backend points at.
    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    fn control(&self) -> String {
        format!("http://127.0.0.1:{}/__requests", self.port)
    }

    /// Requests the mock received (plain-HTTP mocks only; TLS mocks echo through Envoy).
    pub async fn requests(&self) -> Vec<Value> {
        assert_eq!(
            self.scheme, "http",
            "query TLS mocks through their echo instead"
        );
        get_json(&self.control()).await
    }

    /// Makes every later request fail: `"503"`, `"429"`, `"close"` (no answer), or `"ok"`.
    pub async fn fail(&self, mode: &str) {
        let url = format!("http://127.0.0.1:{}/__fail", self.port);
        let r = http()
            .post(url)
            .json(&serde_json::json!({ "mode": mode }))
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "mock {} /__fail: {}",
            self.name,
            r.status()
        );
    }

    /// Forgets the requests received so far.
    pub async fn clear(&self) {
        http().delete(self.control()).send().await.unwrap();
    }
}
