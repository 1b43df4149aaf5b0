//! One gRPC bidirectional stream on its own HTTP/2 connection, on `h2` directly.
//!
//! A tonic `Channel` per simulated Envoy kept about 200 KB per stream: its codec buffers keep
//! the capacity of the largest message they ever held (the initial CDS answer, the 57 KB node).
//! Here the receive buffer is released once a message has been read, so 10,000 streams cost
//! the generator little beyond their sockets.

use anyhow::Context;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::{RecvStream, SendStream};
use http::{HeaderMap, Request};
use prost::Message;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

/// gRPC's message prefix: a compression flag and a big-endian length.
const PREFIX: usize = 5;
/// A receive buffer larger than this is dropped once empty rather than kept for reuse.
const KEEP_CAPACITY: usize = 16 * 1024;
/// HTTP/2 windows of Envoy 1.40's xDS client (its SETTINGS): large, so that an initial
/// configuration never waits on flow control.
const STREAM_WINDOW: u32 = 16 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 24 * 1024 * 1024;

/// Where and how to connect; cloned for every simulated Envoy.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
}

/// An open gRPC stream.
pub struct GrpcStream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    buf: BytesMut,
    max_message: usize,
}

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("gRPC status {code}: {message}")]
    Status { code: String, message: String },
    #[error("the server ended the stream without a gRPC status")]
    NoStatus,
    #[error("a compressed message, which xds-load does not ask for")]
    Compressed,
    #[error("a message of {0} bytes, above the limit")]
    TooLarge(usize),
}

/// A stream's HTTP/2 connection, to be driven by [`drive`] in the stream's own task: one task
/// per simulated Envoy instead of two, so a response and its ACK cost the generator (which
/// shares the machine with the server it measures) no wake-up between tasks.
pub type Connection = Pin<Box<dyn Future<Output = Result<(), h2::Error>> + Send>>;

/// Runs `work` while driving `connection`; a connection that ends first is an error.
pub async fn drive<T>(
    connection: &mut Connection,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::select! {
        // The stream first: a status the server sent before closing is the better error.
        biased;
        result = work => result,
        ended = connection => match ended {
            Ok(()) => Err(anyhow::anyhow!("the server closed the connection")),
            Err(e) => Err(anyhow::Error::new(e).context("the connection failed")),
        },
    }
}

impl Target {
    /// Opens a connection and one bidirectional stream on `path` (`/package.Service/Method`);
    /// the connection must then be driven (see [`drive`]).
    pub async fn open(
        &self,
        path: &str,
        max_message: usize,
    ) -> anyhow::Result<(GrpcStream, Connection)> {
        let tcp = TcpStream::connect(self.addr).await.context("connecting")?;
        tcp.set_nodelay(true)?;
        let mut builder = h2::client::Builder::new();
        builder
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW);
        let (send_request, mut connection, scheme): (_, Connection, _) = match &self.tls {
            None => {
                let (send_request, connection) = builder.handshake(tcp).await?;
                (send_request, Box::pin(connection), "http")
            }
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .context("TLS handshake")?;
                let (send_request, connection) = builder.handshake(tls).await?;
                (send_request, Box::pin(connection), "https")
            }
        };
        let request = Request::post(format!("{scheme}://{}{path}", self.addr))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())?;
        let response = drive(&mut connection, async {
            let mut send_request = send_request.ready().await?;
            let (response, send) = send_request.send_request(request, false)?;
            let response = response.await?;
            check_status(response.status(), response.headers())?;
            Ok((response, send))
        })
        .await?;
        let (response, send) = response;
        Ok((
            GrpcStream {
                send,
                recv: response.into_body(),
                buf: BytesMut::new(),
                max_message,
            },
            connection,
        ))
    }
}

fn check_status(status: http::StatusCode, headers: &HeaderMap) -> Result<(), StreamError> {
    // A trailers-only answer (an immediate error) carries grpc-status in the headers.
    if let Some(code) = headers.get("grpc-status") {
        let code = code.to_str().unwrap_or("?").to_owned();
        if code != "0" {
            let message = headers
                .get("grpc-message")
                .and_then(|m| m.to_str().ok())
                .map(percent_decode)
                .unwrap_or_default();
            return Err(StreamError::Status { code, message });
        }
    }
    if status != http::StatusCode::OK {
        return Err(StreamError::Status {
            code: format!("HTTP {status}"),
            message: String::new(),
        });
    }
    Ok(())
}

