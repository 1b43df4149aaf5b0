//! Test harness: real Tessera, real Envoy and mock providers as processes on 127.0.0.1.
#![allow(dead_code)]

pub mod kube_apiserver;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

pub const DEADLINE: Duration = Duration::from_secs(30);

/// A port below the ephemeral range (32768+), so no outgoing connection can hold it.
pub fn port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20000 + (std::process::id() % 80) as u16 * 150,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let p = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(p < 32768, "ran out of test ports");
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real Envoy binary: $TESSERA_ENVOY, or the one `testenv/setup` installed.
pub fn envoy_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("TESSERA_ENVOY") {
        return Some(PathBuf::from(p));
    }
    let recorded = repo().join("testenv/.venv/envoy-path");
    std::fs::read_to_string(recorded)
        .ok()
        .map(|s| PathBuf::from(s.trim()))
        .filter(|p| p.exists())
}

/// Returns the Envoy binary, or explains loudly why the test is skipped. In CI a missing
/// Envoy is a failure, never a skip.
pub fn require_envoy(test: &str) -> Option<PathBuf> {
    match envoy_binary() {
        Some(p) => Some(p),
        None if std::env::var("CI").is_ok() => {
            panic!("{test}: Envoy is not installed; run testenv/setup")
        }
        None => {
            eprintln!(
                "\n*** SKIPPED {test}: no Envoy binary (run testenv/setup or set TESSERA_ENVOY) ***\n"
            );
            None
        }
    }
}

