//! Key file readers with real files and paused tokio time. Root reads any file regardless of
//! its mode, so the transient error here is a key path that is briefly a directory (EISDIR).

use super::*;
use crate::credentials::testing::Recorder;
use crate::model::{ApiKey, KeySource, PolicyKind, SecretString, SecurityPolicy};
use std::path::PathBuf;

fn key(v: &str) -> Material {
    Material::ApiKey(SecretString::new(v))
}

fn transient() -> Read {
    Err(ReadError::Transient {
        path: "/k".into(),
        error: "Permission denied (os error 13)".into(),
    })
}

#[test]
fn transient_errors_keep_the_last_key_until_the_grace_ends() {
    let t0 = Instant::now();
    let present = KeyState::Present(key("sk-1"));
    let failing = KeyState::next(Some(&present), transient(), t0);
    assert!(
        matches!(failing.publication(), Publication::Failing { ref error, .. } if error.contains("os error 13")),
        "{failing:?}"
    );
    let KeyState::Unreadable { ref kept, .. } = failing else {
        panic!("{failing:?}")
    };
    assert_eq!(kept, &Some(key("sk-1")));
    // Still within the grace: still served, still retried.
    let later = KeyState::next(Some(&failing), transient(), t0 + READ_GRACE / 2);
    assert!(matches!(later.publication(), Publication::Failing { .. }));
    assert!(later.retry_in().is_some());
    // Past it: revoked, and kept revoked (not flapping) while it stays unreadable.
    let revoked = KeyState::next(Some(&later), transient(), t0 + READ_GRACE);
    assert!(matches!(
        revoked.publication(),
        Publication::Closed(Closed::Revoked(Revocation::FileUnreadable { .. }))
    ));
    let still = KeyState::next(Some(&revoked), transient(), t0 + READ_GRACE * 3);
    assert_eq!(still.publication(), revoked.publication());
    assert!(still.retry_in().is_some(), "retried until it is readable");
    // Readable again: served again.
    let back = KeyState::next(Some(&still), Ok(key("sk-2")), t0 + READ_GRACE * 4);
    assert_eq!(back, KeyState::Present(key("sk-2")));
    assert_eq!(back.retry_in(), None);
}

#[test]
fn gone_is_revoked_at_once_and_nothing_read_is_nothing_served() {
    let t0 = Instant::now();
    let present = KeyState::Present(key("sk-1"));
    let gone = KeyState::next(
        Some(&present),
        Err(Revocation::FileMissing("/k".into()).into()),
        t0,
    );
    assert_eq!(
        gone.publication(),
        Publication::Closed(Closed::Revoked(Revocation::FileMissing("/k".into())))
    );
    assert_eq!(gone.retry_in(), None);
    // Unreadable with no earlier value: nothing to serve, but not revoked yet.
    let first = KeyState::next(None, transient(), t0);
    assert!(matches!(
        first.publication(),
        Publication::Closed(Closed::Unavailable(_))
    ));
    assert!(first.retry_in().is_some());
}

#[test]
fn an_emptied_key_keeps_serving_until_it_is_still_empty_after_the_settle() {
    let t0 = Instant::now();
    let present = KeyState::Present(key("sk-1"));
    let empty = || -> Read { Err(Revocation::FileEmpty("/k".into()).into()) };
    let emptied = KeyState::next(Some(&present), empty(), t0);
    assert_eq!(emptied.publication(), present.publication());
    assert_eq!(emptied.retry_in(), Some(EMPTY_SETTLE));
    // Rewritten in place meanwhile (truncated, then written): the new key, nothing revoked.
    assert_eq!(
        KeyState::next(Some(&emptied), Ok(key("sk-2")), t0 + EMPTY_SETTLE / 2),
        KeyState::Present(key("sk-2"))
    );
    // Read empty again within the settle: still served.
    let still = KeyState::next(Some(&emptied), empty(), t0 + EMPTY_SETTLE / 2);
    assert_eq!(still.publication(), present.publication());
    // Still empty once it passed: revoked, and not retried.
    let revoked = KeyState::next(Some(&still), empty(), t0 + EMPTY_SETTLE);
    assert_eq!(
        revoked.publication(),
        Publication::Closed(Closed::Revoked(Revocation::FileEmpty("/k".into())))
    );
    assert_eq!(revoked.retry_in(), None);
    // Nothing earlier to keep: revoked at once.
    assert!(matches!(
        KeyState::next(None, empty(), t0),
        KeyState::Revoked(_)
    ));
}

struct Keys {
    _dir: tempfile::TempDir,
    path: PathBuf,
    recorder: Arc<Recorder>,
    keys: StaticKeys,
    model: Model,
}

fn model(path: &Path) -> Model {
    let mut model = Model::default();
    model.policies.insert(
        "openai".into(),
        SecurityPolicy {
            name: "openai".into(),
            kind: PolicyKind::ApiKey(ApiKey {
                source: KeySource::File(path.to_owned()),
                header: None,
                prefix: None,
            }),
        },
    );
    model
}

/// A key file holding `sk-1`, loaded and its reader started.
fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openai.key");
    std::fs::write(&path, "sk-1\n").unwrap();
    let recorder = Recorder::new();
    let model = model(&path);
    let mut keys = StaticKeys::default();
    keys.reload(&model, &recorder.sink());
    assert_eq!(
        keys.publications(),
        [(
            "openai".to_owned(),
            Publication::Serve {
                material: key("sk-1"),
                expires: None
            }
        )]
    );
    keys.start();
    Keys {
        _dir: dir,
        path,
        recorder,
        keys,
        model,
    }
}

