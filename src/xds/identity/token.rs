//! Kubernetes ServiceAccount tokens on the ADS stream: Envoy sends its projected token
//! (audience [`AUDIENCE`]) as `authorization: Bearer <jwt>` metadata, and the API server's
//! TokenReview says whose it is. Tessera never checks a signature itself: the API server is the
//! one authority on its tokens (keys, issuers, revocation of bound tokens).
//!
//! Reviews are cached by a hash of the token, a positive answer until shortly before the
//! token's `exp` (read from the payload only to bound the cache, never trusted for anything
//! else) and never for more than [`MAX_CACHE`]; a refusal for a few seconds; an API server
//! failure not at all.

use super::{PeerIdentity, ServiceAccountRef};
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::Status;
use tonic::metadata::MetadataMap;

/// The audience Envoy's projected token must be issued for.
pub const AUDIENCE: &str = "tessera";
/// The longest a positive review is reused without asking the API server again (a deleted
/// ServiceAccount's bound token stops working within this).
pub const MAX_CACHE: Duration = Duration::from_secs(300);
/// A positive review is forgotten this long before the token expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// Without a readable `exp`, a positive review is reused for at most this long.
const NO_EXP_CACHE: Duration = Duration::from_secs(60);
/// A refused token is answered from the cache this long, so a reconnecting Envoy with a bad
/// token does not turn into a stream of TokenReviews.
const REFUSAL_CACHE: Duration = Duration::from_secs(5);
/// Longer than any ServiceAccount JWT; larger values are refused before any review.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Entries beyond this are not cached (after dropping expired ones): memory stays bounded
/// whatever tokens clients send.
const MAX_ENTRIES: usize = 16 * 1024;

const SA_PREFIX: &str = "system:serviceaccount:";

/// What the API server said about a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Review {
    /// Authenticated for [`AUDIENCE`], as this user name.
    Accepted { username: String },
    /// Not authenticated (invalid, expired, wrong audience, revoked); the API server's reason.
    Refused { reason: String },
}

/// Asks the API server about a token.
#[async_trait]
pub trait Reviewer: Send + Sync {
    /// Reviews `token` for [`AUDIENCE`]; an error means no answer (the API server failed).
    async fn review(&self, token: &str) -> Result<Review, String>;
}

/// TokenReview through a kube client (needs `tokenreviews: create`).
pub struct KubeReviewer {
    api: Api<TokenReview>,
}

impl KubeReviewer {
    /// Reviews with `client`'s credentials.
    pub fn new(client: kube::Client) -> Self {
        Self {
            api: Api::all(client),
        }
    }
}

#[async_trait]
impl Reviewer for KubeReviewer {
    async fn review(&self, token: &str) -> Result<Review, String> {
        let request = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![AUDIENCE.to_owned()]),
            },
            ..Default::default()
        };
        // kube's errors describe the HTTP exchange, never the request body.
        let answer = self
            .api
            .create(&PostParams::default(), &request)
            .await
            .map_err(|e| format!("TokenReview failed: {e}"))?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let reason = status.error.unwrap_or_else(|| "not authenticated".into());
            return Ok(Review::Refused { reason });
        }
        // An audience-unaware authenticator would accept a token for any audience; the API
        // documents that a reviewer asking for audiences must find one of them echoed back.
        if !status
            .audiences
            .unwrap_or_default()
            .iter()
            .any(|a| a == AUDIENCE)
        {
            return Ok(Review::Refused {
                reason: format!("the token is not for audience {AUDIENCE:?}"),
            });
        }
        match status.user.and_then(|u| u.username) {
            Some(username) => Ok(Review::Accepted { username }),
            None => Err("TokenReview authenticated the token but named no user".into()),
        }
    }
}

