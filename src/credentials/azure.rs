//! Azure: Entra ID access tokens for Azure OpenAI (sent as `Authorization: Bearer`).
//!
//! `azure_identity` credentials cache their token and hand the cached one back until shortly
//! before expiry, so a refresh that reused one would "succeed" with the old token. Every mint
//! builds a fresh credential object: each refresh is a real token request.

use super::Material;
use super::oidc::TokenGetter;
use super::rotator::{MintError, Minted, Minter};
use super::static_key::read_secret;
use crate::model::{AzureAuth, AzureCredentials, SecretString};
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientMethodOptions, ClientOptions, RetryOptions, Transport};
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions,
};
use std::sync::Arc;
use std::time::SystemTime;

/// Mints tokens for one AzureCredentials policy.
pub struct AzureMinter {
    spec: AzureCredentials,
    transport: Transport,
    assertion: Option<TokenGetter>,
}

impl AzureMinter {
    /// A minter for `spec`; fails if the extra CA is unusable.
    pub fn new(spec: AzureCredentials, http: reqwest::Client) -> Result<Self, MintError> {
        let client = match &spec.ca_pem {
            // The authority's own CA (a private sovereign cloud, tests) beside the system roots.
            Some(pem) => {
                let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                    .map_err(|e| MintError::Setup(format!("caFile: {e}")))?;
                reqwest::Client::builder()
                    .tls_certs_merge(certs)
                    // A token request follows no redirect: it would carry the secret elsewhere.
                    .redirect(reqwest::redirect::Policy::none())
                    .timeout(super::rotator::ATTEMPT_TIMEOUT)
                    .build()
                    .map_err(|e| MintError::Setup(format!("HTTP client: {e}")))?
            }
            None => http.clone(),
        };
        let assertion = match &spec.auth {
            AzureAuth::Federated(source) => Some(TokenGetter::new(source.clone(), http)),
            AzureAuth::ClientSecret(_) => None,
        };
        Ok(Self {
            spec,
            transport: Transport::new(Arc::new(client)),
            assertion,
        })
    }

    fn client_options(&self) -> ClientOptions {
        let mut cloud = CustomConfiguration::default();
        cloud.authority_host = self.spec.authority_host.clone();
        ClientOptions {
            cloud: Some(Arc::new(CloudConfiguration::from(cloud))),
            transport: Some(self.transport.clone()),
            // The refresh loop owns retries and backoff.
            retry: RetryOptions::none(),
            ..Default::default()
        }
    }
}

/// A client assertion obtained before the credential is built (one per refresh).
#[derive(Debug)]
struct Assertion(SecretString);

#[async_trait::async_trait]
impl ClientAssertion for Assertion {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        Ok(self.0.expose().to_owned())
    }
}

fn entra_error(e: azure_core::Error) -> MintError {
    // azure_identity's messages carry Entra's AADSTS code and description, never the secret.
    MintError::Entra(e.to_string())
}

impl Minter for AzureMinter {
    async fn mint(&mut self) -> Result<Minted, MintError> {
        let scopes = [self.spec.scope.as_str()];
        let credential: Arc<dyn TokenCredential> = match &self.spec.auth {
            AzureAuth::ClientSecret(source) => {
                let secret = read_secret(source).map_err(MintError::ClientSecret)?;
                let options = ClientSecretCredentialOptions {
                    client_options: self.client_options(),
                };
                ClientSecretCredential::new(
                    &self.spec.tenant_id,
                    self.spec.client_id.clone(),
                    Secret::new(secret.expose().to_owned()),
                    Some(options),
                )
                .map_err(entra_error)?
            }
            AzureAuth::Federated(_) => {
                let token = match self.assertion.as_mut() {
                    Some(getter) => getter.get().await?,
                    None => return Err(MintError::Setup("no assertion source".into())),
                };
                let options = ClientAssertionCredentialOptions {
                    client_options: self.client_options(),
                };
                ClientAssertionCredential::new(
                    self.spec.tenant_id.clone(),
                    self.spec.client_id.clone(),
                    Assertion(token),
                    Some(options),
                )
                .map_err(entra_error)?
            }
        };
        let token = credential
            .get_token(&scopes, None)
            .await
            .map_err(entra_error)?;
        let value = SecretString::new(token.token.secret());
        Ok(Minted {
            material: Material::Bearer(value),
            expires_at: SystemTime::from(token.expires_on),
        })
    }
}
