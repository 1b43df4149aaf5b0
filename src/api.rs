//! The public configuration schema (`tessera.dev/v1alpha1`) as serde types.
//!
//! These are the wire types users write, in files or as Kubernetes custom resources (the CRDs
//! are generated from them), which is why they are plain camelCase structs with `Option`s and
//! no internally tagged enums.
//! Validation and reference resolution happen in `source::load`, producing a `model::Model`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
pub use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// `apiVersion` of every Tessera kind.
pub const API_VERSION: &str = "tessera.dev/v1alpha1";
/// `apiVersion` of the Kubernetes core `Secret`.
pub const SECRET_API_VERSION: &str = "v1";
/// Listener address used when `address` is omitted.
pub const DEFAULT_LISTENER_ADDRESS: &str = "0.0.0.0";
/// Request body limit of a listener that sets no `maxRequestBytes` (Envoy's own default).
pub const DEFAULT_MAX_REQUEST_BYTES: u32 = 1024 * 1024;
/// CA bundle used when a gateway sets no `caBundlePath`.
pub const DEFAULT_CA_BUNDLE_PATH: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Upper bounds of the schema. The CRDs carry them (the API server enforces them first) and
/// the loader checks the same schema for files, so both modes accept exactly the same objects.
pub mod limits {
    /// Object names and references to them (a Kubernetes DNS subdomain is at most 253).
    pub const NAME: u32 = 253;
    /// URLs: endpoints, issuers, token endpoints, authority hosts.
    pub const URL: u32 = 2048;
    /// File paths (Linux `PATH_MAX`).
    pub const PATH: u32 = 4096;
    /// HTTP header names.
    pub const HEADER_NAME: u32 = 256;
    /// HTTP header values matched or prefixed.
    pub const HEADER_VALUE: u32 = 4096;
    /// Other short text: ids, scopes, audiences, ARNs, regions, profiles.
    pub const TEXT: u32 = 2048;
    /// Duration strings such as `1h30m`; the value itself is at most [`MAX_DURATION_SECS`].
    pub const DURATION: u32 = 32;
    /// Longest refresh duration (`beforeExpiry`, `jitter`, `maxBackoff`): 24 h.
    pub const MAX_DURATION_SECS: u64 = 24 * 3600;
    /// What a duration string looks like (`250ms`, `30s`, `5m`, `1h30m`).
    pub const DURATION_PATTERN: &str = "^([0-9]+(ms|s|m|h))+$";
    /// Listeners per Gateway.
    pub const LISTENERS: u32 = 64;
    /// `xdsClients` entries per Gateway.
    pub const XDS_CLIENTS: u32 = 256;
    /// Rules per Route.
    pub const RULES: u32 = 1024;
    /// Matches per rule.
    pub const MATCHES: u32 = 64;
    /// Header conditions per match.
    pub const HEADERS: u32 = 16;
    /// Backends per rule.
    pub const BACKENDS: u32 = 64;
    /// OIDC scopes per client; JWT audiences.
    pub const SCOPES: u32 = 32;
    /// Largest `maxRequestBytes` of a listener: 64 MiB.
    pub const MAX_REQUEST_BYTES: u32 = 64 * 1024 * 1024;
    /// Model names matched (`model`, `modelPrefix`).
    pub const MODEL: u32 = 256;
    /// Backend priorities: 0 is tried first.
    pub const PRIORITY: u32 = 15;
    /// Attempts of a rule's retry policy (the first try included).
    pub const ATTEMPTS: u32 = 16;
    /// Client ids per rule.
    pub const CLIENTS: u32 = 1024;
    /// Largest traffic weight (the weights of a rule must also add up to no more than this).
    pub const WEIGHT: u32 = u32::MAX;
    /// STS `DurationSeconds` range.
    pub const STS_DURATION_MIN: u32 = 900;
    /// STS `DurationSeconds` range.
    pub const STS_DURATION_MAX: u32 = 43200;
}