/// Why a stream's token was not accepted. Never carries the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no `authorization: Bearer <token>` metadata on the stream")]
    Missing,
    #[error("the bearer token is malformed: {0}")]
    Malformed(&'static str),
    #[error("the bearer token was refused: {0}")]
    Refused(String),
    #[error("the bearer token belongs to {0:?}, not a ServiceAccount")]
    NotServiceAccount(String),
    #[error("the bearer token cannot be checked now: {0}")]
    Unavailable(String),
}

impl From<TokenError> for Status {
    fn from(e: TokenError) -> Status {
        match e {
            // Envoy retries with backoff; the token may be fine.
            TokenError::Unavailable(_) => Status::unavailable(e.to_string()),
            _ => Status::unauthenticated(e.to_string()),
        }
    }
}

/// A token the API server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub account: ServiceAccountRef,
    /// The token's `exp` as it claims it (the API server checked it was in the future).
    pub expires: Option<SystemTime>,
}

#[derive(Debug, Clone)]
struct Entry {
    outcome: Result<Verified, TokenError>,
    until: SystemTime,
}

/// Verifies bearer tokens with a [`Reviewer`], caching answers.
pub struct TokenAuth {
    reviewer: Arc<dyn Reviewer>,
    cache: Mutex<HashMap<[u8; 32], Entry>>,
}

impl std::fmt::Debug for TokenAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuth").finish_non_exhaustive()
    }
}

impl TokenAuth {
    /// Verifies with `reviewer`.
    pub fn new(reviewer: Arc<dyn Reviewer>) -> Self {
        Self {
            reviewer,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Verifies the bearer token in a stream's metadata.
    pub async fn authenticate(&self, metadata: &MetadataMap) -> Result<Verified, TokenError> {
        let token = bearer(metadata)?;
        self.verify_at(token, SystemTime::now()).await
    }

    /// Adds what the stream's token proves to `peer` (which may already hold what a client
    /// certificate proved): its ServiceAccount, and its expiry as the end of the proof.
    pub async fn prove(
        &self,
        metadata: &MetadataMap,
        peer: &mut PeerIdentity,
    ) -> Result<(), TokenError> {
        let verified = self.authenticate(metadata).await?;
        peer.service_account = Some(verified.account);
        peer.expires = match (peer.expires, verified.expires) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(())
    }

    /// Verifies `token` as of `now`.
    pub async fn verify_at(&self, token: &str, now: SystemTime) -> Result<Verified, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed(
                "longer than any ServiceAccount token",
            ));
        }
        let expires = expiry(token)?;
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.cached(&key, now) {
            return hit;
        }
        let outcome = match self.reviewer.review(token).await {
            Err(why) => return Err(TokenError::Unavailable(why)),
            Ok(Review::Refused { reason }) => Err(TokenError::Refused(reason)),
            Ok(Review::Accepted { username }) => service_account(&username)
                .map(|account| Verified { account, expires })
                .ok_or(TokenError::NotServiceAccount(username)),
        };
        if let Some(until) = cache_until(&outcome, now) {
            self.remember(key, outcome.clone(), until, now);
        }
        outcome
    }

    fn cached(&self, key: &[u8; 32], now: SystemTime) -> Option<Result<Verified, TokenError>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(key)
            .filter(|e| e.until > now)
            .map(|e| e.outcome.clone())
    }

    fn remember(
        &self,
        key: [u8; 32],
        outcome: Result<Verified, TokenError>,
        until: SystemTime,
        now: SystemTime,
    ) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_ENTRIES {
            cache.retain(|_, e| e.until > now);
        }
        if cache.len() < MAX_ENTRIES {
            cache.insert(key, Entry { outcome, until });
        }
    }

    #[cfg(test)]
    fn cache_len(&self) -> usize {
        self.cache.lock().unwrap().len()
    }
}

/// Until when an outcome may be answered from the cache; None: not at all.
fn cache_until(outcome: &Result<Verified, TokenError>, now: SystemTime) -> Option<SystemTime> {
    match outcome {
        Ok(v) => {
            let cap = match v.expires {
                Some(exp) => exp
                    .checked_sub(EXPIRY_MARGIN)?
                    .duration_since(now)
                    .ok()?
                    .min(MAX_CACHE),
                None => NO_EXP_CACHE,
            };
            Some(now + cap)
        }
        Err(TokenError::Refused(_) | TokenError::NotServiceAccount(_)) => Some(now + REFUSAL_CACHE),
        Err(_) => None,
    }
}

