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
    _private: (),
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
        _metadata: &tonic::metadata::MetadataMap,
        _extensions: &http::Extensions,
    ) -> Result<Authenticated, Status> {
        Ok(Authenticated::Unauthenticated)
    }
}
