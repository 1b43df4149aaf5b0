//! The caps on YAML input: each hostile file is an error, and a quick one.

use super::*;
use std::time::{Duration, Instant};

/// Reads `text` as the only configuration file; returns what came out and how long it took.
fn read_text_as_file(text: &str) -> (Parsed, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.yaml");
    fs::write(&file, text).unwrap();
    let started = Instant::now();
    let parsed = read(&file);
    (parsed, started.elapsed())
}

/// The only error `text` produces, which must come within a few seconds.
fn only_error(text: &str) -> String {
    let (parsed, took) = read_text_as_file(text);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(parsed.objects.is_empty(), "{:?}", parsed.objects);
    assert_eq!(parsed.errors.len(), 1, "{:#?}", parsed.errors);
    parsed.errors[0].to_string()
}

const SECRET: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n";

#[test]
fn a_file_over_the_size_cap_is_an_error() {
    // Exactly at the cap is fine: a Secret padded with a comment.
    let pad = |len: usize| format!("{SECRET}#{}\n", "x".repeat(len - SECRET.len() - 2));
    let at_cap = pad(MAX_FILE_BYTES as usize);
    assert_eq!(at_cap.len() as u64, MAX_FILE_BYTES);
    let (parsed, _) = read_text_as_file(&at_cap);
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    assert_eq!(parsed.objects.len(), 1);

    let error = only_error(&pad(MAX_FILE_BYTES as usize + 1));
    assert!(error.contains("c.yaml: is larger than 1 MiB"), "{error}");
}

#[test]
fn an_endless_file_is_read_only_up_to_the_cap() {
    let started = Instant::now();
    let parsed = read(Path::new("/dev/zero"));
    assert!(started.elapsed() < Duration::from_secs(5));
    let errors: Vec<String> = parsed.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [
            "/dev/zero: is larger than 1 MiB, the limit per configuration file; split it into several files"
        ]
    );
}

#[test]
fn billion_laughs_hit_serde_yaml_repetition_limit() {
    let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..12 {
        let refs = vec![format!("*a{}", i - 1); 9].join(", ");
        text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    let error = only_error(&text);
    assert!(
        error.contains("document 1: invalid YAML: repetition limit exceeded"),
        "{error}"
    );
}

#[test]
fn an_alias_that_expands_too_far_is_an_error() {
    // Under serde_yaml's limit on following aliases (100 per event), over the value budget:
    // 1,100 items named 1,000 times.
    let items = vec!["1"; 1100].join(",");
    let aliases = vec!["*a"; 1000].join(",");
    let error = only_error(&format!("a: &a [{items}]\nb: [{aliases}]\n"));
    assert!(
        error.contains(&format!("more than {MAX_VALUES} values (through aliases?)")),
        "{error}"
    );
    // Aliases within the budget still work.
    let (parsed, _) = read_text_as_file(&format!("{SECRET}stringData: &d {{k: v}}\ntype: *d\n"));
    let errors: Vec<String> = parsed.errors.iter().map(ToString::to_string).collect();
    // The alias expanded: `type` holds the mapping, which is not a string.
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("type: invalid type: map, expected a string"),
        "{errors:?}"
    );
}

#[test]
fn deep_flow_nesting_is_refused_before_parsing() {
    let error = only_error(&"[".repeat(MAX_FILE_BYTES as usize));
    assert!(
        error.contains("c.yaml: invalid YAML: [ and { nest more than 100 deep"),
        "{error}"
    );
    let error = only_error(&format!("a: {}", "{a: ".repeat(200_000)));
    assert!(error.contains("nest more than 100 deep"), "{error}");
}

#[test]
fn the_nesting_scan_skips_quotes_comments_and_plain_text() {
    let deep = |open: &str, n: usize| format!("{}{}", open.repeat(n), "]".repeat(n));
    assert!(!flow_depth_exceeds(&deep("[", 100), 100));
    assert!(flow_depth_exceeds(&deep("[", 101), 100));
    assert!(flow_depth_exceeds(&deep("[ ", 101), 100));
    let brackets = "[{".repeat(200);
    for text in [
        format!("a: \"{brackets}\"\n"),
        format!("a: '{brackets}'\n"),
        format!("a: 'it''s {brackets}'\n"),
        format!("a: \"\\\" {brackets}\"\n"),
        format!("a: 1 # {brackets}\n"),
        format!("# {brackets}\n"),
        format!("a: x{}\n", "[".repeat(200)),
        format!("- [\"{brackets}\", '{brackets}']\n"),
    ] {
        assert!(!flow_depth_exceeds(&text, 100), "{text}");
        assert!(
            serde_yaml::from_str::<Value>(&text).is_ok(),
            "{text} is valid YAML"
        );
    }
}

#[test]
fn tags_and_duplicate_keys_behave_as_in_serde_yaml() {
    let (parsed, _) = read_text_as_file("a: !custom {b: 1}\n");
    // A tagged value is kept (and then rejected as a document without a kind).
    assert_eq!(parsed.errors.len(), 1);
    assert!(
        parsed.errors[0].to_string().contains("kind: is required"),
        "{:?}",
        parsed.errors
    );
    let error = only_error("a: 1\na: 2\n");
    assert!(error.contains("duplicate entry with key \"a\""), "{error}");
}

/// serde_yaml panics if asked for the document after one with an unknown alias; reading
/// stops at the first YAML error instead.
#[test]
fn an_unknown_alias_is_an_error_not_a_panic() {
    for text in [
        "a: *x\n",
        "a: [1, *x]\nb: 2\n---\nc: 3\n",
        "- {a: *x}\n- b\n",
    ] {
        let error = only_error(text);
        assert!(
            error.contains("document 1: invalid YAML: unknown anchor"),
            "{error}"
        );
    }
    let (parsed, _) = read_text_as_file(&format!("{SECRET}---\na: *x\n---\nb: 1\n"));
    let errors: Vec<String> = parsed.errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("document 2: invalid YAML: unknown anchor"),
        "{errors:?}"
    );
    assert_eq!(
        parsed.objects.len(),
        1,
        "the document before the error is read"
    );
}
