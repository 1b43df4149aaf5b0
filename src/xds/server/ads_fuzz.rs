//! Property tests of the ADS request handlers: arbitrary request sequences (types, names,
//! nonces, versions, error details, nodes) interleaved with configuration changes, driven
//! through the same `step` the stream task runs, SotW and Delta.
//!
//! Invariants: no panic; a stream ends only with INVALID_ARGUMENT or RESOURCE_EXHAUSTED;
//! no credential resource reaches a node whose gateway does not reference it, nor one the
//! node did not ask for; a NACK alone never brings a response (no resend loop); every nonce
//! is new; a credential NACK's text (which may echo the key) never reaches `/status` or CSDS.
//!
//! Longer runs: `PROPTEST_CASES=100000 cargo test --lib ads_fuzz`.

use super::*;
use crate::xds::cache::{GatewayConfig, TypeSet};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use prost::Message;
use std::collections::{HashMap, HashSet};

/// Names requests draw from: the gateways' own, another gateway's, and hostile ones.
const NAMES: [&str; 9] = [
    "credential/a",
    "credential/b",
    "ecds/a",
    "credential/other",
    "backend/a",
    "route/r",
    "*",
    "",
    "x\n\u{0}\u{1b}[31m",
];

/// Key values of the snapshots; none may appear in `/status`.
const KEY_MARK: &str = "sk-fuzz-key-";

fn key(n: u32) -> String {
    format!("{KEY_MARK}{n}")
}

fn ecds(name: &str, n: u32) -> Arc<Resource> {
    let config = TypedExtensionConfig {
        name: name.into(),
        typed_config: Some(envoy_types::pb::google::protobuf::Any {
            type_url: "type.googleapis.com/fuzz".into(),
            value: key(n).into_bytes(),
        }),
    };
    Resource::new(name, &config)
}

fn cluster(name: &str) -> Arc<Resource> {
    Resource::new(
        name,
        &Cluster {
            name: name.into(),
            ..Default::default()
        },
    )
}

/// Publishes one of a few configurations into `cache` and returns the state: `variant`
/// changes what gateway `gw` holds, `rotation` the key values (a change of values alone
/// reaches streams as a credential change, through the cache's change log).
fn snapshot(cache: &Cache, variant: u8, rotation: u32) -> Arc<State> {
    let secret = |name: &str, n: u32| {
        crate::translate::generic_secret(name, Some(&crate::model::SecretString::new(key(n))))
    };
    let (clusters, creds): (&[&str], &[&str]) = match variant % 3 {
        0 => (
            &["backend/a", "backend/b"],
            &["credential/a", "credential/b", "ecds/a"],
        ),
        1 => (&["backend/a"], &["credential/a"]),
        _ => (&[], &[]),
    };
    let gw = GatewayConfig {
        clusters: TypeSet::new(clusters.iter().map(|c| cluster(c))),
        credentials: creds.iter().map(|c| c.to_string()).collect(),
        ..Default::default()
    };
    let other = GatewayConfig {
        clusters: TypeSet::new([cluster("backend/other")]),
        credentials: ["credential/other".to_string()].into(),
        ..Default::default()
    };
    let credentials = [
        secret("credential/a", rotation),
        // Changes every other rotation, so some rotations change one secret of two.
        secret("credential/b", 1000 + rotation / 2),
        secret("credential/other", 2000 + rotation),
        ecds("ecds/a", 3000 + rotation),
    ];
    cache.publish(
        [
            ("gw".to_string(), Arc::new(gw)),
            ("gw2".to_string(), Arc::new(other)),
        ]
        .into(),
        credentials,
    );
    cache.state()
}

fn node(sel: u8) -> Node {
    // One in four is refused.
    let (id, cluster) = match sel % 12 {
        0..=5 => ("n1".to_string(), "gw"),
        6 | 7 => ("n2".to_string(), "gw2"),
        8 => ("n3".to_string(), "nobody"),
        9 => (String::new(), "gw"),
        10 => ("n".repeat(2000), "gw"),
        _ => ("a\nb".to_string(), "gw"),
    };
    Node {
        id,
        cluster: cluster.into(),
        ..Default::default()
    }
}

