//! CSDS (`envoy.service.status.v3.ClientStatusDiscoveryService`) on the xDS port: what each
//! connected node was sent and whether it accepted it, from the server's point of view.
//!
//! Status only: no resource contents (`xds_config`) are ever returned, so no credential can
//! leak; a NACK's text is the one the ADS server already made safe (withheld for SDS and ECDS).
//! CSDS reveals node ids and clusters, so it answers only a caller that would be trusted as an
//! xDS client: with client authentication on, an identity some Gateway lists in `xdsClients`;
//! without it, only when the xDS port listens on loopback.

use super::identity::{Authenticated, Authenticator, allows};
use super::status::{Registry, StreamStatus, SyncState, TypeStatus};
use super::{Cache, type_url};
use envoy_types::pb::envoy::admin::v3::{ClientResourceStatus, UpdateFailureState};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::status::v3::client_config::GenericXdsConfig;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_server::ClientStatusDiscoveryService;
use envoy_types::pb::envoy::service::status::v3::{
    ClientConfig, ClientStatusRequest, ClientStatusResponse, ConfigStatus,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{NodeMatcher, StringMatcher, string_matcher};
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

/// Who may ask for client status when clients do not authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthenticated {
    /// The xDS port is on loopback: whoever can reach it already runs on this host.
    Allow,
    /// The xDS port is reachable from elsewhere without authentication (`--insecure-xds`).
    Deny,
}

/// The CSDS service, reading the stream registry.
#[derive(Debug, Clone)]
pub struct CsdsService {
    cache: Arc<Cache>,
    registry: Arc<Registry>,
    authenticator: Arc<Authenticator>,
    unauthenticated: Unauthenticated,
}

impl CsdsService {
    /// A service answering from `registry`, trusting callers as described in the module docs.
    pub fn new(
        cache: Arc<Cache>,
        registry: Arc<Registry>,
        authenticator: Arc<Authenticator>,
        unauthenticated: Unauthenticated,
    ) -> Self {
        Self {
            cache,
            registry,
            authenticator,
            unauthenticated,
        }
    }

    async fn admit<R>(&self, request: &Request<R>) -> Result<(), Status> {
        let denied = || Status::permission_denied("client status is not available to this caller");
        match self
            .authenticator
            .authenticate(request.metadata(), request.extensions())
            .await?
        {
            Authenticated::Unauthenticated => match self.unauthenticated {
                Unauthenticated::Allow => Ok(()),
                Unauthenticated::Deny => Err(denied()),
            },
            Authenticated::Peer(peer) => {
                let state = self.cache.state();
                if state
                    .gateways
                    .values()
                    .any(|g| allows(&g.xds_clients, &peer))
                {
                    Ok(())
                } else {
                    Err(denied())
                }
            }
        }
    }

    fn answer(&self, request: &ClientStatusRequest) -> Result<ClientStatusResponse, Status> {
        Ok(ClientStatusResponse {
            config: client_configs(&self.registry.snapshot(), &request.node_matchers)?,
        })
    }
}

#[tonic::async_trait]
impl ClientStatusDiscoveryService for CsdsService {
    type StreamClientStatusStream =
        Pin<Box<dyn Stream<Item = Result<ClientStatusResponse, Status>> + Send>>;

    async fn stream_client_status(
        &self,
        request: Request<Streaming<ClientStatusRequest>>,
    ) -> Result<Response<Self::StreamClientStatusStream>, Status> {
        self.admit(&request).await?;
        let service = self.clone();
        let answers = request.into_inner().map(move |req| service.answer(&req?));
        Ok(Response::new(Box::pin(answers)))
    }

    async fn fetch_client_status(
        &self,
        request: Request<ClientStatusRequest>,
    ) -> Result<Response<ClientStatusResponse>, Status> {
        self.admit(&request).await?;
        self.answer(request.get_ref()).map(Response::new)
    }
}

/// One `ClientConfig` per live stream whose node matches any of `matchers` (all when empty).
pub fn client_configs(
    streams: &[StreamStatus],
    matchers: &[NodeMatcher],
) -> Result<Vec<ClientConfig>, Status> {
    let mut out = Vec::new();
    for stream in streams {
        if !matchers.is_empty() && !any_matches(matchers, &stream.node_id)? {
            continue;
        }
        out.push(ClientConfig {
            node: Some(Node {
                id: stream.node_id.clone(),
                cluster: stream.node_cluster.clone(),
                ..Node::default()
            }),
            generic_xds_configs: stream
                .types
                .iter()
                .filter_map(|(short, status)| generic(short, status))
                .collect(),
            ..ClientConfig::default()
        });
    }
    Ok(out)
}

