//! The `Node` a simulated Envoy introduces itself with.
//!
//! A real Envoy 1.40 sends its whole extension list (516 extensions; its first request is about
//! 61 KB) on the first request of every stream; a server decodes it whatever it keeps, so by
//! default the simulated node is as large, with made-up extensions of the same count and sizes.

use envoy_types::pb::envoy::config::core::v3::{
    BuildVersion, Extension, Node, node::UserAgentVersionType,
};
use envoy_types::pb::envoy::r#type::v3::SemanticVersion;

/// How many extensions Envoy 1.40.0 lists in its node (its admin `/server_info`).
pub const ENVOY_EXTENSIONS: usize = 516;

/// A node of `cluster` listing `extensions` extensions; `id` is set per stream.
pub fn template(cluster: &str, extensions: usize) -> Node {
    Node {
        id: String::new(),
        cluster: cluster.to_owned(),
        user_agent_name: "envoy".to_owned(),
        user_agent_version_type: Some(UserAgentVersionType::UserAgentBuildVersion(BuildVersion {
            version: Some(SemanticVersion {
                major_number: 1,
                minor_number: 40,
                patch: 0,
            }),
            metadata: None,
        })),
        extensions: (0..extensions)
            .map(|i| Extension {
                name: format!("envoy.filters.http.extension_{i:03}"),
                category: "envoy.filters.http".to_owned(),
                type_urls: vec![format!(
                    "envoy.extensions.filters.http.extension_{i:03}.v3.Config"
                )],
                ..Default::default()
            })
            .collect(),
        client_features: vec![
            "envoy.lb.does_not_support_overprovisioning".to_owned(),
            "envoy.lrs.supports_send_all_clusters".to_owned(),
        ],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn the_default_node_is_as_large_as_a_real_envoys() {
        let len = template("gw", ENVOY_EXTENSIONS).encoded_len();
        assert!((50_000..75_000).contains(&len), "{len} bytes");
        assert!(template("gw", 0).encoded_len() < 200);
    }
}
