//! Validation of BackendSecurityPolicy specs, one function per credential type.

use super::sink::{Fault, Sink};
use super::syntax::is_header_name;
use super::validate::Secrets;
use crate::api::{
    self, ApiKeySpec, AwsCredentialsSpec, AzureCredentialsSpec, RefreshSpec, SecretKeyRef,
};
use crate::model::{
    ApiKey, AwsCredentials, AwsSource, AzureAuth, AzureCredentials, KeySource, OidcClient,
    OidcEndpoint, PolicyKind, RefreshPolicy, TokenSource, WebIdentity,
};
use std::time::Duration;

/// The audience STS expects in a web identity token unless the IAM provider says otherwise.
const DEFAULT_AWS_AUDIENCE: &str = "sts.amazonaws.com";
/// The audience Entra ID expects in a federated client assertion.
const DEFAULT_AZURE_AUDIENCE: &str = "api://AzureADTokenExchange";
const DEFAULT_AZURE_AUTHORITY: &str = "https://login.microsoftonline.com";
const DEFAULT_AZURE_SCOPE: &str = "https://cognitiveservices.azure.com/.default";

pub(super) fn api_key(key: ApiKeySpec, e: &mut Sink<'_>, secrets: &Secrets) -> Option<PolicyKind> {
    let source = secret_source(key.file, key.secret_ref, "spec.apiKey", "file", e, secrets);
    if let Some(header) = key.header.as_deref().filter(|h| !is_header_name(h)) {
        let message = format!("{header:?} is not a lowercase HTTP header name");
        e.err("spec.apiKey.header", message);
    }
    if let Some(prefix) = &key.prefix
        && http::HeaderValue::from_str(prefix).is_err()
    {
        e.err("spec.apiKey.prefix", "is not a valid HTTP header value");
    }
    Some(PolicyKind::ApiKey(ApiKey {
        source: source?,
        header: key.header,
        prefix: key.prefix,
    }))
}

/// Exactly one of a file and a Secret reference. A missing file, Secret or key is not an
/// error: it is a revocation, handled where the value is read.
fn secret_source(
    file: Option<String>,
    secret_ref: Option<SecretKeyRef>,
    at: &str,
    file_field: &str,
    e: &mut Sink<'_>,
    secrets: &Secrets,
) -> Option<KeySource> {
    let ref_field = if file_field == "file" {
        "secretRef"
    } else {
        "clientSecretRef"
    };
    match (file, secret_ref) {
        (Some(file), None) if file.is_empty() => {
            e.err(format!("{at}.{file_field}"), "must not be empty");
            None
        }
        (Some(file), None) => match e.resolve(&file) {
            Ok(path) => Some(KeySource::File(path)),
            Err(m) => {
                e.err(format!("{at}.{file_field}"), m);
                None
            }
        },
        (None, Some(r)) if r.name.is_empty() || r.key.is_empty() => {
            e.err(
                format!("{at}.{ref_field}"),
                "name and key must not be empty",
            );
            None
        }
        (None, Some(r)) => Some(KeySource::Secret {
            value: secrets.get(&r.name).and_then(|s| s.get(&r.key)).cloned(),
            name: r.name,
            key: r.key,
        }),
        _ => {
            e.err(
                at,
                format!("needs exactly one of {file_field} and {ref_field}"),
            );
            None
        }
    }
}

