//! A real Kubernetes control plane for the tests: etcd and kube-apiserver, built by
//! `testenv/setup` from the Go modules pinned in `testenv/kube/`, on loopback ports, with RBAC
//! on, ServiceAccount tokens (TokenRequest, TokenReview) and an admin client certificate.
//! Nothing else runs: no controller-manager, so no garbage collection, no namespace deletion
//! and no token Secrets; tests mint ServiceAccount tokens with the TokenRequest API.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::Scope;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SigningKey,
};
use serde::Deserialize as _;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long etcd + kube-apiserver may take to become ready on a loaded 2-core machine.
pub const KUBE_START_DEADLINE: Duration = Duration::from_secs(180);

/// The issuer and API audience of ServiceAccount tokens for the API server itself.
pub const KUBE_API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// Field manager of everything the harness applies.
const FIELD_MANAGER: &str = "tessera-tests";

/// The binaries `testenv/setup` builds.
pub struct KubeBinaries {
    pub etcd: PathBuf,
    pub apiserver: PathBuf,
}

impl KubeBinaries {
    fn find() -> Result<Self, PathBuf> {
        let dir = crate::repo().join("testenv/.kube-bin");
        let bins = KubeBinaries {
            etcd: dir.join("etcd"),
            apiserver: dir.join("kube-apiserver"),
        };
        for b in [&bins.etcd, &bins.apiserver] {
            if !b.is_file() {
                return Err(b.clone());
            }
        }
        Ok(bins)
    }
}

/// Returns the etcd and kube-apiserver binaries, or explains loudly why the test is skipped.
/// In CI a missing binary is a failure, never a skip.
pub fn require_kube(test: &str) -> Option<KubeBinaries> {
    match KubeBinaries::find() {
        Ok(b) => Some(b),
        Err(missing) if std::env::var("CI").is_ok() => {
            panic!(
                "{test}: {} is not built; run testenv/setup",
                missing.display()
            )
        }
        Err(missing) => {
            eprintln!(
                "\n*** SKIPPED {test}: no {} (run testenv/setup, which needs Go) ***\n",
                missing.display()
            );
            None
        }
    }
}

