//! [`Stack`]: Tessera, its Envoys and mock providers, started in one call.
//!
//! ```ignore
//! let s = Stack::builder()
//!     .mock("openai")
//!     .configure(|s| s.write("gateway.yaml", gateway_yaml(s.listener, &s.mock("openai").endpoint())))
//!     .envoys(&[Mode::Sotw, Mode::Delta])
//!     .start()
//!     .await;
//! ```

use crate::envoy::{Envoy, EnvoyOptions, Mode, envoy};
use crate::http::{Reply, http, send};
use crate::peers::Mock;
use crate::tessera::Tessera;
use crate::util::port;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// The node cluster Envoys join unless the builder names another.
pub const NODE_CLUSTER: &str = "ai-gateway";

/// A running Tessera with Envoys bootstrapped to it and the mocks its configuration names.
pub struct Stack {
    // Fields drop in order: clients of Tessera first, the directory they write into last.
    pub envoys: Vec<Envoy>,
    pub tessera: Tessera,
    pub mocks: Vec<Mock>,
    pub client: reqwest::Client,
    /// What Tessera serves: the `config/` directory, or the file the builder named.
    pub config: PathBuf,
    /// The port every Envoy's gateway listener opens (the configuration chooses it).
    pub listener: u16,
    pub dir: TempDir,
}

impl Stack {
    /// A builder for a stack in a fresh temporary directory.
    pub fn builder<'a>() -> StackBuilder<'a> {
        StackBuilder {
            dir: None,
            mocks: Vec::new(),
            listener: None,
            config_file: None,
            configure: None,
            tessera_args: Vec::new(),
            tessera_env: Vec::new(),
            envoys: Vec::new(),
            node_cluster: NODE_CLUSTER.into(),
            bootstrap_args: Vec::new(),
            envoy_args: Vec::new(),
        }
    }

    /// The first (often the only) Envoy.
    pub fn envoy(&self) -> &Envoy {
        self.envoys.first().expect("the stack has no Envoy")
    }

    /// The mock named `name`.
    pub fn mock(&self, name: &str) -> &Mock {
        find(&self.mocks, name)
    }

    /// POSTs a chat completion to `path` through the first Envoy.
    pub async fn send(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        send(&self.client, &self.envoy().url(path), headers).await
    }
}

fn find<'m>(mocks: &'m [Mock], name: &str) -> &'m Mock {
    mocks
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no mock named {name}"))
}

type Configure<'a> = Box<dyn FnOnce(&Setup<'_>) + 'a>;

/// Says what to start; [`StackBuilder::start`] starts it in order: mocks, configuration,
/// Tessera, Envoys.
pub struct StackBuilder<'a> {
    dir: Option<TempDir>,
    mocks: Vec<String>,
    listener: Option<u16>,
    config_file: Option<String>,
    configure: Option<Configure<'a>>,
    tessera_args: Vec<String>,
    tessera_env: Vec<(String, String)>,
    envoys: Vec<Mode>,
    node_cluster: String,
    bootstrap_args: Vec<String>,
    envoy_args: Vec<String>,
}

impl<'a> StackBuilder<'a> {
    /// Uses `dir` (where peers the test started already live) instead of a fresh one.
    pub fn dir(mut self, dir: TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    /// A plain-HTTP mock provider answering as `name`.
    pub fn mock(mut self, name: &str) -> Self {
        self.mocks.push(name.into());
        self
    }

    /// Several mock providers, in this order in [`Stack::mocks`].
    pub fn mocks(mut self, names: &[&str]) -> Self {
        self.mocks.extend(names.iter().map(|n| n.to_string()));
        self
    }

    /// The gateway listener port, when the test needed it before the stack (else one is picked).
    pub fn listener(mut self, port: u16) -> Self {
        self.listener = Some(port);
        self
    }

    /// Serves this one file in the stack directory instead of the `config/` directory.
    pub fn config_file(mut self, name: &str) -> Self {
        self.config_file = Some(name.into());
        self
    }

    /// Writes the configuration once the mocks run and the listener port is known.
    pub fn configure(mut self, f: impl FnOnce(&Setup<'_>) + 'a) -> Self {
        self.configure = Some(Box::new(f));
        self
    }

    /// Extra `tessera serve` flags.
    pub fn tessera_args(mut self, args: &[&str]) -> Self {
        self.tessera_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Extra environment for Tessera.
    pub fn tessera_env(mut self, env: &[(&str, &str)]) -> Self {
        self.tessera_env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// One Envoy speaking `mode`.
    pub fn envoy(mut self, mode: Mode) -> Self {
        self.envoys.push(mode);
        self
    }

    /// One Envoy per entry, all in the same node cluster, so all sharing the listener port.
    pub fn envoys(mut self, modes: &[Mode]) -> Self {
        self.envoys.extend_from_slice(modes);
        self
    }

    /// The node cluster the Envoys join (default [`NODE_CLUSTER`]).
    pub fn node_cluster(mut self, cluster: &str) -> Self {
        self.node_cluster = cluster.into();
        self
    }

    /// Extra `tessera bootstrap` flags for every Envoy (mTLS files).
    pub fn bootstrap_args(mut self, args: &[&str]) -> Self {
        self.bootstrap_args
            .extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Extra command-line flags for every Envoy.
    pub fn envoy_args(mut self, args: &[&str]) -> Self {
        self.envoy_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Starts everything; returns once Tessera and every Envoy are ready.
    pub async fn start(self) -> Stack {
        let dir = self.dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
        let mut mocks = Vec::new();
        for name in &self.mocks {
            mocks.push(Mock::start(dir.path(), name).await);
        }
        let listener = self.listener.unwrap_or_else(port);
        let (config, config_dir) = match &self.config_file {
            Some(file) => (dir.path().join(file), dir.path().to_path_buf()),
            None => {
                let config = dir.path().join("config");
                std::fs::create_dir_all(&config).unwrap();
                (config.clone(), config)
            }
        };
        if let Some(configure) = self.configure {
            configure(&Setup {
                dir: dir.path(),
                listener,
                mocks: &mocks,
                config_dir,
            });
        }
        let args: Vec<&str> = self.tessera_args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = self
            .tessera_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let tessera = Tessera::start_with_env(&config, &args, &env).await;
        let mut envoys = Vec::new();
        if !self.envoys.is_empty() {
            let binary = envoy();
            for mode in self.envoys {
                let opts = EnvoyOptions {
                    node_cluster: &self.node_cluster,
                    delta: mode.is_delta(),
                    bootstrap_args: self.bootstrap_args.clone(),
                    envoy_args: self.envoy_args.clone(),
                };
                envoys.push(
                    Envoy::start(&binary, dir.path(), tessera.xds_port, listener, opts).await,
                );
            }
        }
        Stack {
            envoys,
            tessera,
            mocks,
            client: http(),
            config,
            listener,
            dir,
        }
    }
}

/// What a configuration is written from: the stack's directory, listener port and mocks.
pub struct Setup<'s> {
    pub dir: &'s Path,
    pub listener: u16,
    pub mocks: &'s [Mock],
    config_dir: PathBuf,
}

impl Setup<'_> {
    /// The mock named `name`.
    pub fn mock(&self, name: &str) -> &Mock {
        find(self.mocks, name)
    }

    /// Writes `file` where the configuration refers to files by relative path: inside
    /// `config/`, or beside the configuration file.
    pub fn write(&self, file: &str, content: impl AsRef<[u8]>) {
        std::fs::write(self.config_dir.join(file), content).unwrap();
    }
}
