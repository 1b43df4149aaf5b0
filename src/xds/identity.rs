//! Who is on the other end of an xDS stream, as proven by the transport (a verified client
//! certificate) or by a credential on the stream (a Kubernetes ServiceAccount token), never by
//! what the node claims about itself. The ADS server asks the [`Authenticator`] once per
//! stream and then decides which gateway, if any, the identity may receive.

use tonic::Status;

/// A Kubernetes ServiceAccount.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceAccountRef {
    pub namespace: String,
    pub name: String,
}

/// What an xDS client proved about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// URI SANs of its verified client certificate (SPIFFE IDs, for instance).
    pub uris: Vec<String>,
    /// DNS SANs of its verified client certificate.
    pub dns_names: Vec<String>,
    /// The ServiceAccount of a bearer token the API server's TokenReview accepted.
    pub service_account: Option<ServiceAccountRef>,
    /// When the proof stops being valid (a token's `exp`): the stream is closed before, and
    /// Envoy reconnects with a fresh proof.
    pub expires: Option<std::time::SystemTime>,
}

/// The outcome of authenticating a new stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authenticated {
    /// The xDS port does not authenticate clients (plaintext on loopback, or
    /// `--insecure-xds`): anyone who can connect is served by the `node.cluster` it claims.
    Unauthenticated,
    /// A proven identity.
    Peer(PeerIdentity),
}

/// Establishes the identity of each new xDS stream.
#[derive(Debug, Default)]
pub struct Authenticator {
    /// ServiceAccount tokens on the stream (`serve --xds-token-auth`).
    token: Option<super::token::TokenAuth>,
}

impl Authenticator {
    /// No client authentication: every stream is [`Authenticated::Unauthenticated`].
    pub fn off() -> Self {
        Self::default()
    }

    /// The identity of the stream whose request metadata and connection extensions are given;
    /// an error refuses the stream.
    pub async fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        _extensions: &http::Extensions,
    ) -> Result<Authenticated, Status> {
        let Some(token) = &self.token else {
            return Ok(Authenticated::Unauthenticated);
        };
        let mut peer = PeerIdentity::default();
        token.prove(metadata, &mut peer).await?;
        Ok(Authenticated::Peer(peer))
    }

    /// Every stream must carry a ServiceAccount token the API server's TokenReview accepts
    /// for audience `tessera` (see [`super::token`]).
    pub fn with_token_review(client: kube::Client) -> Self {
        Self::with_tokens(super::token::TokenAuth::new(std::sync::Arc::new(
            super::token::KubeReviewer::new(client),
        )))
    }

    /// Every stream must carry a bearer token that `auth` verifies.
    pub fn with_tokens(auth: super::token::TokenAuth) -> Self {
        Self { token: Some(auth) }
    }

    /// Whether streams must prove who they are.
    pub fn is_on(&self) -> bool {
        self.token.is_some()
    }
}
