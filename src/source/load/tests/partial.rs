//! `load_partial`: invalid objects are left out, then whatever depends on them; the rest
//! loads, and every object left out says why, with a class a consumer can act on.

use super::*;

/// Reads `files` and loads them partially under `restrictions`.
fn partial(files: &[(&str, &str)], restrictions: &Restrictions) -> (Partial, Parsed) {
    let dir = dir_with(files);
    let parsed = read(dir.path());
    let partial = load_partial(&parsed.objects, restrictions);
    (partial, parsed)
}

/// (kind, name, class, `field: message`) of every error.
fn problems(p: &Partial) -> Vec<(Kind, String, ErrorClass, String)> {
    p.errors
        .iter()
        .map(|e| {
            let o = e
                .object
                .clone()
                .expect("every partial error names its object");
            (
                o.kind,
                o.name,
                e.class,
                format!("{}: {}", e.field, e.message),
            )
        })
        .collect()
}

fn named(kind: &str, name: &str, spec: &str) -> String {
    let version = if kind == "Secret" {
        "apiVersion: v1"
    } else {
        V
    };
    format!("{version}\nkind: {kind}\nmetadata: {{name: {name}}}\nspec: {spec}\n")
}

fn keys<T>(map: &BTreeMap<String, T>) -> Vec<&str> {
    map.keys().map(String::as_str).collect()
}

#[test]
fn the_invalid_and_what_depends_on_it_are_left_out() {
    let docs = [
        named(
            "Gateway",
            "gw",
            "{nodeCluster: gw, listeners: [{name: http, port: 10000}]}",
        ),
        named(
            "Backend",
            "good",
            "{provider: OpenAI, endpoint: http://good}",
        ),
        named(
            "Backend",
            "bad",
            "{provider: OpenAI, endpoint: http://bad, securityPolicy: p}",
        ),
        named("BackendSecurityPolicy", "p", "{type: APIKey}"),
        named(
            "Route",
            "r1",
            "{gateway: gw, rules: [{backends: [{name: bad}]}]}",
        ),
        named(
            "Route",
            "r2",
            "{gateway: gw, rules: [{backends: [{name: good}]}]}",
        ),
    ]
    .join("---\n");
    let files = [("c.yaml", docs.as_str())];
    let (p, parsed) = partial(&files, &Restrictions::default());
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    assert_eq!(keys(&p.model.gateways), ["gw"]);
    assert_eq!(keys(&p.model.backends), ["good"]);
    assert!(p.model.policies.is_empty());
    assert_eq!(keys(&p.model.routes), ["r2"]);
    use ErrorClass::*;
    assert_eq!(
        problems(&p),
        [
            (
                Kind::BackendSecurityPolicy,
                "p".into(),
                Invalid,
                "spec.apiKey: is required when type is APIKey".into()
            ),
            (
                Kind::Backend,
                "bad".into(),
                MissingReference,
                r#"spec.securityPolicy: BackendSecurityPolicy "p" is invalid"#.into()
            ),
            (
                Kind::Route,
                "r1".into(),
                MissingReference,
                r#"spec.rules[0].backends[0].name: Backend "bad" is invalid"#.into()
            ),
        ]
    );
    // All or nothing reports only the root cause.
    let dir = dir_with(&files);
    let all = load(dir.path()).unwrap_err();
    assert_eq!(all.0.len(), 1, "{all}");
    assert!(all.0[0].to_string().contains("spec.apiKey"), "{all}");
}

