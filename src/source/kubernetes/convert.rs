//! Kubernetes objects → one validated model, namespace by namespace, with a diagnosis for
//! every object that could not be used. The typed specs go to the loader as they are; an
//! invalid object is left out (and told why in its status) and never blocks the others.

use super::Tenancy;
use crate::api::{BackendResource, BackendSecurityPolicyResource, GatewayResource, RouteResource};
use crate::model::{ClientKeySource, KeySource, Model, PolicyKind};
use crate::source::load::{self, Kind, Object, ObjectRef, Origin, SecretData, Spec};
use crate::source::{Problem, Reason};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Every watched object, as the reflectors hold them.
#[derive(Default, Clone)]
pub struct Objects {
    pub gateways: Vec<Arc<GatewayResource>>,
    pub backends: Vec<Arc<BackendResource>>,
    pub policies: Vec<Arc<BackendSecurityPolicyResource>>,
    pub routes: Vec<Arc<RouteResource>>,
    pub secrets: Vec<Arc<Secret>>,
    /// Objects Tessera's types could not read, with why.
    pub unreadable: Vec<(ObjectRef, String)>,
}

pub use crate::source::Snapshot;

/// Builds the snapshot: references resolve within a namespace; model names become
/// `<namespace>/<name>` so xDS resource names carry the namespace.
pub fn build(objects: &Objects, tenancy: &Tenancy) -> Snapshot {
    let mut snapshot = Snapshot::default();
    for (object, error) in &objects.unreadable {
        let problem = Problem {
            reason: Reason::Invalid,
            message: format!("unreadable: {error}"),
        };
        snapshot
            .problems
            .entry(object.clone())
            .or_default()
            .push(problem);
    }
    let mut by_namespace: BTreeMap<String, Vec<Object>> = BTreeMap::new();
    let mut add = |ns: String, name: String, spec: Spec| {
        let list = by_namespace.entry(ns.clone()).or_default();
        // Errors name the object; the origin only has to tell objects apart.
        let origin = Origin::new(format!("namespace {ns}"), list.len() + 1);
        list.push(Object::new(origin, Some(&ns), &name, spec));
    };
    // Two Gateways claiming one nodeCluster: the oldest keeps serving it (so a newcomer cannot
    // take over another team's Envoys) and the conflict is reported on every claimant, in
    // whichever namespaces they are, so the owner sees a squatter too.
    let mut gateways: Vec<_> = objects.gateways.iter().collect();
    gateways.sort_by_key(|g| {
        (
            g.creation_timestamp().map(|t| t.0),
            g.namespace(),
            g.name_any(),
        )
    });
    let mut claims: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
    for g in &gateways {
        let id = (g.namespace().unwrap_or_default(), g.name_any());
        claims.entry(&g.spec.node_cluster).or_default().push(id);
    }
    for g in gateways {
        let (ns, name) = (g.namespace().unwrap_or_default(), g.name_any());
        let claimants = &claims[g.spec.node_cluster.as_str()];
        let (owner_ns, owner) = &claimants[0];
        let node_cluster = &g.spec.node_cluster;
        if claimants.len() > 1 {
            let others: Vec<String> = claimants
                .iter()
                .filter(|(n, m)| (n, m) != (&ns, &name))
                .map(|(n, m)| format!("{n}/{m}"))
                .collect();
            let is_owner = (owner_ns, owner) == (&ns, &name);
            let problem = if is_owner {
                Problem {
                    reason: Reason::NodeClusterContested,
                    message: format!(
                        "nodeCluster {node_cluster:?} is also claimed by {}, refused: this older Gateway keeps it",
                        others.join(", ")
                    ),
                }
            } else {
                let across = if *owner_ns == ns {
                    ""
                } else {
                    " in another namespace"
                };
                Problem {
                    reason: Reason::NodeClusterConflict,
                    message: format!(
                        "nodeCluster {node_cluster:?} is already served by the older Gateway {owner_ns}/{owner}{across}"
                    ),
                }
            };
            let object = ObjectRef::new(Kind::Gateway, Some(&ns), name.clone());
            snapshot.problems.entry(object).or_default().push(problem);
            if !is_owner {
                continue;
            }
        }
        add(ns, name, Spec::Gateway(g.spec.clone()));
    }
    for b in &objects.backends {
        let spec = Spec::Backend(b.spec.clone());
        add(b.namespace().unwrap_or_default(), b.name_any(), spec);
    }
    for p in &objects.policies {
        let spec = Spec::BackendSecurityPolicy(Box::new(p.spec.clone()));
        add(p.namespace().unwrap_or_default(), p.name_any(), spec);
    }
    for r in &objects.routes {
        let spec = Spec::Route(r.spec.clone());
        add(r.namespace().unwrap_or_default(), r.name_any(), spec);
    }
    for s in &objects.secrets {
        let data = s.data.iter().flatten();
        let data = data.map(|(k, v)| (k.clone(), v.0.clone())).collect();
        let spec = Spec::Secret(SecretData(data));
        add(s.namespace().unwrap_or_default(), s.name_any(), spec);
    }
    for (ns, objects) in by_namespace {
        let partial = load::load_partial(&objects, &tenancy.restrictions(&ns));
        for error in &partial.errors {
            let Some(object) = &error.object else {
                continue;
            };
            let problem = Problem::from(error);
            let list = snapshot.problems.entry(object.clone()).or_default();
            if !list.contains(&problem) {
                list.push(problem);
            }
        }
        merge(&mut snapshot.model, namespaced(partial.model, &ns));
    }
    snapshot
}