/// A child process killed (and reaped) on drop.
struct KillOnDrop {
    child: Child,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> KillOnDrop {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
    KillOnDrop { child }
}

/// The last `n` lines of a log, for failure messages.
fn tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// etcd + kube-apiserver on 127.0.0.1. Dropping it kills both.
pub struct KubeApiserver {
    // Declared before `etcd` so that the API server goes first on drop.
    apiserver: Option<KillOnDrop>,
    etcd: KillOnDrop,
    bins: KubeBinaries,
    dir: PathBuf,
    /// The API server's HTTPS port.
    pub port: u16,
    /// A kubeconfig for a cluster admin (client certificate in group `system:masters`).
    pub admin_kubeconfig: PathBuf,
    /// The CA of the API server's serving certificate (and of the admin's client certificate).
    pub ca_pem: String,
    /// From spawning etcd to the API server's `/readyz` answering `ok`.
    pub startup: Duration,
    sa_key: KeyPair,
    apiserver_args: Vec<String>,
}

impl KubeApiserver {
    /// Starts etcd and kube-apiserver with their data, keys and logs under `dir`, and waits
    /// until `/readyz` says `ok`.
    pub async fn start(bins: KubeBinaries, dir: &Path) -> Self {
        let started = Instant::now();
        let dir = dir.join("kube");
        std::fs::create_dir_all(&dir).unwrap();
        let (client_port, peer_port, port) = (crate::port(), crate::port(), crate::port());

        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_log = dir.join("etcd.log");
        let etcd = spawn_logged(
            Command::new(&bins.etcd)
                .args(["--name", "tessera-test", "--data-dir"])
                .arg(dir.join("etcd-data"))
                .args(["--listen-client-urls", &etcd_url])
                .args(["--advertise-client-urls", &etcd_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &format!("tessera-test={peer_url}")])
                // A throw-away store: durability across a host crash is not needed, and
                // fsync on a shared, loaded disk is what slows etcd most.
                .arg("--unsafe-no-fsync")
                .args(["--log-level", "warn"]),
            &etcd_log,
        );

        let pki = write_pki(&dir);
        let apiserver_args: Vec<String> = [
            "--etcd-servers",
            &etcd_url,
            "--bind-address",
            "127.0.0.1",
            "--advertise-address",
            "127.0.0.1",
            "--secure-port",
            &port.to_string(),
            "--tls-cert-file",
            &pki.serving_cert,
            "--tls-private-key-file",
            &pki.serving_key,
            "--client-ca-file",
            &pki.ca,
            "--authorization-mode",
            "RBAC",
            "--service-account-issuer",
            KUBE_API_AUDIENCE,
            "--api-audiences",
            KUBE_API_AUDIENCE,
            "--service-account-key-file",
            &pki.sa_key,
            "--service-account-signing-key-file",
            &pki.sa_key,
            // The `kubernetes` Service's endpoints would be 127.0.0.1, which Endpoints
            // validation refuses; nothing in the tests routes through that Service.
            "--endpoint-reconciler-type",
            "none",
            // Flow control only queues requests; the tests never load the server enough.
            "--enable-priority-and-fairness=false",
            "--profiling=false",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();

        let admin_kubeconfig = dir.join("admin.kubeconfig");
        std::fs::write(
            &admin_kubeconfig,
            kubeconfig(
                port,
                &pki.ca_pem,
                "admin",
                &format!(
                    "client-certificate-data: {}\n    client-key-data: {}",
                    STANDARD.encode(&pki.admin_cert_pem),
                    STANDARD.encode(&pki.admin_key_pem)
                ),
            ),
        )
        .unwrap();

        let mut kube = KubeApiserver {
            apiserver: None,
            etcd,
            bins,
            dir,
            port,
            admin_kubeconfig,
            ca_pem: pki.ca_pem,
            startup: Duration::ZERO,
            sa_key: pki.sa_keypair,
            apiserver_args,
        };
        kube.wait_etcd(&etcd_url, &etcd_log).await;
        kube.spawn_apiserver();
        kube.wait_ready().await;
        kube.startup = started.elapsed();
        kube
    }

    async fn wait_etcd(&mut self, url: &str, log: &Path) {
        let http = crate::http();
        let deadline = Instant::now() + KUBE_START_DEADLINE;
        loop {
            if let Ok(r) = http.get(format!("{url}/health")).send().await
                && r.status() == 200
            {
                return;
            }
            if let Ok(Some(status)) = self.etcd.child.try_wait() {
                panic!("etcd exited ({status}):\n{}", tail(log, 30));
            }
            assert!(
                Instant::now() < deadline,
                "etcd not healthy after {KUBE_START_DEADLINE:?}:\n{}",
                tail(log, 30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn apiserver_log(&self) -> PathBuf {
        self.dir.join("kube-apiserver.log")
    }

    fn spawn_apiserver(&mut self) {
        let log = self.apiserver_log();
        self.apiserver = Some(spawn_logged(
            Command::new(&self.bins.apiserver).args(&self.apiserver_args),
            &log,
        ));
    }

    /// Polls `/readyz` (as the admin) until it answers `ok`.
    async fn wait_ready(&mut self) {
        let client = self.client().await;
        let deadline = Instant::now() + KUBE_START_DEADLINE;
        loop {
            let req = http::Request::get("/readyz").body(Vec::new()).unwrap();
            if let Ok(body) = client.request_text(req).await
                && body.trim() == "ok"
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.apiserver.as_mut().map(|c| c.child.try_wait()) {
                panic!(
                    "kube-apiserver exited ({status}):\n{}",
                    tail(&self.apiserver_log(), 40)
                );
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready after {KUBE_START_DEADLINE:?}:\n{}",
                tail(&self.apiserver_log(), 40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills kube-apiserver and starts it again on the same port, keeping etcd (and so every
    /// object); returns once it is ready again. Every open watch breaks.
    pub async fn restart_apiserver(&mut self) -> Duration {
        let started = Instant::now();
        self.apiserver = None;
        self.spawn_apiserver();
        self.wait_ready().await;
        started.elapsed()
    }

    /// The running kube-apiserver's process id (a restart changes it).
    pub fn apiserver_pid(&self) -> Option<u32> {
        self.apiserver.as_ref().map(|c| c.child.id())
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// A client with the admin's kubeconfig.
    pub async fn client(&self) -> kube::Client {
        client_from(&self.admin_kubeconfig).await
    }

    /// Server-side applies every document of a multi-document YAML, in order, as
    /// `kubectl apply --server-side` would (namespaced objects without a namespace go to
    /// `default`). Custom resources need their CRD established first.
    pub async fn apply_yaml(&self, yaml: &str) {
        let client = self.client().await;
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let value = serde_json::to_value(serde_yaml::Value::deserialize(doc).unwrap()).unwrap();
            if value.is_null() {
                continue; // an empty document, e.g. after a leading `---`
            }
            let obj: DynamicObject = serde_json::from_value(value).unwrap();
            let types = obj.types.clone().expect("apiVersion and kind");
            let gvk = GroupVersionKind::try_from(&types).unwrap();
            let (resource, caps) = kube::discovery::pinned_kind(&client, &gvk)
                .await
                .unwrap_or_else(|e| panic!("discover {gvk:?}: {e}"));
            let api: Api<DynamicObject> = match caps.scope {
                Scope::Namespaced => Api::namespaced_with(
                    client.clone(),
                    obj.metadata.namespace.as_deref().unwrap_or("default"),
                    &resource,
                ),
                Scope::Cluster => Api::all_with(client.clone(), &resource),
            };
            let name = obj.metadata.name.clone().expect("metadata.name");
            api.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await
            .unwrap_or_else(|e| panic!("apply {} {name}: {e}", types.kind));
        }
    }

    /// Applies a file of the repository (path relative to its root).
    pub async fn apply_file(&self, relative: &str) {
        let path = crate::repo().join(relative);
        let yaml = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        self.apply_yaml(&yaml).await;
    }

    /// Applies the manifests as shipped: every `config/crd/*.yaml` (then waits until each CRD
    /// is Established), `config/kubernetes/namespace.yaml` and `rbac.yaml`.
    pub async fn apply_shipped(&self) {
        self.apply_crds().await;
        self.apply_file("config/kubernetes/namespace.yaml").await;
        self.apply_file("config/kubernetes/rbac.yaml").await;
    }

    /// Applies every `config/crd/*.yaml` and waits until each CRD is Established.
    pub async fn apply_crds(&self) {
        let mut crds: Vec<PathBuf> = std::fs::read_dir(crate::repo().join("config/crd"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        crds.sort();
        let mut names = Vec::new();
        for path in &crds {
            let yaml = std::fs::read_to_string(path).unwrap();
            for doc in serde_yaml::Deserializer::from_str(&yaml) {
                let v = serde_yaml::Value::deserialize(doc).unwrap();
                if let Some(name) = v["metadata"]["name"].as_str() {
                    names.push(name.to_string());
                }
            }
            self.apply_yaml(&yaml).await;
        }
        let api: Api<CustomResourceDefinition> = Api::all(self.client().await);
        for name in &names {
            let established = kube::runtime::wait::await_condition(
                api.clone(),
                name,
                kube::runtime::wait::conditions::is_crd_established(),
            );
            tokio::time::timeout(crate::DEADLINE, established)
                .await
                .unwrap_or_else(|_| panic!("CRD {name} not Established"))
                .unwrap();
        }
    }

    /// Mints a token for a ServiceAccount with the TokenRequest API (as the admin). No
    /// audiences means the API server's own ([`KUBE_API_AUDIENCE`]).
    pub async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        audiences: &[&str],
        expiration_seconds: i64,
    ) -> String {
        let api: Api<ServiceAccount> = Api::namespaced(self.client().await, namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audiences.iter().map(|s| s.to_string()).collect(),
                expiration_seconds: Some(expiration_seconds),
                bound_object_ref: None,
            },
            ..Default::default()
        };
        let issued = api
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("TokenRequest {namespace}/{name}: {e}"));
        issued.status.expect("TokenRequest status").token
    }

    /// Writes a kubeconfig that authenticates as a ServiceAccount (a one-hour token from the
    /// TokenRequest API) and returns its path.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let token = self.service_account_token(namespace, name, &[], 3600).await;
        let path = self.dir.join(format!("sa-{namespace}-{name}.kubeconfig"));
        std::fs::write(
            &path,
            kubeconfig(
                self.port,
                &self.ca_pem,
                &format!("{namespace}-{name}"),
                &format!("token: {token}"),
            ),
        )
        .unwrap();
        path
    }

    /// Re-signs a ServiceAccount JWT with the cluster's signing key after `edit` changed its
    /// claims: a token the API server would have issued, but with claims it never would
    /// (e.g. already expired).
    pub fn resign_token(&self, token: &str, edit: impl FnOnce(&mut Value)) -> String {
        let mut parts = token.split('.');
        let (header, payload) = (parts.next().unwrap(), parts.next().unwrap());
        let mut claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        edit(&mut claims);
        let signed = format!(
            "{header}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
        );
        let signature = self.sa_key.sign(signed.as_bytes()).unwrap();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

/// A kube client from a kubeconfig file.
pub async fn client_from(kubeconfig: &Path) -> kube::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let file = Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn kubeconfig(port: u16, ca_pem: &str, user: &str, credentials: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://127.0.0.1:{port}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
    {credentials}
contexts:
- name: {user}
  context: {{cluster: test, user: {user}}}
current-context: {user}
",
        ca = STANDARD.encode(ca_pem)
    )
}

struct KubePki {
    ca: String,
    ca_pem: String,
    serving_cert: String,
    serving_key: String,
    admin_cert_pem: String,
    admin_key_pem: String,
    sa_key: String,
    sa_keypair: KeyPair,
}

/// One CA for the serving certificate and the admin's client certificate, and an RSA key
/// for ServiceAccount tokens (RS256, which the tests can re-sign).
fn write_pki(dir: &Path) -> KubePki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tessera kube test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let mut serving = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_key = KeyPair::generate().unwrap();
    let serving_pem = serving.signed_by(&serving_key, &issuer).unwrap().pem();

    // The API server maps a client certificate's CN to the user and each O to a group.
    let mut admin = CertificateParams::new(Vec::<String>::new()).unwrap();
    admin
        .distinguished_name
        .push(DnType::CommonName, "tessera-test-admin");
    admin
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_key = KeyPair::generate().unwrap();
    let admin_pem = admin.signed_by(&admin_key, &issuer).unwrap().pem();

    let sa_keypair = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();

    let write = |name: &str, content: &str| {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        p.display().to_string()
    };
    KubePki {
        ca: write("ca.pem", &ca_pem),
        serving_cert: write("apiserver.pem", &serving_pem),
        serving_key: write("apiserver-key.pem", &serving_key.serialize_pem()),
        sa_key: write("sa-key.pem", &sa_keypair.serialize_pem()),
        admin_cert_pem: admin_pem,
        admin_key_pem: admin_key.serialize_pem(),
        ca_pem,
        sa_keypair,
    }
}