fn any_matches(matchers: &[NodeMatcher], node_id: &str) -> Result<bool, Status> {
    for m in matchers {
        if !m.node_metadatas.is_empty() {
            return Err(Status::invalid_argument(
                "node_metadatas matchers are not supported; match on node_id",
            ));
        }
        let matched = match &m.node_id {
            None => true,
            Some(s) => string_matches(s, node_id)?,
        };
        if matched {
            return Ok(true);
        }
    }
    Ok(false)
}

fn string_matches(matcher: &StringMatcher, value: &str) -> Result<bool, Status> {
    use string_matcher::MatchPattern;
    let fold = |s: &str| {
        if matcher.ignore_case {
            s.to_lowercase()
        } else {
            s.to_owned()
        }
    };
    let value = fold(value);
    Ok(match &matcher.match_pattern {
        Some(MatchPattern::Exact(p)) => value == fold(p),
        Some(MatchPattern::Prefix(p)) => value.starts_with(&fold(p)),
        Some(MatchPattern::Suffix(p)) => value.ends_with(&fold(p)),
        Some(MatchPattern::Contains(p)) => value.contains(&fold(p)),
        _ => {
            return Err(Status::invalid_argument(
                "node_id matchers support exact, prefix, suffix and contains",
            ));
        }
    })
}