fn type_of(sel: u8) -> String {
    match sel % 8 {
        i @ 0..=4 => type_url::ALL[usize::from(i)].to_string(),
        5 => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment".into(),
        6 => String::new(),
        _ => "type.googleapis.com/\u{0}".into(),
    }
}

fn names(sel: &[u8]) -> Vec<String> {
    sel.iter()
        .map(|i| NAMES[usize::from(*i) % NAMES.len()].to_string())
        .collect()
}

/// A request, with nonce and version chosen relative to what the stream has sent.
#[derive(Debug, Clone)]
struct Req {
    node: Option<u8>,
    type_sel: u8,
    names: Vec<u8>,
    /// Ask for the same names as the type's previous request (Delta: no change).
    same_names: bool,
    unsubscribe: Vec<u8>,
    /// 0: empty; 1: the type's latest nonce; 2: the stream's latest; 3: an older one; else junk.
    nonce_sel: u8,
    /// 0: empty; 1: the type's latest version; else junk.
    version_sel: u8,
    junk: String,
    error: Option<String>,
}

#[derive(Debug, Clone)]
enum Op {
    Request(Req),
    /// The configuration changes (variant and rotation of [`snapshot`]).
    Change(u8, u32),
}

fn op() -> impl Strategy<Value = Op> {
    let req = (
        proptest::option::weighted(0.2, any::<u8>()),
        any::<u8>(),
        proptest::collection::vec(any::<u8>(), 0..5),
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..3),
        // Mostly answering the latest response, as Envoy does.
        prop_oneof![1 => Just(1u8), 1 => 0u8..6],
        0u8..3,
        ".{0,12}",
        proptest::option::weighted(0.3, ".{0,40}"),
    )
        .prop_map(
            |(
                node,
                type_sel,
                names,
                same_names,
                unsubscribe,
                nonce_sel,
                version_sel,
                junk,
                error,
            )| {
                Op::Request(Req {
                    node,
                    type_sel,
                    names,
                    same_names,
                    unsubscribe,
                    nonce_sel,
                    version_sel,
                    junk,
                    error,
                })
            },
        );
    prop_oneof![4 => req, 1 => (any::<u8>(), 0u32..4).prop_map(|(v, r)| Op::Change(v, r))]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..40)
}

/// What the driver remembers of the responses, to choose nonces and versions and to check
/// that nonces are fresh.
#[derive(Default)]
struct Sent {
    nonces: HashSet<String>,
    last: u64,
    by_type: HashMap<String, (String, String)>,
}

impl Sent {
    fn record(&mut self, t: &str, nonce: &str, version: &str) {
        assert!(self.nonces.insert(nonce.to_owned()), "nonce {nonce} reused");
        let n: u64 = nonce.parse().expect("numeric nonce");
        assert!(n > self.last, "nonce {n} after {}", self.last);
        self.last = n;
        self.by_type
            .insert(t.to_owned(), (nonce.to_owned(), version.to_owned()));
    }

    fn nonce(&self, t: &str, req: &Req) -> String {
        match req.nonce_sel {
            0 => String::new(),
            1 => self.by_type.get(t).map(|s| s.0.clone()).unwrap_or_default(),
            2 => self.last.to_string(),
            3 => self.last.saturating_sub(1).to_string(),
            _ => req.junk.clone(),
        }
    }

    fn version(&self, t: &str, req: &Req) -> String {
        match req.version_sel {
            0 => String::new(),
            1 => self.by_type.get(t).map(|s| s.1.clone()).unwrap_or_default(),
            _ => req.junk.clone(),
        }
    }

