//! The refresh loop shared by every short-lived credential (AWS STS now, Azure next).
//!
//! One task per credential, so a slow or hanging provider never delays another. The loop
//! mints, publishes, sleeps until shortly before expiry (with jitter), and on failure retries
//! with exponential backoff while the still-valid credential keeps serving. When a credential
//! expires with nothing to replace it, the deny resource is published: fail closed.

use super::status::StatusBoard;
use crate::model::RefreshPolicy;
use crate::xds::{Cache, Resource};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tracing::{info, warn};

/// A freshly minted credential, ready to publish.
pub struct Minted {
    pub resource: Arc<Resource>,
    pub expires_at: SystemTime,
}

/// Why minting failed; messages never carry secret values.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("OIDC token: {0}")]
    Token(String),
    #[error("STS: {0}")]
    Sts(String),
    #[error("the provider returned a credential that is already expired")]
    AlreadyExpired,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Something that can mint one kind of short-lived credential.
pub trait Minter: Send + 'static {
    /// Obtains a new credential from the provider.
    fn mint(&mut self) -> impl Future<Output = Result<Minted, MintError>> + Send;
    /// The resource that refuses requests, published at expiry.
    fn deny(&self) -> Arc<Resource>;
}

/// Stop using a credential this long before it expires (at most a tenth of its lifetime): a
/// request signed in its last milliseconds would reach the provider already expired.
pub fn expiry_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(2))
}

/// How long one mint attempt may take before it counts as failed.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// How long to wait before renewing a credential that has `remaining` of its `lifetime` left:
/// `beforeExpiry` early (at most half the lifetime), minus up to `jitter` (at most a quarter).
pub fn refresh_delay(
    lifetime: Duration,
    remaining: Duration,
    policy: &RefreshPolicy,
    jitter_fraction: f64,
) -> Duration {
    let before = policy.before_expiry.min(lifetime / 2);
    let jitter = policy
        .jitter
        .min(lifetime / 4)
        .mul_f64(jitter_fraction.clamp(0.0, 1.0));
    remaining.saturating_sub(before).saturating_sub(jitter)
}

/// Backoff after `failures` consecutive failures: doubling from 250 ms up to `max`, with the
/// upper half randomised so a fleet of retries spreads out.
pub fn backoff(failures: u32, max: Duration, jitter_fraction: f64) -> Duration {
    let exp = FIRST_BACKOFF.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let base = exp.min(max);
    base / 2 + (base / 2).mul_f64(jitter_fraction.clamp(0.0, 1.0))
}

/// Runs the refresh loop of one credential until the task is aborted.
pub struct Rotator<M> {
    pub name: String,
    pub policy: RefreshPolicy,
    pub minter: M,
    pub cache: Arc<Cache>,
    pub board: Arc<StatusBoard>,
    /// Expiry of the credential already being served (when a task is restarted).
    pub serving_until: Option<SystemTime>,
}