/// Renames every object of one namespace to `<ns>/<name>`, references included.
fn namespaced(model: Model, ns: &str) -> Model {
    let q = |name: &str| format!("{ns}/{name}");
    let mut out = Model::default();
    for (name, mut g) in model.gateways {
        g.name = q(&name);
        if let Some(ClientKeySource::Secret { name: secret, .. }) =
            g.client_auth.as_mut().and_then(|a| a.api_keys.as_mut())
        {
            *secret = q(secret);
        }
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

    fn key(kind: Kind, ns: &str, name: &str) -> ObjectRef {
        ObjectRef::new(kind, Some(ns), name)
    }

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
                    max_request_bytes: None,
                }],
                ca_bundle_path: None,
                xds_clients: None,
                client_auth: None,
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
                            priority: None,
                        })
                        .collect(),
                    retry: None,
                    clients: None,
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
        let s = build(&objects, &Tenancy::default());
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        assert_eq!(
            s.model.routes["a/chat"].rules[0].backends[0].name,
            "a/openai"
        );
        assert_eq!(s.model.routes["b/chat"].gateway, "b/gw");
        assert_eq!(s.model.backends["b/openai"].endpoint.host, "10.0.0.2");
    }

    #[test]
    fn a_gateway_may_list_only_service_accounts_of_its_namespace_unless_allowed() {
        let listing = |namespace: &str| {
            let mut g = (*gateway("a", "gw", "edge", 1)).clone();
            g.spec.xds_clients = Some(vec![crate::api::XdsClientSpec {
                service_account: Some(crate::api::ServiceAccountSpec {
                    namespace: namespace.into(),
                    name: "envoy".into(),
                }),
                ..Default::default()
            }]);
            Objects {
                gateways: vec![Arc::new(g)],
                ..Default::default()
            }
        };
        let s = build(&listing("a"), &Tenancy::default());
        assert!(s.model.gateways.contains_key("a/gw"), "{:?}", s.problems);
        let s = build(&listing("b"), &Tenancy::default());
        assert!(!s.model.gateways.contains_key("a/gw"));
        let refused = &s.problems[&key(Kind::Gateway, "a", "gw")];
        assert_eq!(refused[0].reason, Reason::NotAllowed, "{refused:?}");
        assert!(refused[0].message.contains("b/envoy"), "{refused:?}");
        let allowed = Tenancy {
            cross_namespace_xds_clients: true,
            ..Tenancy::default()
        };
        let s = build(&listing("b"), &allowed);
        assert!(s.model.gateways.contains_key("a/gw"), "{:?}", s.problems);
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
        let s = build(&objects, &Tenancy::default());
        assert!(s.model.backends.contains_key("a/good"));
        assert!(!s.model.backends.contains_key("a/bad"));
        let bad = &s.problems[&key(Kind::Backend, "a", "bad")];
        assert_eq!(bad[0].reason, Reason::Invalid);
        assert!(bad[0].message.contains("spec.endpoint"), "{bad:?}");
        // A Route that names the broken Backend is dropped with ResolvedRefs=False.
        let objects = Objects {
            routes: vec![route("a", &["good", "bad"])],
            ..objects
        };
        let s = build(&objects, &Tenancy::default());
        assert!(s.model.routes.is_empty());
        let chat = &s.problems[&key(Kind::Route, "a", "chat")];
        assert!(
            chat.iter()
                .any(|p| p.reason == Reason::RefNotFound && p.message.contains("\"bad\"")),
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
        let s = build(&objects, &Tenancy::default());
        assert!(s.model.gateways.contains_key("a/early"));
        assert!(!s.model.gateways.contains_key("b/late"));
        let p = &s.problems[&key(Kind::Gateway, "b", "late")][0];
        assert_eq!(p.reason, Reason::NodeClusterConflict);
        assert!(p.message.contains("a/early"));
        assert!(p.message.contains("another namespace"), "{p:?}");
        // Reported on the owner too: a squatter in another namespace is never silent.
        let owner = &s.problems[&key(Kind::Gateway, "a", "early")];
        assert_eq!(owner.len(), 1, "{owner:?}");
        assert_eq!(owner[0].reason, Reason::NodeClusterContested);
        assert!(owner[0].message.contains("b/late"), "{owner:?}");
    }

    #[test]
    fn within_a_namespace_the_oldest_wins_then_the_name() {
        let objects = Objects {
            gateways: vec![
                gateway("a", "zeta", "edge", 100),
                gateway("a", "alpha", "edge", 100),
            ],
            ..Default::default()
        };
        let s = build(&objects, &Tenancy::default());
        let served: Vec<&String> = s.model.gateways.keys().collect();
        assert_eq!(served, ["a/alpha"], "{:?}", s.problems);
        let zeta = &s.problems[&key(Kind::Gateway, "a", "zeta")][0];
        assert_eq!(zeta.reason, Reason::NodeClusterConflict);
        assert!(!zeta.message.contains("another namespace"), "{zeta:?}");
        let alpha = &s.problems[&key(Kind::Gateway, "a", "alpha")][0];
        assert_eq!(alpha.reason, Reason::NodeClusterContested);
    }

    fn policy(ns: &str, name: &str, spec: serde_json::Value) -> Arc<BackendSecurityPolicyResource> {
        let spec = serde_json::from_value(spec).unwrap();
        let mut p = BackendSecurityPolicyResource::new(name, spec);
        meta(&mut p, ns, name, 0);
        Arc::new(p)
    }

    fn secret(ns: &str, name: &str, key: &str, value: &[u8]) -> Arc<Secret> {
        let mut s = Secret::default();
        meta(&mut s, ns, name, 0);
        let bytes = k8s_openapi::ByteString(value.to_vec());
        s.data = Some([(key.to_owned(), bytes)].into());
        Arc::new(s)
    }

    /// A Gateway's client keys come from a Secret of its own namespace, named with it.
    #[test]
    fn client_keys_secrets_resolve_in_their_namespace() {
        let mut g = (*gateway("a", "gw", "edge", 1)).clone();
        g.spec.client_auth = Some(crate::api::ClientAuthSpec {
            api_keys: Some(crate::api::ClientKeysSpec {
                secret_ref: Some(crate::api::SecretRef {
                    name: "team-keys".into(),
                }),
                file: None,
            }),
            jwt: None,
            client_id_header: None,
        });
        let objects = Objects {
            gateways: vec![Arc::new(g)],
            secrets: vec![
                secret("a", "team-keys", "team-a", b"sk-a"),
                secret("b", "team-keys", "team-b", b"sk-b"),
            ],
            ..Default::default()
        };
        let s = build(&objects, &Tenancy::default());
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        let auth = s.model.gateways["a/gw"].client_auth.clone().unwrap();
        let Some(ClientKeySource::Secret {
            name,
            keys: Some(keys),
        }) = auth.api_keys
        else {
            panic!("{auth:?}");
        };
        assert_eq!(name, "a/team-keys");
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["team-a"]);
    }

    /// Objects that crashed the source task (a duration overflow) or that no file could
    /// hold (bytes that are not UTF-8) each get a problem; the rest keeps serving.
    #[test]
    fn hostile_objects_get_problems_and_the_rest_serves() {
        let api_key = |secret: &str| serde_json::json!({"type": "APIKey", "apiKey": {"secretRef": {"name": secret, "key": "k"}}});
        let objects = Objects {
            gateways: vec![gateway("a", "gw", "edge", 1)],
            backends: vec![backend("a", "openai", "http://10.0.0.1")],
            routes: vec![route("a", &["openai"])],
            policies: vec![
                policy(
                    "a",
                    "overflow",
                    serde_json::json!({"type": "AWSCredentials", "awsCredentials": {
                        "region": "us-east-1", "credentialsFile": "/c",
                        "refresh": {"maxBackoff": "18446744073709551615s1s"}}}),
                ),
                policy("a", "binary", api_key("binary")),
                policy("a", "text", api_key("text")),
            ],
            secrets: vec![
                secret("a", "binary", "k", &[0xff, 0xfe]),
                secret("a", "text", "k", b"sk-1"),
            ],
            unreadable: vec![(
                key(Kind::Route, "a", "mangled"),
                "spec.rules: invalid type: string \"x\", expected a sequence".into(),
            )],
        };
        let tenancy = Tenancy {
            file_dirs: vec!["a=/".parse().unwrap()],
            ..Tenancy::default()
        };
        let s = build(&objects, &tenancy);
        let overflow = &s.problems[&key(Kind::BackendSecurityPolicy, "a", "overflow")];
        assert_eq!(overflow.len(), 1, "{overflow:?}");
        assert_eq!(overflow[0].reason, Reason::Invalid);
        assert!(
            overflow[0]
                .message
                .starts_with("spec.awsCredentials.refresh.maxBackoff: "),
            "{overflow:?}"
        );
        let binary = &s.problems[&key(Kind::Secret, "a", "binary")];
        assert_eq!(binary[0].message, "data.k: is not valid UTF-8 once decoded");
        // A Secret left out is a revocation for the policy that names it, not an error.
        let value = |policy: &str| match &s.model.policies[policy].kind {
            PolicyKind::ApiKey(key) => match &key.source {
                KeySource::Secret { value, .. } => value.as_ref().map(|v| v.expose().to_owned()),
                KeySource::File(_) => panic!("a Secret source"),
            },
            _ => panic!("an API key"),
        };
        assert_eq!(value("a/binary"), None);
        assert_eq!(value("a/text").as_deref(), Some("sk-1"));
        assert!(s.model.routes.contains_key("a/chat"), "the rest serves");
        let mangled = &s.problems[&key(Kind::Route, "a", "mangled")];
        assert_eq!(mangled[0].reason, Reason::Invalid);
        assert!(
            mangled[0].message.starts_with("unreadable: spec.rules"),
            "{mangled:?}"
        );
        assert_eq!(s.problems.len(), 3, "{:?}", s.problems);
    }
}