/// The status of one type on one stream; `None` for a type Tessera does not serve.
fn generic(short: &str, status: &TypeStatus) -> Option<GenericXdsConfig> {
    let url = type_url::ALL
        .into_iter()
        .find(|t| type_url::short(t) == short)?;
    let acked = !status.acked.is_empty();
    let (config, client, error_state) = match status.sync() {
        SyncState::NotSent => (ConfigStatus::NotSent, ClientResourceStatus::Requested, None),
        // A reconnecting node named a version that is still current: nothing was resent.
        SyncState::Synced => (ConfigStatus::Synced, ClientResourceStatus::Acked, None),
        SyncState::Nacked => {
            let failure = UpdateFailureState {
                details: status.last_nack.clone().unwrap_or_default(),
                version_info: status.sent.clone(),
                ..UpdateFailureState::default()
            };
            (
                ConfigStatus::Error,
                ClientResourceStatus::Nacked,
                Some(failure),
            )
        }
        SyncState::Stale if acked => (ConfigStatus::Stale, ClientResourceStatus::Acked, None),
        SyncState::Stale => (ConfigStatus::Stale, ClientResourceStatus::Requested, None),
    };
    Some(GenericXdsConfig {
        type_url: url.to_owned(),
        version_info: status.sent.clone(),
        config_status: config as i32,
        client_status: client as i32,
        error_state,
        ..GenericXdsConfig::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(node: &str, types: &[(&'static str, TypeStatus)]) -> StreamStatus {
        StreamStatus {
            node_id: node.to_owned(),
            node_cluster: "gw".to_owned(),
            identity: None,
            delta: false,
            types: types.iter().cloned().collect(),
        }
    }

    fn ts(sent: &str, acked: &str, nacked: &str, nack: Option<&str>) -> TypeStatus {
        TypeStatus {
            sent: sent.to_owned(),
            acked: acked.to_owned(),
            nacked: nacked.to_owned(),
            last_nack: nack.map(str::to_owned),
            ..TypeStatus::default()
        }
    }

    fn statuses(c: &ClientConfig) -> Vec<(String, i32, i32)> {
        c.generic_xds_configs
            .iter()
            .map(|g| (g.type_url.clone(), g.config_status, g.client_status))
            .collect()
    }

    #[test]
    fn maps_acked_stale_nacked_and_unsent() {
        let s = stream(
            "n1",
            &[
                ("cds", ts("v2", "v2", "", None)),
                ("lds", ts("v3", "v2", "", None)),
                ("sds", ts("v4", "v3", "v4", Some("(withheld)"))),
                ("rds", ts("", "", "", None)),
                ("ecds", ts("", "v1", "", None)),
            ],
        );
        let out = client_configs(&[s], &[]).unwrap();
        assert_eq!(out.len(), 1);
        let node = out[0].node.as_ref().unwrap();
        assert_eq!((node.id.as_str(), node.cluster.as_str()), ("n1", "gw"));
        let got = statuses(&out[0]);
        let acked = ClientResourceStatus::Acked as i32;
        assert_eq!(
            got,
            vec![
                (
                    type_url::CLUSTER.to_owned(),
                    ConfigStatus::Synced as i32,
                    acked
                ),
                (
                    type_url::EXTENSION_CONFIG.to_owned(),
                    ConfigStatus::Synced as i32,
                    acked
                ),
                (
                    type_url::LISTENER.to_owned(),
                    ConfigStatus::Stale as i32,
                    acked
                ),
                (
                    type_url::ROUTE.to_owned(),
                    ConfigStatus::NotSent as i32,
                    ClientResourceStatus::Requested as i32
                ),
                (
                    type_url::SECRET.to_owned(),
                    ConfigStatus::Error as i32,
                    ClientResourceStatus::Nacked as i32
                ),
            ]
        );
        let sds = &out[0].generic_xds_configs[4];
        let err = sds.error_state.as_ref().unwrap();
        assert_eq!(err.details, "(withheld)");
        assert_eq!(err.version_info, "v4");
        assert!(
            out[0]
                .generic_xds_configs
                .iter()
                .all(|g| g.xds_config.is_none())
        );
        assert!(
            out[0].generic_xds_configs[..4]
                .iter()
                .all(|g| g.error_state.is_none())
        );
    }

    #[test]
    fn a_newer_version_after_a_nack_is_stale_not_error() {
        let s = stream("n1", &[("sds", ts("v5", "v3", "v4", Some("x")))]);
        let out = client_configs(&[s], &[]).unwrap();
        let g = &out[0].generic_xds_configs[0];
        assert_eq!(g.config_status, ConfigStatus::Stale as i32);
        assert!(g.error_state.is_none());
    }

    fn id_matcher(p: string_matcher::MatchPattern, ignore_case: bool) -> NodeMatcher {
        NodeMatcher {
            node_id: Some(StringMatcher {
                ignore_case,
                match_pattern: Some(p),
            }),
            node_metadatas: vec![],
        }
    }

    #[test]
    fn node_matchers_filter_by_node_id() {
        use string_matcher::MatchPattern::*;
        let streams = [
            stream("edge-a", &[]),
            stream("edge-b", &[]),
            stream("core", &[]),
        ];
        let ids = |m: &[NodeMatcher]| -> Vec<String> {
            client_configs(&streams, m)
                .unwrap()
                .into_iter()
                .map(|c| c.node.unwrap().id)
                .collect()
        };
        assert_eq!(ids(&[]).len(), 3);
        assert_eq!(ids(&[id_matcher(Exact("core".into()), false)]), ["core"]);
        assert_eq!(
            ids(&[id_matcher(Prefix("EDGE-".into()), true)]),
            ["edge-a", "edge-b"]
        );
        assert!(ids(&[id_matcher(Prefix("EDGE-".into()), false)]).is_empty());
        assert_eq!(
            ids(&[
                id_matcher(Suffix("-b".into()), false),
                id_matcher(Contains("or".into()), false)
            ]),
            ["edge-b", "core"]
        );
        let regex = id_matcher(
            SafeRegex(envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher::default()),
            false,
        );
        assert_eq!(
            client_configs(&streams, &[regex]).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    mod trust {
        use super::*;
        use crate::model::XdsClient;
        use crate::xds::GatewayConfig;
        use crate::xds::identity::{ConnInfo, PeerIdentity};
        use std::collections::HashMap;

        fn service(authenticator: Authenticator, unauthenticated: Unauthenticated) -> CsdsService {
            let cache = Arc::new(Cache::new());
            let gateway = GatewayConfig {
                xds_clients: vec![XdsClient::Spiffe("spiffe://t/envoy".into())],
                ..GatewayConfig::default()
            };
            cache.publish(HashMap::from([("gw".to_owned(), Arc::new(gateway))]), []);
            let registry = Arc::new(Registry::default());
            registry.open("n1", "gw", false);
            CsdsService::new(cache, registry, Arc::new(authenticator), unauthenticated)
        }

        fn request(peer_uri: Option<&str>) -> Request<ClientStatusRequest> {
            let mut r = Request::new(ClientStatusRequest::default());
            if let Some(uri) = peer_uri {
                r.extensions_mut().insert(ConnInfo {
                    remote: None,
                    peer: Some(Arc::new(PeerIdentity {
                        uris: vec![uri.to_owned()],
                        ..PeerIdentity::default()
                    })),
                });
            }
            r
        }

        async fn code(svc: &CsdsService, peer_uri: Option<&str>) -> Option<tonic::Code> {
            match svc.fetch_client_status(request(peer_uri)).await {
                Ok(r) => {
                    assert_eq!(r.get_ref().config.len(), 1);
                    None
                }
                Err(e) => Some(e.code()),
            }
        }

        #[tokio::test]
        async fn unauthenticated_callers_only_on_loopback() {
            let open = service(Authenticator::off(), Unauthenticated::Allow);
            assert_eq!(code(&open, None).await, None);
            let exposed = service(Authenticator::off(), Unauthenticated::Deny);
            assert_eq!(
                code(&exposed, None).await,
                Some(tonic::Code::PermissionDenied)
            );
        }

        #[tokio::test]
        async fn with_client_certificates_only_a_listed_identity() {
            // Loopback does not relax client authentication once it is on.
            let svc = service(Authenticator::client_certificates(), Unauthenticated::Allow);
            assert_eq!(code(&svc, None).await, Some(tonic::Code::Unauthenticated));
            assert_eq!(
                code(&svc, Some("spiffe://t/stranger")).await,
                Some(tonic::Code::PermissionDenied)
            );
            assert_eq!(code(&svc, Some("spiffe://t/envoy")).await, None);
        }
    }
}
