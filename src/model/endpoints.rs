//! The endpoints an operator lets objects send Tessera's secrets to (`--allow-endpoint`).

use serde::Serialize;

/// Allowed origins (scheme, host and port), compared exactly after parsing: a prefix match on
/// the text would let `https://sts.amazonaws.com.evil.net` or `https://sts.amazonaws.com@evil`
/// through.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AllowedEndpoints(Vec<String>);

/// Why an `--allow-endpoint` entry is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--allow-endpoint {entry:?}: {why}")]
pub struct BadAllowedEndpoint {
    entry: String,
    why: &'static str,
}

impl AllowedEndpoints {
    /// Parses `scheme://host[:port]` entries; a path, query or user part is refused rather
    /// than silently ignored, since it would suggest a narrower permission than an origin.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, BadAllowedEndpoint> {
        let mut origins = Vec::new();
        for entry in entries {
            let entry = entry.as_ref();
            let bad = |why| BadAllowedEndpoint {
                entry: entry.to_owned(),
                why,
            };
            let url = url::Url::parse(entry).map_err(|_| bad("not a URL"))?;
            if !url.username().is_empty() || url.password().is_some() {
                return Err(bad("must not carry a user or password"));
            }
            if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
                return Err(bad(
                    "must be an origin, scheme://host[:port], without a path",
                ));
            }
            origins.push(origin(&url).ok_or_else(|| bad("must be an http or https URL"))?);
        }
        origins.sort();
        origins.dedup();
        Ok(Self(origins))
    }

    /// Whether `url` is at one of the allowed origins (a URL with a user part never is).
    pub fn allows(&self, url: &str) -> bool {
        let Ok(url) = url::Url::parse(url) else {
            return false;
        };
        if !url.username().is_empty() || url.password().is_some() {
            return false;
        }
        origin(&url).is_some_and(|o| self.0.contains(&o))
    }
}

/// `scheme://host:port` with the default port made explicit; only http(s) has one.
fn origin(url: &url::Url) -> Option<String> {
    match url.origin() {
        url::Origin::Tuple(scheme, host, port) if scheme == "https" || scheme == "http" => {
            Some(format!("{scheme}://{host}:{port}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> AllowedEndpoints {
        AllowedEndpoints::parse(&["https://sts.amazonaws.com", "http://127.0.0.1:8080/"]).unwrap()
    }

    #[test]
    fn exact_origins_match() {
        let a = allowed();
        assert!(a.allows("https://sts.amazonaws.com"));
        assert!(a.allows("https://STS.amazonaws.com:443/any/path?x=1"));
        assert!(a.allows("http://127.0.0.1:8080/token"));
    }

    #[test]
    fn look_alikes_are_refused() {
        let a = allowed();
        for url in [
            "https://sts.amazonaws.com.evil.net",
            "https://sts.amazonaws.com.evil.net/",
            "https://sts.amazonaws.com@evil.net/",
            "https://user@sts.amazonaws.com/",
            "https://sts.amazonaws.com:8443/",
            "http://sts.amazonaws.com/",
            "http://127.0.0.1:8081/",
            "http://127.0.0.1/",
            "ftp://sts.amazonaws.com/",
            "sts.amazonaws.com",
            "",
        ] {
            assert!(!a.allows(url), "{url} must not be allowed");
        }
        assert!(!AllowedEndpoints::default().allows("https://sts.amazonaws.com"));
    }

    #[test]
    fn entries_must_be_origins() {
        for entry in [
            "https://sts.amazonaws.com/prefix",
            "https://u@sts.amazonaws.com",
            "sts.amazonaws.com",
            "file:///etc",
        ] {
            assert!(AllowedEndpoints::parse(&[entry]).is_err(), "{entry}");
        }
    }
}
