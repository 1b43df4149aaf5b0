//! Syntax of the strings a spec holds: endpoints, host names, header names.

use crate::model::Endpoint;
use http::HeaderName;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Envoy matches and sets headers in lowercase, so uppercase names would never match.
pub(super) fn is_header_name(name: &str) -> bool {
    !name.bytes().any(|b| b.is_ascii_uppercase()) && HeaderName::from_bytes(name.as_bytes()).is_ok()
}

/// A DNS name or dotted IPv4 address.
pub(super) fn is_host_name(host: &str) -> bool {
    let labels = || host.split('.');
    if labels().all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit())) {
        return host.parse::<Ipv4Addr>().is_ok();
    }
    let label_char = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    host.len() <= 253
        && labels().all(|l| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(label_char)
        })
}

/// Parses `http(s)://host[:port]`; the error says what is wrong.
pub(super) fn parse_endpoint(endpoint: &str) -> Result<Endpoint, String> {
    let bad = |why: &str| Err(format!("{endpoint:?} {why}"));
    let (tls, rest) = if let Some(rest) = endpoint.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = endpoint.strip_prefix("http://") {
        (false, rest)
    } else {
        return bad("must start with http:// or https://");
    };
    // A lone trailing slash is what people paste from provider docs; it is not a path.
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@']) {
        return bad("must be just scheme://host[:port], without path, query, fragment or user");
    }
    let (host, port) = match rest.strip_prefix('[').map(|r| r.split_once(']')) {
        Some(Some((host, port))) if host.parse::<Ipv6Addr>().is_ok() => (host, port),
        Some(_) => return bad("does not have a valid IPv6 address"),
        None => rest.split_at(rest.find(':').unwrap_or(rest.len())),
    };
    if !rest.starts_with('[') && !is_host_name(host) {
        return bad("does not have a valid host (IPv6 addresses go in brackets)");
    }
    let default = if tls { 443 } else { 80 };
    let port = match port.strip_prefix(':') {
        None if port.is_empty() => default,
        Some(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => match digits.parse() {
            Ok(port) if port != 0 => port,
            _ => return bad("must have a port between 1 and 65535"),
        },
        _ => return bad("must have a port between 1 and 65535"),
    };
    let host = host.to_owned();
    Ok(Endpoint { host, port, tls })
}
