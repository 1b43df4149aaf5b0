//! The ADS gRPC service, routed by hand so responses go out as pre-encoded [`Encoded`] pieces.
//!
//! The generated server would encode a `DiscoveryResponse` per stream into a per-stream
//! buffer, which then keeps the largest response's allocation alive for the stream's life.
//! Here each stream writes its messages as the shared `Bytes` of the resources themselves,
//! so ten thousand streams sending the same clusters share one copy of them.

use super::encoded::Encoded;
use super::server::AdsService;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use futures::Stream;
use http_body::Frame;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

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
                let request = decoding::<DiscoveryRequest, B>(req, SOTW_NODE);
                Ok(respond(service.sotw(request).await))
            }),
            DELTA_PATH => Box::pin(async move {
                let request = decoding::<DeltaDiscoveryRequest, B>(req, DELTA_NODE);
                Ok(respond(service.delta(request).await))
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("").into_http()) }),
        }
    }
}

// The largest request accepted (Envoy's first request carries its node: about 61 KB).
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// The request as a stream of decoded messages, with its metadata and extensions (peer
/// address, TLS certificates) kept for authentication.
fn decoding<M, B>(req: http::Request<B>, node_field: u32) -> Request<Requests<M, B>>
where
    M: prost::Message + Default,
    B: Body<Data = Bytes>,
{
    Request::from_http(req.map(|body| Requests {
        body: Box::pin(body),
        buf: BytesMut::new(),
        ended: false,
        node_field,
        _message: PhantomData,
    }))
}

// Of `Node`, what Tessera reads: id, cluster, user agent name and version. The rest (about
// 500 extensions and their names on Envoy 1.40, 61 KB) is dropped before decoding instead of
// becoming thousands of short-lived allocations per stream.
const NODE_KEPT: [u32; 4] = [1, 2, 6, 7];
/// The `node` field of `DiscoveryRequest`.
const SOTW_NODE: u32 = 2;
/// The `node` field of `DeltaDiscoveryRequest`.
const DELTA_NODE: u32 = 1;

/// `request` with its node (field `node_field`) cut down to [`NODE_KEPT`]; unchanged if it
/// does not parse (the decoder then reports the error).
fn lean_node(request: Bytes, node_field: u32) -> Bytes {
    // Only the first request of a stream carries the node: the others (ACKs) pass uncopied.
    if !has_field(&request, node_field) {
        return request;
    }
    lean(&request, node_field, |node| lean(node, 0, |_| None)).unwrap_or(request)
}

/// Whether `message` has field `field`; true if it does not parse (the slow path decides).
fn has_field(message: &Bytes, field: u32) -> bool {
    use prost::encoding::{DecodeContext, decode_key, skip_field};
    let mut rest = message.clone();
    while rest.has_remaining() {
        let Ok((tag, wire_type)) = decode_key(&mut rest) else {
            return true;
        };
        if tag == field {
            return true;
        }
        if skip_field(wire_type, tag, &mut rest, DecodeContext::default()).is_err() {
            return true;
        }
    }
    false
}

/// Re-assembles `message` keeping every field but `field` (kept as `f` rewrites it), or, with
/// `field` 0, only the fields in [`NODE_KEPT`].
fn lean(message: &Bytes, field: u32, f: impl Fn(&Bytes) -> Option<Bytes>) -> Option<Bytes> {
    use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
    let mut rest = message.clone();
    let mut out = BytesMut::with_capacity(message.len().min(4096));
    while rest.has_remaining() {
        let start = rest.clone();
        let (tag, wire_type) = decode_key(&mut rest).ok()?;
        if field != 0 && tag == field && wire_type == WireType::LengthDelimited {
            let len = usize::try_from(decode_varint(&mut rest).ok()?).ok()?;
            if len > rest.len() {
                return None;
            }
            let inner = f(&rest.split_to(len))?;
            prost::encoding::encode_key(tag, wire_type, &mut out);
            prost::encoding::encode_varint(inner.len() as u64, &mut out);
            out.put_slice(&inner);
            continue;
        }
        skip_field(wire_type, tag, &mut rest, DecodeContext::default()).ok()?;
        if field != 0 || NODE_KEPT.contains(&tag) {
            out.put_slice(&start[..start.len() - rest.len()]);
        }
    }
    Some(out.freeze())
}

/// gRPC messages read from a request body.
pub struct Requests<M, B> {
    body: Pin<Box<B>>,
    buf: BytesMut,
    ended: bool,
    node_field: u32,
    _message: PhantomData<fn() -> M>,
}

