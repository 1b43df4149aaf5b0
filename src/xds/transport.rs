//! The xDS listener: plain TCP, or TLS with verified client certificates (mTLS).
//!
//! The server certificate, key and client CA are files that cert-manager or SPIRE replace
//! while Tessera runs, so they are re-read every [`RELOAD_INTERVAL`] and a changed set
//! becomes the configuration of the next handshake; established connections (and their ADS
//! streams) keep the session they negotiated. Each connection carries what its handshake
//! proved ([`ConnInfo`]) to every request on it.

use super::identity::{ConnInfo, cert};
use futures::Stream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

/// How often the TLS files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);
/// A client that has not finished its TLS handshake by then is dropped, so idle sockets
/// cannot pile up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
// Connections that finished their handshake and wait for the gRPC server to take them.
const ACCEPTED_BUFFER: usize = 64;

/// The files of ADS over TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that client certificates must chain to; None: no client certificate is asked for
    /// (only with ServiceAccount tokens, which then are the clients' proof).
    pub client_ca: Option<PathBuf>,
}

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: {what}", path.display())]
    Pem { path: PathBuf, what: String },
    #[error("client CA {}: {reason}", path.display())]
    ClientCa { path: PathBuf, reason: String },
    #[error("server certificate and key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The server TLS configuration, rebuilt when the files' contents change.
#[derive(Debug)]
pub struct ReloadingTls {
    files: TlsFiles,
    current: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    fingerprint: [u8; 32],
    config: Arc<ServerConfig>,
    /// The fingerprint of a set that failed to load, so it is reported once, not every tick.
    failed: Option<[u8; 32]>,
}

impl ReloadingTls {
    /// Loads the files; an error here stops `serve`.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let (fingerprint, config) = build(&files)?;
        Ok(Self {
            files,
            current: RwLock::new(Loaded {
                fingerprint,
                config,
                failed: None,
            }),
        })
    }

    /// The configuration for the next handshake.
    pub fn config(&self) -> Arc<ServerConfig> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current.config.clone()
    }

    /// Re-reads the files; true when a changed, valid set is now in use. An invalid set (a
    /// rotation half written, a key that does not match) keeps the previous configuration.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let fingerprint = fingerprint(&self.files)?;
        {
            let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
            if current.fingerprint == fingerprint || current.failed == Some(fingerprint) {
                return Ok(false);
            }
        }
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        match build(&self.files) {
            Ok((fingerprint, config)) => {
                *current = Loaded {
                    fingerprint,
                    config,
                    failed: None,
                };
                Ok(true)
            }
            Err(e) => {
                current.failed = Some(fingerprint);
                Err(e)
            }
        }
    }

    /// Re-reads the files every `interval`, forever.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.reload() {
                Ok(true) => info!(
                    cert = %self.files.cert.display(),
                    "xDS TLS certificate, key or client CA changed: new connections use them"
                ),
                Ok(false) => {}
                Err(e) => warn!(
                    error = %e,
                    "xDS TLS files changed but cannot be used; the previous ones stay in use"
                ),
            }
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn fingerprint(files: &TlsFiles) -> Result<[u8; 32], TlsError> {
    let mut hash = Sha256::new();
    for path in [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        let bytes = read(path)?;
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    }
    Ok(hash.finalize().into())
}

fn build(files: &TlsFiles) -> Result<([u8; 32], Arc<ServerConfig>), TlsError> {
    // The fingerprint is taken before reading, so a file replaced in between is seen as a
    // change at the next check rather than missed.
    let fingerprint = fingerprint(files)?;
    let pem = |path: &Path, what: &str| TlsError::Pem {
        path: path.to_owned(),
        what: what.to_owned(),
    };
    let certs = CertificateDer::pem_slice_iter(&read(&files.cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| pem(&files.cert, "not a PEM certificate chain"))?;
    if certs.is_empty() {
        return Err(pem(&files.cert, "no certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?)
        .map_err(|_| pem(&files.key, "no PEM private key"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = match &files.client_ca {
        None => builder.with_no_client_auth().with_single_cert(certs, key)?,
        Some(client_ca) => {
            let ca_error = |reason: String| TlsError::ClientCa {
                path: client_ca.clone(),
                reason,
            };
            let mut roots = RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(&read(client_ca)?) {
                let ca = ca.map_err(|_| ca_error("not a PEM certificate".into()))?;
                roots.add(ca).map_err(|e| ca_error(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ca_error(e.to_string()))?;
            builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(certs, key)?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((fingerprint, Arc::new(config)))
}

/// Accepts connections from `listener` (TLS handshakes each in their own task, bounded by
/// [`HANDSHAKE_TIMEOUT`]) and yields them ready for the gRPC server.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ReloadingTls>>,
) -> impl Stream<Item = Result<XdsConn, io::Error>> {
    let (tx, rx) = mpsc::channel(ACCEPTED_BUFFER);
    tokio::spawn(accept_loop(listener, tls, tx));
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<ReloadingTls>>,
    tx: mpsc::Sender<Result<XdsConn, io::Error>>,
) {
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, usually: back off instead of spinning.
                    warn!(error = %e, "cannot accept an xDS connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = tx.closed() => return,
        };
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &tls else {
            let info = ConnInfo {
                remote: Some(remote),
                peer: None,
            };
            if tx.send(Ok(XdsConn::plain(tcp, info))).await.is_err() {
                return;
            }
            continue;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Some(conn) = handshake(acceptor, tcp, remote).await {
                let _ = tx.send(Ok(conn)).await;
            }
        });
    }
}

async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    remote: SocketAddr,
) -> Option<XdsConn> {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            warn!(peer = %remote, error = %e, "xDS TLS handshake failed; connection dropped");
            return None;
        }
        Err(_) => {
            warn!(
                peer = %remote,
                timeout_secs = HANDSHAKE_TIMEOUT.as_secs(),
                "xDS client did not finish its TLS handshake in time; connection dropped"
            );
            return None;
        }
    };
    // Without a client CA no certificate is asked for (ServiceAccount tokens prove the
    // client); with one the verifier requires it.
    let chain = stream.get_ref().1.peer_certificates();
    let peer = chain
        .and_then(|chain| chain.first())
        .and_then(cert::peer_identity);
    if chain.is_some() && peer.is_none() {
        warn!(peer = %remote, "xDS client certificate has no readable SANs; connection dropped");
        return None;
    }
    debug!(peer = %remote, "xDS TLS handshake done");
    let info = ConnInfo {
        remote: Some(remote),
        peer: peer.map(Arc::new),
    };
    Some(XdsConn {
        io: Io::Tls(Box::new(stream)),
        info,
    })
}

/// One accepted xDS connection and what its handshake proved.
pub struct XdsConn {
    io: Io,
    info: ConnInfo,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl XdsConn {
    fn plain(tcp: TcpStream, info: ConnInfo) -> Self {
        Self {
            io: Io::Plain(tcp),
            info,
        }
    }
}

impl tonic::transport::server::Connected for XdsConn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for XdsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for XdsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests;
