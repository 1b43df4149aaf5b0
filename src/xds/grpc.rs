//! The ADS gRPC service, routed by hand so responses go out as pre-encoded [`Encoded`] pieces.
//!
//! The generated server would encode a `DiscoveryResponse` per stream into a per-stream
//! buffer, which then keeps the largest response's allocation alive for the stream's life.
//! Here each stream writes its messages as the shared `Bytes` of the resources themselves,
//! so ten thousand streams sending the same clusters share one copy of them.

use super::encoded::Encoded;
use super::server::AdsService;
use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use futures::Stream;
use http_body::Frame;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::codec::BufferSettings;
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::NamedService;
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

impl<B> Service<http::Request<B>> for AdsServer
where
    B: Body<Data = Bytes> + Send + 'static,
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
                let request = decoding::<DiscoveryRequest, B>(req);
                Ok(respond(service.sotw(request).await))
            }),
            DELTA_PATH => Box::pin(async move {
                let request = decoding::<DeltaDiscoveryRequest, B>(req);
                Ok(respond(service.delta(request).await))
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("").into_http()) }),
        }
    }
}

// Requests are small; tonic's default 8 KiB read buffer per stream adds up over a fleet.
const REQUEST_BUFFER: usize = 1024;
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// The request as a stream of decoded messages, with its metadata and extensions (peer
/// address, TLS certificates) kept for authentication.
fn decoding<M, B>(req: http::Request<B>) -> Request<Streaming<M>>
where
    M: prost::Message + Default + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    let decoder =
        ProstCodec::<Encoded, M>::raw_decoder(BufferSettings::new(REQUEST_BUFFER, REQUEST_BUFFER));
    Request::from_http(
        req.map(|body| Streaming::new_request(decoder, body, None, Some(MAX_REQUEST_BYTES))),
    )
}

/// The HTTP response of a stream: its messages as gRPC frames, then the status as trailers.
fn respond(outcome: Result<Response<ResponseStream>, Status>) -> http::Response<tonic::body::Body> {
    match outcome {
        Ok(response) => {
            let (metadata, stream, _) = response.into_parts();
            let mut http = http::Response::new(tonic::body::Body::new(Frames {
                stream,
                pending: VecDeque::new(),
                done: false,
            }));
            *http.headers_mut() = metadata.into_headers();
            http.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            http
        }
        Err(status) => status.into_http(),
    }
}

// Pieces smaller than this are copied together into one DATA frame; larger ones (resources
// shared by every stream) are handed to HTTP/2 as they are, without a copy.
const COALESCE_BELOW: usize = 512;

/// A response body that writes each message's pre-encoded pieces out as they are.
struct Frames {
    stream: ResponseStream,
    pending: VecDeque<Bytes>,
    done: bool,
}

impl Frames {
    /// Queues one message: the gRPC length prefix, then its pieces.
    fn queue(&mut self, message: Encoded) {
        let len = prost::Message::encoded_len(&message);
        let mut small = BytesMut::with_capacity(COALESCE_BELOW);
        small.put_u8(0); // not compressed
        small.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        for chunk in message.into_chunks() {
            if chunk.len() < COALESCE_BELOW {
                small.put_slice(&chunk);
            } else {
                if !small.is_empty() {
                    self.pending.push_back(small.split().freeze());
                }
                self.pending.push_back(chunk);
            }
        }
        if !small.is_empty() {
            self.pending.push_back(small.freeze());
        }
    }
}

impl Body for Frames {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if self.done {
                return Poll::Ready(None);
            }
            match self.stream.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(message))) => self.queue(message),
                Poll::Ready(Some(Err(status))) => {
                    self.done = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers(&status)))));
                }
                Poll::Ready(None) => {
                    self.done = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers(&Status::ok(""))))));
                }
            }
        }
    }
}

/// The `grpc-status` trailers of `status`.
fn trailers(status: &Status) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        // Only an unencodable message fails; the code alone still ends the stream rightly.
        let _ = Status::new(status.code(), "").add_header(&mut map);
    }
    map
}