pub fn python() -> PathBuf {
    let venv = repo().join("testenv/.venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Polls `f` until it returns Some, or panics with `what` after the deadline.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `url` until it answers 200.
pub async fn wait_ok(what: &str, url: &str) {
    let client = http();
    eventually(what, DEADLINE, || {
        let req = client.get(url).send();
        async move { req.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
    })
    .await;
}

/// GETs `url` and parses the JSON body.
pub async fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> T {
    http().get(url).send().await.unwrap().json().await.unwrap()
}

pub fn http() -> reqwest::Client {
    // reqwest is built with rustls but no default crypto provider: pick the one Tessera uses.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Writes `content` to `path` the way careful tools rotate files: temp file, then rename.
pub fn write_atomic(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp-rotate");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Starts a test peer that announces its port(s) in `port_file`; returns the process and the
/// file's content, parsed by `parse`, once it is there.
async fn spawn_peer<T>(
    cmd: &mut Command,
    name: &str,
    port_file: &Path,
    parse: impl Fn(&str) -> Option<T>,
) -> (Proc, T) {
    let _ = std::fs::remove_file(port_file);
    let child = cmd.spawn().unwrap();
    let proc = Proc {
        child,
        name: name.into(),
    };
    let value = eventually(&format!("{name} port file"), DEADLINE, || {
        let content = std::fs::read_to_string(port_file).ok();
        let parsed = content.as_deref().and_then(&parse);
        async move { parsed }
    })
    .await;
    (proc, value)
}

fn parse_port(s: &str) -> Option<u16> {
    s.trim().parse().ok()
}

struct Proc {
    child: Child,
    name: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === Tessera ===

pub struct Tessera {
    proc: Option<Proc>,
    pub xds_port: u16,
    pub admin_port: u16,
    pub log: PathBuf,
    config: PathBuf,
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

impl Tessera {
    pub async fn start(config: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(config, extra, &[]).await
    }

    pub async fn start_with_env(config: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut t = Tessera {
            proc: None,
            xds_port: port(),
            admin_port: port(),
            log: config.with_extension("tessera.log"),
            config: config.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        t.spawn();
        t.wait_ready().await;
        t
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .arg("--xds-address")
            .arg(format!("127.0.0.1:{}", self.xds_port))
            .arg("--admin-address")
            .arg(format!("127.0.0.1:{}", self.admin_port))
            .args(&self.extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("TESSERA_LOG", "info,tessera=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.proc = Some(Proc {
            child,
            name: "tessera".into(),
        });
    }

    pub async fn wait_ready(&self) {
        wait_ok(
            "tessera /readyz",
            &format!("http://127.0.0.1:{}/readyz", self.admin_port),
        )
        .await;
    }

    pub fn stop(&mut self) {
        self.proc = None;
    }

    /// Restarts on the same ports and configuration.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn();
        self.wait_ready().await;
    }

    pub async fn status(&self) -> Value {
        get_json(&format!("http://127.0.0.1:{}/status", self.admin_port)).await
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

// === Envoy ===

pub struct Envoy {
    _proc: Proc,
    pub admin_port: u16,
    pub listener_port: u16,
    pub log: PathBuf,
}

pub struct EnvoyOptions<'a> {
    pub node_cluster: &'a str,
    pub delta: bool,
    /// Extra `tessera bootstrap` flags (mTLS files).
    pub bootstrap_args: Vec<String>,
}

impl Envoy {
    /// Starts Envoy from `tessera bootstrap` output and waits until it serves `listener_port`.
    pub async fn start(
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
        let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tessera bootstrap failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bootstrap = dir.join(format!("envoy-{admin_port}.yaml"));
        std::fs::write(&bootstrap, &out.stdout).unwrap();
        let log = dir.join(format!("envoy-{admin_port}.log"));
        let child = Command::new(binary)
            .arg("-c")
            .arg(&bootstrap)
            .args([
                "--base-id",
                &admin_port.to_string(),
                "--concurrency",
                "1",
                "--log-level",
                "warning",
            ])
            .arg("--log-path")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let envoy = Envoy {
            _proc: Proc {
                child,
                name: "envoy".into(),
            },
            admin_port,
            listener_port,
            log,
        };
        wait_ok(
            "envoy /ready",
            &format!("http://127.0.0.1:{admin_port}/ready"),
        )
        .await;
        envoy
    }

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

    pub async fn config_dump(&self) -> Value {
        get_json(&format!("http://127.0.0.1:{}/config_dump", self.admin_port)).await
    }

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

// === Mock provider ===

pub struct Mock {
    _proc: Proc,
    pub port: u16,
    pub name: String,
    scheme: &'static str,
}

impl Mock {
    pub async fn start(dir: &Path, name: &str) -> Self {
        Self::spawn(dir, name, None).await
    }

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

    pub async fn clear(&self) {
        http().delete(self.control()).send().await.unwrap();
    }
}

/// A response through the gateway: status, and the mock's echo when it reached one.
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    /// The value of a header as the provider received it.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_owned)
    }
    pub fn provider(&self) -> Option<String> {
        self.json()["provider"].as_str().map(str::to_owned)
    }
}

/// POSTs a chat completion through the gateway with the given headers.
pub async fn send(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = client
        .post(url)
        .body(r#"{"messages":[{"role":"user","content":"hi"}]}"#);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    Reply {
        status: resp.status().as_u16(),
        body: resp.text().await.unwrap(),
    }
}

// === AWS and OIDC peers ===

/// moto's STS and the SigV4-verifying Bedrock mock (testenv/aws_peers.py).
pub struct AwsPeers {
    _proc: Proc,
    pub sts_port: u16,
    pub bedrock_port: u16,
}

impl AwsPeers {
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

/// The OIDC issuer (testenv/oidc_issuer.py) with `clients` as `id:secret`.
pub struct Issuer {
    _proc: Proc,
    pub port: u16,
}

impl Issuer {
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

/// Seconds since the epoch, as the Python peers record time.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

// === Entra ID stand-in ===

/// The Entra ID stand-in (testenv/entra_mock.mjs) over HTTPS with a test CA.
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
        let ca = &pki.ca;
        let port_file = dir.join("entra.port");
        let mut cmd = Command::new("node");
        cmd.arg(repo().join("testenv/entra_mock.mjs"))
            .args(["--port", "0", "--port-file"])
            .arg(&port_file)
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .args([
                "--tenant",
                tenant,
                "--token-lifetime",
                &lifetime.to_string(),
            ]);
        for c in clients {
            cmd.args(["--client", c]);
        }
        for f in federated {
            cmd.args(["--federated", f]);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let (proc, port) = spawn_peer(&mut cmd, "entra", &port_file, parse_port).await;
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
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
    use std::io::Write;
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

// === Test PKI ===

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};

/// A test certificate authority (rcgen).
pub struct Pki {
    pub ca: PathBuf,
    issuer: rcgen::Issuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca, cert.pem()).unwrap();
        Pki {
            ca,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// Writes a leaf certificate for `names` (IPs become IP SANs); returns (cert, key) paths.
    pub fn leaf(
        &self,
        dir: &Path,
        file: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (
            dir.join(format!("{file}.pem")),
            dir.join(format!("{file}-key.pem")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

// === Fake Kubernetes API server ===

/// testenv/fake_apiserver.py: keeps its store in `state` across restarts.
pub struct FakeKube {
    proc: Option<Proc>,
    pub port: u16,
    pub kubeconfig: PathBuf,
    state: PathBuf,
    dir: PathBuf,
}

impl FakeKube {
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

    pub async fn delete(&self, path: &str) {
        let r = http().delete(self.url(path)).send().await.unwrap();
        assert!(r.status().is_success(), "delete {path}: {}", r.status());
    }

    pub async fn get(&self, path: &str) -> Value {
        get_json(&self.url(path)).await
    }
}

/// Runs an async test body once over SotW and once over Delta xDS.
#[macro_export]
macro_rules! both_modes {
    ($body:ident) => {
        mod $body {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sotw() {
                super::$body(false).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn delta() {
                super::$body(true).await
            }
        }
    };
}
