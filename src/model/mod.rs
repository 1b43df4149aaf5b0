//! The validated domain model: plain data, cross-references already resolved.
//!
//! Sources (YAML files, Kubernetes objects) produce a [`Model`]; `translate` turns it into Envoy
//! resources. Nothing here does I/O or knows about protobuf.

mod endpoints;
mod secret;

pub use endpoints::{AllowedEndpoints, BadAllowedEndpoint};
pub use secret::SecretString;

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Everything one configuration source currently defines, keyed by `metadata.name`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Model {
    pub gateways: BTreeMap<String, Gateway>,
    pub backends: BTreeMap<String, Backend>,
    pub policies: BTreeMap<String, SecurityPolicy>,
    pub routes: BTreeMap<String, Route>,
}

/// A set of Envoy listeners served to every node whose `node.cluster` equals `node_cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gateway {
    pub name: String,
    pub node_cluster: String,
    pub listeners: Vec<Listener>,
    /// CA bundle on the Envoy host used for https backends without their own `caFile`.
    pub ca_bundle_path: String,
    /// Who may receive this gateway's configuration when xDS clients are authenticated.
    pub xds_clients: Vec<XdsClient>,
    /// Who may use the gateway; `None`: anyone who reaches a listener.
    pub client_auth: Option<ClientAuth>,
}

/// A proven xDS client identity a gateway is served to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum XdsClient {
    /// A URI SAN of the client certificate, matched exactly.
    Spiffe(String),
    /// A DNS SAN of the client certificate; `*.rest` matches exactly one label before `rest`.
    DnsName(String),
    /// A Kubernetes ServiceAccount proven by a reviewed token.
    ServiceAccount { namespace: String, name: String },
}

impl Gateway {
    /// The name its client keys are published under as a credential, beside policy names.
    /// Kubernetes model names are `<ns>/<name>`, so a second `/` names no policy; in file mode
    /// only a policy literally named `<gateway>/clients` would collide.
    pub fn client_keys_credential(&self) -> String {
        format!("{}/clients", self.name)
    }
}

/// Client authentication of a gateway: API keys, JWTs or both (either authenticates).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientAuth {
    pub api_keys: Option<ClientKeySource>,
    pub jwt: Option<Jwt>,
    /// The operator's header for forwarding the authenticated client id to backends.
    pub client_id_header: Option<String>,
}

/// Where a gateway's client keys (client id -> key) come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ClientKeySource {
    /// A YAML map client id -> key, watched; missing means every key is revoked.
    File(PathBuf),
    /// A `v1 Secret` whose data maps client ids to keys; `keys` is `None` when it is gone.
    Secret {
        name: String,
        keys: Option<BTreeMap<String, SecretString>>,
    },
}

/// JWTs of one issuer; `client_claim` names the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Jwt {
    pub issuer: String,
    /// Accepted audiences; empty: any.
    pub audiences: Vec<String>,
    pub jwks: Jwks,
    pub client_claim: String,
}

/// Where the issuer's signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Jwks {
    /// Fetched (and cached) by Envoy from `uri`, served by `endpoint`.
    Remote {
        uri: String,
        endpoint: Endpoint,
        tls: Option<UpstreamTls>,
    },
    /// The JWKS document itself, read by Tessera at load.
    Inline(String),
}

/// One listening socket of a gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listener {
    pub name: String,
    pub address: String,
    pub port: u16,
    /// Largest request body Envoy buffers; bigger ones get a 413.
    pub max_request_bytes: u32,
}

/// The LLM provider a backend speaks to; decides the default credential header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Provider {
    OpenAI,
    AzureOpenAI,
    Anthropic,
    GoogleGemini,
    Mistral,
    AWSBedrock,
    Generic,
}

/// Every header a client could use to smuggle a credential to a provider, and every header
/// a provider's credential goes in: a retry carries what the previous attempt's cluster set.
pub const CLIENT_CREDENTIAL_HEADERS: [&str; 4] =
    ["authorization", "api-key", "x-api-key", "x-goog-api-key"];

