use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A reviewer answering from a table (by token), counting its calls.
struct Fake {
    answers: HashMap<String, Result<Review, String>>,
    calls: AtomicUsize,
}

#[async_trait]
impl Reviewer for Fake {
    async fn review(&self, token: &str) -> Result<Review, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.answers
            .get(token)
            .cloned()
            .unwrap_or(Ok(Review::Refused {
                reason: "unknown".into(),
            }))
    }
}

fn jwt(claims: serde_json::Value) -> String {
    let enc = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    format!(
        "{}.{}.c2ln",
        enc(&serde_json::json!({"alg": "RS256"})),
        enc(&claims)
    )
}

const NOW: u64 = 1_800_000_000;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn accepted(user: &str) -> Result<Review, String> {
    Ok(Review::Accepted {
        username: user.into(),
    })
}

fn auth(answers: &[(&str, Result<Review, String>)]) -> (TokenAuth, Arc<Fake>) {
    let fake = Arc::new(Fake {
        answers: answers
            .iter()
            .map(|(t, a)| (t.to_string(), a.clone()))
            .collect(),
        calls: AtomicUsize::new(0),
    });
    (TokenAuth::new(fake.clone()), fake)
}

fn account(namespace: &str, name: &str) -> ServiceAccountRef {
    ServiceAccountRef {
        namespace: namespace.into(),
        name: name.into(),
    }
}

#[test]
fn service_account_user_names_parse_and_nothing_else_does() {
    assert_eq!(
        service_account("system:serviceaccount:payments:envoy"),
        Some(account("payments", "envoy"))
    );
    for other in [
        "system:serviceaccount:payments",
        "system:serviceaccount::envoy",
        "system:serviceaccount:payments:",
        "system:serviceaccount:a:b:c",
        "system:node:worker-1",
        "alice",
        "",
    ] {
        assert_eq!(service_account(other), None, "{other}");
    }
}

#[test]
fn bearer_metadata_is_required_and_parsed() {
    let mut md = MetadataMap::new();
    assert_eq!(bearer(&md), Err(TokenError::Missing));
    md.insert("authorization", "Basic abc".parse().unwrap());
    assert!(matches!(bearer(&md), Err(TokenError::Malformed(_))));
    md.insert("authorization", "Bearer ".parse().unwrap());
    assert!(matches!(bearer(&md), Err(TokenError::Malformed(_))));
    md.insert("authorization", "Bearer a.b.c".parse().unwrap());
    assert_eq!(bearer(&md), Ok("a.b.c"));
    md.insert("authorization", "bearer a.b.c".parse().unwrap());
    assert_eq!(bearer(&md), Ok("a.b.c"));
}

#[test]
fn expiry_is_read_from_the_payload_and_junk_is_malformed() {
    let token = jwt(serde_json::json!({"exp": NOW, "sub": "x"}));
    assert_eq!(expiry(&token), Ok(Some(at(NOW))));
    assert_eq!(expiry(&jwt(serde_json::json!({"sub": "x"}))), Ok(None));
    for junk in ["abc", "a.b", "a.b.c.d", "a.!!!.c", "a.bm90IGpzb24.c"] {
        assert!(
            matches!(expiry(junk), Err(TokenError::Malformed(_))),
            "{junk}"
        );
    }
}