use limits as l;

/// A Kubernetes-style document: `apiVersion`, `kind`, `metadata`, `spec`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Object<S> {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: S,
}

/// A `Gateway` document.
pub type Gateway = Object<GatewaySpec>;
/// A `Backend` document.
pub type Backend = Object<BackendSpec>;
/// A `BackendSecurityPolicy` document.
pub type BackendSecurityPolicy = Object<BackendSecurityPolicySpec>;
/// A `Route` document.
pub type Route = Object<RouteSpec>;

/// Object metadata; only `name` carries meaning for Tessera.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// Defaulted so that a missing name is reported as `metadata.name`, not `metadata`.
    #[serde(default)]
    pub name: String,
    pub namespace: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Listeners served to the Envoy nodes of one `node.cluster`.
#[derive(CustomResource, Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "tessera.dev",
    version = "v1alpha1",
    kind = "Gateway",
    root = "GatewayResource",
    printcolumn = r#"{"name": "NodeCluster", "type": "string", "jsonPath": ".spec.nodeCluster"}"#,
    printcolumn = r#"{"name": "Accepted", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name": "Conflicted", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Conflicted\")].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    namespaced,
    status = "ObjectStatus",
    shortname = "tgw"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    #[schemars(length(min = 1, max = l::NAME))]
    pub node_cluster: String,
    #[schemars(length(max = l::LISTENERS))]
    pub listeners: Vec<ListenerSpec>,
    /// Defaults to [`DEFAULT_CA_BUNDLE_PATH`].
    #[schemars(length(max = l::PATH))]
    pub ca_bundle_path: Option<String>,
    /// Who may receive this gateway's configuration when xDS clients are authenticated;
    /// none means nobody then.
    #[schemars(length(max = l::XDS_CLIENTS))]
    pub xds_clients: Option<Vec<XdsClientSpec>>,
    /// Who may use the gateway; absent, anyone who reaches a listener may (warned at start).
    pub client_auth: Option<ClientAuthSpec>,
}

/// One proven identity allowed to receive a gateway's configuration: exactly one of
/// `spiffe`, `dnsName` and `serviceAccount`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new(
    "(has(self.spiffe) ? 1 : 0) + (has(self.dnsName) ? 1 : 0) + (has(self.serviceAccount) ? 1 : 0) == 1"
).message("needs exactly one of spiffe, dnsName and serviceAccount"))]
pub struct XdsClientSpec {
    /// A URI SAN of the client certificate, matched exactly.
    #[schemars(length(min = 1, max = l::URL))]
    pub spiffe: Option<String>,
    /// A DNS SAN of the client certificate; `*` as the whole first label matches one label.
    #[schemars(length(min = 1, max = l::NAME))]
    pub dns_name: Option<String>,
    /// A Kubernetes ServiceAccount whose token the API server accepted.
    pub service_account: Option<ServiceAccountSpec>,
}

/// A Kubernetes ServiceAccount.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccountSpec {
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    #[schemars(length(min = 1, max = l::NAME))]
    pub name: String,
}

/// Client authentication: API keys, JWTs, or both (either one authenticates).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.apiKeys) || has(self.jwt)")
    .message("needs apiKeys, jwt or both"))]
pub struct ClientAuthSpec {
    pub api_keys: Option<ClientKeysSpec>,
    pub jwt: Option<JwtSpec>,
    /// Forwards the authenticated client id to the backend in this header; absent, the id
    /// stays inside Envoy.
    #[schemars(length(min = 1, max = l::HEADER_NAME))]
    pub client_id_header: Option<String>,
}

/// Client API keys: a map client id -> key, exactly one of `secretRef` and `file`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.file) != has(self.secretRef)")
    .message("needs exactly one of file and secretRef"))]