/// `grpc-message` is percent-encoded.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `message` with gRPC's prefix.
pub fn frame<M: Message>(message: &M) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(PREFIX + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    // Encoding into a buffer of exactly the right size cannot fail.
    let _ = message.encode(&mut buf);
    buf.freeze()
}

/// Splits the first whole message off `buf`: its bytes, without the prefix.
pub fn unframe(buf: &mut BytesMut, max_message: usize) -> Result<Option<Bytes>, StreamError> {
    if buf.len() < PREFIX {
        return Ok(None);
    }
    if buf[0] != 0 {
        return Err(StreamError::Compressed);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > max_message {
        return Err(StreamError::TooLarge(len));
    }
    if buf.len() < PREFIX + len {
        return Ok(None);
    }
    buf.advance(PREFIX);
    Ok(Some(buf.split_to(len).freeze()))
}

impl GrpcStream {
    /// Sends one request message.
    pub fn send<M: Message>(&mut self, message: &M) -> anyhow::Result<()> {
        self.send.send_data(frame(message), false)?;
        Ok(())
    }

    /// The next response message and its encoded size; `Err` when the stream ends.
    pub async fn message<M: Message + Default>(&mut self) -> anyhow::Result<(M, usize)> {
        loop {
            if let Some(bytes) = unframe(&mut self.buf, self.max_message)? {
                if self.buf.is_empty() && self.buf.capacity() > KEEP_CAPACITY {
                    self.buf = BytesMut::new();
                }
                let size = bytes.len();
                return Ok((M::decode(bytes)?, size));
            }
            match self.recv.data().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    let _ = self.recv.flow_control().release_capacity(chunk.len());
                    if self.buf.is_empty() {
                        // Usually a whole message: no copy until one spans chunks.
                        self.buf = BytesMut::from(chunk);
                    } else {
                        self.buf.extend_from_slice(&chunk);
                    }
                }
                None => {
                    let trailers = self.recv.trailers().await?.unwrap_or_default();
                    check_status(http::StatusCode::OK, &trailers)?;
                    return Err(StreamError::NoStatus.into());
                }
            }
        }
    }
}

/// A TLS client for `ca`, with `identity` (certificate chain and key, PEM) for mTLS.
pub fn tls_connector(ca: &[u8], identity: Option<(&[u8], &[u8])>) -> anyhow::Result<TlsConnector> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca) {
        roots.add(cert.context("reading the CA")?)?;
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .context("reading the client certificate")?;
            let key = PrivateKeyDer::from_pem_slice(key).context("reading the client key")?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;

    #[test]
    fn messages_round_trip_through_frames_split_anywhere() {
        let a = DiscoveryRequest {
            type_url: "a".repeat(300),
            ..Default::default()
        };
        let b = DiscoveryRequest {
            version_info: "v2".to_owned(),
            ..Default::default()
        };
        let wire: Vec<u8> = [frame(&a), frame(&b)].concat();
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut got = Vec::new();
            while let Some(m) = unframe(&mut buf, 1 << 20).unwrap() {
                got.push(DiscoveryRequest::decode(m).unwrap());
            }
            buf.extend_from_slice(&wire[cut..]);
            while let Some(m) = unframe(&mut buf, 1 << 20).unwrap() {
                got.push(DiscoveryRequest::decode(m).unwrap());
            }
            assert_eq!(got, vec![a.clone(), b.clone()], "cut at {cut}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn compressed_and_oversized_messages_are_refused() {
        let mut buf = BytesMut::from(&[1u8, 0, 0, 0, 1, 0][..]);
        assert!(matches!(
            unframe(&mut buf, 10),
            Err(StreamError::Compressed)
        ));
        let mut buf = BytesMut::from(&[0u8, 0, 0, 1, 0][..]);
        assert!(matches!(
            unframe(&mut buf, 10),
            Err(StreamError::TooLarge(256))
        ));
    }

    #[test]
    fn grpc_messages_are_percent_decoded() {
        assert_eq!(percent_decode("a%20b%25c%"), "a b%c%");
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", "7".parse().unwrap());
        headers.insert("grpc-message", "no%20access".parse().unwrap());
        let err = check_status(http::StatusCode::OK, &headers).unwrap_err();
        assert_eq!(err.to_string(), "gRPC status 7: no access");
        headers.insert("grpc-status", "0".parse().unwrap());
        assert!(check_status(http::StatusCode::OK, &headers).is_ok());
    }
}
