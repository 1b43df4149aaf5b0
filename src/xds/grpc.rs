//! The ADS gRPC service, routed by hand so responses go out as pre-encoded [`Encoded`] pieces
//! (the generated server would insist on `DiscoveryResponse`, re-encoding every resource for
//! every stream).

use super::encoded::Encoded;
use super::server::AdsService;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use futures::Stream;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// The responses of one stream.
pub type ResponseStream = Pin<Box<dyn Stream<Item = Result<Encoded, Status>> + Send>>;

/// `envoy.service.discovery.v3.AggregatedDiscoveryService` over an [`AdsService`].
#[derive(Debug, Clone)]
pub struct AdsServer {
    service: AdsService,
}

impl AdsServer {
    /// Serves `service` over gRPC.
    pub fn new(service: AdsService) -> Self {
        Self { service }
    }
}

impl NamedService for AdsServer {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

struct Sotw(AdsService);
struct Delta(AdsService);

impl StreamingService<DiscoveryRequest> for Sotw {
    type Response = Encoded;
    type ResponseStream = ResponseStream;
    type Future = BoxFuture<Response<ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<DiscoveryRequest>>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.sotw(request).await })
    }
}

impl StreamingService<DeltaDiscoveryRequest> for Delta {
    type Response = Encoded;
    type ResponseStream = ResponseStream;
    type Future = BoxFuture<Response<ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<DeltaDiscoveryRequest>>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.delta(request).await })
    }
}

impl<B> Service<http::Request<B>> for AdsServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let service = self.service.clone();
        match req.uri().path() {
            SOTW_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::<Encoded, DiscoveryRequest>::default());
                Ok(grpc.streaming(Sotw(service), req).await)
            }),
            DELTA_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::<Encoded, DeltaDiscoveryRequest>::default());
                Ok(grpc.streaming(Delta(service), req).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("").into_http()) }),
        }
    }
}
