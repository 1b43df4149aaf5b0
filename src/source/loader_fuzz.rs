//! Property tests over the configuration loader (issue 9, item 7): near-valid Tessera
//! documents with random mutations, and raw arbitrary text. Whatever the input: no panic,
//! every error names a file, and a valid document set survives persistence unchanged.
//!
//! Bounded for `cargo test`: 64 cases per property by default, about 5 s in all (debug).
//! Longer: `PROPTEST_CASES=20000 cargo test --release --lib loader_fuzz`. A failing case is
//! shrunk and saved under `proptest-regressions/`; commit it, and it is replayed first ever
//! after. `testdata/loader-corpus/` holds hand-picked inputs that once broke a loader.

use super::last_good::LastGood;
use super::load::{ConfigError, Loaded, load, read};
use crate::model::{KeySource, Model, PolicyKind};
use crate::state_dir::StateDir;
use proptest::prelude::*;
use serde_yaml::{Mapping, Value};
use std::path::Path;
use std::time::SystemTime;

const V: &str = "tessera.dev/v1alpha1";
const PROVIDERS: [&str; 6] = [
    "OpenAI",
    "AzureOpenAI",
    "Anthropic",
    "GoogleGemini",
    "Mistral",
    "Generic",
];

fn doc(api_version: &str, kind: &str, name: &str, body: (&str, Value)) -> Value {
    let mut m = Mapping::new();
    m.insert("apiVersion".into(), api_version.into());
    m.insert("kind".into(), kind.into());
    let mut meta = Mapping::new();
    meta.insert("name".into(), name.into());
    m.insert("metadata".into(), meta.into());
    m.insert(body.0.into(), body.1);
    m.into()
}

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap()
}

/// A valid document set: a gateway, backends with API-key policies (files or a Secret), the
/// Secret, and routes over the backends.
fn valid_docs() -> impl Strategy<Value = Vec<Value>> {
    let listeners = prop::collection::btree_set(1u32..=65535, 1..3);
    let backends = prop::collection::vec((0..PROVIDERS.len(), 1u32..=65535, any::<bool>()), 1..4);
    let routes = prop::collection::vec(
        prop::collection::vec(
            (any::<u8>(), prop::option::of("[a-z0-9-]{1,12}"), 1u32..10),
            1..4,
        ),
        1..3,
    );
    (listeners, backends, routes).prop_map(|(ports, backends, routes)| {
        let listeners: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{{name: l{i}, port: {p}}}"))
            .collect();
        let gateway = format!("{{nodeCluster: gw, listeners: [{}]}}", listeners.join(", "));
        let mut docs = vec![doc(V, "Gateway", "gw", ("spec", yaml(&gateway)))];
        let mut secret = Mapping::new();
        for (i, (provider, port, from_secret)) in backends.iter().enumerate() {
            let provider = PROVIDERS[*provider];
            let backend = format!(
                "{{provider: {provider}, endpoint: 'http://b{i}.test:{port}', securityPolicy: p{i}}}"
            );
            docs.push(doc(V, "Backend", &format!("b{i}"), ("spec", yaml(&backend))));
            let key = if *from_secret {
                secret.insert(format!("k{i}").into(), format!("sk-fuzz-{i}").into());
                format!("{{secretRef: {{name: keys, key: k{i}}}}}")
            } else {
                format!("{{file: k{i}.key}}")
            };
            let policy = format!("{{type: APIKey, apiKey: {key}}}");
            docs.push(doc(V, "BackendSecurityPolicy", &format!("p{i}"), ("spec", yaml(&policy))));
        }
        docs.push(doc("v1", "Secret", "keys", ("stringData", secret.into())));
        for (r, rules) in routes.iter().enumerate() {
            let rules: Vec<String> = rules
                .iter()
                .map(|(b, model, weight)| {
                    let b = *b as usize % backends.len();
                    let matches = model.as_ref().map_or(String::new(), |m| {
                        format!("matches: [{{pathPrefix: /v1/, headers: [{{name: x-ai-model, value: '{m}'}}]}}], ")
                    });
                    format!("{{{matches}backends: [{{name: b{b}, weight: {weight}}}]}}")
                })
                .collect();
            let spec = format!("{{gateway: gw, rules: [{}]}}", rules.join(", "));
            docs.push(doc(V, "Route", &format!("r{r}"), ("spec", yaml(&spec))));
        }
        docs
    })
}