pub(super) fn aws(
    spec: AwsCredentialsSpec,
    e: &mut Sink<'_>,
    secrets: &Secrets,
) -> Option<PolicyKind> {
    const AT: &str = "spec.awsCredentials";
    if !is_region(&spec.region) {
        e.err(
            format!("{AT}.region"),
            format!("{:?} is not an AWS region", spec.region),
        );
    }
    if let Some(endpoint) = spec.sts_endpoint.as_deref()
        && let Err(m) = check_url(endpoint)
            .map_err(Fault::from)
            .and_then(|()| e.allow_endpoint(endpoint))
    {
        e.err(format!("{AT}.stsEndpoint"), m);
    }
    let refresh = refresh(
        spec.refresh.unwrap_or_default(),
        &format!("{AT}.refresh"),
        e,
    );
    let source = match (spec.oidc_exchange_token, spec.credentials_file) {
        (Some(x), None) => {
            if spec.profile.is_some() {
                e.err(format!("{AT}.profile"), "only applies to credentialsFile");
            }
            web_identity(x, e, secrets).map(AwsSource::WebIdentity)
        }
        (None, Some(file)) if file.is_empty() => {
            e.err(format!("{AT}.credentialsFile"), "must not be empty");
            None
        }
        (None, Some(file)) => match e.resolve(&file) {
            Ok(path) => Some(AwsSource::CredentialsFile {
                path,
                profile: spec.profile.unwrap_or_else(|| "default".into()),
            }),
            Err(m) => {
                e.err(format!("{AT}.credentialsFile"), m);
                None
            }
        },
        _ => {
            e.err(
                AT,
                "needs exactly one of oidcExchangeToken and credentialsFile",
            );
            None
        }
    };
    Some(PolicyKind::Aws(Box::new(AwsCredentials {
        region: spec.region,
        source: source?,
        sts_endpoint: spec.sts_endpoint,
        refresh: refresh?,
    })))
}

fn web_identity(
    x: api::OidcExchangeTokenSpec,
    e: &mut Sink<'_>,
    secrets: &Secrets,
) -> Option<WebIdentity> {
    const AT: &str = "spec.awsCredentials.oidcExchangeToken";
    if !x.role_arn.starts_with("arn:") || x.role_arn.split(':').count() < 6 {
        e.err(
            format!("{AT}.roleArn"),
            format!("{:?} is not an IAM role ARN", x.role_arn),
        );
    }
    let duration_seconds = x.duration_seconds.unwrap_or(3600);
    if !(900..=43200).contains(&duration_seconds) {
        e.err(
            format!("{AT}.durationSeconds"),
            "must be between 900 and 43200",
        );
    }
    // By characters: truncating a string by bytes panics inside a multi-byte character.
    let session_name = x
        .role_session_name
        .unwrap_or_else(|| format!("tessera-{}", e.name()).chars().take(64).collect());
    // STS: 2-64 characters of [\w+=,.@-].
    let valid_session = (2..=64).contains(&session_name.len())
        && session_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
    if !valid_session {
        e.err(
            format!("{AT}.roleSessionName"),
            "must be 2-64 characters of letters, digits and _+=,.@-",
        );
    }
    let token = match (x.token_file, x.oidc) {
        (Some(file), None) if file.is_empty() => {
            e.err(format!("{AT}.tokenFile"), "must not be empty");
            None
        }
        (Some(file), None) => match e.resolve(&file) {
            Ok(path) => Some(TokenSource::File(path)),
            Err(m) => {
                e.err(format!("{AT}.tokenFile"), m);
                None
            }
        },
        (None, Some(oidc)) => oidc_client(
            oidc,
            &format!("{AT}.oidc"),
            DEFAULT_AWS_AUDIENCE,
            e,
            secrets,
        )
        .map(TokenSource::Oidc),
        _ => {
            e.err(AT, "needs exactly one of tokenFile and oidc");
            None
        }
    };
    Some(WebIdentity {
        role_arn: x.role_arn,
        session_name,
        duration_seconds,
        token: token?,
    })
}

