//! AWS: an OIDC token exchanged at STS `AssumeRoleWithWebIdentity` for temporary credentials
//! (which Envoy's SigV4 signer uses).
//!
//! The STS client is built from the policy alone — region, optional endpoint, no credential
//! provider — so no ambient AWS credentials (environment, instance profile) are ever used:
//! the call is anonymous, authenticated by the web identity token.

use super::Material;
use super::oidc::TokenGetter;
use super::rotator::{ATTEMPT_TIMEOUT, MintError, Minted, Minter};
use crate::model::{AwsKeys, SecretString, WebIdentity};
use aws_sdk_sts::config::{BehaviorVersion, Region, retry::RetryConfig, timeout::TimeoutConfig};
use aws_sdk_sts::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use std::time::SystemTime;

/// Mints credentials for one AWSCredentials policy.
pub struct AwsMinter {
    identity: WebIdentity,
    token: TokenGetter,
    sts: aws_sdk_sts::Client,
}

impl AwsMinter {
    /// A minter calling STS in `region` (or at `sts_endpoint`).
    pub fn new(
        region: String,
        sts_endpoint: Option<String>,
        identity: WebIdentity,
        http: reqwest::Client,
    ) -> Self {
        let mut config = aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region))
            // The refresh loop owns retries and backoff; one attempt per call here.
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(ATTEMPT_TIMEOUT)
                    .build(),
            );
        if let Some(endpoint) = sts_endpoint {
            config = config.endpoint_url(endpoint);
        }
        Self {
            token: TokenGetter::new(identity.token.clone(), http),
            identity,
            sts: aws_sdk_sts::Client::from_conf(config.build()),
        }
    }
}

impl Minter for AwsMinter {
    async fn mint(&mut self) -> Result<Minted, MintError> {
        let token = self.token.get().await?;
        let out = self
            .sts
            .assume_role_with_web_identity()
            .role_arn(&self.identity.role_arn)
            .role_session_name(&self.identity.session_name)
            .duration_seconds(self.identity.duration_seconds as i32)
            .web_identity_token(token.expose())
            .send()
            .await
            .map_err(describe)?;
        let creds = out
            .credentials()
            .ok_or_else(|| MintError::Sts("the response has no Credentials".into()))?;
        let expires_at = SystemTime::try_from(*creds.expiration())
            .map_err(|e| MintError::Sts(format!("unusable Expiration: {e}")))?;
        let keys = AwsKeys {
            access_key_id: creds.access_key_id().to_owned(),
            secret_access_key: SecretString::new(creds.secret_access_key()),
            session_token: Some(SecretString::new(creds.session_token())),
        };
        Ok(Minted {
            material: Material::Aws(keys),
            expires_at,
        })
    }
}

/// A one-line STS error: status, code and message for service errors (the raw response
/// would be logged whole otherwise), the error chain for transport failures.
fn describe<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    e: SdkError<E, R>,
) -> MintError {
    MintError::Sts(match &e {
        SdkError::ServiceError(se) => format!(
            "{} {}",
            se.err().code().unwrap_or("error"),
            se.err().message().unwrap_or("")
        ),
        _ => DisplayErrorContext(&e).to_string(),
    })
}
