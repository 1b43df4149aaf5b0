//! Sizes, counts, ports and durations past their bounds are field errors, and no input,
//! however mangled, panics the loader.

use super::*;

fn aws(refresh: &str) -> String {
    policy(&format!(
        "{{type: AWSCredentials, awsCredentials: {{region: us-east-1, credentialsFile: c, refresh: {refresh}}}}}"
    ))
}

fn listeners(n: usize) -> String {
    let list: Vec<String> = (0..n)
        .map(|i| format!("{{name: l{i}, port: {}}}", 20000 + i))
        .collect();
    format!("[{}]", list.join(", "))
}

#[test]
fn bounds_are_field_errors() {
    let a = |n: usize| "a".repeat(n);
    let backends = |n: usize| vec!["{backends: [{name: openai}]}"; n].join(", ");
    let sts = |extra: &str| {
        policy(&format!(
            "{{type: AWSCredentials, awsCredentials: {{region: us-east-1, oidcExchangeToken: {{roleArn: arn:aws:iam::1:role/r, tokenFile: t{extra}}}}}}}"
        ))
    };
    let cases: Vec<(String, String)> = vec![
        // Durations: checked arithmetic, at most 24 h (each of these panicked before).
        (
            aws("{maxBackoff: 18446744073709551615s1s}"),
            r#"spec.awsCredentials.refresh.maxBackoff: "18446744073709551615s1s" is longer than 24h"#.into(),
        ),
        (
            aws("{beforeExpiry: 25h}"),
            r#"spec.awsCredentials.refresh.beforeExpiry: "25h" is longer than 24h"#.into(),
        ),
        (
            aws("{jitter: 86400001ms}"),
            r#"spec.awsCredentials.refresh.jitter: "86400001ms" is longer than 24h"#.into(),
        ),
        (
            aws("{maxBackoff: 5124095576030432h}"),
            r#"spec.awsCredentials.refresh.maxBackoff: "5124095576030432h" is longer than 24h"#.into(),
        ),
        (
            aws("{maxBackoff: 0s}"),
            "spec.awsCredentials.refresh.maxBackoff: must be more than 0".into(),
        ),
        (
            aws(&format!("{{maxBackoff: {}h}}", "9".repeat(32))),
            "spec.awsCredentials.refresh.maxBackoff: must be at most 32 characters".into(),
        ),
        (
            sts(", durationSeconds: 100000"),
            "spec.awsCredentials.oidcExchangeToken.durationSeconds: must be between 900 and 43200".into(),
        ),
        (
            sts(", durationSeconds: 4294967296"),
            "spec.awsCredentials.oidcExchangeToken.durationSeconds: invalid value: integer `4294967296`, expected u32".into(),
        ),
        // Ports and weights.
        (
            gateway("{nodeCluster: g, listeners: [{name: a, port: 4294967296}]}"),
            "spec.listeners[0].port: invalid value: integer `4294967296`, expected u32".into(),
        ),
        (
            gateway("{nodeCluster: g, listeners: [{name: a, port: -1}]}"),
            "spec.listeners[0].port: invalid value: integer `-1`, expected u32".into(),
        ),
        (
            rule("{backends: [{name: openai, weight: 4294967296}]}"),
            "spec.rules[0].backends[0].weight: invalid value: integer `4294967296`, expected u32"
                .into(),
        ),
        // Counts.
        (
            gateway(&format!("{{nodeCluster: g, listeners: {}}}", listeners(65))),
            "spec.listeners: must have at most 64 items".into(),
        ),
        (
            route(&format!("{{gateway: gw, rules: [{}]}}", backends(1025))),
            "spec.rules: must have at most 1024 items".into(),
        ),
        // Lengths, counted in characters as Kubernetes does.
        (
            gateway(&format!("{{nodeCluster: {}, listeners: []}}", a(254))),
            "spec.nodeCluster: must be at most 253 characters".into(),
        ),
        (
            backend(&format!("{{provider: OpenAI, endpoint: http://{}}}", a(2042))),
            "spec.endpoint: must be at most 2048 characters".into(),
        ),
        (
            backend("{provider: OpenAI, endpoint: http://h}").replace("name: b", &format!("name: {}", "é".repeat(254))),
            "metadata.name: must be at most 253 characters".into(),
        ),
        (
            rule(&format!(
                "{{matches: [{{headers: [{{name: x-m, value: {}}}]}}], backends: [{{name: openai}}]}}",
                a(4097)
            )),
            "spec.rules[0].matches[0].headers[0].value: must be at most 4096 characters".into(),
        ),
        // The default session name is cut by characters, not bytes (a cut inside `é` panicked).
        (
            sts("").replace("name: p", &format!("name: {}", "é".repeat(40))),
            "spec.awsCredentials.oidcExchangeToken.roleSessionName: must be 2-64 characters".into(),
        ),
    ];
    for (yaml, expected) in &cases {
        expect_one_error(yaml, expected);
    }
}

