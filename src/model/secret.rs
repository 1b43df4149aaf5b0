//! A string whose value must never be printed.

use std::fmt;

/// Credential material; `Debug`, `Display` and `Serialize` all print `<redacted>`.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a value; surrounding whitespace is never part of a credential.
    pub fn new(value: impl Into<String>) -> Self {
        let value: String = value.into();
        let trimmed = value.trim();
        if trimmed.len() == value.len() {
            Self(value)
        } else {
            Self(trimmed.to_owned())
        }
    }

    /// The real value: only the translator that builds the SDS secret should call this.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when there is no credential material (a revocation).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl serde::Serialize for SecretString {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let s = SecretString::new("  sk-live-123\n");
        assert_eq!(s.expose(), "sk-live-123");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
    }
}
