//! Status written back to every object: `observedGeneration` and the conditions `Accepted`,
//! `ResolvedRefs` and, on policies, `CredentialReady` (with expiry and last error; never a
//! secret value). Only changed statuses are patched.

use super::StoreHandles;
use super::convert::{Problem, Snapshot};
use crate::credentials::{Closed, CredentialState, Revocation, StatusBoard};
use crate::translate::names;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::{Value as Json, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, warn};

/// Writes statuses while this replica holds the Lease: on every snapshot, and every second
/// for credential changes.
pub async fn write(
    client: kube::Client,
    stores: StoreHandles,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    board: Arc<StatusBoard>,
    leader: Arc<AtomicBool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = snapshots.changed() => if changed.is_err() { return },
        }
        if !leader.load(Ordering::Relaxed) {
            continue;
        }
        let snapshot = snapshots.borrow().clone();
        let ctx = Ctx {
            client: &client,
            snapshot: &snapshot,
            board: &board,
        };
        for o in stores.gateways.state() {
            ctx.sync(o.as_ref(), "Gateway", false).await;
        }
        for o in stores.backends.state() {
            ctx.sync(o.as_ref(), "Backend", false).await;
        }
        for o in stores.policies.state() {
            ctx.sync(o.as_ref(), "BackendSecurityPolicy", true).await;
        }
        for o in stores.routes.state() {
            ctx.sync(o.as_ref(), "Route", false).await;
        }
    }
}

struct Ctx<'a> {
    client: &'a kube::Client,
    snapshot: &'a Snapshot,
    board: &'a StatusBoard,
}

impl Ctx<'_> {
    async fn sync<K>(&self, obj: &K, kind: &'static str, credential: bool)
    where
        K: Resource<Scope = NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let ns = obj.namespace().unwrap_or_default();
        let name = obj.name_any();
        let problems = self
            .snapshot
            .problems
            .get(&(kind, ns.clone(), name.clone()))
            .cloned()
            .unwrap_or_default();
        let generation = obj.meta().generation;
        let mut conditions = vec![
            condition("Accepted", &problems, "Accepted", generation),
            condition("ResolvedRefs", &problems, "ResolvedRefs", generation),
        ];
        if credential {
            conditions.push(self.credential_ready(&ns, &name, problems.is_empty(), generation));
        }
        let current = serde_json::to_value(obj)
            .ok()
            .and_then(|v| v.get("status").cloned())
            .unwrap_or(Json::Null);
        // Keep lastTransitionTime where a condition's status did not change.
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        for c in &mut conditions {
            let old = current["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|o| o["type"] == c["type"]));
            c["lastTransitionTime"] = match old {
                Some(o) if o["status"] == c["status"] => o["lastTransitionTime"].clone(),
                _ => json!(now),
            };
        }
        let desired = json!({"observedGeneration": generation, "conditions": conditions});
        if desired == current {
            return;
        }
        let api: Api<K> = Api::namespaced(self.client.clone(), &ns);
        let patch = Patch::Merge(json!({"status": desired}));
        match api
            .patch_status(&name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => debug!(kind, namespace = %ns, name = %name, "status written"),
            Err(e) => warn!(kind, namespace = %ns, name = %name, error = %e, "cannot write status"),
        }
    }

    fn credential_ready(
        &self,
        ns: &str,
        name: &str,
        accepted: bool,
        generation: Option<i64>,
    ) -> Json {
        if !accepted {
            return cond(
                "CredentialReady",
                "Unknown",
                "NotAccepted",
                "the policy is not accepted",
                generation,
            );
        }
        let Some(s) = self.board.get(&names::credential(&format!("{ns}/{name}"))) else {
            return cond(
                "CredentialReady",
                "Unknown",
                "NotInUse",
                "no Backend that a Route uses references this policy",
                generation,
            );
        };
        let expiry = s
            .expires_unix()
            .map(|t| format!("expires at {}", unix_to_rfc3339(t)));
        let (status, reason, message) = match &s.state {
            CredentialState::Present => (
                "True",
                "Ready",
                expiry.unwrap_or_else(|| "the credential is served".into()),
            ),
            CredentialState::Failing(error) => (
                "True",
                "RefreshFailing",
                format!("{}; last error: {error}", expiry.unwrap_or_default()),
            ),
            CredentialState::Closed(Closed::Pending) => (
                "Unknown",
                "Pending",
                "the first credential is being obtained".into(),
            ),
            CredentialState::Closed(Closed::Revoked(why @ Revocation::SecretMissing { .. })) => (
                "False",
                "Revoked",
                format!("{why} (only Secrets labelled tessera.dev/credential=true are read)"),
            ),
            CredentialState::Closed(Closed::Revoked(why)) => ("False", "Revoked", why.to_string()),
            CredentialState::Closed(Closed::Unavailable(error) | Closed::Expired(error)) => {
                ("False", "Unavailable", error.clone())
            }
        };
        cond("CredentialReady", status, reason, &message, generation)
    }
}

fn condition(kind: &str, problems: &[Problem], ok_reason: &str, generation: Option<i64>) -> Json {
    match problems.iter().find(|p| p.condition == kind) {
        Some(p) => cond(kind, "False", p.reason, &p.message, generation),
        None => cond(kind, "True", ok_reason, "", generation),
    }
}

fn cond(kind: &str, status: &str, reason: &str, message: &str, generation: Option<i64>) -> Json {
    json!({
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    })
}

fn unix_to_rfc3339(t: u64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(t as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}
