//! Configuration documents several tests share.

use crate::NODE_CLUSTER;

/// Gateway `gw` (node cluster [`NODE_CLUSTER`], one listener on 127.0.0.1) with one OpenAI
/// Backend `openai` at `endpoint`, whose key is the file `openai.key` beside the YAML.
pub fn openai_key_file_gateway(listener_port: u16, endpoint: &str) -> String {
    format!(
        r#"apiVersion: tessera.dev/v1alpha1
kind: Gateway
metadata: {{name: gw}}
spec:
  nodeCluster: {NODE_CLUSTER}
  listeners:
  - {{name: http, port: {listener_port}, address: 127.0.0.1}}
---
apiVersion: tessera.dev/v1alpha1
kind: Backend
metadata: {{name: openai}}
spec: {{provider: OpenAI, endpoint: "{endpoint}", securityPolicy: openai-key}}
---
apiVersion: tessera.dev/v1alpha1
kind: BackendSecurityPolicy
metadata: {{name: openai-key}}
spec:
  type: APIKey
  apiKey: {{file: openai.key}}
"#
    )
}

/// [`openai_key_file_gateway`] with Route `chat` sending everything to `openai`.
pub fn openai_key_file_config(listener_port: u16, endpoint: &str) -> String {
    openai_key_file_gateway(listener_port, endpoint)
        + r#"---
apiVersion: tessera.dev/v1alpha1
kind: Route
metadata: {name: chat}
spec:
  gateway: gw
  rules:
  - backends: [{name: openai}]
"#
}

/// Gateway `gw` with Backend `bedrock` at 127.0.0.1:`bedrock`, signed with credentials that
/// policy `aws` gets from STS at 127.0.0.1:`sts` for the web identity token in `token`
/// (refreshed 5 minutes before expiry, no jitter, backoff up to 500 ms).
pub fn bedrock_gateway(
    listener: u16,
    bedrock: u16,
    sts: u16,
    token: &std::path::Path,
    session: &str,
) -> String {
    format!(
        r#"apiVersion: tessera.dev/v1alpha1
kind: Gateway
metadata: {{name: gw}}
spec:
  nodeCluster: {NODE_CLUSTER}
  listeners: [{{name: http, port: {listener}, address: 127.0.0.1}}]
---
apiVersion: tessera.dev/v1alpha1
kind: Backend
metadata: {{name: bedrock}}
spec: {{provider: AWSBedrock, endpoint: "http://127.0.0.1:{bedrock}", securityPolicy: aws}}
---
apiVersion: tessera.dev/v1alpha1
kind: BackendSecurityPolicy
metadata: {{name: aws}}
spec:
  type: AWSCredentials
  awsCredentials:
    region: us-east-1
    stsEndpoint: http://127.0.0.1:{sts}
    refresh: {{beforeExpiry: 5m, jitter: 0s, maxBackoff: 500ms}}
    oidcExchangeToken:
      roleArn: arn:aws:iam::123456789012:role/bedrock
      roleSessionName: {session}
      tokenFile: {token}
"#,
        token = token.display(),
    )
}
