//! The one place an address is accepted: loopback only, every resolved address checked.

use std::net::{IpAddr, SocketAddr};

/// Why a target address was refused.
#[derive(Debug, thiserror::Error)]
pub enum AddrError {
    #[error("cannot resolve {addr:?}")]
    Resolve {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr:?} resolves to no address")]
    Empty { addr: String },
    #[error(
        "{addr:?} resolves to {ip}, which is not loopback: xds-load only targets 127.0.0.0/8 or ::1"
    )]
    NotLoopback { addr: String, ip: IpAddr },
}

/// Whether `ip` is a loopback address, IPv4-mapped IPv6 included.
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Checks that every address `addr` resolved to is loopback; returns the first one.
pub fn check_resolved(addr: &str, resolved: &[SocketAddr]) -> Result<SocketAddr, AddrError> {
    if let Some(bad) = resolved.iter().find(|a| !is_loopback(a.ip())) {
        return Err(AddrError::NotLoopback {
            addr: addr.to_owned(),
            ip: bad.ip(),
        });
    }
    resolved.first().copied().ok_or_else(|| AddrError::Empty {
        addr: addr.to_owned(),
    })
}

/// Resolves `addr` (`host:port`) and refuses it unless every address it resolves to is loopback.
pub async fn resolve_loopback(addr: &str) -> Result<SocketAddr, AddrError> {
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(|source| AddrError::Resolve {
            addr: addr.to_owned(),
            source,
        })?
        .collect();
    check_resolved(addr, &resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_addresses_pass_and_the_first_is_used() {
        let got = check_resolved("x", &[sock("127.0.0.1:1"), sock("[::1]:1")]).unwrap();
        assert_eq!(got, sock("127.0.0.1:1"));
        assert!(check_resolved("x", &[sock("127.200.3.4:5")]).is_ok());
        assert!(check_resolved("x", &[sock("[::ffff:127.0.0.1]:5")]).is_ok());
    }

    #[test]
    fn any_non_loopback_address_is_refused() {
        for bad in [
            "10.0.0.1:1",
            "0.0.0.0:1",
            "[::]:1",
            "[::ffff:10.0.0.1]:1",
            "8.8.8.8:53",
        ] {
            let err = check_resolved("x", &[sock("127.0.0.1:1"), sock(bad)]).unwrap_err();
            assert!(
                matches!(err, AddrError::NotLoopback { ip, .. } if ip == sock(bad).ip()),
                "{bad}: {err}"
            );
        }
        assert!(matches!(
            check_resolved("x", &[]),
            Err(AddrError::Empty { .. })
        ));
    }

    #[tokio::test]
    async fn names_are_resolved_before_the_check() {
        assert!(resolve_loopback("localhost:18000").await.is_ok());
        let err = resolve_loopback("192.0.2.1:18000").await.unwrap_err();
        assert!(err.to_string().contains("not loopback"), "{err}");
    }
}