pub struct ClientKeysSpec {
    /// A Secret whose data maps client ids to keys.
    pub secret_ref: Option<SecretRef>,
    /// A YAML map client id -> key, relative to the YAML file's directory; watched.
    #[schemars(length(min = 1, max = l::PATH))]
    pub file: Option<String>,
}

/// A whole `v1 Secret`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    #[schemars(length(min = 1, max = l::NAME))]
    pub name: String,
}

/// JWTs from one issuer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtSpec {
    #[schemars(length(min = 1, max = l::URL))]
    pub issuer: String,
    /// Accepted `aud` values; absent or empty, any audience.
    #[schemars(length(max = l::SCOPES), inner(length(min = 1, max = l::TEXT)))]
    pub audiences: Option<Vec<String>>,
    pub jwks: JwksSpec,
    /// The claim that names the client; defaults to `sub`.
    #[schemars(length(min = 1, max = l::TEXT))]
    pub client_claim: Option<String>,
}

/// Where the issuer's keys are: exactly one of `uri` (fetched by Envoy) and `file` (read by
/// Tessera and sent inline).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.uri) != has(self.file)")
    .message("needs exactly one of uri and file"))]
pub struct JwksSpec {
    #[schemars(length(min = 1, max = l::URL))]
    pub uri: Option<String>,
    #[schemars(length(min = 1, max = l::PATH))]
    pub file: Option<String>,
}

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerSpec {
    #[schemars(length(min = 1, max = l::NAME))]
    pub name: String,
    /// Wider than `u16` so that out-of-range ports get a range error, not a type error.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u32,
    /// An IP literal; defaults to [`DEFAULT_LISTENER_ADDRESS`].
    #[schemars(length(max = 64))]
    pub address: Option<String>,
    /// Largest request body Envoy buffers (to read the model and to retry); bigger bodies get a
    /// JSON 413. Defaults to 1 MiB (1048576), Envoy's own default.
    #[schemars(range(min = 1024, max = l::MAX_REQUEST_BYTES))]
    pub max_request_bytes: Option<u32>,
}

/// The LLM provider behind a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
pub enum Provider {
    OpenAI,
    AzureOpenAI,
    Anthropic,
    GoogleGemini,
    Mistral,
    AWSBedrock,
    Generic,
}

/// An upstream LLM endpoint.
#[derive(CustomResource, Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "tessera.dev",
    version = "v1alpha1",
    kind = "Backend",
    root = "BackendResource",
    printcolumn = r#"{"name": "Provider", "type": "string", "jsonPath": ".spec.provider"}"#,
    printcolumn = r#"{"name": "Endpoint", "type": "string", "jsonPath": ".spec.endpoint"}"#,
    printcolumn = r#"{"name": "Accepted", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    namespaced,
    status = "ObjectStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendSpec {
    pub provider: Provider,
    /// `http(s)://host[:port]`, nothing else.
    #[schemars(length(max = l::URL))]
    pub endpoint: String,
    /// Only valid with an `https` endpoint.
    pub tls: Option<BackendTls>,
    /// Name of a `BackendSecurityPolicy`.
    #[schemars(length(min = 1, max = l::NAME))]
    pub security_policy: Option<String>,
}

/// How to verify an https backend.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendTls {
    /// PEM CA file, relative to the YAML file's directory; read at load time.
    #[schemars(length(max = l::PATH))]
    pub ca_file: Option<String>,
    #[schemars(length(max = l::NAME))]
    pub sni: Option<String>,
}

/// The credential kinds a policy may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
pub enum PolicyType {
    APIKey,
    AWSCredentials,
    AzureCredentials,
}

