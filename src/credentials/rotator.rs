//! The refresh loop shared by every short-lived credential, and its timing rules.
//!
//! The loop mints, reports the result to its supervisor, sleeps until shortly before expiry
//! (with jitter), and on failure retries with exponential backoff. It neither publishes nor
//! enforces expiry: the supervisor does both, so a loop that hangs, returns or panics can never
//! leave an expired credential in use.

use super::Material;
use super::static_key::ReadError;
use crate::model::RefreshPolicy;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// A freshly minted credential.
#[derive(Debug)]
pub struct Minted {
    pub material: Material,
    /// When the provider says it expires.
    pub expires_at: SystemTime,
}

/// Why minting failed; messages never carry secret values.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("OIDC token: {0}")]
    Oidc(String),
    #[error("token file: {0}")]
    TokenFile(ReadError),
    #[error("client secret: {0}")]
    ClientSecret(ReadError),
    #[error("Entra ID: {0}")]
    Entra(String),
    #[error("STS: {0}")]
    Sts(String),
    /// The minter cannot be built (an unusable CA file, an HTTP client that cannot start).
    #[error("{0}")]
    Setup(String),
    #[error("the provider returned a credential that is already expired")]
    AlreadyExpired,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl MintError {
    /// The fixed class `tessera_credential_refresh_failures_total{reason}` counts it under.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Oidc(_) | Self::TokenFile(_) | Self::ClientSecret(_) => "token",
            Self::Entra(_) => "entra",
            Self::Sts(_) => "sts",
            Self::Setup(_) => "setup",
            Self::AlreadyExpired => "expired_response",
            Self::Timeout(_) => "timeout",
        }
    }
}

/// Something that can mint one kind of short-lived credential.
pub trait Minter: Send + 'static {
    /// Obtains a new credential from the provider.
    fn mint(&mut self) -> impl Future<Output = Result<Minted, MintError>> + Send;
}

/// Stop using a credential this long before it expires (at most a tenth of its lifetime): a
/// request signed in its last milliseconds would reach the provider already expired.
pub fn expiry_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(2))
}

/// How long one mint attempt may take before it counts as failed.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// A credential with less life left than this is not worth publishing.
const MIN_LIFETIME: Duration = Duration::from_millis(100);

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

/// What the refresh loop tells its supervisor after each attempt.
#[derive(Debug)]
pub enum Report {
    Minted {
        material: Material,
        /// When it was minted, and the life it had left then: the expiry timer starts there.
        at: Instant,
        lifetime: Duration,
        expires_at: SystemTime,
        /// When the loop will mint the next one.
        refresh_in: Duration,
    },
    Failed {
        error: MintError,
        attempt: u32,
        retry_in: Duration,
    },
}

/// Mints, reports and waits, until the supervisor stops listening; `now` cuts a wait short
/// (an operator asked for a new credential, e.g. after a suspected leak).
pub async fn refresh_loop<M: Minter>(
    mut minter: M,
    policy: RefreshPolicy,
    reports: mpsc::Sender<Report>,
    now: Arc<Notify>,
) {
    let mut failures = 0u32;
    loop {
        let result = tokio::time::timeout(ATTEMPT_TIMEOUT, minter.mint())
            .await
            .unwrap_or(Err(MintError::Timeout(ATTEMPT_TIMEOUT)));
        // Provider expiries are wall-clock times; from here on only durations and tokio
        // instants are used (so paused time in tests moves every timer).
        let at = Instant::now();
        let result = result.and_then(|m| {
            let lifetime = m
                .expires_at
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            if lifetime < MIN_LIFETIME {
                Err(MintError::AlreadyExpired)
            } else {
                Ok((m, lifetime))
            }
        });
        let (report, wait) = match result {
            Ok((minted, lifetime)) => {
                failures = 0;
                let refresh_in = refresh_delay(lifetime, lifetime, &policy, fastrand::f64());
                let report = Report::Minted {
                    material: minted.material,
                    at,
                    lifetime,
                    expires_at: minted.expires_at,
                    refresh_in,
                };
                (report, refresh_in)
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let retry_in = backoff(failures, policy.max_backoff, fastrand::f64());
                let report = Report::Failed {
                    error,
                    attempt: failures,
                    retry_in,
                };
                (report, retry_in)
            }
        };
        if reports.send(report).await.is_err() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = now.notified() => {}
        }
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

    #[test]
    fn the_margin_is_a_tenth_of_the_lifetime_at_most_two_seconds() {
        assert_eq!(
            expiry_margin(Duration::from_secs(10)),
            Duration::from_secs(1)
        );
        assert_eq!(
            expiry_margin(Duration::from_secs(3600)),
            Duration::from_secs(2)
        );
    }
}
