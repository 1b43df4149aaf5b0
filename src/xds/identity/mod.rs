//! Who is on the other end of an xDS stream, as proven by the transport (a verified client
//! certificate) or by a credential on the stream (a Kubernetes ServiceAccount token), never by
//! what the node claims about itself. The ADS server asks the [`Authenticator`] once per
//! stream and then decides which gateway, if any, the identity may receive ([`allows`]).

mod allow;
pub mod cert;
pub mod token;

pub use allow::allows;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
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

// Names only: SANs and account names are not secrets, and they are what an operator needs to
// see in a refusal to fix `xdsClients`.
impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        parts.extend(self.uris.iter().map(|u| format!("uri {u}")));
        parts.extend(self.dns_names.iter().map(|d| format!("dns {d}")));
        if let Some(sa) = &self.service_account {
            parts.push(format!("serviceAccount {}/{}", sa.namespace, sa.name));
        }
        if parts.is_empty() {
            f.write_str("a client with no usable identity")
        } else {
            write!(f, "[{}]", parts.join(", "))
        }
    }
}

/// The outcome of authenticating a new stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Authenticated {
    /// The xDS port does not authenticate clients (plaintext on loopback, or
    /// `--insecure-xds`): anyone who can connect is served by the `node.cluster` it claims.
    #[default]
    Unauthenticated,
    /// A proven identity.
    Peer(PeerIdentity),
}

/// What the transport knows about a connection; tonic hands it to every request on it.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    pub remote: Option<SocketAddr>,
    /// The identity of a verified client certificate (mTLS only).
    pub peer: Option<Arc<PeerIdentity>>,
}

/// Establishes the identity of each new xDS stream.
#[derive(Debug, Default)]
pub struct Authenticator {
    client_certificates: bool,
    /// ServiceAccount tokens on the stream (`serve --xds-token-auth`).
    token: Option<token::TokenAuth>,
}

impl Authenticator {
    /// No client authentication: every stream is [`Authenticated::Unauthenticated`].
    pub fn off() -> Self {
        Self::default()
    }

    /// Streams are proven by the verified client certificate of their connection (mTLS).
    pub fn client_certificates() -> Self {
        Self {
            client_certificates: true,
            token: None,
        }
    }

    /// Streams must also carry a ServiceAccount token the API server's TokenReview accepts
    /// for audience `tessera` (see [`token`]).
    pub fn with_token_review(self, client: kube::Client) -> Self {
        self.with_tokens(token::TokenAuth::new(Arc::new(token::KubeReviewer::new(
            client,
        ))))
    }

    /// Streams must also carry a bearer token that `auth` verifies.
    pub fn with_tokens(mut self, auth: token::TokenAuth) -> Self {
        self.token = Some(auth);
        self
    }

    /// Whether streams must prove an identity (and are then authorised by `xdsClients`).
    pub fn is_on(&self) -> bool {
        self.client_certificates || self.token.is_some()
    }

    /// The identity of the stream whose request metadata and connection extensions are given;
    /// an error refuses the stream.
    pub async fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        extensions: &http::Extensions,
    ) -> Result<Authenticated, Status> {
        if !self.is_on() {
            return Ok(Authenticated::Unauthenticated);
        }
        let mut peer = PeerIdentity::default();
        if self.client_certificates {
            match extensions.get::<ConnInfo>().and_then(|c| c.peer.as_deref()) {
                Some(proven) => peer = proven.clone(),
                None => {
                    return Err(Status::unauthenticated(
                        "xDS clients must present a verified client certificate",
                    ));
                }
            }
        }
        if let Some(token) = &self.token {
            token.prove(metadata, &mut peer).await?;
        }
        Ok(Authenticated::Peer(peer))
    }
}