/// What may happen to a document tree.
#[derive(Debug, Clone)]
enum Mutation {
    /// Removes the `n`th mapping entry (counting every mapping in the tree).
    Remove(usize),
    /// Replaces the `n`th node with `value`.
    Replace(usize, Value),
    /// Renames the `n`th mapping key.
    Rename(usize, String),
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[ -~]{0,40}".prop_map(Value::from),
        Just(Value::from("18446744073709551615s1s")),
        Just(Value::from("x".repeat(5000))),
        Just(Value::Sequence(Vec::new())),
        Just(Value::Mapping(Mapping::new())),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Remove),
        (any::<usize>(), scalar()).prop_map(|(n, v)| Mutation::Replace(n, v)),
        (any::<usize>(), "[a-zA-Z]{1,12}").prop_map(|(n, k)| Mutation::Rename(n, k)),
    ]
}

fn count(v: &Value) -> usize {
    1 + match v {
        Value::Mapping(m) => m.values().map(count).sum(),
        Value::Sequence(s) => s.iter().map(count).sum(),
        Value::Tagged(t) => count(&t.value),
        _ => 0,
    }
}

/// Applies `m` to the node numbered `*n` in a pre-order walk; returns whether it was applied.
fn apply(v: &mut Value, n: &mut usize, m: &Mutation) -> bool {
    if *n == 0 {
        match m {
            Mutation::Replace(_, value) => *v = value.clone(),
            Mutation::Remove(_) | Mutation::Rename(..) => {
                let Value::Mapping(map) = v else {
                    return true;
                };
                let Some(key) = map.keys().next().cloned() else {
                    return true;
                };
                let value = map.remove(&key);
                if let (Mutation::Rename(_, new), Some(value)) = (m, value) {
                    map.insert(new.as_str().into(), value);
                }
            }
        }
        return true;
    }
    *n -= 1;
    match v {
        Value::Mapping(map) => map.values_mut().any(|c| apply(c, n, m)),
        Value::Sequence(s) => s.iter_mut().any(|c| apply(c, n, m)),
        _ => false,
    }
}

/// A text-level edit after serialisation: a cut (a half-written file) or stray bytes.
#[derive(Debug, Clone)]
enum Edit {
    Truncate(usize),
    Insert(usize, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), "[\\[\\]{}:,&*!|>'\"#%@\\- \n\t]{1,4}")
            .prop_map(|(at, s)| Edit::Insert(at, s)),
    ]
}