#[test]
fn each_error_has_the_class_of_its_problem() {
    let allowed = tempfile::tempdir().unwrap();
    let inside = allowed.path().join("key");
    let docs = [
        named("BackendSecurityPolicy", "outside", "{type: APIKey, apiKey: {file: /etc/hostname}}"),
        named("BackendSecurityPolicy", "relative", "{type: APIKey, apiKey: {file: key}}"),
        named(
            "BackendSecurityPolicy",
            "inside",
            &format!("{{type: APIKey, apiKey: {{file: {}}}}}", inside.display()),
        ),
        named(
            "BackendSecurityPolicy",
            "sts",
            &format!(
                "{{type: AWSCredentials, awsCredentials: {{region: us-east-1, stsEndpoint: http://attacker.example, oidcExchangeToken: {{roleArn: arn:aws:iam::1:role/r, tokenFile: {}}}}}}}",
                inside.display()
            ),
        ),
        // Today's Entra token goes to the authority: an override must be allowed like any.
        named(
            "BackendSecurityPolicy",
            "authority",
            &format!(
                "{{type: AzureCredentials, azureCredentials: {{tenantId: t, clientId: c, clientSecretFile: {}, authorityHost: https://login.evil.example}}}}",
                inside.display()
            ),
        ),
        // Origins compare parsed, not as text prefixes.
        named(
            "BackendSecurityPolicy",
            "lookalike",
            &format!(
                "{{type: AWSCredentials, awsCredentials: {{region: us-east-1, stsEndpoint: https://sts.amazonaws.com.evil.net, oidcExchangeToken: {{roleArn: arn:aws:iam::1:role/r, tokenFile: {}}}}}}}",
                inside.display()
            ),
        ),
        named(
            "BackendSecurityPolicy",
            "allowed-sts",
            &format!(
                "{{type: AWSCredentials, awsCredentials: {{region: us-east-1, stsEndpoint: https://sts.amazonaws.com/, oidcExchangeToken: {{roleArn: arn:aws:iam::1:role/r, tokenFile: {}}}}}}}",
                inside.display()
            ),
        ),
        named("Route", "lost", "{gateway: nope, rules: [{backends: [{name: nope}]}]}"),
        named("Backend", "ftp", "{provider: OpenAI, endpoint: ftp://h}"),
    ]
    .join("---\n");
    let restrictions = Restrictions {
        file_dirs: Some(vec![allowed.path().to_path_buf()]),
        endpoints: Some(AllowedEndpoints::parse(&["https://sts.amazonaws.com"]).unwrap()),
        ..Restrictions::default()
    };
    let (p, _) = partial(&[("c.yaml", &docs)], &restrictions);
    let class = |name: &str| {
        let found = problems(&p).into_iter().filter(|x| x.1 == name);
        found.map(|x| x.2).collect::<Vec<_>>()
    };
    use ErrorClass::*;
    assert_eq!(class("outside"), [NotAllowed]);
    assert_eq!(class("relative"), [NotAllowed]);
    assert_eq!(class("inside"), []);
    assert_eq!(class("sts"), [NotAllowed]);
    assert_eq!(class("authority"), [NotAllowed]);
    assert_eq!(class("lookalike"), [NotAllowed]);
    assert_eq!(class("allowed-sts"), []);
    assert_eq!(class("lost"), [MissingReference, MissingReference]);
    assert_eq!(class("ftp"), [Invalid]);
    assert_eq!(keys(&p.model.policies), ["allowed-sts", "inside"]);
}

#[test]
fn unreadable_documents_are_left_out_from_the_start() {
    let docs = [
        named("Gateway", "gw", "{nodeCluster: gw, listeners: []}"),
        named("Backend", "typo", "{provider: OpenAI, endpont: http://h}"),
        named(
            "Route",
            "r",
            "{gateway: gw, rules: [{backends: [{name: typo}]}]}",
        ),
    ]
    .join("---\n");
    let (p, parsed) = partial(&[("c.yaml", &docs)], &Restrictions::default());
    let read_errors: Vec<String> = parsed.errors.iter().map(ToString::to_string).collect();
    assert_eq!(read_errors.len(), 1, "{read_errors:?}");
    assert!(
        read_errors[0].contains("spec.endpont: unknown field"),
        "{read_errors:?}"
    );
    assert_eq!(keys(&p.model.gateways), ["gw"]);
    assert!(p.model.routes.is_empty());
    assert_eq!(
        problems(&p),
        [(
            Kind::Route,
            "r".into(),
            ErrorClass::MissingReference,
            r#"spec.rules[0].backends[0].name: Backend "typo" is invalid"#.into()
        )]
    );
}

#[test]
fn a_duplicate_is_left_out_and_the_first_kept() {
    let docs = [
        named("Gateway", "gw", "{nodeCluster: first, listeners: []}"),
        named("Gateway", "gw", "{nodeCluster: second, listeners: []}"),
    ]
    .join("---\n");
    let (p, _) = partial(&[("c.yaml", &docs)], &Restrictions::default());
    assert_eq!(p.model.gateways["gw"].node_cluster, "first");
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
    assert_eq!(p.errors[0].document, 2);
    assert!(p.errors[0].message.starts_with("duplicate Gateway \"gw\""));
}