impl<M: Minter> Rotator<M> {
    /// The loop; never returns.
    pub async fn run(self) {
        let Rotator {
            name,
            policy,
            mut minter,
            cache,
            board,
            serving_until,
        } = self;
        let deny = minter.deny();
        let fail_closed = |expires: &mut Option<SystemTime>, why: &str| {
            *expires = None;
            cache.set_credentials([deny.clone()]);
            board.set(&name, "expired", Some(why.to_owned()), None);
            warn!(credential = %name, reason = why, "credential expired: its backends fail closed until a refresh succeeds");
        };
        // `expires` is when this credential stops being served: its expiry minus the margin.
        let mut expires = serving_until
            .map(|e| e - Duration::from_secs(2))
            .filter(|e| *e > SystemTime::now());
        let mut ever_served = expires.is_some();
        let mut real_expiry = serving_until;
        let mut failures = 0u32;
        loop {
            let attempt = tokio::time::timeout(ATTEMPT_TIMEOUT, minter.mint());
            tokio::pin!(attempt);
            // The attempt may hang; the current credential must still stop at its expiry.
            let result = loop {
                tokio::select! {
                    r = &mut attempt => break r.unwrap_or(Err(MintError::Timeout(ATTEMPT_TIMEOUT))),
                    () = sleep_until_system(expires) => fail_closed(&mut expires, "expired while a refresh was in flight"),
                }
            };
            let next = match result {
                Ok(minted)
                    if minted.expires_at > SystemTime::now() + Duration::from_millis(100) =>
                {
                    let now = SystemTime::now();
                    let lifetime = minted.expires_at.duration_since(now).unwrap_or_default();
                    cache.set_credentials([minted.resource]);
                    expires = Some(minted.expires_at - expiry_margin(lifetime));
                    real_expiry = Some(minted.expires_at);
                    ever_served = true;
                    failures = 0;
                    board.set(&name, "present", None, Some(minted.expires_at));
                    let delay = refresh_delay(lifetime, lifetime, &policy, fastrand::f64());
                    info!(credential = %name, expires_in_s = lifetime.as_secs(), refresh_in_ms = delay.as_millis() as u64, "credential minted and pushed");
                    delay
                }
                other => {
                    let error = match other {
                        Ok(_) => MintError::AlreadyExpired,
                        Err(e) => e,
                    };
                    failures += 1;
                    let delay = backoff(failures, policy.max_backoff, fastrand::f64());
                    let valid = expires.is_some();
                    warn!(
                        credential = %name,
                        error = %error,
                        attempt = failures,
                        retry_in_ms = delay.as_millis() as u64,
                        still_serving_valid_credential = valid,
                        "credential refresh failed"
                    );
                    let state = match (valid, ever_served) {
                        (true, _) => "failing",
                        (false, true) => "expired",
                        (false, false) => "unavailable",
                    };
                    let shown = expires.and(real_expiry);
                    board.set(&name, state, Some(error.to_string()), shown);
                    delay
                }
            };
            let wake = Instant::now() + next;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(wake) => break,
                    () = sleep_until_system(expires) => fail_closed(&mut expires, "expired and could not be refreshed"),
                }
            }
        }
    }
}

/// Sleeps until a wall-clock time; forever when there is none.
async fn sleep_until_system(at: Option<SystemTime>) {
    match at {
        Some(t) => {
            let left = t.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::time::sleep(left).await
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(before: u64, jitter: u64) -> RefreshPolicy {
        RefreshPolicy {
            before_expiry: Duration::from_secs(before),
            jitter: Duration::from_secs(jitter),
            max_backoff: Duration::from_secs(60),
        }
    }

    #[test]
    fn refresh_before_expiry_with_jitter() {
        let hour = Duration::from_secs(3600);
        // 5 min before expiry, minus 0..30 s of jitter.
        assert_eq!(
            refresh_delay(hour, hour, &policy(300, 30), 0.0),
            Duration::from_secs(3300)
        );
        assert_eq!(
            refresh_delay(hour, hour, &policy(300, 30), 1.0),
            Duration::from_secs(3270)
        );
        // beforeExpiry is capped at half the lifetime, jitter at a quarter.
        let short = Duration::from_secs(8);
        assert_eq!(
            refresh_delay(short, short, &policy(300, 0), 0.5),
            Duration::from_secs(4)
        );
        assert_eq!(
            refresh_delay(short, short, &policy(300, 30), 1.0),
            Duration::from_secs(2)
        );
        // Already inside the window: refresh now.
        assert_eq!(
            refresh_delay(hour, Duration::from_secs(10), &policy(300, 0), 0.0),
            Duration::ZERO
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let max = Duration::from_secs(60);
        assert_eq!(backoff(1, max, 1.0), Duration::from_millis(250));
        assert_eq!(backoff(2, max, 1.0), Duration::from_millis(500));
        assert_eq!(backoff(3, max, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(30, max, 1.0), max);
        assert_eq!(
            backoff(30, Duration::from_secs(1), 0.0),
            Duration::from_millis(500)
        );
    }
}
