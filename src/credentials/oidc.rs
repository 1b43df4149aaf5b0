//! OIDC tokens for web-identity exchanges: a projected token file or a client-credentials
//! grant at an issuer's token endpoint.

use super::rotator::MintError;
use super::static_key::{read_key_file, read_secret};
use crate::model::{OidcClient, OidcEndpoint, SecretString, TokenSource};
use serde::Deserialize;

/// Obtains tokens from one source; remembers the discovered token endpoint.
pub struct TokenGetter {
    source: TokenSource,
    http: reqwest::Client,
    token_endpoint: Option<String>,
}

#[derive(Deserialize)]
struct Discovery {
    token_endpoint: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    id_token: Option<String>,
}

#[derive(Deserialize, Default)]
struct TokenError {
    error: Option<String>,
    error_description: Option<String>,
}

impl TokenGetter {
    /// A getter for `source`, using `http` for grants.
    pub fn new(source: TokenSource, http: reqwest::Client) -> Self {
        Self {
            source,
            http,
            token_endpoint: None,
        }
    }

    /// A token: the file is re-read every time (kubelet rotates it); a grant is made every time
    /// (the token is used once, for one exchange).
    pub async fn get(&mut self) -> Result<SecretString, MintError> {
        match self.source.clone() {
            TokenSource::File(path) => read_key_file(&path).map_err(MintError::TokenFile),
            TokenSource::Oidc(client) => self.grant(&client).await,
        }
    }

    async fn grant(&mut self, client: &OidcClient) -> Result<SecretString, MintError> {
        let endpoint = self.endpoint(&client.endpoint).await?;
        // Discovery is the issuer's word, not the operator's: a discovered token endpoint must
        // be allowed too before the client secret goes there.
        if let Some(allowed) = &client.allowed_token_endpoints
            && !allowed.allows(&endpoint)
        {
            return Err(MintError::Oidc(format!(
                "token endpoint {endpoint:?} is not an endpoint the operator allowed (--allow-endpoint)"
            )));
        }
        let secret = read_secret(&client.client_secret).map_err(MintError::ClientSecret)?;
        let mut form = vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", client.client_id.clone()),
            ("client_secret", secret.expose().to_owned()),
            ("audience", client.audience.clone()),
        ];
        if !client.scopes.is_empty() {
            form.push(("scope", client.scopes.join(" ")));
        }
        let response = self
            .http
            .post(&endpoint)
            .form(&form)
            .send()
            .await
            .map_err(|e| MintError::Oidc(format!("{endpoint}: {}", without_url(&e))))?;
        let status = response.status();
        if !status.is_success() {
            let err: TokenError = response.json().await.unwrap_or_default();
            return Err(MintError::Oidc(format!(
                "{endpoint} answered {status}: {} {}",
                err.error.unwrap_or_default(),
                err.error_description.unwrap_or_default()
            )));
        }
        let body: TokenResponse = response.json().await.map_err(|e| {
            MintError::Oidc(format!(
                "{endpoint}: unreadable token response: {}",
                without_url(&e)
            ))
        })?;
        body.access_token
            .or(body.id_token)
            .filter(|t| !t.is_empty())
            .map(SecretString::new)
            .ok_or_else(|| {
                MintError::Oidc(format!(
                    "{endpoint}: no access_token or id_token in the response"
                ))
            })
    }

    async fn endpoint(&mut self, endpoint: &OidcEndpoint) -> Result<String, MintError> {
        let issuer = match endpoint {
            OidcEndpoint::TokenEndpoint(url) => return Ok(url.clone()),
            OidcEndpoint::Issuer(issuer) => issuer,
        };
        if let Some(cached) = &self.token_endpoint {
            return Ok(cached.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let discovery: Discovery = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| MintError::Oidc(format!("discovery at {url}: {}", without_url(&e))))?
            .json()
            .await
            .map_err(|e| MintError::Oidc(format!("discovery at {url}: {}", without_url(&e))))?;
        self.token_endpoint = Some(discovery.token_endpoint.clone());
        Ok(discovery.token_endpoint)
    }
}

/// The HTTP client for identity providers (OIDC, Entra): one attempt's timeout, and no
/// redirects, since a token request carries a secret that a redirect would take elsewhere.
pub fn identity_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(super::rotator::ATTEMPT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

// reqwest errors repeat the URL, which the message already names.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(&format!(" for url ({url})"), "");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AllowedEndpoints, KeySource};
    use axum::Router;
    use axum::routing::{get, post};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Serves `router` on a loopback port; returns its base URL.
    async fn serve(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{addr}")
    }

    /// A token endpoint that counts the grants it receives.
    async fn counting_token_endpoint() -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let base = serve(Router::new().route(
            "/token",
            post(move || {
                h.fetch_add(1, Ordering::SeqCst);
                async { axum::Json(serde_json::json!({"access_token": "stolen"})) }
            }),
        ))
        .await;
        (base, hits)
    }

    fn getter(endpoint: OidcEndpoint, allowed: &[&str], dir: &std::path::Path) -> TokenGetter {
        let secret = dir.join("client-secret");
        std::fs::write(&secret, "s3cret").unwrap();
        let client = OidcClient {
            endpoint,
            client_id: "c".into(),
            client_secret: KeySource::File(secret),
            scopes: vec![],
            audience: "a".into(),
            allowed_token_endpoints: Some(Box::new(AllowedEndpoints::parse(allowed).unwrap())),
        };
        TokenGetter::new(TokenSource::Oidc(client), identity_client().unwrap())
    }

    #[tokio::test]
    async fn a_discovered_token_endpoint_must_be_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let (evil, hits) = counting_token_endpoint().await;
        let discovery = serde_json::json!({"token_endpoint": format!("{evil}/token")});
        let issuer = serve(Router::new().route(
            "/.well-known/openid-configuration",
            get(move || async move { axum::Json(discovery) }),
        ))
        .await;
        let mut g = getter(OidcEndpoint::Issuer(issuer.clone()), &[&issuer], dir.path());
        let err = g.get().await.err().unwrap().to_string();
        assert!(err.contains("--allow-endpoint"), "{err}");
        assert_eq!(hits.load(Ordering::SeqCst), 0, "no secret was sent");
    }

    #[tokio::test]
    async fn token_requests_follow_no_redirect() {
        let dir = tempfile::tempdir().unwrap();
        let (evil, hits) = counting_token_endpoint().await;
        let target = format!("{evil}/token");
        let redirecting = serve(Router::new().route(
            "/token",
            post(move || async move { axum::response::Redirect::temporary(&target) }),
        ))
        .await;
        let endpoint = OidcEndpoint::TokenEndpoint(format!("{redirecting}/token"));
        let mut g = getter(endpoint, &[&redirecting, &evil], dir.path());
        assert!(g.get().await.is_err(), "a redirect is an error");
        assert_eq!(
            hits.load(Ordering::SeqCst),
            0,
            "the redirect was not followed"
        );
    }
}
