//! Text that comes from outside (Envoy's NACK details, identity providers' error responses):
//! bounded and with control characters escaped before it reaches a log line, `/status` or a
//! Kubernetes condition, so a hostile peer can neither forge log lines nor grow them unbounded.

/// `text` with control characters escaped, cut to at most `max_bytes` of its input.
pub fn bounded_text(text: &str, max_bytes: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_bytes) + 16);
    let mut taken = 0;
    for c in text.chars() {
        if taken + c.len_utf8() > max_bytes {
            out.push_str(&format!("…(truncated, {} bytes)", text.len()));
            return out;
        }
        taken += c.len_utf8();
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_long_text_cut() {
        assert_eq!(bounded_text("a\nb", 64), "a\\nb");
        let long = "é".repeat(100);
        let cut = bounded_text(&long, 11);
        assert!(cut.starts_with(&"é".repeat(5)), "{cut}");
        assert!(cut.ends_with("…(truncated, 200 bytes)"), "{cut}");
    }
}
