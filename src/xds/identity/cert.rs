//! The identity a verified client certificate proves: its URI and DNS SANs. rustls has
//! already verified the chain to `--xds-client-ca` when this runs; the common name is ignored
//! (as it is by every SAN-aware verifier).

use super::PeerIdentity;
use rustls::pki_types::CertificateDer;

/// The SANs of `cert` (the end-entity certificate of a verified chain); `None` when the
/// certificate cannot be parsed.
pub fn peer_identity(cert: &CertificateDer<'_>) -> Option<PeerIdentity> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    Some(PeerIdentity {
        uris: cert.valid_uri_names().map(str::to_owned).collect(),
        dns_names: cert
            .valid_dns_names()
            .map(|d| d.to_ascii_lowercase())
            .collect(),
        service_account: None,
        // Closing the stream would not renew it: a new stream on the same connection keeps
        // the certificate of the connection's handshake.
        expires: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType};

    #[test]
    fn uri_and_dns_sans_are_the_identity() {
        let mut params = CertificateParams::new(vec!["GW-1.payments.example".to_owned()]).unwrap();
        params.subject_alt_names.push(SanType::URI(
            "spiffe://corp.example/ns/payments/sa/envoy"
                .try_into()
                .unwrap(),
        ));
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "cn.is.ignored");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let id = peer_identity(cert.der()).unwrap();
        assert_eq!(id.uris, ["spiffe://corp.example/ns/payments/sa/envoy"]);
        assert_eq!(id.dns_names, ["gw-1.payments.example"]);
        assert_eq!(id.service_account, None);
        assert!(peer_identity(&CertificateDer::from(vec![0x30, 0x00])).is_none());
    }
}
