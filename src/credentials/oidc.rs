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

// reqwest errors repeat the URL, which the message already names.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(&format!(" for url ({url})"), "");
    }
    s
}