#[tokio::test]
async fn a_positive_review_is_cached_until_shortly_before_expiry() {
    let token = jwt(serde_json::json!({"exp": NOW + 120}));
    let (auth, fake) = auth(&[(&token, accepted("system:serviceaccount:team-a:envoy"))]);
    let verified = auth.verify_at(&token, at(NOW)).await.unwrap();
    assert_eq!(verified.account, account("team-a", "envoy"));
    assert_eq!(verified.expires, Some(at(NOW + 120)));
    // Reused while more than the margin is left ...
    auth.verify_at(&token, at(NOW + 89)).await.unwrap();
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    // ... and asked again once it is not.
    auth.verify_at(&token, at(NOW + 90)).await.unwrap();
    assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_long_lived_token_is_reviewed_again_after_the_cap() {
    let token = jwt(serde_json::json!({"exp": NOW + 86_400}));
    let (auth, fake) = auth(&[(&token, accepted("system:serviceaccount:team-a:envoy"))]);
    auth.verify_at(&token, at(NOW)).await.unwrap();
    auth.verify_at(&token, at(NOW + MAX_CACHE.as_secs() - 1))
        .await
        .unwrap();
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    auth.verify_at(&token, at(NOW + MAX_CACHE.as_secs()))
        .await
        .unwrap();
    assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_token_close_to_expiry_is_not_cached() {
    let token = jwt(serde_json::json!({"exp": NOW + 10}));
    let (auth, fake) = auth(&[(&token, accepted("system:serviceaccount:team-a:envoy"))]);
    auth.verify_at(&token, at(NOW)).await.unwrap();
    auth.verify_at(&token, at(NOW)).await.unwrap();
    assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
    assert_eq!(auth.cache_len(), 0);
}

#[tokio::test]
async fn refusals_are_cached_briefly_and_failures_not_at_all() {
    let refused = jwt(serde_json::json!({"exp": NOW + 600, "n": 1}));
    let failing = jwt(serde_json::json!({"exp": NOW + 600, "n": 2}));
    let (auth, fake) = auth(&[
        (
            &refused,
            Ok(Review::Refused {
                reason: "token has expired".into(),
            }),
        ),
        (&failing, Err("connection refused".into())),
    ]);
    let e = auth.verify_at(&refused, at(NOW)).await.unwrap_err();
    assert_eq!(e, TokenError::Refused("token has expired".into()));
    assert_eq!(Status::from(e).code(), tonic::Code::Unauthenticated);
    auth.verify_at(&refused, at(NOW + 4)).await.unwrap_err();
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    auth.verify_at(&refused, at(NOW + 5)).await.unwrap_err();
    assert_eq!(fake.calls.load(Ordering::SeqCst), 2);

    for _ in 0..2 {
        let e = auth.verify_at(&failing, at(NOW)).await.unwrap_err();
        assert!(matches!(e, TokenError::Unavailable(_)), "{e:?}");
        assert_eq!(Status::from(e).code(), tonic::Code::Unavailable);
    }
    assert_eq!(fake.calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_user_that_is_not_a_service_account_is_refused() {
    let token = jwt(serde_json::json!({"exp": NOW + 600}));
    let (auth, _) = auth(&[(&token, accepted("system:node:worker-1"))]);
    let e = auth.verify_at(&token, at(NOW)).await.unwrap_err();
    assert_eq!(
        e,
        TokenError::NotServiceAccount("system:node:worker-1".into())
    );
}

#[tokio::test]
async fn malformed_and_oversized_tokens_are_refused_without_a_review() {
    let (auth, fake) = auth(&[]);
    for token in ["opaque".to_string(), "a.".repeat(MAX_TOKEN_BYTES)] {
        let e = auth.verify_at(&token, at(NOW)).await.unwrap_err();
        assert!(matches!(e, TokenError::Malformed(_)), "{e:?}");
        assert_eq!(Status::from(e).code(), tonic::Code::Unauthenticated);
    }
    assert_eq!(fake.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn errors_never_carry_the_token() {
    let token = jwt(serde_json::json!({"exp": NOW + 600, "secret": "s3cr3t"}));
    let (auth, _) = auth(&[]);
    let e = auth.verify_at(&token, at(NOW)).await.unwrap_err();
    let shown = format!("{e} {e:?} {}", Status::from(e.clone()).message());
    assert!(!shown.contains(&token), "{shown}");
    assert!(!format!("{auth:?}").contains(&token));
}

#[test]
fn a_stream_lives_until_a_minute_before_expiry_less_jitter() {
    let now = at(NOW);
    let ten_minutes = at(NOW + 600);
    assert_eq!(
        stream_lifetime(ten_minutes, now, 0.0),
        Duration::from_secs(540)
    );
    // Spread over a tenth of the remaining time, at most 30 s.
    assert_eq!(
        stream_lifetime(at(NOW + 160), now, 0.5),
        Duration::from_secs(100 - 5)
    );
    assert_eq!(
        stream_lifetime(ten_minutes, now, 0.5),
        Duration::from_secs(540 - 15)
    );
    assert_eq!(
        stream_lifetime(at(NOW + 86_400), now, 0.999_999).as_secs(),
        86_400 - 60 - 30
    );
    // A token about to expire (or expired by the local clock) still gets a short stream.
    assert_eq!(stream_lifetime(at(NOW + 30), now, 0.0), MIN_STREAM_LIFE);
    assert_eq!(stream_lifetime(at(NOW - 30), now, 0.3), MIN_STREAM_LIFE);
}

#[tokio::test(start_paused = true)]
async fn a_reauthenticated_stream_ends_at_its_deadline() {
    use futures::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel::<u32>(4);
    let mut stream = UntilReauth::new(
        tokio_stream::wrappers::ReceiverStream::new(rx),
        Some(Duration::from_secs(60)),
    );
    tx.send(1).await.unwrap();
    assert_eq!(stream.next().await, Some(1));
    tokio::time::advance(Duration::from_secs(59)).await;
    tx.send(2).await.unwrap();
    assert_eq!(stream.next().await, Some(2));
    tokio::time::advance(Duration::from_secs(1)).await;
    tx.send(3).await.unwrap();
    assert_eq!(stream.next().await, None, "ended although items wait");

    let (tx, rx) = tokio::sync::mpsc::channel::<u32>(4);
    let mut forever = UntilReauth::new(tokio_stream::wrappers::ReceiverStream::new(rx), None);
    tokio::time::advance(Duration::from_secs(86_400)).await;
    tx.send(4).await.unwrap();
    assert_eq!(forever.next().await, Some(4));
}

#[tokio::test]
async fn a_token_adds_its_account_and_the_earlier_expiry_to_what_a_certificate_proved() {
    let token = jwt(serde_json::json!({"exp": NOW + 600}));
    let (auth, _) = auth(&[(&token, accepted("system:serviceaccount:team-a:envoy"))]);
    let mut md = MetadataMap::new();
    md.insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut peer = PeerIdentity {
        uris: vec!["spiffe://corp/ns/team-a/sa/envoy".into()],
        expires: Some(at(NOW + 60)),
        ..PeerIdentity::default()
    };
    // prove() reads the real clock; the fake reviewer answers whatever the time.
    auth.prove(&md, &mut peer).await.unwrap();
    assert_eq!(peer.service_account, Some(account("team-a", "envoy")));
    assert_eq!(peer.uris.len(), 1);
    assert_eq!(peer.expires, Some(at(NOW + 60)));

    let mut bare = PeerIdentity::default();
    auth.prove(&md, &mut bare).await.unwrap();
    assert_eq!(bare.expires, Some(at(NOW + 600)));
    assert_eq!(
        auth.prove(&MetadataMap::new(), &mut bare).await,
        Err(TokenError::Missing)
    );
}
