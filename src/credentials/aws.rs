//! AWS: an OIDC token exchanged at STS `AssumeRoleWithWebIdentity` for temporary credentials,
//! which become Envoy's SigV4 signer config (ECDS).
//!
//! The STS client is built from the policy alone — region, optional endpoint, no credential
//! provider — so no ambient AWS credentials (environment, instance profile) are ever used:
//! the call is anonymous, authenticated by the web identity token.

use super::oidc::TokenGetter;
use super::rotator::{ATTEMPT_TIMEOUT, MintError, Minted, Minter};
use crate::model::{AwsKeys, SecretString, WebIdentity};
use crate::translate::{deny_config, signer_config};
use crate::xds::Resource;
use aws_sdk_sts::config::{BehaviorVersion, Region, retry::RetryConfig, timeout::TimeoutConfig};
use aws_sdk_sts::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use std::sync::Arc;
use std::time::SystemTime;

/// Mints credentials for one AWSCredentials policy.
pub struct AwsMinter {
    name: String,
    region: String,
    identity: WebIdentity,
    token: TokenGetter,
    sts: aws_sdk_sts::Client,
}

impl AwsMinter {
    /// A minter publishing under resource `name`.
    pub fn new(
        name: String,
        region: String,
        sts_endpoint: Option<String>,
        identity: WebIdentity,
        http: reqwest::Client,
    ) -> Self {
        let mut config = aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.clone()))
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
            name,
            region,
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
            resource: signer_config(&self.name, &self.region, &keys),
            expires_at,
        })
    }

    fn deny(&self) -> Arc<Resource> {
        deny_config(&self.name)
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