impl<M: prost::Message + Default, B> Requests<M, B> {
    /// The next whole message in the buffer, if one has arrived.
    fn take(&mut self) -> Option<Result<M, Status>> {
        let header = self.buf.get(..5)?;
        if header[0] != 0 {
            return Some(Err(Status::unimplemented(
                "compressed ADS requests are not supported",
            )));
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > MAX_REQUEST_BYTES {
            return Some(Err(Status::resource_exhausted(format!(
                "an ADS request of {len} bytes is over the limit of {MAX_REQUEST_BYTES}"
            ))));
        }
        if self.buf.len() < 5 + len {
            return None;
        }
        self.buf.advance(5);
        let message = M::decode(lean_node(self.buf.split_to(len).freeze(), self.node_field))
            .map_err(|e| Status::invalid_argument(format!("malformed ADS request: {e}")));
        // An idle stream holds no buffer: ten thousand streams waiting for their next ACK
        // would otherwise keep a few KB each (the next request allocates what it needs).
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
        Some(message)
    }
}

impl<M, B> Stream for Requests<M, B>
where
    M: prost::Message + Default,
    B: Body<Data = Bytes>,
    B::Error: Into<StdError>,
{
    type Item = Result<M, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(message) = this.take() {
                if message.is_err() {
                    this.ended = true;
                    this.buf = BytesMut::new();
                }
                return Poll::Ready(Some(message));
            }
            if this.ended {
                return Poll::Ready(if this.buf.is_empty() {
                    None
                } else {
                    this.buf = BytesMut::new();
                    Some(Err(Status::invalid_argument(
                        "the ADS request stream ended inside a message",
                    )))
                });
            }
            match this.body.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => this.ended = true,
                Poll::Ready(Some(Err(e))) => {
                    this.ended = true;
                    this.buf = BytesMut::new();
                    return Poll::Ready(Some(Err(Status::from_error(e.into()))));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
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

// Pieces are copied together into blocks of up to 1 MiB (HTTP/2 cuts them into frames as it
// writes); a larger piece is handed to HTTP/2 as it is, shared. Few blocks matter: HTTP/2
// queues every block in a per-connection queue that keeps its largest size for the
// connection's life (one block per resource cost a fleet of 1,000 streams 40 MB; 16 KiB
// blocks of the 130 KB initial configuration, 2.5 KB a connection).
const BLOCK: usize = 1024 * 1024;

/// A response body that writes each message's pre-encoded pieces out.
struct Frames {
    stream: ResponseStream,
    pending: VecDeque<Bytes>,
    done: bool,
}

impl Frames {
    /// Queues one message: the gRPC length prefix, then its pieces in blocks.
    fn queue(&mut self, message: Encoded) {
        let len = prost::Message::encoded_len(&message);
        let mut block = BytesMut::with_capacity((len + 5).min(BLOCK));
        block.put_u8(0); // not compressed
        block.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        for chunk in message.into_chunks() {
            if chunk.len() >= BLOCK {
                if !block.is_empty() {
                    self.pending.push_back(block.split().freeze());
                }
                self.pending.push_back(chunk);
                continue;
            }
            if block.len() + chunk.len() > BLOCK {
                self.pending.push_back(block.split().freeze());
                block.reserve(BLOCK);
            }
            block.put_slice(&chunk);
        }
        if !block.is_empty() {
            self.pending.push_back(block.freeze());
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

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::Node;
    use futures::StreamExt;
    use prost::Message;

    /// A request body that delivers the given pieces as DATA frames.
    struct Pieces(VecDeque<Bytes>);

    impl Body for Pieces {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn framed(message: &impl Message) -> Vec<u8> {
        let body = message.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn requests(pieces: Vec<Vec<u8>>) -> Requests<DiscoveryRequest, Pieces> {
        decoding(
            http::Request::new(Pieces(pieces.into_iter().map(Bytes::from).collect())),
            SOTW_NODE,
        )
        .into_inner()
    }

    #[tokio::test]
    async fn messages_split_across_frames_decode_and_an_idle_stream_keeps_no_buffer() {
        let big = DiscoveryRequest {
            node: Some(Node {
                id: "n".repeat(60_000),
                ..Default::default()
            }),
            ..Default::default()
        };
        let small = DiscoveryRequest {
            type_url: "t".into(),
            ..Default::default()
        };
        let mut bytes = framed(&big);
        bytes.extend(framed(&small));
        // Cut at odd places, inside the prefix and inside the message.
        let pieces = vec![
            bytes[..3].to_vec(),
            bytes[3..40_000].to_vec(),
            bytes[40_000..].to_vec(),
        ];
        let mut r = requests(pieces);
        assert_eq!(r.next().await.unwrap().unwrap(), big);
        assert_eq!(r.next().await.unwrap().unwrap(), small);
        assert_eq!(r.buf.capacity(), 0, "an idle stream keeps no buffer");
        assert!(r.next().await.is_none());
    }

    #[tokio::test]
    async fn a_cut_compressed_or_oversized_request_ends_the_stream_with_a_status() {
        let whole = framed(&DiscoveryRequest::default());
        let mut cut = framed(&DiscoveryRequest {
            type_url: "t".into(),
            ..Default::default()
        });
        cut.pop();
        let mut r = requests(vec![whole, cut]);
        assert!(r.next().await.unwrap().is_ok());
        let status = r.next().await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(r.next().await.is_none());

        let mut compressed = framed(&DiscoveryRequest::default());
        compressed[0] = 1;
        let status = requests(vec![compressed])
            .next()
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented);

        let mut huge = vec![0];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        let status = requests(vec![huge]).next().await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    }

    #[test]
    fn a_large_response_goes_out_as_one_block_that_reads_back_as_one_message() {
        use crate::xds::resource::Resource;
        use envoy_types::pb::envoy::config::cluster::v3::Cluster;
        use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
        let clusters: Vec<_> = (0..100)
            .map(|i| {
                Resource::new(
                    format!("backend/{i}"),
                    &Cluster {
                        name: format!("backend/{i}-{}", "x".repeat(900)),
                        ..Default::default()
                    },
                )
            })
            .collect();
        let message = Encoded::sotw("v", "t", "1", &clusters);
        let len = prost::Message::encoded_len(&message);
        let mut frames = Frames {
            stream: Box::pin(futures::stream::empty()),
            pending: VecDeque::new(),
            done: false,
        };
        frames.queue(message);
        assert!(len > 90_000);
        // The 100 resources of a 90 KB message go out as one block.
        assert_eq!(frames.pending.len(), 1, "{} blocks", frames.pending.len());
        let wire: Vec<u8> = frames.pending.iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(wire[0], 0);
        assert_eq!(
            u32::from_be_bytes([wire[1], wire[2], wire[3], wire[4]]) as usize,
            len
        );
        let decoded = DiscoveryResponse::decode(&wire[5..]).unwrap();
        assert_eq!(decoded.resources.len(), 100);
        assert_eq!(decoded.nonce, "1");
    }

    #[test]
    fn a_node_loses_its_extensions_but_keeps_what_tessera_reads() {
        use envoy_types::pb::envoy::config::core::v3::Extension;
        let request = DiscoveryRequest {
            node: Some(Node {
                id: "n1".into(),
                cluster: "edge".into(),
                user_agent_name: "envoy".into(),
                extensions: (0..500)
                    .map(|i| Extension {
                        name: format!("envoy.ext.{i}"),
                        category: "envoy.filters".into(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            type_url: "t".into(),
            resource_names: vec!["a".into(), "b".into()],
            version_info: "v".into(),
            ..Default::default()
        };
        let full = Bytes::from(request.encode_to_vec());
        let lean = lean_node(full.clone(), SOTW_NODE);
        assert!(
            lean.len() * 20 < full.len(),
            "{} of {}",
            lean.len(),
            full.len()
        );
        let decoded = DiscoveryRequest::decode(lean).unwrap();
        let expected = DiscoveryRequest {
            node: Some(Node {
                id: "n1".into(),
                cluster: "edge".into(),
                user_agent_name: "envoy".into(),
                ..Default::default()
            }),
            ..request.clone()
        };
        assert_eq!(decoded, expected);
        // A request without a node (an ACK) passes as it is, uncopied.
        let ack = Bytes::from(
            DiscoveryRequest {
                type_url: "t".into(),
                response_nonce: "1".into(),
                resource_names: vec!["a".into(), "b".into()],
                ..Default::default()
            }
            .encode_to_vec(),
        );
        assert_eq!(lean_node(ack.clone(), SOTW_NODE).as_ptr(), ack.as_ptr());
        // Not a protobuf message: left as it is, for the decoder to refuse.
        let junk = Bytes::from_static(&[0x0a, 0xff, 0xff]);
        assert_eq!(lean_node(junk.clone(), SOTW_NODE), junk);
        // Delta's node is field 1.
        let delta = DeltaDiscoveryRequest {
            node: request.node.clone(),
            type_url: "t".into(),
            ..Default::default()
        };
        let lean = lean_node(Bytes::from(delta.encode_to_vec()), DELTA_NODE);
        let decoded = DeltaDiscoveryRequest::decode(lean).unwrap();
        assert_eq!(decoded.node, expected.node);
        assert_eq!(decoded.type_url, "t");
    }
}
