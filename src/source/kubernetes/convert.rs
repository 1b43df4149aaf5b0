//! Kubernetes objects → one validated model, namespace by namespace, with a diagnosis for
//! every object that could not be used. An invalid object is left out (and told why in its
//! status); it never blocks the others.

use crate::api::{BackendResource, BackendSecurityPolicyResource, GatewayResource, RouteResource};
use crate::model::{KeySource, Model, PolicyKind};
use crate::source::{ConfigError, Restrictions, load_documents};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use serde_json::{Value as Json, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

/// Every watched object, as the reflectors hold them.
#[derive(Default, Clone)]
pub struct Objects {
    pub gateways: Vec<Arc<GatewayResource>>,
    pub backends: Vec<Arc<BackendResource>>,
    pub policies: Vec<Arc<BackendSecurityPolicyResource>>,
    pub routes: Vec<Arc<RouteResource>>,
    pub secrets: Vec<Arc<Secret>>,
}

/// Identifies an object: kind, namespace, name.
pub type ObjectKey = (&'static str, String, String);

/// Why an object is not (fully) in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `Accepted` (the object itself is invalid) or `ResolvedRefs` (it names something absent).
    pub condition: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// The model built from the cluster is the snapshot every source publishes.
pub use crate::source::Snapshot;

// Secrets can be invalid too (bad base64); they are left out like the rest.
const KINDS: [&str; 5] = [
    "Gateway",
    "Backend",
    "BackendSecurityPolicy",
    "Route",
    "Secret",
];

/// Builds the snapshot: references resolve within a namespace; model names become
/// `<namespace>/<name>` so xDS resource names carry the namespace.
pub fn build(objects: &Objects, restrictions: &Restrictions) -> Snapshot {
    let mut snapshot = Snapshot::default();
    let mut docs: BTreeMap<String, Vec<(ObjectKey, Json)>> = BTreeMap::new();
    let mut add = |kind: &'static str, ns: String, name: String, doc: Json| {
        docs.entry(ns.clone())
            .or_default()
            .push(((kind, ns, name), doc));
    };
    // Two Gateways claiming one nodeCluster: the oldest keeps it.
    let mut gateways: Vec<_> = objects.gateways.iter().collect();
    gateways.sort_by_key(|g| {
        (
            g.creation_timestamp().map(|t| t.0),
            g.namespace(),
            g.name_any(),
        )
    });
    let mut claimed: BTreeMap<&str, String> = BTreeMap::new();
    for g in gateways {
        let (ns, name) = (g.namespace().unwrap_or_default(), g.name_any());
        if let Some(owner) = claimed.get(g.spec.node_cluster.as_str()) {
            snapshot
                .problems
                .entry(("Gateway", ns, name))
                .or_default()
                .push(Problem {
                    condition: "Accepted",
                    reason: "NodeClusterConflict",
                    message: format!(
                        "nodeCluster {:?} is already served by the older Gateway {owner}",
                        g.spec.node_cluster
                    ),
                });
            continue;
        }
        claimed.insert(&g.spec.node_cluster, format!("{ns}/{name}"));
        add("Gateway", ns, name, document("Gateway", g.as_ref()));
    }
    for b in &objects.backends {
        add(
            "Backend",
            b.namespace().unwrap_or_default(),
            b.name_any(),
            document("Backend", b.as_ref()),
        );
    }
    for p in &objects.policies {
        let doc = document("BackendSecurityPolicy", p.as_ref());
        add(
            "BackendSecurityPolicy",
            p.namespace().unwrap_or_default(),
            p.name_any(),
            doc,
        );
    }
    for r in &objects.routes {
        add(
            "Route",
            r.namespace().unwrap_or_default(),
            r.name_any(),
            document("Route", r.as_ref()),
        );
    }
    for s in &objects.secrets {
        let data: BTreeMap<String, String> = s
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), base64_encode(&v.0)))
            .collect();
        let doc = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": s.name_any()}, "data": data});
        add(
            "Secret",
            s.namespace().unwrap_or_default(),
            s.name_any(),
            doc,
        );
    }
    for (ns, objects) in docs {
        let model = load_namespace(&ns, objects, restrictions, &mut snapshot.problems);
        merge(&mut snapshot.model, namespaced(model, &ns));
    }
    snapshot
}