fn edited(text: &str, edit: &Edit) -> String {
    let at = |n: usize| {
        let mut i = n % (text.len() + 1);
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    match edit {
        Edit::Truncate(n) => text[..at(*n)].to_owned(),
        Edit::Insert(n, s) => {
            let i = at(*n);
            format!("{}{s}{}", &text[..i], &text[i..])
        }
    }
}

/// The documents as YAML text, spread over `files` files (by index modulo).
fn texts(docs: &[Value], files: usize) -> Vec<String> {
    let mut out = vec![String::new(); files];
    for (i, d) in docs.iter().enumerate() {
        let text = serde_yaml::to_string(d).unwrap();
        let file = &mut out[i % files];
        file.push_str("---\n");
        file.push_str(&text);
    }
    out
}

/// A config directory holding `texts` as `c0.yaml`, `c1.yaml`, … and the key files.
fn config_dir(texts: &[impl AsRef<[u8]>]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_texts(dir.path(), texts);
    for i in 0..4 {
        std::fs::write(dir.path().join(format!("k{i}.key")), format!("sk-file-{i}")).unwrap();
    }
    dir
}

fn write_texts(dir: &Path, texts: &[impl AsRef<[u8]>]) {
    for (i, t) in texts.iter().enumerate() {
        std::fs::write(dir.join(format!("c{i}.yaml")), t).unwrap();
    }
}

/// Every way the loader reads a directory: all or nothing, partial, and merged with a last
/// good set. None may panic (proptest fails the case if one does), and every error names a
/// file it read or the directory.
fn check_loads(dir: &Path, last: &LastGood) -> Result<(), TestCaseError> {
    let names_a_file = |e: &ConfigError| {
        e.file.starts_with(dir) && e.to_string().starts_with(&*e.file.display().to_string())
    };
    if let Err(errors) = load(dir) {
        prop_assert!(!errors.0.is_empty());
        for e in &errors.0 {
            prop_assert!(names_a_file(e), "error names no file: {e:?}");
        }
    }
    let merged = last.merge(dir, read(dir));
    for e in &merged.errors {
        // Errors about a last good version name its file with a " (last good)" suffix.
        prop_assert!(names_a_file(e), "error names no file: {e:?}");
    }
    Ok(())
}

/// The model with every Secret-held key value forgotten (they are never persisted).
fn without_secret_values(mut model: Model) -> Model {
    for p in model.policies.values_mut() {
        if let PolicyKind::ApiKey(k) = &mut p.kind
            && let KeySource::Secret { value, .. } = &mut k.source
        {
            *value = None;
        }
    }
    model
}

/// Cases per property over whole document sets (each writes files): few by default so the
/// suite stays fast; `PROPTEST_CASES` asks for more.
fn cases() -> u32 {
    let asked = std::env::var("PROPTEST_CASES").ok();
    asked.and_then(|c| c.parse().ok()).unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn loader_fuzz_mutated_documents(
        docs in valid_docs(),
        files in 1usize..4,
        mutations in prop::collection::vec(mutation(), 0..4),
        edits in prop::collection::vec(edit(), 0..2),
    ) {
        let dir = config_dir(&texts(&docs, files));
        let last = LastGood::default().merge(dir.path(), read(dir.path())).next;
        let mut docs = docs;
        for m in &mutations {
            let total: usize = docs.iter().map(count).sum();
            let (Mutation::Remove(n) | Mutation::Replace(n, _) | Mutation::Rename(n, _)) = m;
            let mut n = n % total;
            docs.iter_mut().any(|d| apply(d, &mut n, m));
        }
        let mut texts = texts(&docs, files);
        for (i, e) in edits.iter().enumerate() {
            let t = &mut texts[i % files];
            *t = edited(t, e);
        }
        write_texts(dir.path(), &texts);
        check_loads(dir.path(), &LastGood::default())?;
        check_loads(dir.path(), &last)?;
    }

    #[test]
    fn loader_fuzz_raw_text(
        texts in prop::collection::vec(prop_oneof![
            any::<String>(),
            "[\\[\\]{}:,&*!|>'\"#%@a-zA-Z0-9\\- \n\t]{0,300}",
            "(apiVersion: tessera.dev/v1alpha1\nkind: (Gateway|Backend|Route|BackendSecurityPolicy)\nmetadata: \\{name: [a-z]{1,3}\\}\nspec: [\\[\\]{}:,a-z0-9 \n]{0,80}\n---\n){1,3}",
        ], 1..3),
    ) {
        let dir = config_dir(&texts);
        check_loads(dir.path(), &LastGood::default())?;
    }

    #[test]
    fn loader_fuzz_valid_sets_survive_persistence(docs in valid_docs(), files in 1usize..4) {
        let dir = config_dir(&texts(&docs, files));
        let loaded = load(dir.path());
        prop_assert!(loaded.is_ok(), "the generator made an invalid set: {}", loaded.unwrap_err());
        let Ok(Loaded { model, .. }) = loaded else { unreachable!() };
        let merged = LastGood::default().merge(dir.path(), read(dir.path()));
        prop_assert!(merged.errors.is_empty());
        prop_assert_eq!(&merged.model, &model);

        let state_dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(state_dir.path()).unwrap();
        merged.next.save(&state, dir.path(), SystemTime::now()).unwrap();
        let persisted = String::from_utf8(state.read(super::last_good::FILE).unwrap().unwrap()).unwrap();
        prop_assert!(!persisted.contains("sk-fuzz-"), "a secret value was persisted");
        let restored = LastGood::load(&state, dir.path()).unwrap().unwrap();
        prop_assert!(restored.persists_as(&merged.next));
        // Every file unreadable: the restored set alone is served, and it is the same model.
        for i in 0..files {
            std::fs::write(dir.path().join(format!("c{i}.yaml")), "kind: [").unwrap();
        }
        let served = restored.merge(dir.path(), read(dir.path()));
        prop_assert_eq!(without_secret_values(served.model), without_secret_values(model));
    }
}

/// Inputs that once broke a loader (kept so they are replayed on every run).
#[test]
fn loader_fuzz_corpus() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/source/testdata/loader-corpus");
    let mut entries: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    assert!(entries.len() >= 5, "corpus missing: {}", corpus.display());
    for path in entries {
        let dir = config_dir(&[std::fs::read(&path).unwrap()]);
        check_loads(dir.path(), &LastGood::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            load(dir.path()).is_err(),
            "{} should be invalid",
            path.display()
        );
    }
}