/// The token of `authorization: Bearer <token>`.
fn bearer(metadata: &MetadataMap) -> Result<&str, TokenError> {
    let value = metadata.get("authorization").ok_or(TokenError::Missing)?;
    let value = value
        .to_str()
        .map_err(|_| TokenError::Malformed("not ASCII"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(TokenError::Malformed("not `Bearer <token>`"))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(TokenError::Malformed("not `Bearer <token>`"));
    }
    Ok(token)
}

/// The `exp` claim of a JWT, unverified: used only to bound how long a review is cached.
fn expiry(token: &str) -> Result<Option<SystemTime>, TokenError> {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed(
            "not a JWT (three dot-separated parts)",
        ));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed("the JWT payload is not base64url"))?;
    #[derive(serde::Deserialize)]
    struct Claims {
        exp: Option<serde_json::Number>,
    }
    let claims: Claims = serde_json::from_slice(&bytes)
        .map_err(|_| TokenError::Malformed("the JWT payload is not a JSON object"))?;
    Ok(claims
        .exp
        .and_then(|n| n.as_u64())
        .and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs))))
}

/// `system:serviceaccount:<namespace>:<name>` → the account; None for any other user.
pub fn service_account(username: &str) -> Option<ServiceAccountRef> {
    let (namespace, name) = username.strip_prefix(SA_PREFIX)?.split_once(':')?;
    if namespace.is_empty() || name.is_empty() || name.contains(':') {
        return None;
    }
    Some(ServiceAccountRef {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

/// How long before a token's expiry its stream is closed, so Envoy reconnects with the token
/// the kubelet has rotated in by then (it rewrites a projected token at 80 % of its lifetime,
/// at the latest 2 minutes before expiry of the shortest, 10-minute, token).
pub const REAUTH_BEFORE_EXPIRY: Duration = Duration::from_secs(60);
/// A stream whose token expires sooner than this is still served this long first.
const MIN_STREAM_LIFE: Duration = Duration::from_secs(5);

/// How long a stream authenticated by a token expiring at `expires` may stay open: until
/// [`REAUTH_BEFORE_EXPIRY`] before it, less a jitter of up to a tenth of that time (at most
/// 30 s) so that Envoys given tokens at the same moment do not all reconnect at once. `jitter`
/// is in [0, 1).
pub fn stream_lifetime(expires: SystemTime, now: SystemTime, jitter: f64) -> Duration {
    let until = expires
        .checked_sub(REAUTH_BEFORE_EXPIRY)
        .and_then(|t| t.duration_since(now).ok())
        .unwrap_or_default();
    let spread = (until / 10).min(Duration::from_secs(30));
    until
        .saturating_sub(spread.mul_f64(jitter.clamp(0.0, 1.0)))
        .max(MIN_STREAM_LIFE)
}

/// A response stream that ends (gRPC status OK) once its deadline passes. Envoy then opens a
/// new stream at once, keeping all its configuration, and presents its current token, which
/// is reviewed again: a stream is never served longer than the proof it started with.
pub struct UntilReauth<S> {
    inner: S,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S> UntilReauth<S> {
    /// Ends `inner` after `lifetime`; None: never.
    pub fn new(inner: S, lifetime: Option<Duration>) -> Self {
        Self {
            inner,
            deadline: lifetime.map(|d| Box::pin(tokio::time::sleep(d))),
        }
    }
}

impl<S: futures::Stream + Unpin> futures::Stream for UntilReauth<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        if let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return std::task::Poll::Ready(None);
        }
        std::pin::Pin::new(&mut self.inner).poll_next(cx)
    }
}

#[cfg(test)]
mod tests;
