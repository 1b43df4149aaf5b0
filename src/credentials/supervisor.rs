//! One supervisor per short-lived credential: it publishes what the refresh loop mints, owns
//! the expiry timer, and restarts the loop (with backoff, logged) when it ends or panics.
//!
//! Expiry is enforced here, outside the task that talks to the provider: whatever that task
//! does — hang, return, panic — the credential stops being served at its expiry minus the
//! margin, and its backends fail closed until a new one is minted.

use super::rotator::{MintError, Minter, Report, backoff, expiry_margin, refresh_loop};
use super::{Closed, Outlet, Publication};
use crate::model::RefreshPolicy;
use crate::untrusted::bounded_text;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tracing::{error, info, warn};

/// The most of a refresh error's text kept for logs and status.
const MAX_ERROR_BYTES: usize = 1024;

/// A credential being served: until when it may be used, and its expiry as the provider gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// Expiry minus the margin.
    pub until: Instant,
    pub expires_at: SystemTime,
}

/// Runs the refresh loop of one credential and enforces its expiry.
pub struct Supervisor<F> {
    pub outlet: Outlet,
    pub policy: RefreshPolicy,
    /// Builds a fresh minter for every (re)start of the refresh loop.
    pub make: F,
    /// What is served now, kept up to date for a successor (a replaced supervisor's
    /// credential stays in use until the successor's first mint, or its expiry).
    pub served: watch::Sender<Option<Served>>,
    /// Notified to mint now instead of at the scheduled time.
    pub refresh: Arc<Notify>,
}

impl<F, M> Supervisor<F>
where
    F: FnMut() -> Result<M, MintError> + Send + 'static,
    M: Minter,
{
    /// Runs until aborted; the refresh loop is aborted with it.
    pub async fn run(mut self) {
        let mut ever_served = self.live().is_some();
        let mut restarts = 0u32;
        loop {
            let ended = match (self.make)() {
                Ok(minter) => {
                    let (tx, mut rx) = mpsc::channel(4);
                    // Dropping the set (this supervisor aborted) aborts the loop too.
                    let mut tasks = JoinSet::new();
                    tasks.spawn(refresh_loop(minter, self.policy, tx, self.refresh.clone()));
                    loop {
                        tokio::select! {
                            biased;
                            Some(report) = rx.recv() => {
                                if matches!(report, Report::Minted { .. }) {
                                    ever_served = true;
                                    restarts = 0;
                                }
                                self.report(report, ever_served);
                            }
                            Some(joined) = tasks.join_next() => break describe_end(joined),
                            () = sleep_until(self.live().map(|s| s.until)) => self.expire(),
                        }
                    }
                }
                Err(e) => {
                    self.outlet.attempted(Some(e.class()));
                    format!("cannot start: {e}")
                }
            };
            restarts = restarts.saturating_add(1);
            let delay = backoff(restarts, self.policy.max_backoff, fastrand::f64());
            error!(
                credential = %self.outlet.name(),
                reason = %ended,
                restart_in_ms = delay.as_millis() as u64,
                "credential refresh task ended; restarting it"
            );
            let why = format!("refresh task {ended}; restarting");
            self.outlet.publish(match self.live() {
                Some(s) => Publication::Failing {
                    error: why,
                    expires: Some(s.expires_at),
                },
                None if ever_served => Publication::Closed(Closed::Expired(why)),
                None => Publication::Closed(Closed::Unavailable(why)),
            });
            let wake = Instant::now() + delay;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(wake) => break,
                    () = sleep_until(self.live().map(|s| s.until)) => self.expire(),
                }
            }
        }
    }

    /// The credential being served, if it may still be used.
    fn live(&self) -> Option<Served> {
        *self.served.borrow()
    }

    fn report(&mut self, report: Report, ever_served: bool) {
        let name = self.outlet.name();
        match report {
            Report::Minted {
                material,
                at,
                lifetime,
                expires_at,
                refresh_in,
            } => {
                self.outlet.attempted(None);
                self.served.send_replace(Some(Served {
                    until: at + lifetime - expiry_margin(lifetime),
                    expires_at,
                }));
                info!(credential = %name, expires_in_s = lifetime.as_secs(), refresh_in_ms = refresh_in.as_millis() as u64, "credential minted");
                self.outlet.publish(Publication::Serve {
                    material,
                    expires: Some(expires_at),
                });
            }
            Report::Failed {
                error,
                attempt,
                retry_in,
            } => {
                let class = error.class();
                self.outlet.attempted(Some(class));
                let live = self.live();
                // Provider text (an OIDC error_description, an STS or Entra message) is
                // hostile input on its way to logs and Kubernetes status.
                let error = bounded_text(&error.to_string(), MAX_ERROR_BYTES);
                warn!(
                    credential = %name,
                    reason = class,
                    error = %error,
                    attempt,
                    retry_in_ms = retry_in.as_millis() as u64,
                    still_serving_valid_credential = live.is_some(),
                    "credential refresh failed"
                );
                self.outlet.publish(match live {
                    Some(s) => Publication::Failing {
                        error,
                        expires: Some(s.expires_at),
                    },
                    None if ever_served => Publication::Closed(Closed::Expired(error)),
                    None => Publication::Closed(Closed::Unavailable(error)),
                });
            }
        }
    }

    fn expire(&mut self) {
        self.served.send_replace(None);
        warn!(credential = %self.outlet.name(), "credential expired: its backends fail closed until a refresh succeeds");
        self.outlet.publish(Publication::Closed(Closed::Expired(
            "expired and could not be refreshed".to_owned(),
        )));
    }
}

/// How a refresh loop ended (it never returns while its supervisor listens).
fn describe_end(joined: Result<(), JoinError>) -> String {
    match joined {
        Ok(()) => "returned".to_owned(),
        Err(e) if e.is_panic() => "panicked".to_owned(),
        Err(_) => "was cancelled".to_owned(),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
