//! One status writer among replicas: a coordination.k8s.io Lease, renewed while held. Every
//! replica serves xDS; only the holder patches status.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::{info, warn};

/// The Lease's name.
pub const LEASE_NAME: &str = "tessera-status-writer";
const LEASE_SECONDS: i32 = 15;
const RENEW_EVERY: Duration = Duration::from_secs(5);

/// Keeps trying to hold the Lease; `leader` says whether this replica holds it.
pub async fn lead(
    client: kube::Client,
    namespace: String,
    identity: String,
    leader: Arc<AtomicBool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    loop {
        let held = match try_hold(&api, &identity).await {
            Ok(held) => held,
            Err(e) => {
                warn!(error = %e, "cannot renew the status-writer Lease; not writing status meanwhile");
                false
            }
        };
        if held != leader.swap(held, Ordering::Relaxed) {
            info!(holder = held, lease = %format!("{namespace}/{LEASE_NAME}"), "status writer Lease changed hands");
        }
        tokio::time::sleep(RENEW_EVERY).await;
    }
}

/// Takes or renews the Lease; a conflict (another replica was faster) means not held.
pub async fn try_hold(api: &Api<Lease>, identity: &str) -> kube::Result<bool> {
    let now = Timestamp::now();
    let fresh_spec = |acquired: Option<MicroTime>, transitions: Option<i32>| LeaseSpec {
        holder_identity: Some(identity.to_owned()),
        lease_duration_seconds: Some(LEASE_SECONDS),
        acquire_time: acquired.or(Some(MicroTime(now))),
        renew_time: Some(MicroTime(now)),
        lease_transitions: transitions,
        ..Default::default()
    };
    let result = match api.get_opt(LEASE_NAME).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.to_owned()),
                    ..Default::default()
                },
                spec: Some(fresh_spec(None, Some(0))),
            };
            api.create(&PostParams::default(), &lease).await
        }
        Some(mut lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            let ours = spec.holder_identity.as_deref() == Some(identity);
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
            let expired = spec
                .renew_time
                .as_ref()
                .is_none_or(|t| t.0.as_second() + duration < now.as_second());
            if !ours && !expired {
                return Ok(false);
            }
            lease.spec = Some(if ours {
                fresh_spec(spec.acquire_time, spec.lease_transitions)
            } else {
                fresh_spec(None, Some(spec.lease_transitions.unwrap_or(0) + 1))
            });
            // The resourceVersion in `lease` makes this a compare-and-swap.
            api.replace(LEASE_NAME, &PostParams::default(), &lease)
                .await
        }
    };
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