impl Keys {
    fn make_unreadable(&self) {
        std::fs::remove_file(&self.path).unwrap();
        std::fs::create_dir(&self.path).unwrap();
    }

    fn write(&self, value: &str) {
        let _ = std::fs::remove_dir(&self.path);
        std::fs::write(&self.path, value).unwrap();
    }

    /// What was published, in seconds since `t0`.
    fn published(&self, t0: Instant) -> Vec<(f64, Publication)> {
        self.recorder
            .take()
            .into_iter()
            .map(|(t, p)| ((t - t0).as_secs_f64(), p))
            .collect()
    }
}

async fn until(t0: Instant, secs: f64) {
    tokio::time::sleep_until(t0 + Duration::from_secs_f64(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn an_unreadable_key_keeps_serving_and_the_retry_picks_up_the_new_one() {
    let k = keys();
    let t0 = Instant::now();
    k.make_unreadable();
    k.keys.reread(&k.path);
    until(t0, 0.001).await;
    let log = k.published(t0);
    assert!(
        matches!(&log[..], [(_, Publication::Failing { .. })]),
        "{log:?}"
    );
    // The file comes back with no event: the retry reads it.
    k.write("sk-2\n");
    until(t0, 5.0).await;
    let log = k.published(t0);
    assert_eq!(
        log.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
        [Publication::Serve {
            material: key("sk-2"),
            expires: None
        }]
    );
    assert!(log[0].0 > 0.1, "{log:?}");
}

#[tokio::test(start_paused = true)]
async fn a_key_unreadable_past_the_grace_is_revoked_then_returns() {
    let k = keys();
    let t0 = Instant::now();
    k.make_unreadable();
    k.keys.reread(&k.path);
    until(
        t0,
        READ_GRACE.as_secs_f64() + READ_MAX_BACKOFF.as_secs_f64() + 1.0,
    )
    .await;
    let log = k.published(t0);
    let revoked: Vec<f64> = log
        .iter()
        .filter(|(_, p)| matches!(p, Publication::Closed(Closed::Revoked(_))))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(revoked.len(), 1, "published once: {log:?}");
    let grace = READ_GRACE.as_secs_f64();
    assert!(
        revoked[0] >= grace && revoked[0] <= grace + READ_MAX_BACKOFF.as_secs_f64(),
        "{log:?}"
    );
    k.write("sk-3\n");
    until(t0, grace + 3.0 * READ_MAX_BACKOFF.as_secs_f64()).await;
    assert!(
        matches!(&k.published(t0)[..], [(_, Publication::Serve { material, .. })] if *material == key("sk-3"))
    );
}

#[tokio::test(start_paused = true)]
async fn a_read_between_truncation_and_write_revokes_nothing() {
    let k = keys();
    let t0 = Instant::now();
    // A rewrite in place has truncated the file, and a read queued by an earlier event
    // lands right then.
    std::fs::write(&k.path, "").unwrap();
    k.keys.reread(&k.path);
    until(t0, 0.001).await;
    k.write("sk-2\n");
    k.keys.reread(&k.path);
    until(t0, 1.0).await;
    let log = k.published(t0);
    assert_eq!(
        log.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
        [Publication::Serve {
            material: key("sk-2"),
            expires: None
        }],
        "only the new key, never a revocation"
    );
}

#[tokio::test(start_paused = true)]
async fn an_emptied_key_is_revoked_after_the_settle_and_a_deleted_one_at_once() {
    let k = keys();
    let t0 = Instant::now();
    std::fs::write(&k.path, "").unwrap();
    k.keys.reread(&k.path);
    until(t0, 0.001).await;
    assert!(
        k.published(t0).is_empty(),
        "an empty read alone revokes nothing"
    );
    // The reader reads again by itself once the settle passed.
    let settle = EMPTY_SETTLE.as_secs_f64();
    until(t0, settle + 0.01).await;
    let log = k.published(t0);
    assert_eq!(
        log.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
        [Publication::Closed(Closed::Revoked(Revocation::FileEmpty(
            k.path.clone()
        )))]
    );
    assert!(log.iter().all(|(t, _)| *t < settle + 0.01), "{log:?}");
    k.write("sk-2\n");
    k.keys.reread(&k.path);
    until(t0, settle + 0.02).await;
    k.published(t0);
    std::fs::remove_file(&k.path).unwrap();
    k.keys.reread(&k.path);
    until(t0, settle + 0.03).await;
    let log = k.published(t0);
    assert_eq!(
        log.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
        [Publication::Closed(Closed::Revoked(
            Revocation::FileMissing(k.path.clone())
        ))]
    );
    // Nothing is retried for a key that is gone.
    until(t0, 60.0).await;
    assert!(k.published(t0).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_the_reader_and_the_value_it_still_serves() {
    let mut k = keys();
    let t0 = Instant::now();
    k.make_unreadable();
    k.keys.reread(&k.path);
    until(t0, 0.001).await;
    // The same source in a new configuration: the kept key is what gets published.
    let same = k.model.clone();
    k.keys.reload(&same, &k.recorder.sink());
    assert!(
        matches!(
            &k.keys.publications()[..],
            [(_, Publication::Failing { .. })]
        ),
        "{:?}",
        k.keys.publications()
    );
    // A new source is read afresh: nothing to keep.
    let other = k.path.with_extension("other");
    std::fs::create_dir(&other).unwrap();
    k.keys.reload(&model(&other), &k.recorder.sink());
    assert!(matches!(
        &k.keys.publications()[..],
        [(_, Publication::Closed(Closed::Unavailable(_)))]
    ));
}