/// A credential; exactly the block matching `type` must be present.
#[derive(CustomResource, Debug, Clone, PartialEq, Eq, Deserialize, Serialize, KubeSchema)]
#[kube(
    group = "tessera.dev",
    version = "v1alpha1",
    kind = "BackendSecurityPolicy",
    root = "BackendSecurityPolicyResource",
    printcolumn = r#"{"name": "Type", "type": "string", "jsonPath": ".spec.type"}"#,
    printcolumn = r#"{"name": "Accepted", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"CredentialReady\")].status"}"#,
    printcolumn = r#"{"name": "Credential", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"CredentialReady\")].message"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Accepted\")].reason", "priority": 1}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    namespaced,
    status = "ObjectStatus",
    shortname = "bsp"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new(
    "has(self.apiKey) == (self.type == 'APIKey') && has(self.awsCredentials) == (self.type == 'AWSCredentials') && has(self.azureCredentials) == (self.type == 'AzureCredentials')"
).message("exactly the block named by type (apiKey, awsCredentials or azureCredentials) must be set"))]
pub struct BackendSecurityPolicySpec {
    #[serde(rename = "type")]
    pub type_: PolicyType,
    pub api_key: Option<ApiKeySpec>,
    pub aws_credentials: Option<AwsCredentialsSpec>,
    pub azure_credentials: Option<AzureCredentialsSpec>,
}

/// Azure Entra ID tokens: exactly one of `clientSecretRef`, `clientSecretFile` and
/// `oidcExchangeToken`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new(
    "(has(self.clientSecretRef) ? 1 : 0) + (has(self.clientSecretFile) ? 1 : 0) + (has(self.oidcExchangeToken) ? 1 : 0) == 1"
).message("needs exactly one of clientSecretFile, clientSecretRef and oidcExchangeToken"))]
pub struct AzureCredentialsSpec {
    #[schemars(length(min = 1, max = l::TEXT))]
    pub tenant_id: String,
    #[schemars(length(min = 1, max = l::TEXT))]
    pub client_id: String,
    pub client_secret_ref: Option<SecretKeyRef>,
    #[schemars(length(min = 1, max = l::PATH))]
    pub client_secret_file: Option<String>,
    /// A federated client assertion (workload identity).
    pub oidc_exchange_token: Option<AzureTokenExchangeSpec>,
    /// Sovereign clouds; defaults to `https://login.microsoftonline.com`. Must be https.
    #[schemars(length(max = l::URL))]
    pub authority_host: Option<String>,
    /// Extra CA (PEM) trusted for `authorityHost`, beside the system roots.
    #[schemars(length(max = l::PATH))]
    pub ca_file: Option<String>,
    /// Defaults to `https://cognitiveservices.azure.com/.default`.
    #[schemars(length(max = l::TEXT))]
    pub scope: Option<String>,
    pub refresh: Option<RefreshSpec>,
}

/// Where the federated assertion comes from: exactly one of `tokenFile` and `oidc`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.tokenFile) != has(self.oidc)")
    .message("needs exactly one of tokenFile and oidc"))]
pub struct AzureTokenExchangeSpec {
    /// `AZURE_FEDERATED_TOKEN_FILE` style; re-read at every exchange.
    #[schemars(length(min = 1, max = l::PATH))]
    pub token_file: Option<String>,
    pub oidc: Option<OidcSpec>,
}

/// AWS credentials: exactly one of `oidcExchangeToken` and `credentialsFile`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.oidcExchangeToken) != has(self.credentialsFile)")
    .message("needs exactly one of oidcExchangeToken and credentialsFile"))]
pub struct AwsCredentialsSpec {
    #[schemars(length(min = 1, max = 32))]
    pub region: String,
    pub oidc_exchange_token: Option<OidcExchangeTokenSpec>,
    /// A standard AWS credentials file, relative to the YAML file's directory; watched.
    #[schemars(length(min = 1, max = l::PATH))]
    pub credentials_file: Option<String>,
    /// Profile in `credentialsFile`; defaults to `default`.
    #[schemars(length(max = l::TEXT))]
    pub profile: Option<String>,
    /// Regional or private STS endpoint (http allowed).
    #[schemars(length(max = l::URL))]
    pub sts_endpoint: Option<String>,
    pub refresh: Option<RefreshSpec>,
}

