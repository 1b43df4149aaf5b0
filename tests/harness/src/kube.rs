//! The fake Kubernetes API server (testenv/fake_apiserver.py).

use crate::http::{get_json, http};
use crate::process::{Proc, parse_port, spawn_peer};
use crate::util::{python, repo};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The API server, keeping its store in `state` across restarts; `kubeconfig` points at it.
pub struct FakeKube {
    proc: Option<Proc>,
    pub port: u16,
    pub kubeconfig: PathBuf,
    state: PathBuf,
    dir: PathBuf,
}

impl FakeKube {
    /// Starts it with an empty store; returns once it listens.
    pub async fn start(dir: &Path) -> Self {
        let mut k = FakeKube {
            proc: None,
            port: 0,
            kubeconfig: dir.join("kubeconfig"),
            state: dir.join("kube-state.json"),
            dir: dir.to_path_buf(),
        };
        k.spawn().await;
        k
    }

    async fn spawn(&mut self) {
        let port_file = self.dir.join("kube.port");
        let mut cmd = Command::new(python());
        cmd.arg(repo().join("testenv/fake_apiserver.py"))
            .args(["--port", &self.port.to_string(), "--port-file"])
            .arg(&port_file)
            .arg("--state")
            .arg(&self.state)
            .arg("--kubeconfig-out")
            .arg(&self.kubeconfig)
            .stdout(Stdio::null());
        let (proc, port) = spawn_peer(&mut cmd, "fake-apiserver", &port_file, parse_port).await;
        self.proc = Some(proc);
        self.port = port;
    }

    /// Stops and starts it on the same port with the same store: every watch breaks.
    pub async fn restart(&mut self) {
        self.proc = None;
        self.spawn().await;
    }

    /// `path` on the API server.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// POSTs an object to a collection path; panics unless created.
    pub async fn create(&self, collection: &str, object: Value) {
        let r = http()
            .post(self.url(collection))
            .json(&object)
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert!(
            status.is_success(),
            "create {collection}: {status} {}",
            r.text().await.unwrap_or_default()
        );
    }

    /// Merge-patches an object.
    pub async fn patch(&self, path: &str, patch: Value) {
        let r = http()
            .patch(self.url(path))
            .header("content-type", "application/merge-patch+json")
            .body(patch.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert!(
            status.is_success(),
            "patch {path}: {status} {}",
            r.text().await.unwrap_or_default()
        );
    }

    /// Deletes an object; panics unless deleted.
    pub async fn delete(&self, path: &str) {
        let r = http().delete(self.url(path)).send().await.unwrap();
        assert!(r.status().is_success(), "delete {path}: {}", r.status());
    }

    /// GETs an object or list.
    pub async fn get(&self, path: &str) -> Value {
        get_json(&self.url(path)).await
    }
}
