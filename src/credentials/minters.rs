//! The supervised refresh tasks, one per short-lived credential some gateway uses.

use super::aws::AwsMinter;
use super::azure::AzureMinter;
use super::rotator::{MintError, Minter};
use super::supervisor::{Served, Supervisor};
use super::{Outlet, Publish};
use crate::model::{AwsSource, Model, PolicyKind, RefreshPolicy};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The running supervisors, by policy name.
pub struct Minters {
    sink: Arc<dyn Publish>,
    http: reqwest::Client,
    tasks: HashMap<String, Task>,
}

struct Task {
    spec: PolicyKind,
    outlet: Outlet,
    served: watch::Receiver<Option<Served>>,
    refresh: Arc<Notify>,
    handle: JoinHandle<()>,
}

impl Drop for Task {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// What a configuration change means for the refresh tasks.
pub struct Plan {
    /// Policies whose credential is not served yet: publish them failing closed (pending) with
    /// the clusters that reference them, so a cluster never waits for its credential (and
    /// never forwards without one).
    pub pending: Vec<String>,
    start: Vec<Start>,
}

struct Start {
    name: String,
    spec: PolicyKind,
    outlet: Outlet,
    served: Option<Served>,
}

impl Minters {
    /// No tasks yet; `http` is used for OIDC grants.
    pub fn new(sink: Arc<dyn Publish>, http: reqwest::Client) -> Self {
        Self {
            sink,
            http,
            tasks: HashMap::new(),
        }
    }

    /// Stops tasks whose policy is gone, changed or no longer used by any gateway (`in_use`
    /// holds the policies some gateway references); returns what to publish and start.
    pub fn plan(&mut self, model: &Model, in_use: &HashSet<String>) -> Plan {
        let wanted: HashMap<&String, &PolicyKind> = model
            .policies
            .values()
            // Nobody would receive it: do not spend STS or Entra calls on it.
            .filter(|p| in_use.contains(&p.name) && is_minted(&p.kind))
            .map(|p| (&p.name, &p.kind))
            .collect();
        let mut replaced: HashMap<String, Option<Served>> = HashMap::new();
        let names: Vec<String> = self.tasks.keys().cloned().collect();
        for name in names {
            match wanted.get(&name) {
                Some(spec) if self.tasks[&name].spec == **spec => {}
                Some(_) => {
                    // A changed policy keeps serving its credential until the new task's
                    // first mint (or its expiry).
                    if let Some(old) = self.tasks.remove(&name) {
                        replaced.insert(name, *old.served.borrow());
                    }
                }
                None => {
                    if let Some(old) = self.tasks.remove(&name) {
                        old.outlet.retire();
                    }
                }
            }
        }
        let mut plan = Plan {
            pending: Vec::new(),
            start: Vec::new(),
        };
        for (name, spec) in wanted {
            if self.tasks.contains_key(name) {
                continue;
            }
            let served = replaced
                .remove(name)
                .flatten()
                .filter(|s| s.until > Instant::now());
            if served.is_none() {
                plan.pending.push(name.clone());
            }
            plan.start.push(Start {
                name: name.clone(),
                spec: spec.clone(),
                outlet: Outlet::register(&self.sink, name),
                served,
            });
        }
        plan
    }

    /// Starts the planned tasks; call after the pending credentials were published.
    pub fn start(&mut self, plan: Plan) {
        for Start {
            name,
            spec,
            outlet,
            served,
        } in plan.start
        {
            let (tx, rx) = watch::channel(served);
            let refresh = Arc::new(Notify::new());
            let http = self.http.clone();
            let task_outlet = outlet.clone();
            let handle = match &spec {
                PolicyKind::Aws(aws) => {
                    let AwsSource::WebIdentity(identity) = aws.source.clone() else {
                        continue;
                    };
                    let (region, endpoint) = (aws.region.clone(), aws.sts_endpoint.clone());
                    let make = move || {
                        Ok(AwsMinter::new(
                            region.clone(),
                            endpoint.clone(),
                            identity.clone(),
                            http.clone(),
                        ))
                    };
                    spawn(outlet, aws.refresh, make, tx, refresh.clone())
                }
                PolicyKind::Azure(azure) => {
                    let spec = (**azure).clone();
                    let make = move || AzureMinter::new(spec.clone(), http.clone());
                    spawn(outlet, azure.refresh, make, tx, refresh.clone())
                }
                PolicyKind::ApiKey(_) => continue,
            };
            self.tasks.insert(
                name,
                Task {
                    spec,
                    outlet: task_outlet,
                    served: rx,
                    refresh,
                    handle,
                },
            );
        }
    }

    /// Has policy `name`'s credential minted now; false when no task mints it.
    pub fn refresh_now(&self, name: &str) -> bool {
        match self.tasks.get(name) {
            Some(task) => {
                task.refresh.notify_one();
                true
            }
            None => false,
        }
    }
}

fn is_minted(kind: &PolicyKind) -> bool {
    match kind {
        PolicyKind::Aws(aws) => matches!(aws.source, AwsSource::WebIdentity(_)),
        PolicyKind::Azure(_) => true,
        PolicyKind::ApiKey(_) => false,
    }
}

fn spawn<F, M>(
    outlet: Outlet,
    policy: RefreshPolicy,
    make: F,
    served: watch::Sender<Option<Served>>,
    refresh: Arc<Notify>,
) -> JoinHandle<()>
where
    F: FnMut() -> Result<M, MintError> + Send + 'static,
    M: Minter,
{
    tokio::spawn(
        Supervisor {
            outlet,
            policy,
            make,
            served,
            refresh,
        }
        .run(),
    )
}