/// STS `AssumeRoleWithWebIdentity` with an OIDC token: exactly one of `tokenFile` and `oidc`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.tokenFile) != has(self.oidc)")
    .message("needs exactly one of tokenFile and oidc"))]
pub struct OidcExchangeTokenSpec {
    #[schemars(length(max = l::TEXT))]
    pub role_arn: String,
    /// Defaults to `tessera-<policy name>`.
    #[schemars(length(min = 2, max = 64))]
    pub role_session_name: Option<String>,
    /// 900–43200; defaults to 3600.
    #[schemars(range(min = l::STS_DURATION_MIN, max = l::STS_DURATION_MAX))]
    pub duration_seconds: Option<u32>,
    /// A projected service-account token, re-read at each exchange.
    #[schemars(length(min = 1, max = l::PATH))]
    pub token_file: Option<String>,
    pub oidc: Option<OidcSpec>,
}

/// A client-credentials grant: exactly one of `issuer` and `tokenEndpoint`, and exactly one
/// of `clientSecretRef` and `clientSecretFile`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.issuer) != has(self.tokenEndpoint)")
    .message("needs exactly one of issuer and tokenEndpoint"))]
#[x_kube(validation = Rule::new("has(self.clientSecretRef) != has(self.clientSecretFile)")
    .message("needs exactly one of clientSecretFile and clientSecretRef"))]
pub struct OidcSpec {
    #[schemars(length(max = l::URL))]
    pub issuer: Option<String>,
    #[schemars(length(max = l::URL))]
    pub token_endpoint: Option<String>,
    #[schemars(length(min = 1, max = l::TEXT))]
    pub client_id: String,
    pub client_secret_ref: Option<SecretKeyRef>,
    #[schemars(length(min = 1, max = l::PATH))]
    pub client_secret_file: Option<String>,
    #[schemars(length(max = l::SCOPES), inner(length(max = l::TEXT)))]
    pub scopes: Option<Vec<String>>,
    #[schemars(length(max = l::TEXT))]
    pub audience: Option<String>,
}

/// Refresh timing; durations as strings such as `"5m"`, `"30s"`, `"1h30m"`, at most 24 h.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefreshSpec {
    #[schemars(length(max = l::DURATION), pattern(l::DURATION_PATTERN))]
    pub before_expiry: Option<String>,
    #[schemars(length(max = l::DURATION), pattern(l::DURATION_PATTERN))]
    pub jitter: Option<String>,
    #[schemars(length(max = l::DURATION), pattern(l::DURATION_PATTERN))]
    pub max_backoff: Option<String>,
}

/// A long-lived API key; exactly one of `file` and `secretRef`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.file) != has(self.secretRef)")
    .message("needs exactly one of file and secretRef"))]
pub struct ApiKeySpec {
    /// Key file, relative to the YAML file's directory; a missing file means revoked.
    #[schemars(length(min = 1, max = l::PATH))]
    pub file: Option<String>,
    pub secret_ref: Option<SecretKeyRef>,
    /// Overrides the provider's default header.
    #[schemars(length(min = 1, max = l::HEADER_NAME))]
    pub header: Option<String>,
    /// Overrides the provider's default prefix.
    #[schemars(length(max = l::HEADER_VALUE))]
    pub prefix: Option<String>,
}

/// One key of a `v1 Secret`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    #[schemars(length(min = 1, max = l::NAME))]
    pub name: String,
    #[schemars(length(min = 1, max = l::NAME))]
    pub key: String,
}

/// Routing rules attached to a gateway.
#[derive(CustomResource, Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "tessera.dev",
    version = "v1alpha1",
    kind = "Route",
    root = "RouteResource",
    printcolumn = r#"{"name": "Gateway", "type": "string", "jsonPath": ".spec.gateway"}"#,
    printcolumn = r#"{"name": "Accepted", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name": "ResolvedRefs", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"ResolvedRefs\")].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    namespaced,
    status = "ObjectStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    #[schemars(length(min = 1, max = l::NAME))]
    pub gateway: String,
    #[schemars(length(max = l::RULES))]
    pub rules: Vec<RuleSpec>,
}

