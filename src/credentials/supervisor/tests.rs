//! The refresh loop under its supervisor, with a scripted minter and paused tokio time: every
//! timer fires exactly when due, so the times below are what a real process would do.

use super::*;
use crate::credentials::rotator::Minted;
use crate::credentials::testing::Recorder;
use crate::credentials::{Material, Publication};
use crate::model::SecretString;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
enum Step {
    /// A credential with this many seconds to live.
    Mint(u64),
    Fail,
    /// Fails with a provider error meant to forge a log line and flood status.
    Hostile,
    Panic,
    /// Never answers.
    Hang,
}

/// The steps every minter built by one factory takes, in order; the last one repeats.
struct Script {
    steps: Mutex<VecDeque<Step>>,
    made: AtomicU32,
    minted: AtomicU32,
}

struct Fake(Arc<Script>);

impl Minter for Fake {
    async fn mint(&mut self) -> Result<Minted, MintError> {
        let step = {
            let mut steps = self.0.steps.lock().unwrap();
            if steps.len() > 1 {
                steps.pop_front().unwrap()
            } else {
                steps[0]
            }
        };
        match step {
            Step::Mint(secs) => {
                let n = self.0.minted.fetch_add(1, Ordering::SeqCst);
                Ok(Minted {
                    material: Material::Bearer(SecretString::new(format!("token-{n}"))),
                    expires_at: SystemTime::now() + Duration::from_secs(secs),
                })
            }
            Step::Fail => Err(MintError::Sts("down".into())),
            Step::Hostile => Err(MintError::Oidc(format!(
                "invalid_client \nINFO credential minted{}",
                "x".repeat(10_000)
            ))),
            Step::Panic => panic!("the fake minter panics"),
            Step::Hang => std::future::pending().await,
        }
    }
}

struct Run {
    recorder: Arc<Recorder>,
    refresh: Arc<tokio::sync::Notify>,
    script: Arc<Script>,
    t0: Instant,
    task: tokio::task::JoinHandle<()>,
}

fn policy(before: u64, jitter: u64, max_backoff: u64) -> RefreshPolicy {
    RefreshPolicy {
        before_expiry: Duration::from_secs(before),
        jitter: Duration::from_secs(jitter),
        max_backoff: Duration::from_secs(max_backoff),
    }
}

fn start(steps: &[Step], policy: RefreshPolicy, serving: Option<Served>) -> Run {
    let recorder = Recorder::new();
    let script = Arc::new(Script {
        steps: Mutex::new(steps.iter().copied().collect()),
        made: AtomicU32::new(0),
        minted: AtomicU32::new(0),
    });
    let made = script.clone();
    let make = move || {
        made.made.fetch_add(1, Ordering::SeqCst);
        Ok(Fake(made.clone()))
    };
    let (served, _) = watch::channel(serving);
    let refresh = Arc::new(tokio::sync::Notify::new());
    let supervisor = Supervisor {
        refresh: refresh.clone(),
        outlet: Outlet::register(&recorder.sink(), "p"),
        policy,
        make,
        served,
    };
    Run {
        recorder,
        refresh,
        script,
        t0: Instant::now(),
        task: tokio::spawn(supervisor.run()),
    }
}