/// Prefix of the SigV4 headers (`x-amz-date`, `x-amz-security-token`, ...).
pub const SIGV4_HEADER_PREFIX: &str = "x-amz-";

/// Every provider's fixed headers, stripped on clusters of other providers.
pub const PROVIDER_FIXED_HEADERS: [&str; 1] = ["anthropic-version"];

impl Provider {
    /// The header an API key goes in for this provider, and the prefix before the key.
    pub fn api_key_header(self) -> (&'static str, &'static str) {
        match self {
            Provider::OpenAI | Provider::Mistral | Provider::Generic | Provider::AWSBedrock => {
                ("authorization", "Bearer ")
            }
            Provider::AzureOpenAI => ("api-key", ""),
            Provider::Anthropic => ("x-api-key", ""),
            Provider::GoogleGemini => ("x-goog-api-key", ""),
        }
    }

    /// Headers the provider requires on every request, added only when the client sent none.
    pub fn fixed_headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Provider::Anthropic => &[("anthropic-version", "2023-06-01")],
            _ => &[],
        }
    }
}

/// An upstream LLM endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backend {
    pub name: String,
    pub provider: Provider,
    pub endpoint: Endpoint,
    /// Present exactly when the endpoint is `https`.
    pub tls: Option<UpstreamTls>,
    /// Name of the [`SecurityPolicy`] whose credential this backend carries.
    pub security_policy: Option<String>,
}

/// Where a backend lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl Endpoint {
    /// True when `host` is an IP literal rather than a DNS name.
    pub fn host_is_ip(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }

    /// The Host header value: the host, with the port only when it is not the scheme's default.
    pub fn authority(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// How Envoy verifies an https backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamTls {
    /// PEM of the CA the backend's certificate must chain to (read from `caFile`), if any.
    pub ca_pem: Option<String>,
    /// SNI to send; defaults to the endpoint host.
    pub sni: Option<String>,
}

/// How a backend authenticates to its provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecurityPolicy {
    pub name: String,
    pub kind: PolicyKind,
}

/// The credential kinds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum PolicyKind {
    ApiKey(ApiKey),
    Aws(Box<AwsCredentials>),
    Azure(Box<AzureCredentials>),
}

/// Azure Entra ID bearer tokens for Azure OpenAI, minted by Tessera.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AzureCredentials {
    pub tenant_id: String,
    pub client_id: String,
    pub auth: AzureAuth,
    pub authority_host: String,
    /// Extra CA trusted for the authority host (read at load).
    pub ca_pem: Option<String>,
    pub scope: String,
    pub refresh: RefreshPolicy,
}

/// How Tessera proves its identity to Entra ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum AzureAuth {
    /// Client credentials with a secret, read at each refresh.
    ClientSecret(KeySource),
    /// A federated client assertion (an OIDC token), obtained at each refresh.
    Federated(TokenSource),
}

/// AWS credentials for SigV4 signing (Bedrock), minted from OIDC or read from a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AwsCredentials {
    pub region: String,
    pub source: AwsSource,
    /// Regional or private STS endpoint; the SDK's default for the region otherwise.
    pub sts_endpoint: Option<String>,
    pub refresh: RefreshPolicy,
}

/// Where AWS credentials come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum AwsSource {
    /// STS `AssumeRoleWithWebIdentity` with an OIDC token.
    WebIdentity(WebIdentity),
    /// A standard AWS credentials file (watched); a missing profile means revoked.
    CredentialsFile { path: PathBuf, profile: String },
}

/// The role to assume and the token to prove who Tessera is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebIdentity {
    pub role_arn: String,
    pub session_name: String,
    pub duration_seconds: u32,
    pub token: TokenSource,
}

/// An OIDC token: a projected file (re-read at each exchange) or a client-credentials grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum TokenSource {
    File(PathBuf),
    Oidc(OidcClient),
}