    /// Whether `nonce` is the latest response of type `t`: a NACK of it is current.
    fn is_latest(&self, t: &str, nonce: &str) -> bool {
        !nonce.is_empty() && self.by_type.get(t).is_some_and(|s| s.0 == nonce)
    }
}

/// The error detail of a NACK; for credential types it echoes a key, as Envoy may.
fn detail(t: &str, text: &str) -> RpcStatus {
    let message = if type_url::carries_credentials(t) {
        format!("{text} inline_string: \"{}\"", key(0))
    } else {
        text.to_owned()
    };
    RpcStatus {
        code: 3,
        message,
        ..Default::default()
    }
}

fn small_limits() -> Limits {
    Limits {
        max_names_per_type: 4,
        max_node_field_bytes: 64,
        ..Limits::default()
    }
}

/// Name of a credential-bearing resource, or `None` for other types.
fn credential_name(any: &envoy_types::pb::google::protobuf::Any) -> Option<String> {
    match any.type_url.as_str() {
        type_url::SECRET => Some(Secret::decode(any.value.as_slice()).unwrap().name),
        type_url::EXTENSION_CONFIG => Some(
            TypedExtensionConfig::decode(any.value.as_slice())
                .unwrap()
                .name,
        ),
        _ => None,
    }
}

/// Checks what a node may receive; `asked` is what it subscribed to for that type.
fn check_credential(snapshot: &State, node: &NodeIdentity, name: &str, asked: &BTreeSet<String>) {
    let referenced = snapshot
        .gateway_for(node)
        .is_some_and(|g| g.credentials.contains(name));
    assert!(
        referenced,
        "{name} sent to a node whose gateway does not reference it"
    );
    assert!(asked.contains(name), "{name} sent unasked");
}

fn ends_rightly(status: &Status) {
    assert!(
        matches!(
            status.code(),
            tonic::Code::InvalidArgument | tonic::Code::ResourceExhausted
        ),
        "unexpected status {status:?}"
    );
}

fn shown_without_keys(registry: &Registry) {
    let shown = serde_json::to_string(&registry.snapshot()).unwrap();
    assert!(!shown.contains(KEY_MARK), "a key in /status: {shown}");
    let csds = crate::xds::csds::client_configs(&registry.snapshot(), &[]).unwrap();
    let bytes: Vec<u8> = csds.iter().flat_map(|c| c.encode_to_vec()).collect();
    assert!(
        !bytes
            .windows(KEY_MARK.len())
            .any(|w| w == KEY_MARK.as_bytes()),
        "a key in a CSDS answer"
    );
}

/// What one run exercised, to show the suite reaches what it checks.
#[derive(Debug, Default, Clone, Copy)]
struct Reached {
    credentials_sent: usize,
    quiet_nacks: usize,
    refusals: usize,
    /// SotW: refused partial updates answered with the whole set (rare in 300 runs; the
    /// unit test `a_refused_partial_sotw_update_is_answered_once_with_the_whole_set` covers it).
    whole_set_resends: usize,
}

