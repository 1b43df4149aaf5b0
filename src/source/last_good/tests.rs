//! Merging the input with the last good objects, and persisting them without secret values.

use super::*;
use crate::source::load::{Kind, read};
use std::fs;

const V: &str = "apiVersion: tessera.dev/v1alpha1";

fn gateway(name: &str, port: u16) -> String {
    format!(
        "{V}\nkind: Gateway\nmetadata: {{name: {name}}}\nspec: {{nodeCluster: {name}, listeners: [{{name: http, port: {port}}}]}}\n"
    )
}

fn backend(name: &str, host: &str) -> String {
    format!(
        "{V}\nkind: Backend\nmetadata: {{name: {name}}}\nspec: {{provider: OpenAI, endpoint: 'http://{host}', securityPolicy: {name}-key}}\n---\n{V}\nkind: BackendSecurityPolicy\nmetadata: {{name: {name}-key}}\nspec: {{type: APIKey, apiKey: {{secretRef: {{name: keys, key: {name}}}}}}}\n"
    )
}

fn route(name: &str, gateway: &str, backend: &str) -> String {
    format!(
        "{V}\nkind: Route\nmetadata: {{name: {name}}}\nspec: {{gateway: {gateway}, rules: [{{backends: [{{name: {backend}}}]}}]}}\n"
    )
}

const SECRET: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: keys}\nstringData: {a: sk-secret-value-a, b: sk-secret-value-b}\n";

/// A config directory with `files`.
struct Config(tempfile::TempDir);

impl Config {
    fn new(files: &[(&str, &str)]) -> Self {
        let c = Self(tempfile::tempdir().unwrap());
        for (name, text) in files {
            c.write(name, text);
        }
        c
    }

    fn write(&self, name: &str, text: &str) {
        fs::write(self.0.path().join(name), text).unwrap();
    }

    fn merge(&self, last: &LastGood) -> Merged {
        last.merge(self.0.path(), read(self.0.path()))
    }
}

fn names<T>(map: &BTreeMap<String, T>) -> Vec<&str> {
    map.keys().map(String::as_str).collect()
}

fn host(m: &Merged, backend: &str) -> String {
    m.model.backends[backend].endpoint.host.clone()
}

fn refs(m: &Merged) -> Vec<(Kind, &str)> {
    m.from_last_good
        .iter()
        .map(|r| (r.kind, r.name.as_str()))
        .collect()
}

fn base() -> Config {
    Config::new(&[
        ("gw.yaml", &(gateway("gw", 10000) + "---\n" + SECRET)),
        (
            "a.yaml",
            &(backend("a", "a.test") + "---\n" + &route("ra", "gw", "a")),
        ),
        (
            "b.yaml",
            &(backend("b", "b.test") + "---\n" + &route("rb", "gw", "b")),
        ),
    ])
}

#[test]
fn a_valid_configuration_is_served_whole_and_becomes_the_last_good() {
    let m = base().merge(&LastGood::default());
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    assert_eq!(names(&m.model.routes), ["ra", "rb"]);
    assert!(m.from_last_good.is_empty());
    // Two gateways/backends/policies/routes and the Secret.
    assert_eq!(m.next.objects.len(), 8);
}

#[test]
fn a_half_written_file_keeps_its_objects_and_leaves_the_others_alone() {
    let c = base();
    let last = c.merge(&LastGood::default()).next;
    // Cut off mid-document: a YAML error in b.yaml, and route rb's document never read.
    c.write("b.yaml", &backend("b", "b2.test")[..60]);
    // Meanwhile a valid edit elsewhere: a new route in a.yaml.
    c.write(
        "a.yaml",
        &(backend("a", "a.test")
            + "---\n"
            + &route("ra", "gw", "a")
            + "---\n"
            + &route("ra2", "gw", "a")),
    );
    let m = c.merge(&last);
    assert!(
        m.errors.iter().all(|e| e.file.ends_with("b.yaml")),
        "{:?}",
        m.errors
    );
    assert!(!m.errors.is_empty());
    assert_eq!(names(&m.model.routes), ["ra", "ra2", "rb"]);
    assert_eq!(host(&m, "b"), "b.test", "the last good version of b");
    assert_eq!(
        refs(&m),
        [
            (Kind::Backend, "b"),
            (Kind::BackendSecurityPolicy, "b-key"),
            (Kind::Route, "rb")
        ]
    );
}

#[test]
fn an_invalid_object_keeps_its_last_good_version_and_its_dependants() {
    let c = base();
    let last = c.merge(&LastGood::default()).next;
    // b's endpoint becomes invalid; rb depends on it.
    c.write(
        "b.yaml",
        &(backend("b", "b.test").replace("'http://b.test'", "'ftp://b.test'")
            + "---\n"
            + &route("rb", "gw", "b")),
    );
    let m = c.merge(&last);
    let faulty: Vec<_> = m
        .errors
        .iter()
        .map(|e| e.object.clone().unwrap().name)
        .collect();
    assert!(faulty.contains(&"b".to_owned()), "{:?}", m.errors);
    assert_eq!(host(&m, "b"), "b.test");
    assert_eq!(names(&m.model.routes), ["ra", "rb"]);
    assert!(refs(&m).contains(&(Kind::Backend, "b")));
}