impl Run {
    /// Lets `secs` of (paused) time pass, then returns every publication with its time in
    /// seconds since the start.
    async fn after(&self, secs: f64) -> Vec<(f64, Publication)> {
        tokio::time::sleep_until(self.t0 + Duration::from_secs_f64(secs)).await;
        self.recorder
            .take()
            .into_iter()
            .map(|(t, p)| ((t - self.t0).as_secs_f64(), p))
            .collect()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn times(log: &[(f64, Publication)], want: fn(&Publication) -> bool) -> Vec<f64> {
    log.iter()
        .filter(|(_, p)| want(p))
        .map(|(t, _)| *t)
        .collect()
}

fn serve(p: &Publication) -> bool {
    matches!(p, Publication::Serve { .. })
}

fn closed(p: &Publication) -> bool {
    matches!(p, Publication::Closed(_))
}

fn expired(p: &Publication) -> bool {
    matches!(p, Publication::Closed(Closed::Expired(_)))
}

/// Wall-clock expiries turned into durations lose a few microseconds of real time.
fn near(got: f64, want: f64) -> bool {
    (got - want).abs() < 0.05
}

#[tokio::test(start_paused = true)]
async fn refreshes_at_before_expiry_and_serves_every_mint() {
    let run = start(&[Step::Mint(100)], policy(10, 0, 60), None);
    let log = run.after(200.0).await;
    let served = times(&log, serve);
    assert_eq!(served.len(), 3, "{log:?}");
    for (got, want) in served.iter().zip([0.0, 90.0, 180.0]) {
        assert!(near(*got, want), "minted at {got}, want {want}: {log:?}");
    }
    assert!(times(&log, closed).is_empty(), "{log:?}");
    let Publication::Serve { material, expires } = &log[0].1 else {
        panic!("{log:?}")
    };
    assert_eq!(material, &Material::Bearer(SecretString::new("token-0")));
    assert!(expires.is_some());
}

#[tokio::test(start_paused = true)]
async fn jitter_moves_the_refresh_earlier_within_its_bound() {
    // Refresh 10 s before expiry, up to 20 s earlier still: every 70..=90 s.
    let run = start(&[Step::Mint(100)], policy(10, 20, 60), None);
    let served = times(&run.after(2000.0).await, serve);
    assert!(served.len() > 20, "{served:?}");
    let gaps: Vec<f64> = served.windows(2).map(|w| w[1] - w[0]).collect();
    for gap in &gaps {
        assert!((69.95..=90.05).contains(gap), "{gaps:?}");
    }
    let spread = gaps.iter().cloned().fold(f64::MIN, f64::max)
        - gaps.iter().cloned().fold(f64::MAX, f64::min);
    assert!(spread > 1.0, "jitter spreads refreshes out: {gaps:?}");
}

#[tokio::test(start_paused = true)]
async fn failed_attempts_back_off_exponentially_up_to_the_cap() {
    let steps = [Step::Fail; 8].into_iter().chain([Step::Mint(100)]);
    let run = start(&steps.collect::<Vec<_>>(), policy(10, 0, 4), None);
    let log = run.after(60.0).await;
    let failed = times(&log, closed);
    assert_eq!(failed.len(), 8, "{log:?}");
    // Never served: unavailable, not expired.
    assert!(
        log.iter()
            .all(|(_, p)| serve(p) || matches!(p, Publication::Closed(Closed::Unavailable(_))))
    );
    // After failure n the wait is in [b/2, b], b = 250 ms doubling, capped at 4 s.
    let gaps: Vec<f64> = failed.windows(2).map(|w| w[1] - w[0]).collect();
    for (n, gap) in gaps.iter().enumerate() {
        let b = (0.25 * f64::from(1u32 << n)).min(4.0);
        assert!(
            *gap >= b / 2.0 - 1e-6 && *gap <= b + 1e-6,
            "gap {n}: {gap} not in [{}, {b}]: {gaps:?}",
            b / 2.0
        );
    }
    let served = times(&log, serve);
    assert_eq!(served.len(), 1, "served once the provider answers: {log:?}");
    assert!(served[0] > failed[7]);
}

#[tokio::test(start_paused = true)]
async fn keeps_serving_while_retrying_then_fails_closed_at_the_margin() {
    let run = start(&[Step::Mint(100), Step::Fail], policy(10, 0, 1), None);
    let log = run.after(120.0).await;
    // Minted at 0, refresh fails from 90 on: still served (failing) until 100 - 2 s.
    let closed_at = times(&log, closed);
    assert!(near(closed_at[0], 98.0), "{log:?}");
    assert!(expired(&log.iter().find(|(_, p)| closed(p)).unwrap().1));
    let failing = times(&log, |p| matches!(p, Publication::Failing { .. }));
    assert!(near(failing[0], 90.0), "{log:?}");
    assert!(failing.len() > 3, "retried: {log:?}");
    assert!(failing.iter().all(|t| *t < closed_at[0]));
    // Once expired, further failures keep it closed (expired, not unavailable).
    assert!(closed_at.len() > 3);
    assert!(
        log.iter()
            .filter(|(_, p)| closed(p))
            .all(|(_, p)| expired(p))
    );
}

#[tokio::test(start_paused = true)]
async fn the_margin_is_a_tenth_of_a_short_lifetime() {
    // 10 s to live: refreshed at 5 s (beforeExpiry capped at half), unusable from 9 s.
    let run = start(&[Step::Mint(10), Step::Fail], policy(300, 0, 1), None);
    let log = run.after(15.0).await;
    assert!(near(times(&log, closed)[0], 9.0), "{log:?}");
    assert!(near(times(&log, |p| !serve(p))[0], 5.0), "{log:?}");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_minter_is_restarted_and_its_credential_still_expires() {
    let run = start(&[Step::Mint(10), Step::Panic], policy(300, 0, 1), None);
    let log = run.after(30.0).await;
    // Panics at 5 s; every restart panics again; the credential is withdrawn at 9 s.
    let closed_at = times(&log, closed);
    assert!(near(closed_at[0], 9.0), "{log:?}");
    let restarts = run.script.made.load(Ordering::SeqCst);
    assert!(restarts > 5, "restarted {restarts} times");
    assert!(
        restarts < 40,
        "restarts back off ({restarts} in 25 s, at most 1 s apart)"
    );
    let Some((t, Publication::Failing { error, .. })) = log.get(1) else {
        panic!("{log:?}")
    };
    assert!(near(*t, 5.0) && error.contains("panicked"), "{log:?}");
}

#[tokio::test(start_paused = true)]
async fn a_restarted_minter_serves_again() {
    let steps = [Step::Mint(10), Step::Panic, Step::Panic, Step::Mint(10)];
    let run = start(&steps, policy(300, 0, 1), None);
    let log = run.after(8.0).await;
    let served = times(&log, serve);
    assert_eq!(served.len(), 2, "{log:?}");
    assert!(served[1] > 5.0 && served[1] < 8.0, "{log:?}");
    assert!(times(&log, closed).is_empty(), "never withdrawn: {log:?}");
    assert_eq!(run.script.made.load(Ordering::SeqCst), 3);
    assert_eq!(run.script.minted.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_minter_still_fails_closed_at_expiry() {
    // Refresh at 20 s hangs; the attempt would only time out at 30 s, after the expiry (28 s).
    let run = start(&[Step::Mint(30), Step::Hang], policy(10, 0, 60), None);
    let log = run.after(29.0).await;
    assert_eq!(times(&log, closed).len(), 1, "{log:?}");
    assert!(near(times(&log, closed)[0], 28.0), "{log:?}");
}

#[tokio::test(start_paused = true)]
async fn a_successor_serves_its_predecessors_credential_until_expiry() {
    let inherited = Served {
        until: Instant::now() + Duration::from_secs(5),
        expires_at: SystemTime::now() + Duration::from_secs(7),
    };
    let run = start(&[Step::Fail], policy(10, 0, 1), Some(inherited));
    let log = run.after(10.0).await;
    let closed_at = times(&log, closed);
    assert!(near(closed_at[0], 5.0), "{log:?}");
    assert!(
        log.iter()
            .filter(|(_, p)| closed(p))
            .all(|(_, p)| expired(p))
    );
    assert!(
        log[0].0 == 0.0 && matches!(log[0].1, Publication::Failing { .. }),
        "serving what the predecessor served: {log:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn every_attempt_is_counted_with_its_failure_class() {
    let steps = [Step::Fail, Step::Fail, Step::Mint(100)];
    let run = start(&steps, policy(10, 0, 4), None);
    run.after(5.0).await;
    assert_eq!(
        *run.recorder.attempts.lock().unwrap(),
        [Some("sts"), Some("sts"), None]
    );
}

#[tokio::test(start_paused = true)]
async fn a_hostile_provider_error_is_escaped_and_bounded() {
    let run = start(&[Step::Hostile], policy(300, 0, 1), None);
    let log = run.after(3.0).await;
    let errors: Vec<&String> = log
        .iter()
        .filter_map(|(_, p)| match p {
            Publication::Failing { error, .. }
            | Publication::Closed(Closed::Unavailable(error) | Closed::Expired(error)) => {
                Some(error)
            }
            _ => None,
        })
        .collect();
    assert!(!errors.is_empty(), "{log:?}");
    for e in errors {
        assert!(!e.contains('\n'), "a forged log line: {e}");
        assert!(
            e.len() < MAX_ERROR_BYTES + 64,
            "unbounded: {} bytes",
            e.len()
        );
        assert!(e.contains("truncated"), "{e}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_refresh_request_mints_at_once_and_reschedules_from_there() {
    let run = start(&[Step::Mint(100)], policy(10, 0, 60), None);
    assert_eq!(times(&run.after(30.0).await, serve).len(), 1);
    run.refresh.notify_one();
    let log = run.after(31.0).await;
    let served = times(&log, serve);
    assert!(served.len() == 1 && near(served[0], 30.0), "{log:?}");
    // The next scheduled refresh counts from the new credential: 30 + 90.
    let log = run.after(125.0).await;
    let served = times(&log, serve);
    assert!(served.len() == 1 && near(served[0], 120.0), "{log:?}");
}
