//! Bounds on what an xDS client can make the server hold or wait for, and how untrusted
//! client text (NACK details) is made safe to log and show.

use super::resource::type_url;
pub use crate::untrusted::bounded_text;
use std::time::Duration;

/// Limits of the ADS port; over one, the offending stream ends with a gRPC status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// HTTP/2 streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_streams_per_connection: u32,
    /// ADS streams open at once over all connections; more are refused (RESOURCE_EXHAUSTED).
    pub max_streams: usize,
    /// How long a new stream may take to send its first request (DEADLINE_EXCEEDED).
    pub first_request_timeout: Duration,
    /// Resource names one stream may subscribe to per type (RESOURCE_EXHAUSTED).
    pub max_names_per_type: usize,
    /// Bytes of `node.id` and of `node.cluster` (INVALID_ARGUMENT).
    pub max_node_field_bytes: usize,
    /// Bytes of a NACK's error detail kept for logs and `/status`.
    pub max_nack_text_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_streams_per_connection: 16,
            max_streams: 20_000,
            first_request_timeout: Duration::from_secs(15),
            max_names_per_type: 10_000,
            max_node_field_bytes: 1024,
            max_nack_text_bytes: 1024,
        }
    }
}

/// The text of a NACK as it may be logged and shown.
///
/// Envoy may echo the rejected message in `error_detail`, and for SDS and ECDS that message
/// holds the credential, so their text is never kept: only its length. Other types' text is
/// truncated and its control characters escaped, so it cannot forge log lines.
pub fn nack_text(type_url: &str, detail: &str, max_bytes: usize) -> String {
    if type_url::carries_credentials(type_url) {
        return format!(
            "(withheld: {} bytes; the detail of a NACKed credential may echo the secret)",
            detail.len()
        );
    }
    bounded_text(detail, max_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_nack_text_is_withheld() {
        let detail = "Proto constraint validation failed: inline_string: \"sk-live-123\"";
        for t in [type_url::SECRET, type_url::EXTENSION_CONFIG] {
            let shown = nack_text(t, detail, 1024);
            assert!(!shown.contains("sk-live-123"), "{shown}");
            assert!(shown.contains(&detail.len().to_string()));
        }
    }

    #[test]
    fn other_nack_text_is_escaped_and_truncated() {
        let shown = nack_text(type_url::CLUSTER, "bad\ncluster\u{1b}[31m", 1024);
        assert_eq!(shown, "bad\\ncluster\\u{1b}[31m");
        let long = "é".repeat(1000);
        let shown = nack_text(type_url::LISTENER, &long, 1024);
        assert!(shown.starts_with(&"é".repeat(512)));
        assert!(!shown.starts_with(&"é".repeat(513)));
        assert!(shown.ends_with("…(truncated, 2000 bytes)"), "{shown}");
    }
}