#[test]
fn a_new_invalid_object_is_left_out_with_what_depends_on_it() {
    let c = base();
    let last = c.merge(&LastGood::default()).next;
    c.write(
        "c.yaml",
        &(backend("c", "c.test").replace("provider: OpenAI", "provider: Nope")
            + "---\n"
            + &route("rc", "gw", "c")),
    );
    let m = c.merge(&last);
    assert_eq!(names(&m.model.routes), ["ra", "rb"]);
    assert_eq!(names(&m.model.backends), ["a", "b"]);
    assert!(m.from_last_good.is_empty());
    let rc = m
        .errors
        .iter()
        .find(|e| e.object.as_ref().unwrap().name == "rc");
    assert_eq!(
        rc.unwrap().class,
        crate::source::load::ErrorClass::MissingReference
    );
}

#[test]
fn a_deleted_file_or_object_is_gone() {
    let c = base();
    let last = c.merge(&LastGood::default()).next;
    fs::remove_file(c.0.path().join("b.yaml")).unwrap();
    c.write("a.yaml", &backend("a", "a.test"));
    let m = c.merge(&last);
    assert!(m.errors.is_empty(), "{:?}", m.errors);
    assert!(m.model.routes.is_empty());
    assert_eq!(names(&m.model.backends), ["a"]);
}

#[test]
fn an_unreadable_directory_keeps_everything() {
    let c = base();
    let last = c.merge(&LastGood::default()).next;
    let gone = last.merge(
        &c.0.path().join("missing"),
        read(&c.0.path().join("missing")),
    );
    assert_eq!(names(&gone.model.routes), ["ra", "rb"]);
    assert_eq!(gone.from_last_good.len(), 8);
}

#[test]
fn persisted_configuration_has_no_secret_values_and_restores() {
    let c = base();
    let last = c.merge(&LastGood::default()).next;
    let state_dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(state_dir.path()).unwrap();
    let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    last.save(&state, c.0.path(), at).unwrap();
    let text = String::from_utf8(state.read(FILE).unwrap().unwrap()).unwrap();
    for value in ["sk-secret-value-a", "sk-secret-value-b", "c2stc2VjcmV0"] {
        assert!(!text.contains(value), "{value} persisted:\n{text}");
    }
    assert!(text.contains("b.test"), "{text}");

    assert!(
        LastGood::load(&state, Path::new("/elsewhere"))
            .unwrap()
            .is_none()
    );
    let restored = LastGood::load(&state, c.0.path()).unwrap().unwrap();
    assert_eq!(restored.restored_at, Some(at));
    assert!(restored.persists_as(&last));
    // A restart while b.yaml is half written: b and rb come from the persisted configuration.
    c.write(
        "b.yaml",
        "apiVersion: tessera.dev/v1alpha1\nkind: Backend\nmetadata: {name: b",
    );
    let m = c.merge(&restored);
    assert_eq!(names(&m.model.routes), ["ra", "rb"]);
    assert_eq!(m.restored_at, Some(at));
    assert_eq!(host(&m, "b"), "b.test");
    // The Secret was read from its (valid) file again, values and all.
    let a_key = match &m.model.policies["a-key"].kind {
        crate::model::PolicyKind::ApiKey(k) => k.source.clone(),
        other => panic!("{other:?}"),
    };
    match a_key {
        crate::model::KeySource::Secret { value, .. } => {
            assert_eq!(value.unwrap().expose(), "sk-secret-value-a")
        }
        other => panic!("{other:?}"),
    }
    // Once everything is valid again, nothing is served from the persisted copy.
    c.write(
        "b.yaml",
        &(backend("b", "b3.test") + "---\n" + &route("rb", "gw", "b")),
    );
    let m = c.merge(&m.next);
    assert!(m.restored_at.is_none() && m.from_last_good.is_empty());
    assert_eq!(host(&m, "b"), "b3.test");
}

#[test]
fn a_damaged_persisted_file_is_an_error_naming_it() {
    let state_dir = tempfile::tempdir().unwrap();
    let state = StateDir::open(state_dir.path()).unwrap();
    state
        .write_atomic(FILE, b"{\"format\": 1, \"savedAtMs\": ")
        .unwrap();
    let e = LastGood::load(&state, Path::new("/c"))
        .unwrap_err()
        .to_string();
    assert!(e.contains(FILE), "{e}");
    state
        .write_atomic(
            FILE,
            b"{\"format\": 99, \"config\": \"/c\", \"savedAtMs\": 0, \"objects\": []}",
        )
        .unwrap();
    assert!(LastGood::load(&state, Path::new("/c")).unwrap().is_none());
}