/// A client-credentials grant at an OIDC issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OidcClient {
    pub endpoint: OidcEndpoint,
    pub client_id: String,
    /// Read at each grant, so rotating the client secret needs no reload.
    pub client_secret: KeySource,
    pub scopes: Vec<String>,
    pub audience: String,
    /// Under `--allow-endpoint`, the origins a discovered token endpoint must be at (checked
    /// before the client secret is sent); `None` outside Kubernetes mode.
    pub allowed_token_endpoints: Option<Box<AllowedEndpoints>>,
}

/// How to find the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum OidcEndpoint {
    /// Discovered from `<issuer>/.well-known/openid-configuration`.
    Issuer(String),
    TokenEndpoint(String),
}

/// When short-lived credentials are renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RefreshPolicy {
    /// Renew this long before expiry (at most half the lifetime).
    pub before_expiry: std::time::Duration,
    /// Renew up to this much earlier still, at random, so a fleet of policies spreads out.
    pub jitter: std::time::Duration,
    /// Upper bound of the exponential backoff between failed attempts.
    pub max_backoff: std::time::Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            before_expiry: std::time::Duration::from_secs(300),
            jitter: std::time::Duration::from_secs(30),
            max_backoff: std::time::Duration::from_secs(60),
        }
    }
}

/// A long-lived key attached as a header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    pub source: KeySource,
    /// Overrides the provider's default header.
    pub header: Option<String>,
    /// Overrides the provider's default prefix (e.g. `Bearer `).
    pub prefix: Option<String>,
}

/// Where an API key's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum KeySource {
    /// A file, watched; its trimmed content is the key; missing or empty means revoked.
    File(PathBuf),
    /// A key of a `v1 Secret` document; `value` is `None` when the Secret or key is gone.
    Secret {
        name: String,
        key: String,
        value: Option<SecretString>,
    },
}

/// Ordered routing rules attached to a gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    pub name: String,
    pub gateway: String,
    pub rules: Vec<Rule>,
}

/// One rule: any of `matches` selects it (none means everything); traffic splits by weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub backends: Vec<WeightedBackend>,
    pub retry: Retry,
    /// Client ids allowed on the rule; `None`: any authenticated client.
    pub clients: Option<Vec<String>>,
}

/// When a failed attempt is tried again, on the next priority's backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retry {
    /// Tries in all, the first included (1 = no retry).
    pub attempts: u32,
    pub on: Vec<RetryOn>,
    pub per_try_timeout: std::time::Duration,
}

impl Retry {
    /// One try, no retry: a rule with a single priority and no `retry` block.
    pub fn once() -> Self {
        Self {
            attempts: 1,
            on: vec![
                RetryOn::ServerError,
                RetryOn::RateLimited,
                RetryOn::ConnectFailure,
                RetryOn::Reset,
            ],
            per_try_timeout: std::time::Duration::from_secs(300),
        }
    }
}

/// A failure that is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum RetryOn {
    /// Any 5xx answer, or no answer in time.
    ServerError,
    /// 429 Too Many Requests.
    RateLimited,
    /// The connection to the provider could not be opened.
    ConnectFailure,
    /// The provider closed or reset the connection before answering.
    Reset,
}

/// All conditions of a match must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Match {
    pub path_prefix: Option<String>,
    pub headers: Vec<HeaderMatch>,
    pub model: Option<ModelMatch>,
}

/// The requested model, wherever the request carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ModelMatch {
    Exact(String),
    Prefix(String),
}

/// Exact header value match (`x-ai-model: gpt-4o`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderMatch {
    pub name: String,
    pub value: String,
}

/// A backend reference with its share of the traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WeightedBackend {
    pub name: String,
    pub weight: u32,
    /// Failover tier; 0 is tried first.
    pub priority: u32,
}

/// A set of AWS credentials as Envoy's signer needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsKeys {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    /// Present for temporary (STS) credentials.
    pub session_token: Option<SecretString>,
}
