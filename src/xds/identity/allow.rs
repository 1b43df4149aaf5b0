//! The matching rule of a Gateway's `xdsClients`: every entry matches exactly; the only
//! wildcard is `*` as the whole first label of a `dnsName`, matching exactly one label.

use super::PeerIdentity;
use crate::model::XdsClient;

/// Whether `peer` is one of `clients`.
pub fn allows(clients: &[XdsClient], peer: &PeerIdentity) -> bool {
    clients.iter().any(|client| match client {
        XdsClient::Spiffe(uri) => peer.uris.iter().any(|u| u == uri),
        XdsClient::DnsName(pattern) => peer.dns_names.iter().any(|d| dns_matches(pattern, d)),
        XdsClient::ServiceAccount { namespace, name } => peer
            .service_account
            .as_ref()
            .is_some_and(|sa| &sa.namespace == namespace && &sa.name == name),
    })
}

/// DNS names compare case-insensitively. A certificate's own wildcard SAN names no single
/// client, so it proves nothing, not even against the same wildcard entry.
fn dns_matches(pattern: &str, name: &str) -> bool {
    if name.contains('*') || name.is_empty() {
        return false;
    }
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(suffix)),
        None => pattern.eq_ignore_ascii_case(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::identity::ServiceAccountRef;

    fn dns(names: &[&str]) -> PeerIdentity {
        PeerIdentity {
            dns_names: names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn spiffe_ids_match_exactly() {
        let clients = [XdsClient::Spiffe(
            "spiffe://corp.example/ns/payments/sa/envoy".into(),
        )];
        let peer = |uri: &str| PeerIdentity {
            uris: vec![uri.into()],
            ..Default::default()
        };
        assert!(allows(
            &clients,
            &peer("spiffe://corp.example/ns/payments/sa/envoy")
        ));
        for other in [
            "spiffe://corp.example/ns/payments/sa/envoy2",
            "spiffe://corp.example/ns/payments/sa/envoy/",
            "spiffe://corp.example/ns/payments/sa",
            "SPIFFE://corp.example/ns/payments/sa/envoy",
        ] {
            assert!(!allows(&clients, &peer(other)), "{other}");
        }
    }

    #[test]
    fn dns_names_match_exactly_and_ignore_case() {
        let clients = [XdsClient::DnsName("gw-1.payments.corp.example".into())];
        assert!(allows(&clients, &dns(&["gw-1.payments.corp.example"])));
        assert!(allows(
            &clients,
            &dns(&["other", "GW-1.Payments.corp.example"])
        ));
        for other in [
            "gw-2.payments.corp.example",
            "x.gw-1.payments.corp.example",
            "gw-1.payments.corp.example.evil",
            "payments.corp.example",
        ] {
            assert!(!allows(&clients, &dns(&[other])), "{other}");
        }
    }

    #[test]
    fn a_wildcard_first_label_matches_exactly_one_label() {
        let clients = [XdsClient::DnsName("*.payments.corp.example".into())];
        assert!(allows(&clients, &dns(&["gw-1.payments.corp.example"])));
        assert!(allows(&clients, &dns(&["gw-2.payments.corp.example"])));
        for other in [
            "payments.corp.example",
            "a.b.payments.corp.example",
            ".payments.corp.example",
            "gw-1.payments.corp.example.evil",
            "gw-1.xpayments.corp.example",
            // A wildcard certificate is not a client identity.
            "*.payments.corp.example",
        ] {
            assert!(!allows(&clients, &dns(&[other])), "{other}");
        }
    }

    #[test]
    fn service_accounts_match_namespace_and_name() {
        let clients = [XdsClient::ServiceAccount {
            namespace: "payments".into(),
            name: "envoy".into(),
        }];
        let sa = |ns: &str, name: &str| PeerIdentity {
            service_account: Some(ServiceAccountRef {
                namespace: ns.into(),
                name: name.into(),
            }),
            ..Default::default()
        };
        assert!(allows(&clients, &sa("payments", "envoy")));
        assert!(!allows(&clients, &sa("billing", "envoy")));
        assert!(!allows(&clients, &sa("payments", "other")));
        // A certificate naming the account does not prove it.
        assert!(!allows(&clients, &dns(&["envoy.payments"])));
    }

    #[test]
    fn kinds_do_not_cross() {
        let clients = [XdsClient::DnsName("gw-1.example".into())];
        let uri = PeerIdentity {
            uris: vec!["gw-1.example".into()],
            ..Default::default()
        };
        assert!(!allows(&clients, &uri));
        assert!(!allows(&[], &dns(&["gw-1.example"])));
    }
}
