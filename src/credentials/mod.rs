//! Credentials: where each security policy's secret material comes from and how it stays fresh.
//!
//! Long-lived material (`static_key`) is read when the config loads and when its file
//! changes. Short-lived material is minted by one `rotator` task per credential (`aws`,
//! `azure`).

pub mod aws;
pub mod azure;
pub mod oidc;
pub mod rotator;
pub mod static_key;
pub mod status;

pub use static_key::{KeyState, Material, StaticKeys};
pub use status::{CredentialStatus, StatusBoard};

use crate::model::{AwsSource, Model, PolicyKind};
use crate::translate::{deny_config, generic_secret, names};
use crate::xds::{Cache, Resource};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::task::JoinHandle;

/// The running refresh tasks, one per short-lived credential.
pub struct Minters {
    cache: Arc<Cache>,
    board: Arc<StatusBoard>,
    http: reqwest::Client,
    tasks: HashMap<String, (PolicyKind, JoinHandle<()>)>,
}

/// What a configuration change means for the refresh tasks.
pub struct Plan {
    /// Deny placeholders for credentials not served yet: publish them with the clusters that
    /// reference them, so a cluster never waits for its credential (and never forwards without).
    pub placeholders: Vec<Arc<Resource>>,
    start: Vec<(String, PolicyKind)>,
}

impl Minters {
    /// No tasks yet; `http` is used for OIDC grants.
    pub fn new(cache: Arc<Cache>, board: Arc<StatusBoard>, http: reqwest::Client) -> Self {
        Self {
            cache,
            board,
            http,
            tasks: HashMap::new(),
        }
    }

    /// Stops tasks whose policy is gone, changed or no longer used by any gateway (`in_use`
    /// holds the credential names some gateway references); returns what to publish and start.
    pub fn plan(&mut self, model: &Model, in_use: &HashSet<String>) -> Plan {
        let mut wanted: HashMap<String, PolicyKind> = HashMap::new();
        for policy in model.policies.values() {
            // Nobody would receive it: do not spend STS or Entra calls on it.
            if !in_use.contains(&names::credential(&policy.name)) {
                continue;
            }
            let minted = match &policy.kind {
                PolicyKind::Aws(aws) => matches!(aws.source, AwsSource::WebIdentity(_)),
                PolicyKind::Azure(_) => true,
                PolicyKind::ApiKey(_) => false,
            };
            if minted {
                wanted.insert(names::credential(&policy.name), policy.kind.clone());
            }
        }
        self.tasks.retain(|name, (spec, task)| {
            let keep = wanted.get(name) == Some(spec);
            if !keep {
                task.abort();
            }
            keep
        });
        let served = self.cache.state();
        let mut plan = Plan {
            placeholders: Vec::new(),
            start: Vec::new(),
        };
        for (name, spec) in wanted {
            if self.tasks.contains_key(&name) {
                continue;
            }
            // A restarted task keeps serving the old credential until its first mint.
            if self.board.live_expiry(&name).is_none() || !served.credentials.contains_key(&name) {
                plan.placeholders.push(match spec {
                    PolicyKind::Aws(_) => deny_config(&name),
                    _ => generic_secret(&name, None),
                });
                self.board.set(&name, "pending", None, None);
            }
            plan.start.push((name, spec));
        }
        plan
    }

    /// Starts the planned tasks; call after the placeholders were published.
    pub fn start(&mut self, plan: Plan) {
        for (name, spec) in plan.start {
            let serving_until = self.board.live_expiry(&name);
            let task = match &spec {
                PolicyKind::Aws(aws) => {
                    let AwsSource::WebIdentity(identity) = aws.source.clone() else {
                        continue;
                    };
                    let minter = aws::AwsMinter::new(
                        name.clone(),
                        aws.region.clone(),
                        aws.sts_endpoint.clone(),
                        identity,
                        self.http.clone(),
                    );
                    self.spawn(&name, aws.refresh, minter, serving_until)
                }
                PolicyKind::Azure(azure) => {
                    match azure::AzureMinter::new(
                        name.clone(),
                        (**azure).clone(),
                        self.http.clone(),
                    ) {
                        Ok(minter) => self.spawn(&name, azure.refresh, minter, serving_until),
                        Err(e) => {
                            tracing::error!(credential = %name, error = %e, "cannot start refreshing");
                            self.board
                                .set(&name, "unavailable", Some(e.to_string()), None);
                            continue;
                        }
                    }
                }
                PolicyKind::ApiKey(_) => continue,
            };
            self.tasks.insert(name, (spec, task));
        }
    }

    fn spawn<M: rotator::Minter>(
        &self,
        name: &str,
        policy: crate::model::RefreshPolicy,
        minter: M,
        serving_until: Option<std::time::SystemTime>,
    ) -> JoinHandle<()> {
        let rotator = rotator::Rotator {
            name: name.to_owned(),
            policy,
            minter,
            cache: self.cache.clone(),
            board: self.board.clone(),
            serving_until,
        };
        tokio::spawn(rotator.run())
    }
}

impl Drop for Minters {
    fn drop(&mut self) {
        for (_, task) in self.tasks.values() {
            task.abort();
        }
    }
}
