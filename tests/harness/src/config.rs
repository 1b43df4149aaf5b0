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
