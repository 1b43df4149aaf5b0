//! Credentials: where each security policy's secret material comes from and how it stays fresh.
//!
//! Long-lived material (`static_key`) is read when the config loads and when its file
//! changes. Short-lived material is minted by one `rotator` task per credential (`aws`).

pub mod aws;
pub mod oidc;
pub mod rotator;
pub mod static_key;
pub mod status;

pub use static_key::{KeyState, Material, StaticKeys};
pub use status::{CredentialStatus, StatusBoard};

use crate::model::{AwsCredentials, AwsSource, Model, PolicyKind};
use crate::translate::{deny_config, names};
use crate::xds::{Cache, Resource};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// The running refresh tasks, one per short-lived credential.
pub struct Minters {
    cache: Arc<Cache>,
    board: Arc<StatusBoard>,
    http: reqwest::Client,
    tasks: HashMap<String, (AwsCredentials, JoinHandle<()>)>,
}

/// What a configuration change means for the refresh tasks.
pub struct Plan {
    /// Deny placeholders for credentials not served yet: publish them with the clusters that
    /// reference them, so a cluster never waits for its credential (and never forwards without).
    pub placeholders: Vec<Arc<Resource>>,
    start: Vec<(String, AwsCredentials)>,
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

    /// Stops tasks whose policy is gone or changed; returns what to publish and start.
    pub fn plan(&mut self, model: &Model) -> Plan {
        let mut wanted: HashMap<String, AwsCredentials> = HashMap::new();
        for policy in model.policies.values() {
            if let PolicyKind::Aws(aws) = &policy.kind
                && matches!(aws.source, AwsSource::WebIdentity(_))
            {
                wanted.insert(names::credential(&policy.name), (**aws).clone());
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
                plan.placeholders.push(deny_config(&name));
                self.board.set(&name, "pending", None, None);
            }
            plan.start.push((name, spec));
        }
        plan
    }

    /// Starts the planned tasks; call after the placeholders were published.
    pub fn start(&mut self, plan: Plan) {
        for (name, spec) in plan.start {
            let AwsSource::WebIdentity(identity) = spec.source.clone() else {
                continue;
            };
            let minter = aws::AwsMinter::new(
                name.clone(),
                spec.region.clone(),
                spec.sts_endpoint.clone(),
                identity,
                self.http.clone(),
            );
            let rotator = rotator::Rotator {
                name: name.clone(),
                policy: spec.refresh,
                minter,
                cache: self.cache.clone(),
                board: self.board.clone(),
                serving_until: self.board.live_expiry(&name),
            };
            let task = tokio::spawn(rotator.run());
            self.tasks.insert(name, (spec, task));
        }
    }
}

impl Drop for Minters {
    fn drop(&mut self) {
        for (_, task) in self.tasks.values() {
            task.abort();
        }
    }
}
