//! Validation of a Gateway's `clientAuth` and of the client ids a Route rule allows.

use super::sink::{Fault, Sink};
use super::syntax::{is_header_name, parse_endpoint};
use super::validate::Secrets;
use crate::api::{ClientAuthSpec, ClientKeysSpec, JwksSpec, JwtSpec};
use crate::model::{ClientAuth, ClientKeySource, Jwks, Jwt, UpstreamTls};

/// The claim that names the client unless `clientClaim` says otherwise.
const DEFAULT_CLIENT_CLAIM: &str = "sub";
/// Largest JWKS document read from a file.
const MAX_JWKS_BYTES: u64 = 256 * 1024;

/// Headers the identity may not be forwarded in: Envoy or the provider credential own them.
const RESERVED_HEADERS: [&str; 6] = [
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "host",
    "content-length",
];

pub(super) fn client_auth(
    spec: &ClientAuthSpec,
    e: &mut Sink<'_>,
    secrets: &Secrets,
) -> Option<ClientAuth> {
    const AT: &str = "spec.clientAuth";
    if spec.api_keys.is_none() && spec.jwt.is_none() {
        e.err(AT, "needs apiKeys, jwt or both");
        return None;
    }
    if let Some(h) = spec.client_id_header.as_deref()
        && (!is_header_name(h) || h.starts_with(':') || RESERVED_HEADERS.contains(&h))
    {
        let message = format!("{h:?} is not a lowercase HTTP header name Tessera may set");
        e.err(format!("{AT}.clientIdHeader"), message);
    }
    // Both are checked before giving up, so every problem is reported at once.
    let api_keys = spec.api_keys.as_ref().map(|k| api_keys(k, e, secrets));
    let jwt = spec.jwt.as_ref().map(|j| jwt(j, e));
    Some(ClientAuth {
        api_keys: api_keys.map_or(Some(None), |k| k.map(Some))?,
        jwt: jwt.map_or(Some(None), |j| j.map(Some))?,
        client_id_header: spec.client_id_header.clone(),
    })
}

/// A client id a rule may name: printable ASCII without spaces (it is matched as a header value).
pub(super) fn is_client_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_graphic())
}

fn api_keys(spec: &ClientKeysSpec, e: &mut Sink<'_>, secrets: &Secrets) -> Option<ClientKeySource> {
    const AT: &str = "spec.clientAuth.apiKeys";
    match (&spec.file, &spec.secret_ref) {
        (Some(file), None) => match e.resolve(file) {
            Ok(path) => Some(ClientKeySource::File(path)),
            Err(m) => {
                e.err(format!("{AT}.file"), m);
                None
            }
        },
        // A missing Secret is not an error: every key is revoked until it exists.
        (None, Some(r)) => Some(ClientKeySource::Secret {
            name: r.name.clone(),
            keys: secrets.get(&r.name).cloned(),
        }),
        _ => {
            e.err(AT, "needs exactly one of file and secretRef");
            None
        }
    }
}

fn jwt(spec: &JwtSpec, e: &mut Sink<'_>) -> Option<Jwt> {
    let client_claim = spec.client_claim.as_deref().unwrap_or(DEFAULT_CLIENT_CLAIM);
    Some(Jwt {
        issuer: spec.issuer.clone(),
        audiences: spec.audiences.clone().unwrap_or_default(),
        jwks: jwks(&spec.jwks, e)?,
        client_claim: client_claim.to_owned(),
    })
}

fn jwks(spec: &JwksSpec, e: &mut Sink<'_>) -> Option<Jwks> {
    const AT: &str = "spec.clientAuth.jwt.jwks";
    match (&spec.uri, &spec.file) {
        (Some(uri), None) => match remote(uri) {
            Ok(jwks) => Some(jwks),
            Err(m) => {
                e.err(format!("{AT}.uri"), m);
                None
            }
        },
        (None, Some(file)) => {
            let read = e
                .resolve(file)
                .and_then(|p| read_jwks(&p).map_err(Fault::from));
            match read {
                Ok(doc) => Some(Jwks::Inline(doc)),
                Err(m) => {
                    e.err(format!("{AT}.file"), m);
                    None
                }
            }
        }
        _ => {
            e.err(AT, "needs exactly one of uri and file");
            None
        }
    }
}

/// `http(s)://host[:port]/path`: Envoy fetches it through a cluster of its own.
fn remote(uri: &str) -> Result<Jwks, String> {
    let after_scheme = uri.find("://").map_or(0, |i| i + 3);
    let path_at = uri[after_scheme..]
        .find('/')
        .map_or(uri.len(), |i| i + after_scheme);
    let origin = &uri[..path_at];
    // The error quotes what it parsed: show the whole URI instead.
    let endpoint = parse_endpoint(origin)
        .map_err(|e| e.replacen(&format!("{origin:?}"), &format!("{uri:?}"), 1))?;
    if uri[path_at..].contains(char::is_whitespace) {
        return Err(format!("{uri:?} has whitespace in its path"));
    }
    let tls = endpoint.tls.then_some(UpstreamTls {
        ca_pem: None,
        sni: None,
    });
    Ok(Jwks::Remote {
        uri: uri.to_owned(),
        endpoint,
        tls,
    })
}

/// A JWKS document: JSON with a `keys` array (checked here so Envoy never rejects a listener).
fn read_jwks(path: &std::path::Path) -> Result<String, String> {
    let shown = path.display();
    let size = std::fs::metadata(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    if size.len() > MAX_JWKS_BYTES {
        return Err(format!("{shown} is larger than {MAX_JWKS_BYTES} bytes"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{shown} is not JSON: {e}"))?;
    if !doc.get("keys").is_some_and(serde_json::Value::is_array) {
        return Err(format!("{shown} is not a JWKS (no \"keys\" array)"));
    }
    Ok(text)
}