/// An OIDC client-credentials block (shared with Azure, whose default audience differs).
pub(super) fn oidc_client(
    spec: api::OidcSpec,
    at: &str,
    default_audience: &str,
    e: &mut Sink<'_>,
    secrets: &Secrets,
) -> Option<OidcClient> {
    let endpoint = match (spec.issuer, spec.token_endpoint) {
        (Some(issuer), None) => check_url(&issuer)
            .map_err(Fault::from)
            .and_then(|()| e.allow_endpoint(&issuer))
            .map_err(|m| e.err(format!("{at}.issuer"), m))
            .ok()
            .map(|()| OidcEndpoint::Issuer(issuer)),
        (None, Some(url)) => check_url(&url)
            .map_err(Fault::from)
            .and_then(|()| e.allow_endpoint(&url))
            .map_err(|m| e.err(format!("{at}.tokenEndpoint"), m))
            .ok()
            .map(|()| OidcEndpoint::TokenEndpoint(url)),
        _ => {
            e.err(at, "needs exactly one of issuer and tokenEndpoint");
            None
        }
    };
    if spec.client_id.is_empty() {
        e.err(format!("{at}.clientId"), "must not be empty");
    }
    let client_secret = secret_source(
        spec.client_secret_file,
        spec.client_secret_ref,
        at,
        "clientSecretFile",
        e,
        secrets,
    );
    Some(OidcClient {
        endpoint: endpoint?,
        client_id: spec.client_id,
        client_secret: client_secret?,
        scopes: spec.scopes.unwrap_or_default(),
        audience: spec.audience.unwrap_or_else(|| default_audience.to_owned()),
        allowed_token_endpoints: e.restrictions.endpoints.clone().map(Box::new),
    })
}

pub(super) fn azure(
    spec: AzureCredentialsSpec,
    e: &mut Sink<'_>,
    secrets: &Secrets,
) -> Option<PolicyKind> {
    const AT: &str = "spec.azureCredentials";
    // Entra tenant and client ids are GUIDs or (tenants) domain names.
    let id_like = |v: &str| {
        !v.is_empty()
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.".contains(c))
    };
    if !id_like(&spec.tenant_id) {
        e.err(
            format!("{AT}.tenantId"),
            format!("{:?} is not a tenant id", spec.tenant_id),
        );
    }
    if !id_like(&spec.client_id) {
        e.err(
            format!("{AT}.clientId"),
            format!("{:?} is not a client id", spec.client_id),
        );
    }
    // An override receives the client secret or the federated token: like every endpoint
    // override it must be one the operator allowed. Entra's public authority is the default.
    let overridden = spec.authority_host.is_some();
    let authority_host = spec
        .authority_host
        .unwrap_or_else(|| DEFAULT_AZURE_AUTHORITY.into());
    if !authority_host.starts_with("https://") || check_url(&authority_host).is_err() {
        e.err(
            format!("{AT}.authorityHost"),
            format!("{authority_host:?} must be an https URL"),
        );
    } else if overridden && let Err(m) = e.allow_endpoint(&authority_host) {
        e.err(format!("{AT}.authorityHost"), m);
    }
    let ca_pem = spec.ca_file.and_then(|file| {
        let path = match e.resolve(&file) {
            Ok(path) => path,
            Err(m) => {
                e.err(format!("{AT}.caFile"), m);
                return None;
            }
        };
        match std::fs::read_to_string(&path) {
            Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => Some(pem),
            Ok(_) => {
                e.err(
                    format!("{AT}.caFile"),
                    format!("{} holds no PEM certificate", path.display()),
                );
                None
            }
            Err(err) => {
                e.err(
                    format!("{AT}.caFile"),
                    format!("cannot read {}: {err}", path.display()),
                );
                None
            }
        }
    });
    let refresh = refresh(
        spec.refresh.unwrap_or_default(),
        &format!("{AT}.refresh"),
        e,
    );
    let secret = spec.client_secret_file.is_some() || spec.client_secret_ref.is_some();
    let auth = match (secret, spec.oidc_exchange_token) {
        (true, None) => secret_source(
            spec.client_secret_file,
            spec.client_secret_ref,
            AT,
            "clientSecretFile",
            e,
            secrets,
        )
        .map(AzureAuth::ClientSecret),
        (false, Some(x)) => {
            let at = format!("{AT}.oidcExchangeToken");
            match (x.token_file, x.oidc) {
                (Some(file), None) if !file.is_empty() => match e.resolve(&file) {
                    Ok(path) => Some(AzureAuth::Federated(TokenSource::File(path))),
                    Err(m) => {
                        e.err(format!("{at}.tokenFile"), m);
                        None
                    }
                },
                (None, Some(oidc)) => oidc_client(
                    oidc,
                    &format!("{at}.oidc"),
                    DEFAULT_AZURE_AUDIENCE,
                    e,
                    secrets,
                )
                .map(|c| AzureAuth::Federated(TokenSource::Oidc(c))),
                _ => {
                    e.err(at, "needs exactly one of tokenFile and oidc");
                    None
                }
            }
        }
        _ => {
            e.err(
                AT,
                "needs exactly one of clientSecretFile, clientSecretRef and oidcExchangeToken",
            );
            None
        }
    };
    Some(PolicyKind::Azure(Box::new(AzureCredentials {
        tenant_id: spec.tenant_id,
        client_id: spec.client_id,
        auth: auth?,
        authority_host,
        ca_pem,
        scope: spec.scope.unwrap_or_else(|| DEFAULT_AZURE_SCOPE.into()),
        refresh: refresh?,
    })))
}

