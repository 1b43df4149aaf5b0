//! Incremental ADS (`DeltaAggregatedResources`).

use crate::envoy::{Envoy, Incoming, Wire};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
};
use prost::Message;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

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

/// Plays `envoy` on `channel` until the stream ends; returns why it ended.
pub async fn run(channel: Channel, node: Node, mut envoy: Envoy) -> anyhow::Result<()> {
    let mut client = AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(crate::MAX_MESSAGE);
    let mut wire = DeltaWire::new(node);
    let (tx, rx) = mpsc::channel(16);
    tx.send(envoy.start(&mut wire)).await?;
    let mut responses = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(response) = responses.message().await? {
        let received_at = Instant::now();
        envoy.on_response(incoming(response, received_at), &mut wire, &mut out);
        for request in out.drain(..) {
            tx.send(request).await?;
        }
    }
    anyhow::bail!("the server ended the stream")
}
