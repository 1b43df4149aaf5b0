//! Status written back to every object: `observedGeneration` and the conditions `Accepted`,
//! `ResolvedRefs` and, on policies, `CredentialReady` (with expiry and last error; never a
//! secret value). Only changed statuses are patched.

use super::convert::Snapshot;
use super::{Guarded, StoreHandles};
use crate::credentials::{Closed, CredentialState, Revocation, StatusBoard};
use crate::source::load::{Kind, ObjectRef};
use crate::source::{Problem, Reason};
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
            ctx.sync(o.as_ref(), Kind::Gateway, false).await;
        }
        for o in stores.backends.state() {
            ctx.sync(o.as_ref(), Kind::Backend, false).await;
        }
        for o in stores.policies.state() {
            ctx.sync(o.as_ref(), Kind::BackendSecurityPolicy, true)
                .await;
        }
        for o in stores.routes.state() {
            ctx.sync(o.as_ref(), Kind::Route, false).await;
        }
    }
}

struct Ctx<'a> {
    client: &'a kube::Client,
    snapshot: &'a Snapshot,
    board: &'a StatusBoard,
}

impl Ctx<'_> {
    async fn sync<K>(&self, obj: &Guarded<K>, kind: Kind, credential: bool)
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
            .get(&ObjectRef::new(kind, Some(&ns), name.clone()))
            .cloned()
            .unwrap_or_default();
        let generation = obj.meta().generation;
        let mut conditions = conditions(&problems, generation);
        if credential {
            conditions.push(self.credential_ready(&ns, &name, problems.is_empty(), generation));
        }
        let current = obj.status();
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
        // Guarded: the reply to patching an unreadable object must decode too.
        let api: Api<Guarded<K>> = Api::namespaced(self.client.clone(), &ns);
        let patch = Patch::Merge(json!({"status": desired}));
        match api
            .patch_status(&name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => debug!(%kind, namespace = %ns, name = %name, "status written"),
            Err(e) => {
                warn!(%kind, namespace = %ns, name = %name, error = %e, "cannot write status")
            }
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
            CredentialState::Closed(Closed::Revoked(
                why @ (Revocation::SecretMissing { .. } | Revocation::SecretGone { .. }),
            )) => (
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

/// The condition a problem sets to False, and the reason it gives there.
fn condition_of(reason: Reason) -> (&'static str, &'static str) {
    match reason {
        Reason::Invalid => ("Accepted", "Invalid"),
        Reason::NotAllowed => ("Accepted", "NotAllowed"),
        Reason::NodeClusterConflict => ("Accepted", "NodeClusterConflict"),
        Reason::NodeClusterContested => ("Conflicted", "NodeClusterConflict"),
        Reason::RefNotFound => ("ResolvedRefs", "RefNotFound"),
    }
}

/// `Accepted` and `ResolvedRefs`: each False with the first problem that concerns it; and
/// `Conflicted=True` on a Gateway that keeps a `nodeCluster` others claim too.
fn conditions(problems: &[Problem], generation: Option<i64>) -> Vec<Json> {
    let contested = problems
        .iter()
        .find(|p| p.reason == Reason::NodeClusterContested)
        .map(|p| {
            cond(
                "Conflicted",
                "True",
                "NodeClusterConflict",
                &p.message,
                generation,
            )
        });
    let main = ["Accepted", "ResolvedRefs"].map(|kind| {
        let first = problems.iter().find(|p| condition_of(p.reason).0 == kind);
        match first {
            Some(p) => cond(
                kind,
                "False",
                condition_of(p.reason).1,
                &p.message,
                generation,
            ),
            None => cond(kind, "True", kind, "", generation),
        }
    });
    main.into_iter().chain(contested).collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::load::{ConfigError, ErrorClass};

    fn error(class: ErrorClass, message: &str) -> ConfigError {
        ConfigError {
            file: "namespace a".into(),
            document: 1,
            object: Some(ObjectRef::new(Kind::Backend, Some("a"), "b")),
            field: "spec.securityPolicy".into(),
            message: message.into(),
            class,
        }
    }

    /// (status of Accepted, status of ResolvedRefs, reason of the False one).
    fn outcome(class: ErrorClass, message: &str) -> (String, String, String) {
        let problems = [Problem::from(&error(class, message))];
        let [accepted, resolved] = &conditions(&problems, Some(3))[..] else {
            panic!("two conditions")
        };
        assert_eq!(accepted["observedGeneration"], 3);
        let reason = [accepted, resolved]
            .into_iter()
            .find(|c| c["status"] == "False")
            .map(|c| c["reason"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let status = |c: &Json| c["status"].as_str().unwrap_or_default().to_owned();
        (status(accepted), status(resolved), reason)
    }

    #[test]
    fn the_error_class_not_its_message_decides_the_condition() {
        let messages = [
            "BackendSecurityPolicy \"p\" does not exist",
            "anything at all",
        ];
        for message in messages {
            assert_eq!(
                outcome(ErrorClass::MissingReference, message),
                ("True".into(), "False".into(), "RefNotFound".into()),
                "{message}"
            );
            assert_eq!(
                outcome(ErrorClass::Invalid, message),
                ("False".into(), "True".into(), "Invalid".into()),
                "{message}"
            );
            assert_eq!(
                outcome(ErrorClass::NotAllowed, message),
                ("False".into(), "True".into(), "NotAllowed".into()),
                "{message}"
            );
        }
    }

    #[test]
    fn a_contested_gateway_stays_accepted_and_says_conflicted() {
        let problems = [Problem {
            reason: Reason::NodeClusterContested,
            message: "also claimed by b/late".into(),
        }];
        let conditions = conditions(&problems, Some(1));
        let find = |t: &str| conditions.iter().find(|c| c["type"] == t).unwrap();
        assert_eq!(find("Accepted")["status"], "True");
        assert_eq!(find("Conflicted")["status"], "True");
        assert_eq!(find("Conflicted")["message"], "also claimed by b/late");
    }

    #[test]
    fn no_problem_means_both_conditions_true() {
        let [accepted, resolved] = &conditions(&[], None)[..] else {
            panic!("two conditions")
        };
        assert_eq!(
            (&accepted["status"], &accepted["reason"]),
            (&json!("True"), &json!("Accepted"))
        );
        assert_eq!(
            (&resolved["status"], &resolved["reason"]),
            (&json!("True"), &json!("ResolvedRefs"))
        );
    }
}