fn refresh(spec: RefreshSpec, at: &str, e: &mut Sink<'_>) -> Option<RefreshPolicy> {
    let defaults = RefreshPolicy::default();
    let mut field = |value: Option<String>, name: &str, default: Duration| match value {
        None => Some(default),
        Some(v) => parse_duration(&v, MAX_DURATION)
            .map_err(|m| e.err(format!("{at}.{name}"), m))
            .ok(),
    };
    let before_expiry = field(spec.before_expiry, "beforeExpiry", defaults.before_expiry);
    let jitter = field(spec.jitter, "jitter", defaults.jitter);
    let max_backoff = field(spec.max_backoff, "maxBackoff", defaults.max_backoff);
    // A zero backoff would retry a failing issuer in a busy loop.
    let max_backoff = max_backoff.filter(|d| {
        if d.is_zero() {
            e.err(format!("{at}.maxBackoff"), "must be more than 0");
        }
        !d.is_zero()
    });
    Some(RefreshPolicy {
        before_expiry: before_expiry?,
        jitter: jitter?,
        max_backoff: max_backoff?,
    })
}

/// Longest refresh duration accepted.
const MAX_DURATION: Duration = Duration::from_secs(api::limits::MAX_DURATION_SECS);

/// Parses durations like `5m`, `30s`, `1h30m`, `250ms`, up to `max`. Arithmetic is checked:
/// no text can overflow it.
pub(crate) fn parse_duration(text: &str, max: Duration) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration such as \"30s\", \"5m\" or \"1h30m\"");
    let too_long = || format!("{text:?} is longer than {}h", max.as_secs() / 3600);
    let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    let mut total_ms: u64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        // All digits, so the only way to fail is overflow.
        let n: u64 = rest[..digits].parse().map_err(|_| too_long())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(bad()),
        };
        total_ms = n
            .checked_mul(unit_ms)
            .and_then(|ms| total_ms.checked_add(ms))
            .filter(|total| *total <= max_ms)
            .ok_or_else(too_long)?;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_millis(total_ms))
}

fn check_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(h)) if !h.is_empty() => Ok(()),
        _ => Err(format!("{url:?} must be an http(s) URL with a host")),
    }
}

fn is_region(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 32
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::{MAX_DURATION, parse_duration};
    use std::time::Duration;

    fn parse(text: &str) -> Result<Duration, String> {
        parse_duration(text, MAX_DURATION)
    }

    #[test]
    fn durations() {
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("24h"), Ok(MAX_DURATION));
        assert_eq!(parse("23h59m60s"), Ok(MAX_DURATION));
        assert!(parse("5").is_err());
        assert!(parse("m").is_err());
        assert!(parse("5 minutes").is_err());
        assert!(parse("").is_err());
    }

    /// Each of these overflowed (u64 or `Duration` arithmetic) and panicked before.
    #[test]
    fn durations_past_the_bound_are_errors_not_panics() {
        for text in [
            "24h1ms",
            "18446744073709551615s1s",
            "18446744073709551615s",
            "18446744073709551616ms",
            "307445734561825861m",
            "5124095576030432h",
            "99999999999999999999999999999h",
            "86400001ms",
            "1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h",
        ] {
            let error = parse(text).expect_err(text);
            assert!(error.contains("is longer than 24h"), "{text}: {error}");
        }
    }
}
