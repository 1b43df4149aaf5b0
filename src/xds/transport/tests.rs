use super::*;
use futures::StreamExt;
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tonic::transport::server::Connected;

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} CA"));
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// (certificate PEM, key PEM) of a leaf with DNS `names` and `uris`.
fn leaf(
    ca: &Ca,
    names: &[&str],
    uris: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    for uri in uris {
        params
            .subject_alt_names
            .push(SanType::URI((*uri).try_into().unwrap()));
    }
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn client(ca: &Ca, cert: &(String, String)) -> tokio_rustls::TlsConnector {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
        .unwrap();
    let chain = vec![CertificateDer::from_pem_slice(cert.0.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(cert.1.as_bytes()).unwrap();
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

struct Server {
    dir: tempfile::TempDir,
    files: TlsFiles,
    ca: Ca,
}

impl Server {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca("xds");
        let files = TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            client_ca: Some(dir.path().join("ca.crt")),
        };
        let server = Self { dir, files, ca };
        server.rotate();
        std::fs::write(server.files.client_ca.as_ref().unwrap(), &server.ca.pem).unwrap();
        server
    }

    /// Writes a new server certificate and key; returns the certificate's DER.
    fn rotate(&self) -> Vec<u8> {
        let (cert, key) = leaf(
            &self.ca,
            &["tessera.local"],
            &[],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        std::fs::write(&self.files.cert, &cert).unwrap();
        std::fs::write(&self.files.key, key).unwrap();
        CertificateDer::from_pem_slice(cert.as_bytes())
            .unwrap()
            .to_vec()
    }
}

/// Connects with `connector`; returns the server certificate the client saw.
async fn connect(port: u16, connector: &tokio_rustls::TlsConnector) -> io::Result<Vec<u8>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("tessera.local").unwrap();
    let mut tls = connector.connect(name, tcp).await?;
    // TLS 1.3 reports a refused client certificate only on the first read.
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(
        Duration::from_millis(300),
        tokio::io::AsyncReadExt::read(&mut tls, &mut byte),
    )
    .await;
    if let Ok(Err(e)) = read {
        return Err(e);
    }
    let (_, conn) = tls.get_ref();
    Ok(conn.peer_certificates().unwrap()[0].to_vec())
}

#[tokio::test]
async fn connections_carry_the_client_certificate_sans_and_rotation_applies_to_new_ones() {
    let server = Server::new();
    let tls = Arc::new(ReloadingTls::load(server.files.clone()).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut conns = Box::pin(incoming(listener, Some(tls.clone())));
    let envoy = leaf(
        &server.ca,
        &["gw-1.payments.example"],
        &["spiffe://corp.example/ns/payments/sa/envoy"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let connector = client(&server.ca, &envoy);
    let first_cert = connect(port, &connector).await.unwrap();
    let conn = conns.next().await.unwrap().unwrap();
    let peer = conn.connect_info().peer.unwrap();
    assert_eq!(peer.dns_names, ["gw-1.payments.example"]);
    assert_eq!(peer.uris, ["spiffe://corp.example/ns/payments/sa/envoy"]);

    // Unchanged files: nothing to do. A rotated certificate: new handshakes present it.
    assert!(!tls.reload().unwrap());
    let rotated = server.rotate();
    assert!(tls.reload().unwrap());
    let second_cert = connect(port, &connector).await.unwrap();
    assert_eq!(second_cert, rotated);
    assert_ne!(second_cert, first_cert);
    // The first connection is still open and usable.
    drop(conns.next().await.unwrap().unwrap());
    drop(conn);

    // A half-written rotation (garbage key) keeps the last good configuration, reported once.
    std::fs::write(&server.files.key, "not a key").unwrap();
    assert!(tls.reload().is_err());
    assert!(!tls.reload().unwrap(), "the same bad set is not retried");
    assert_eq!(connect(port, &connector).await.unwrap(), rotated);
    drop(server.dir);
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let server = Server::new();
    let tls = Arc::new(ReloadingTls::load(server.files.clone()).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut conns = Box::pin(incoming(listener, Some(tls)));
    let other = ca("other");
    let stranger = leaf(
        &other,
        &["gw-1.payments.example"],
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    // It trusts Tessera's CA, but its own certificate chains to another one.
    assert!(connect(port, &client(&server.ca, &stranger)).await.is_err());
    let nothing = tokio::time::timeout(Duration::from_millis(300), conns.next()).await;
    assert!(nothing.is_err(), "a refused handshake yields no connection");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_finishes_its_handshake_is_dropped() {
    let server = Server::new();
    let tls = Arc::new(ReloadingTls::load(server.files.clone()).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _conns = incoming(listener, Some(tls));
    let mut silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 1];
    // Paused time jumps to the next timer once everything is idle: the handshake deadline.
    let read = tokio::io::AsyncReadExt::read(&mut silent, &mut buf);
    let read = tokio::time::timeout(HANDSHAKE_TIMEOUT * 2, read)
        .await
        .expect("Tessera closes the connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        started.elapsed() >= HANDSHAKE_TIMEOUT,
        "{:?}",
        started.elapsed()
    );
}