/// The document the file loader would have read: Tessera's fields only.
fn document<K: serde::Serialize + kube::Resource>(kind: &str, obj: &K) -> Json {
    let spec = serde_json::to_value(obj)
        .ok()
        .and_then(|v| v.get("spec").cloned())
        .unwrap_or(Json::Null);
    json!({
        "apiVersion": crate::api::API_VERSION,
        "kind": kind,
        "metadata": {"name": obj.meta().name.clone().unwrap_or_default()},
        "spec": strip_nulls(spec),
    })
}

// Option fields serialize as null; the schema types treat absent and null alike, but keep the
// documents as a user would have written them.
fn strip_nulls(v: Json) -> Json {
    match v {
        Json::Object(m) => Json::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Json::Array(a) => Json::Array(a.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Validates one namespace, leaving out invalid objects (and then whatever referenced them)
/// until the rest validates.
fn load_namespace(
    ns: &str,
    objects: Vec<(ObjectKey, Json)>,
    restrictions: &Restrictions,
    problems: &mut BTreeMap<ObjectKey, Vec<Problem>>,
) -> Model {
    let source = PathBuf::from(format!("namespace {ns}"));
    let mut excluded: BTreeSet<ObjectKey> = BTreeSet::new();
    // Each pass removes at least one object, and a reference chain is at most Route →
    // Backend → policy → Secret deep.
    for _ in 0..8 {
        let kept: Vec<&(ObjectKey, Json)> = objects
            .iter()
            .filter(|(k, _)| !excluded.contains(k))
            .collect();
        let values = kept
            .iter()
            .filter_map(|(_, doc)| serde_yaml::to_value(doc).ok());
        let (model, errors) = load_documents(&source, values, restrictions);
        if errors.is_empty() {
            return model;
        }
        let mut progressed = false;
        for error in errors {
            let Some(key) = object_of(&error, ns) else {
                continue;
            };
            let problem = problem(&error);
            let list = problems.entry(key.clone()).or_default();
            if !list.contains(&problem) {
                list.push(problem);
            }
            progressed |= excluded.insert(key);
        }
        if !progressed {
            break;
        }
    }
    Model::default()
}

fn object_of(error: &ConfigError, ns: &str) -> Option<ObjectKey> {
    let object = error.object.as_deref()?;
    let (kind, name) = object.split_once(' ')?;
    let kind = KINDS.into_iter().find(|k| *k == kind)?;
    Some((kind, ns.to_owned(), name.trim_matches('"').to_owned()))
}

fn problem(error: &ConfigError) -> Problem {
    let missing = error.message.contains("does not exist");
    let message = if error.field.is_empty() {
        error.message.clone()
    } else {
        format!("{}: {}", error.field, error.message)
    };
    if missing {
        Problem {
            condition: "ResolvedRefs",
            reason: "RefNotFound",
            message,
        }
    } else {
        Problem {
            condition: "Accepted",
            reason: "Invalid",
            message,
        }
    }
}

/// Renames every object of one namespace to `<ns>/<name>`, references included.
fn namespaced(model: Model, ns: &str) -> Model {
    let q = |name: &str| format!("{ns}/{name}");
    let mut out = Model::default();
    for (name, mut g) in model.gateways {
        g.name = q(&name);
        out.gateways.insert(q(&name), g);
    }
    for (name, mut b) in model.backends {
        b.name = q(&name);
        b.security_policy = b.security_policy.map(|p| q(&p));
        out.backends.insert(q(&name), b);
    }
    for (name, mut p) in model.policies {
        p.name = q(&name);
        if let PolicyKind::ApiKey(key) = &mut p.kind
            && let KeySource::Secret { name: secret, .. } = &mut key.source
        {
            *secret = q(secret);
        }
        out.policies.insert(q(&name), p);
    }
    for (name, mut r) in model.routes {
        r.name = q(&name);
        r.gateway = q(&r.gateway);
        for rule in &mut r.rules {
            for b in &mut rule.backends {
                b.name = q(&b.name);
            }
        }
        out.routes.insert(q(&name), r);
    }
    out
}

fn merge(into: &mut Model, from: Model) {
    into.gateways.extend(from.gateways);
    into.backends.extend(from.backends);
    into.policies.extend(from.policies);
    into.routes.extend(from.routes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        BackendRef, BackendSpec, GatewaySpec, ListenerSpec, Provider, RouteSpec, RuleSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn meta<T: kube::Resource>(obj: &mut T, ns: &str, name: &str, created: i64) {
        let m = obj.meta_mut();
        m.namespace = Some(ns.into());
        m.name = Some(name.into());
        m.creation_timestamp = k8s_openapi::jiff::Timestamp::from_second(created)
            .ok()
            .map(Time);
    }

    fn gateway(ns: &str, name: &str, node_cluster: &str, created: i64) -> Arc<GatewayResource> {
        let mut g = GatewayResource::new(
            name,
            GatewaySpec {
                node_cluster: node_cluster.into(),
                listeners: vec![ListenerSpec {
                    name: "http".into(),
                    port: 10000,
                    address: None,
                }],
                ca_bundle_path: None,
            },
        );
        meta(&mut g, ns, name, created);
        Arc::new(g)
    }

    fn backend(ns: &str, name: &str, endpoint: &str) -> Arc<BackendResource> {
        let mut b = BackendResource::new(
            name,
            BackendSpec {
                provider: Provider::OpenAI,
                endpoint: endpoint.into(),
                tls: None,
                security_policy: None,
            },
        );
        meta(&mut b, ns, name, 0);
        Arc::new(b)
    }

    fn route(ns: &str, backends: &[&str]) -> Arc<RouteResource> {
        let mut r = RouteResource::new(
            "chat",
            RouteSpec {
                gateway: "gw".into(),
                rules: vec![RuleSpec {
                    matches: None,
                    backends: backends
                        .iter()
                        .map(|b| BackendRef {
                            name: (*b).into(),
                            weight: None,
                        })
                        .collect(),
                }],
            },
        );
        meta(&mut r, ns, "chat", 0);
        Arc::new(r)
    }

    #[test]
    fn namespaces_qualify_names_and_references() {
        let objects = Objects {
            gateways: vec![
                gateway("a", "gw", "edge-a", 1),
                gateway("b", "gw", "edge-b", 1),
            ],
            backends: vec![
                backend("a", "openai", "http://10.0.0.1"),
                backend("b", "openai", "http://10.0.0.2"),
            ],
            routes: vec![route("a", &["openai"]), route("b", &["openai"])],
            ..Default::default()
        };
        let s = build(&objects, &Restrictions::default());
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        assert_eq!(
            s.model.routes["a/chat"].rules[0].backends[0].name,
            "a/openai"
        );
        assert_eq!(s.model.routes["b/chat"].gateway, "b/gw");
        assert_eq!(s.model.backends["b/openai"].endpoint.host, "10.0.0.2");
    }

    #[test]
    fn an_invalid_object_is_left_out_and_so_is_what_needs_it() {
        let objects = Objects {
            gateways: vec![gateway("a", "gw", "edge", 1)],
            backends: vec![
                backend("a", "good", "http://10.0.0.1"),
                backend("a", "bad", "ftp://x"),
            ],
            routes: vec![route("a", &["good"])],
            ..Default::default()
        };
        let s = build(&objects, &Restrictions::default());
        assert!(s.model.backends.contains_key("a/good"));
        assert!(!s.model.backends.contains_key("a/bad"));
        let bad = &s.problems[&("Backend", "a".to_string(), "bad".to_string())];
        assert_eq!(bad[0].condition, "Accepted");
        assert!(bad[0].message.contains("spec.endpoint"), "{bad:?}");
        // A Route that names the broken Backend is dropped with ResolvedRefs=False.
        let objects = Objects {
            routes: vec![route("a", &["good", "bad"])],
            ..objects
        };
        let s = build(&objects, &Restrictions::default());
        assert!(s.model.routes.is_empty());
        let chat = &s.problems[&("Route", "a".to_string(), "chat".to_string())];
        assert!(
            chat.iter()
                .any(|p| p.condition == "ResolvedRefs" && p.message.contains("\"bad\"")),
            "{chat:?}"
        );
        assert!(s.model.gateways.contains_key("a/gw"), "the rest stays");
    }

    #[test]
    fn the_oldest_gateway_keeps_a_node_cluster() {
        let objects = Objects {
            gateways: vec![
                gateway("b", "late", "edge", 200),
                gateway("a", "early", "edge", 100),
            ],
            ..Default::default()
        };
        let s = build(&objects, &Restrictions::default());
        assert!(s.model.gateways.contains_key("a/early"));
        assert!(!s.model.gateways.contains_key("b/late"));
        let p = &s.problems[&("Gateway", "b".to_string(), "late".to_string())][0];
        assert_eq!(p.reason, "NodeClusterConflict");
        assert!(p.message.contains("a/early"));
    }
}