#[test]
fn values_at_the_bounds_load() {
    let gw = format!(
        "{V}\nkind: Gateway\nmetadata: {{name: {}}}\nspec: {{nodeCluster: {}, listeners: {}}}\n",
        "é".repeat(253),
        "n".repeat(253),
        listeners(64)
    );
    let policy = policy(
        "{type: AWSCredentials, awsCredentials: {region: us-east-1, refresh: {beforeExpiry: 24h, jitter: 23h59m60s, maxBackoff: 86400000ms}, oidcExchangeToken: {roleArn: arn:aws:iam::1:role/r, tokenFile: t, durationSeconds: 43200}}}",
    );
    let dir = dir_with(&[("a.yaml", &gw), ("b.yaml", &policy)]);
    let model = load(dir.path()).unwrap_or_else(|e| panic!("{e}")).model;
    assert_eq!(model.gateways[&"é".repeat(253)].listeners.len(), 64);
    let PolicyKind::Aws(aws) = &model.policies["p"].kind else {
        panic!("an AWS policy")
    };
    let day = std::time::Duration::from_secs(24 * 3600);
    assert_eq!(
        (
            aws.refresh.before_expiry,
            aws.refresh.jitter,
            aws.refresh.max_backoff
        ),
        (day, day, day)
    );
}

/// Random edits of a full configuration: whatever comes out, nothing panics, and whenever
/// the all-or-nothing load succeeds, the partial load agrees with it.
#[test]
fn mangled_configurations_never_panic() {
    const EDITS: [&str; 24] = [
        "[",
        "]",
        "{",
        "}",
        ": ",
        "- ",
        "*a",
        "&a ",
        "\n",
        "  ",
        "\"",
        "'",
        "#",
        "---\n",
        "18446744073709551615",
        "-1",
        "é",
        "0",
        "~",
        "!t ",
        "? ",
        "1h1h",
        "ms",
        "4294967296",
    ];
    let source = full_config();
    let texts: Vec<String> = read(source.path())
        .files
        .iter()
        .map(|p| fs::read_to_string(p).unwrap())
        .collect();
    let whole = texts.join("\n---\n");
    let dir = dir_with(&[("z.yaml", &whole), ("certs/ca.pem", PEM)]);
    load(dir.path()).unwrap_or_else(|e| panic!("unmangled: {e}"));
    let mut rng = fastrand::Rng::with_seed(0x7e55e7a);
    let (mut loaded, mut failed) = (0, 0);
    for _ in 0..300 {
        let mut text = texts.join("\n---\n");
        for _ in 0..rng.usize(1..4) {
            let at = boundary(&text, rng.usize(..=text.len()));
            match rng.u8(..3) {
                0 => text.insert_str(at, EDITS[rng.usize(..EDITS.len())]),
                1 => {
                    let end = boundary(&text, (at + rng.usize(..20)).min(text.len()));
                    text.replace_range(at..end, "");
                }
                _ => {
                    let end = boundary(&text, (at + rng.usize(..40)).min(text.len()));
                    let copy = text[at..end].to_owned();
                    text.insert_str(end, &copy);
                }
            }
        }
        let dir = dir_with(&[("z.yaml", &text), ("certs/ca.pem", PEM)]);
        let parsed = read(dir.path());
        let partial = load_partial(&parsed.objects, &Restrictions::default());
        match load(dir.path()) {
            Ok(all) => {
                loaded += 1;
                assert!(partial.errors.is_empty(), "{text}\n{:?}", partial.errors);
                assert_eq!(partial.model, all.model, "{text}");
            }
            Err(errors) => {
                failed += 1;
                assert!(errors.0.iter().all(|e| !e.message.is_empty()), "{errors:?}");
            }
        }
    }
    // Both outcomes were exercised.
    assert!(
        loaded >= 5 && failed >= 5,
        "{loaded} loaded, {failed} failed"
    );
}

/// The char boundary at or before `i`.
fn boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}
