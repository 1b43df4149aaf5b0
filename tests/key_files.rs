//! Key files under faults, with real Envoy (SotW and Delta): a read that fails with EACCES —
//! what a volume being swapped can return for a moment — keeps the last key in use and is
//! retried; it is not a revocation.
//!
//! Tests run as root, and root reads a mode-000 file regardless (CAP_DAC_OVERRIDE). So this
//! Tessera runs under `setpriv` without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH: still uid 0,
//! but a file without read permission is refused to it with EACCES, as to anyone else.

mod common;

use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A Tessera process that file permissions apply to, even when the tests run as root.
struct Unprivileged {
    child: Child,
    xds_port: u16,
    admin_port: u16,
    log: PathBuf,
}

impl Unprivileged {
    async fn start(config: &Path) -> Self {
        let (xds_port, admin_port) = (port(), port());
        let log = config.with_extension("tessera.log");
        let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
        let mut cmd = if root {
            let mut c = Command::new("setpriv");
            c.args([
                "--inh-caps=-all",
                "--bounding-set=-dac_override,-dac_read_search",
                "--",
            ])
            .arg(env!("CARGO_BIN_EXE_tessera"));
            c
        } else {
            Command::new(env!("CARGO_BIN_EXE_tessera"))
        };
        let child = cmd
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--xds-address")
            .arg(format!("127.0.0.1:{xds_port}"))
            .arg("--admin-address")
            .arg(format!("127.0.0.1:{admin_port}"))
            .arg("--admin-grpc-address")
            .arg(format!("127.0.0.1:{}", port()))
            .env("TESSERA_LOG", "info,tessera=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("setpriv (util-linux) runs Tessera without file-permission override");
        let t = Self {
            child,
            xds_port,
            admin_port,
            log,
        };
        wait_ok(
            "tessera /readyz",
            &format!("http://127.0.0.1:{admin_port}/readyz"),
        )
        .await;
        t
    }

    /// The one credential's entry in `/status`.
    async fn credential(&self) -> serde_json::Value {
        let status: serde_json::Value =
            get_json(&format!("http://127.0.0.1:{}/status", self.admin_port)).await;
        status["credentials"][0].clone()
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Unprivileged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn eacces_does_not_revoke(delta: bool) {
    let Some(envoy_bin) = require_envoy("eacces_does_not_revoke") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    let mock = Mock::start(dir.path(), "openai").await;
    let listener = port();
    std::fs::write(
        config.join("gateway.yaml"),
        openai_key_file_config(listener, &mock.endpoint()),
    )
    .unwrap();
    let key_file = config.join("openai.key");
    std::fs::write(&key_file, "key-1\n").unwrap();
    let tessera = Unprivileged::start(&config).await;
    let envoy = Envoy::start(
        &envoy_bin,
        dir.path(),
        tessera.xds_port,
        listener,
        EnvoyOptions {
            node_cluster: NODE_CLUSTER,
            delta,
            bootstrap_args: vec![],
            envoy_args: Vec::new(),
        },
    )
    .await;
    let client = http();
    let url = envoy.url("/v1/chat/completions");
    let key_in_use = || async {
        let r = send(&client, &url, &[]).await;
        assert_eq!(r.status, 200, "never revoked: {}", r.body);
        r.upstream_header("authorization").unwrap_or_default()
    };
    eventually("the first key", DEADLINE, || async {
        (key_in_use().await == "Bearer key-1").then_some(())
    })
    .await;

    // The new key arrives the way a volume swap can expose it for a moment: not readable.
    let tmp = config.join("openai.key.new");
    std::fs::write(&tmp, "key-2\n").unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::rename(&tmp, &key_file).unwrap();
    let failing = eventually("the read to fail with EACCES", DEADLINE, || async {
        let c = tessera.credential().await;
        (c["state"] == "failing").then_some(c)
    })
    .await;
    assert!(
        failing["reason"]
            .as_str()
            .is_some_and(|r| r.contains("Permission denied")),
        "the read failed with EACCES: {failing}"
    );
    // Still the last good key, not a revocation (which Envoy would answer with 401).
    mock.clear().await;
    for _ in 0..5 {
        assert_eq!(key_in_use().await, "Bearer key-1");
    }
    assert_eq!(mock.requests().await.len(), 5);
    assert_eq!(tessera.credential().await["state"], "failing");

    // Readable again: the retry finds it, whether or not a mode change is a file event.
    let t0 = std::time::Instant::now();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    eventually("the new key after the retry", DEADLINE, || async {
        (key_in_use().await == "Bearer key-2").then_some(())
    })
    .await;
    println!(
        "EACCES ({}): new key in use {:.0} ms after it became readable",
        if delta { "delta" } else { "sotw" },
        t0.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(tessera.credential().await["state"], "present");
    let logs = tessera.logs();
    assert!(logs.contains("credential file unreadable"), "{logs}");
    assert!(
        !logs.contains("key-1") && !logs.contains("key-2"),
        "no key in the log"
    );
}
both_modes!(eacces_does_not_revoke);
