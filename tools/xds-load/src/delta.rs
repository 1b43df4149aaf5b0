//! Incremental ADS (`DeltaAggregatedResources`).

use crate::envoy::{Envoy, Incoming, Wire};
use crate::grpc::Target;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use prost::Message;
use std::time::Instant;

/// Delta requests: subscriptions as changes, ACKs by nonce.
pub struct DeltaWire {
    node: Option<Node>,
}

impl DeltaWire {
    /// A wire that introduces `node` on its first request only.
    pub fn new(node: Node) -> Self {
        Self { node: Some(node) }
    }
}

impl Wire for DeltaWire {
    type Request = DeltaDiscoveryRequest;

    fn subscribe(
        &mut self,
        type_url: &'static str,
        _names: &[String],
        added: Vec<String>,
        removed: Vec<String>,
    ) -> DeltaDiscoveryRequest {
        // CDS and LDS go out with no names: Envoy's legacy wildcard.
        DeltaDiscoveryRequest {
            node: self.node.take(),
            type_url: type_url.to_owned(),
            resource_names_subscribe: added,
            resource_names_unsubscribe: removed,
            ..Default::default()
        }
    }

    fn ack(
        &mut self,
        type_url: &str,
        _version: &str,
        nonce: &str,
        _names: &[String],
    ) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            node: self.node.take(),
            type_url: type_url.to_owned(),
            response_nonce: nonce.to_owned(),
            ..Default::default()
        }
    }
}

/// The response as the protocol logic sees it.
pub fn incoming(response: DeltaDiscoveryResponse, received_at: Instant) -> Incoming {
    let size = response.encoded_len();
    Incoming {
        resources: response
            .resources
            .into_iter()
            .filter_map(|r| Some((r.name, r.resource?)))
            .collect(),
        type_url: response.type_url,
        version: response.system_version_info,
        nonce: response.nonce,
        removed: response.removed_resources,
        full_state: false,
        size,
        received_at,
    }
}

/// The ADS method this mode calls.
pub const PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// Plays `envoy` on `target` until the stream ends; returns why it ended.
pub async fn run(target: &Target, node: Node, envoy: Envoy) -> anyhow::Result<()> {
    envoy
        .play::<_, DeltaDiscoveryResponse>(target, PATH, DeltaWire::new(node), incoming)
        .await
}
