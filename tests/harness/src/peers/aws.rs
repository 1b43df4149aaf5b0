//! moto's STS and the SigV4-verifying Bedrock mock (testenv/aws_peers.py).

use crate::http::{get_json, http};
use crate::process::{Proc, spawn_peer};
use crate::util::{python, repo};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};

/// STS and Bedrock, one process; credentials STS issues live `lifetime_secs`.
pub struct AwsPeers {
    _proc: Proc,
    pub sts_port: u16,
    pub bedrock_port: u16,
}

impl AwsPeers {
    /// Starts both; returns once they listen.
    pub async fn start(dir: &Path, lifetime_secs: u32) -> Self {
        let port_file = dir.join("aws-peers.json");
        let mut cmd = Command::new(python());
        cmd.arg(repo().join("testenv/aws_peers.py"))
            .arg("--port-file")
            .arg(&port_file)
            .args(["--lifetime", &lifetime_secs.to_string()])
            .stdout(Stdio::null());
        let (proc, ports) = spawn_peer(&mut cmd, "aws-peers", &port_file, |s| {
            serde_json::from_str::<Value>(s).ok()
        })
        .await;
        let port = |k: &str| ports[k].as_u64().unwrap() as u16;
        AwsPeers {
            sts_port: port("sts"),
            bedrock_port: port("bedrock"),
            _proc: proc,
        }
    }

    fn control(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/__control/{path}", self.bedrock_port)
    }

    /// Sets STS to `up`, `down` or `hang`.
    pub async fn sts_mode(&self, mode: &str) {
        let r = http()
            .post(self.control("sts"))
            .json(&serde_json::json!({"mode": mode}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    /// Every credential STS issued: access_key_id, issued_at, expires_at, session_name.
    pub async fn issued(&self) -> Vec<Value> {
        let v: Value = get_json(&self.control("sts")).await;
        v["issued"].as_array().cloned().unwrap_or_default()
    }

    /// Every request the Bedrock mock received, with status and access key.
    pub async fn requests(&self) -> Vec<Value> {
        get_json(&self.control("requests")).await
    }
}
