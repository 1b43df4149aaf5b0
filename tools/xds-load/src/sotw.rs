//! State-of-the-World ADS (`StreamAggregatedResources`).

use crate::envoy::{Envoy, Incoming, Wire, resource_name};
use crate::grpc::Target;
use crate::refs::type_url;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use prost::Message;
use std::time::Instant;

const TYPES: [&str; 5] = [
    type_url::CLUSTER,
    type_url::EXTENSION_CONFIG,
    type_url::SECRET,
    type_url::LISTENER,
    type_url::ROUTE,
];

/// SotW requests: every request of a type carries the version and nonce last accepted for it.
pub struct SotwWire {
    node: Option<Node>,
    accepted: [(String, String); 5],
}

impl SotwWire {
    /// A wire that introduces `node` on its first request only, as Envoy's
    /// `set_node_on_first_message_only` does.
    pub fn new(node: Node) -> Self {
        Self {
            node: Some(node),
            accepted: Default::default(),
        }
    }

    fn slot(&mut self, type_url: &str) -> Option<&mut (String, String)> {
        let i = TYPES.iter().position(|t| *t == type_url)?;
        Some(&mut self.accepted[i])
    }
}

impl Wire for SotwWire {
    type Request = DiscoveryRequest;

    fn subscribe(
        &mut self,
        type_url: &'static str,
        names: &[String],
        _added: Vec<String>,
        _removed: Vec<String>,
    ) -> DiscoveryRequest {
        let (version_info, response_nonce) = self.slot(type_url).cloned().unwrap_or_default();
        DiscoveryRequest {
            version_info,
            node: self.node.take(),
            resource_names: names.to_vec(),
            type_url: type_url.to_owned(),
            response_nonce,
            ..Default::default()
        }
    }

    fn ack(
        &mut self,
        type_url: &str,
        version: &str,
        nonce: &str,
        names: &[String],
    ) -> DiscoveryRequest {
        if let Some(slot) = self.slot(type_url) {
            *slot = (version.to_owned(), nonce.to_owned());
        }
        DiscoveryRequest {
            version_info: version.to_owned(),
            node: self.node.take(),
            resource_names: names.to_vec(),
            type_url: type_url.to_owned(),
            response_nonce: nonce.to_owned(),
            ..Default::default()
        }
    }
}

/// The response as the protocol logic sees it.
pub fn incoming(response: DiscoveryResponse, received_at: Instant) -> Incoming {
    let size = response.encoded_len();
    Incoming {
        resources: response
            .resources
            .into_iter()
            .map(|any| (resource_name(&any), any))
            .collect(),
        type_url: response.type_url,
        version: response.version_info,
        nonce: response.nonce,
        removed: Vec::new(),
        full_state: true,
        size,
        received_at,
    }
}

/// The ADS method this mode calls.
pub const PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";

/// Plays `envoy` on `target` until the stream ends; returns why it ended.
pub async fn run(target: &Target, node: Node, envoy: Envoy) -> anyhow::Result<()> {
    envoy
        .play::<_, DiscoveryResponse>(target, PATH, SotwWire::new(node), incoming)
        .await
}