fn fuzz_sotw(ops: Vec<Op>) -> Reached {
    let mut reached = Reached::default();
    let registry = Arc::new(Registry::default());
    let limits = small_limits();
    let cache = Cache::new();
    let mut snap = snapshot(&cache, 0, 0);
    let mut sent = Sent::default();
    let mut stream: Option<StreamState> = None;
    let mut types: FxHashMap<&'static str, SotwType> = FxHashMap::default();
    let mut asked: HashMap<String, BTreeSet<String>> = HashMap::new();
    // The names each type's latest response answered: a NACK that asks for the same ones
    // has nothing new to be answered with.
    let mut answered: HashMap<String, BTreeSet<String>> = HashMap::new();
    for op in ops {
        let (mut event, quiet_nack) = match op {
            Op::Change(v, r) => {
                snap = snapshot(&cache, v, r);
                (Event::Changed, false)
            }
            Op::Request(r) => {
                let t = type_of(r.type_sel);
                let names: BTreeSet<String> = match asked.get(&t) {
                    Some(previous) if r.same_names => previous.clone(),
                    _ => names(&r.names).into_iter().collect(),
                };
                let nonce = sent.nonce(&t, &r);
                let nack = r.error.is_some() && sent.is_latest(&t, &nonce);
                // Asking for a name again is answered even after a NACK, once (see
                // `SotwType::added`); only a NACK that asks for nothing new must stay quiet.
                let same_names = answered.get(&t) == Some(&names)
                    && asked.get(&t).is_some_and(|prev| names.is_subset(prev));
                let req = DiscoveryRequest {
                    node: r.node.map(node),
                    type_url: t.clone(),
                    resource_names: names.iter().cloned().collect(),
                    version_info: sent.version(&t, &r),
                    response_nonce: nonce,
                    error_detail: r.error.as_deref().map(|e| detail(&t, e)),
                    ..Default::default()
                };
                if known_type(&t).is_some() && names.len() <= limits.max_names_per_type {
                    asked.insert(t, names);
                }
                (Event::Request(req), nack && same_names)
            }
        };
        let s = match &mut stream {
            Some(s) => s,
            None => {
                let Event::Request(first) = &mut event else {
                    continue;
                };
                // The first request carries a node (some refused), later ones rarely do.
                let n = first.node.get_or_insert_with(|| node(0));
                match identity(Some(&*n), &Authenticated::Unauthenticated, &limits) {
                    Ok(node) => stream.insert(StreamState::open(node, &registry, limits, false)),
                    Err(status) => {
                        ends_rightly(&status);
                        reached.refusals += 1;
                        return reached;
                    }
                }
            }
        };
        let whole_before: usize = types.values().filter(|t| t.whole_sets).count();
        let responses = match step::<Sotw>(s, &mut types, event, &snap, true) {
            Ok(r) => r,
            Err(status) => {
                ends_rightly(&status);
                reached.refusals += 1;
                return reached;
            }
        };
        let fell_back = types.values().filter(|t| t.whole_sets).count() > whole_before;
        if fell_back {
            // A refused update that carried only the changed credential is answered once,
            // with every credential (Envoy's unified mux wants whole sets).
            assert!(
                responses.len() <= 1,
                "a refused partial update resent more than once"
            );
            reached.whole_set_resends += 1;
        } else if quiet_nack {
            assert!(responses.is_empty(), "a NACK alone brought a response");
            reached.quiet_nacks += 1;
        }
        for resp in responses {
            let resp = DiscoveryResponse::decode(resp.to_bytes()).unwrap();
            sent.record(&resp.type_url, &resp.nonce, &resp.version_info);
            let wanted = asked.get(&resp.type_url).cloned().unwrap_or_default();
            answered.insert(resp.type_url.clone(), wanted.clone());
            for any in &resp.resources {
                assert_eq!(any.type_url, resp.type_url);
                if let Some(name) = credential_name(any) {
                    check_credential(&snap, &s.node, &name, &wanted);
                    reached.credentials_sent += 1;
                }
            }
        }
        shown_without_keys(&registry);
    }
    reached
}