/// Any of `matches` selects the rule (none means everything); traffic splits by weight.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSpec {
    #[schemars(length(max = l::MATCHES))]
    pub matches: Option<Vec<MatchSpec>>,
    #[schemars(length(max = l::BACKENDS))]
    pub backends: Vec<BackendRef>,
    /// When and how often a failed request is tried again, on the next priority.
    pub retry: Option<RetrySpec>,
    /// Client ids allowed on this rule; absent, any authenticated client.
    #[schemars(length(max = l::CLIENTS), inner(length(min = 1, max = l::TEXT)))]
    pub clients: Option<Vec<String>>,
}

/// Retries of one rule. Defaults: one attempt per priority present (at least 2 when the rule
/// has backends of more than one priority, else 1), on `5xx`, `429`, `connect-failure` and
/// `reset`, with a 300 s per-try timeout. A response whose headers reached the client (a
/// stream under way) is never retried.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetrySpec {
    /// Tries in all, the first one included.
    #[schemars(range(min = 1, max = l::ATTEMPTS))]
    pub attempts: Option<u32>,
    /// Any of `5xx`, `429`, `connect-failure`, `reset` (YAML reads a bare 429 as a number).
    #[schemars(length(max = 8))]
    pub on: Option<Vec<IntOrString>>,
    #[schemars(length(max = l::DURATION), pattern(l::DURATION_PATTERN))]
    pub per_try_timeout: Option<String>,
}

/// All conditions must hold.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MatchSpec {
    #[schemars(length(max = l::HEADER_VALUE))]
    pub path_prefix: Option<String>,
    /// The requested model, exactly: from `x-ai-model`, else the JSON body's `model`, else the
    /// Gemini or Bedrock path.
    #[schemars(length(min = 1, max = l::MODEL))]
    pub model: Option<String>,
    /// The requested model starts with this (a model family, `gpt-4o-`).
    #[schemars(length(min = 1, max = l::MODEL))]
    pub model_prefix: Option<String>,
    #[schemars(length(max = l::HEADERS))]
    pub headers: Option<Vec<HeaderMatchSpec>>,
}

/// Exact header value match.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatchSpec {
    #[schemars(length(min = 1, max = l::HEADER_NAME))]
    pub name: String,
    #[schemars(length(max = l::HEADER_VALUE))]
    pub value: String,
}

/// A backend and its share of the rule's traffic.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendRef {
    #[schemars(length(min = 1, max = l::NAME))]
    pub name: String,
    /// Defaults to 1.
    #[schemars(range(min = 0, max = l::WEIGHT))]
    pub weight: Option<u32>,
    /// Failover tier: 0 (the default) first; a higher one when every lower tier failed.
    #[schemars(range(min = 0, max = l::PRIORITY))]
    pub priority: Option<u32>,
}

/// A Kubernetes core `v1 Secret`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secret {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    /// Base64-encoded values.
    pub data: Option<SecretData>,
    /// Plain values; win over `data` for the same key.
    pub string_data: Option<SecretData>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub immutable: Option<bool>,
}

/// Secret values by key; `Debug` shows the keys only.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretData(pub BTreeMap<String, String>);

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Status written back to every Tessera custom resource.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStatus {
    /// The `metadata.generation` this status describes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted`, `ResolvedRefs`, and on policies `CredentialReady`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// The CustomResourceDefinitions of every Tessera kind, as one multi-document YAML.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in [
        GatewayResource::crd(),
        BackendResource::crd(),
        BackendSecurityPolicyResource::crd(),
        RouteResource::crd(),
    ] {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