fn fuzz_delta(ops: Vec<Op>) -> Reached {
    let mut reached = Reached::default();
    let registry = Arc::new(Registry::default());
    let limits = small_limits();
    let cache = Cache::new();
    let mut snap = snapshot(&cache, 0, 0);
    let mut sent = Sent::default();
    let mut stream: Option<StreamState> = None;
    let mut types: FxHashMap<&'static str, DeltaType> = FxHashMap::default();
    for op in ops {
        let (mut event, quiet_nack) = match op {
            Op::Change(v, r) => {
                snap = snapshot(&cache, v, r);
                (Event::Changed, false)
            }
            Op::Request(r) => {
                let t = type_of(r.type_sel);
                let nonce = sent.nonce(&t, &r);
                let (subscribe, unsubscribe) = if r.same_names {
                    (Vec::new(), Vec::new())
                } else {
                    (names(&r.names), names(&r.unsubscribe))
                };
                let quiet = r.error.is_some()
                    && sent.is_latest(&t, &nonce)
                    && subscribe.is_empty()
                    && unsubscribe.is_empty();
                let req = DeltaDiscoveryRequest {
                    node: r.node.map(node),
                    type_url: t.clone(),
                    resource_names_subscribe: subscribe,
                    resource_names_unsubscribe: unsubscribe,
                    initial_resource_versions: [("backend/a".to_string(), sent.version(&t, &r))]
                        .into(),
                    response_nonce: nonce,
                    error_detail: r.error.as_deref().map(|e| detail(&t, e)),
                    ..Default::default()
                };
                (Event::Request(req), quiet)
            }
        };
        let s = match &mut stream {
            Some(s) => s,
            None => {
                let Event::Request(first) = &mut event else {
                    continue;
                };
                let n = first.node.get_or_insert_with(|| node(0));
                match identity(Some(&*n), &Authenticated::Unauthenticated, &limits) {
                    Ok(node) => stream.insert(StreamState::open(node, &registry, limits, true)),
                    Err(status) => {
                        ends_rightly(&status);
                        reached.refusals += 1;
                        return reached;
                    }
                }
            }
        };
        let responses = match step::<Delta>(s, &mut types, event, &snap, true) {
            Ok(r) => r,
            Err(status) => {
                ends_rightly(&status);
                reached.refusals += 1;
                return reached;
            }
        };
        if quiet_nack {
            assert!(responses.is_empty(), "a NACK alone brought a response");
            reached.quiet_nacks += 1;
        }
        for resp in responses {
            let resp = DeltaDiscoveryResponse::decode(resp.to_bytes()).unwrap();
            sent.record(&resp.type_url, &resp.nonce, &resp.system_version_info);
            let t = known_type(&resp.type_url).expect("a served type");
            let subscribed = types
                .get(t)
                .map(|d| d.subscribed.iter().map(|n| n.to_string()).collect())
                .unwrap_or_default();
            for r in &resp.resources {
                let any = r.resource.as_ref().expect("a resource");
                assert_eq!(any.type_url, resp.type_url);
                if let Some(name) = credential_name(any) {
                    assert_eq!(name, r.name);
                    check_credential(&snap, &s.node, &name, &subscribed);
                    reached.credentials_sent += 1;
                }
            }
            if type_url::carries_credentials(t) {
                assert!(resp.removed_resources.is_empty(), "a credential removed");
            }
        }
        shown_without_keys(&registry);
    }
    reached
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Bounded for `cargo test`; PROPTEST_CASES overrides it for longer runs.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(300),
        ..ProptestConfig::default()
    })]

    #[test]
    fn ads_fuzz_sotw(ops in ops()) {
        fuzz_sotw(ops);
    }

    #[test]
    fn ads_fuzz_delta(ops in ops()) {
        fuzz_delta(ops);
    }
}

/// The generated sequences reach what the invariants are about: credentials are served,
/// NACKs are checked for resends, and streams are refused.
#[test]
fn ads_fuzz_reaches_credentials_nacks_and_refusals() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for fuzz in [fuzz_sotw, fuzz_delta] {
        let mut total = Reached::default();
        for _ in 0..300 {
            let ops = ops().new_tree(&mut runner).unwrap().current();
            let r = fuzz(ops);
            total.credentials_sent += r.credentials_sent;
            total.quiet_nacks += r.quiet_nacks;
            total.refusals += r.refusals;
            total.whole_set_resends += r.whole_set_resends;
        }
        eprintln!("ads_fuzz reached {total:?}");
        assert!(
            total.credentials_sent > 0 && total.quiet_nacks > 0 && total.refusals > 0,
            "{total:?}"
        );
    }
}
