//! Typed objects → a [`Model`]: every object is checked against its schema's bounds, then rule
//! by rule, and references are resolved by name. Every problem is reported, none stops the rest.

use super::error::{ConfigError, Kind, ObjectRef};
use super::input::{Object, Origin, SecretData, Spec};
use super::sink::{Fault, Sink};
use super::syntax::{is_header_name, is_host_name, parse_endpoint};
use super::{Restrictions, client_auth, policy, schema};
use crate::api::{self, PolicyType};
use crate::model::{
    Backend, Gateway, HeaderMatch, Listener, Match, Model, ModelMatch, PolicyKind, Retry, RetryOn,
    Route, Rule, SecretString, SecurityPolicy, UpstreamTls, WeightedBackend, XdsClient,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// An object awaiting validation.
struct Doc<'a, T> {
    origin: &'a Origin,
    object: &'a ObjectRef,
    spec: T,
}

/// Decoded Secret values by Secret name and key.
pub(super) type Secrets = BTreeMap<String, BTreeMap<String, SecretString>>;

/// Validates `objects` (all of one namespace: references resolve by name). Names in
/// `left_out` belong to objects the caller set aside; a reference to one is reported as such.
pub(super) fn validate(
    objects: &[&Object],
    left_out: &BTreeSet<(Kind, String)>,
    restrictions: &Restrictions,
) -> (Model, Vec<ConfigError>) {
    let mut v = Validator {
        restrictions,
        left_out,
        errors: Vec::new(),
        declared: BTreeMap::new(),
        gateways: Vec::new(),
        backends: Vec::new(),
        policies: Vec::new(),
        routes: Vec::new(),
        secrets: Vec::new(),
    };
    for object in objects {
        v.add(object);
    }
    let mut model = Model::default();
    let secrets = v.secrets();
    v.gateways(&mut model, &secrets);
    v.policies(&mut model, &secrets);
    v.backends(&mut model);
    v.routes(&mut model);
    (model, v.errors)
}

struct Validator<'a> {
    restrictions: &'a Restrictions,
    left_out: &'a BTreeSet<(Kind, String)>,
    errors: Vec<ConfigError>,
    /// Includes objects that later fail, so that one broken object does not cascade into
    /// "does not exist" errors wherever it is referenced.
    declared: BTreeMap<(Kind, String), &'a Origin>,
    gateways: Vec<Doc<'a, &'a api::GatewaySpec>>,
    backends: Vec<Doc<'a, &'a api::BackendSpec>>,
    policies: Vec<Doc<'a, &'a api::BackendSecurityPolicySpec>>,
    routes: Vec<Doc<'a, &'a api::RouteSpec>>,
    secrets: Vec<Doc<'a, &'a SecretData>>,
}

impl<'a> Validator<'a> {
    fn sink<'s>(&'s mut self, origin: &'s Origin, object: &'s ObjectRef) -> Sink<'s> {
        Sink {
            origin,
            object,
            restrictions: self.restrictions,
            errors: &mut self.errors,
        }
    }

    /// Declares the object's name and queues its spec, unless either is unusable.
    fn add(&mut self, object: &'a Object) {
        let (origin, reference) = (object.origin(), object.reference());
        if reference.name.is_empty() {
            return; // reported where the document was read
        }
        let longest = api::limits::NAME;
        if reference.name.chars().count() > longest as usize {
            let message = format!("must be at most {longest} characters");
            return self.sink(origin, reference).err("metadata.name", message);
        }
        let key = (reference.kind, reference.name.clone());
        if let Some(first) = self.declared.get(&key) {
            let message = format!(
                "duplicate {} {:?}; first defined in {} document {}",
                reference.kind,
                reference.name,
                first.file.display(),
                first.document
            );
            return self.sink(origin, reference).err("metadata.name", message);
        }
        self.declared.insert(key, origin);
        let Some(spec) = object.spec() else {
            return;
        };
        if !self.within_bounds(origin, reference, spec) {
            return;
        }
        match spec {
            Spec::Gateway(spec) => self.gateways.push(doc(origin, reference, spec)),
            Spec::Backend(spec) => self.backends.push(doc(origin, reference, spec)),
            Spec::BackendSecurityPolicy(spec) => self.policies.push(doc(origin, reference, spec)),
            Spec::Route(spec) => self.routes.push(doc(origin, reference, spec)),
            Spec::Secret(data) => self.secrets.push(doc(origin, reference, data)),
        }
    }

    /// Checks the schema's bounds first: the rules below may assume sane sizes.
    fn within_bounds(&mut self, origin: &Origin, object: &ObjectRef, spec: &Spec) -> bool {
        let json = match spec {
            Spec::Gateway(s) => serde_json::to_value(s),
            Spec::Backend(s) => serde_json::to_value(s),
            Spec::BackendSecurityPolicy(s) => serde_json::to_value(s),
            Spec::Route(s) => serde_json::to_value(s),
            Spec::Secret(_) => return true,
        };
        let violations = match json {
            Ok(json) => schema::violations(object.kind, &json),
            Err(e) => vec![(String::new(), format!("cannot be checked: {e}"))],
        };
        let mut e = self.sink(origin, object);
        let ok = violations.is_empty();
        for (field, message) in violations {
            e.err(field, message);
        }
        ok
    }

    /// Why a reference to `name` does not resolve, or `None` when it does.
    fn absent(&self, kind: Kind, name: &str) -> Option<String> {
        let key = (kind, name.to_owned());
        if self.declared.contains_key(&key) {
            None
        } else if self.left_out.contains(&key) {
            Some(format!("{kind} {name:?} is invalid"))
        } else {
            Some(format!("{kind} {name:?} does not exist"))
        }
    }

    fn secrets(&mut self) -> Secrets {
        let mut secrets = BTreeMap::new();
        for Doc {
            origin,
            object,
            spec,
        } in std::mem::take(&mut self.secrets)
        {
            let mut e = self.sink(origin, object);
            let mut values = BTreeMap::new();
            for (key, bytes) in &spec.0 {
                // The decoder's error is not passed on: it quotes the offending bytes.
                match std::str::from_utf8(bytes) {
                    Ok(value) => drop(values.insert(key.clone(), SecretString::new(value))),
                    Err(_) => e.err(format!("data.{key}"), "is not valid UTF-8 once decoded"),
                }
            }
            secrets.insert(object.name.clone(), values);
        }
        secrets
    }

    fn gateways(&mut self, model: &mut Model, secrets: &Secrets) {
        let mut clusters = BTreeMap::new();
        let mut sockets = BTreeMap::new();
        for Doc {
            origin,
            object,
            spec,
        } in std::mem::take(&mut self.gateways)
        {
            let name = &object.name;
            let mut e = self.sink(origin, object);
            let node_cluster = spec.node_cluster.clone();
            if node_cluster.is_empty() {
                e.err("spec.nodeCluster", "must not be empty");
            } else if let Some(other) = clusters.get(&node_cluster) {
                let message = format!("{node_cluster:?} is already served by Gateway {other:?}");
                e.err("spec.nodeCluster", message);
            } else {
                clusters.insert(node_cluster.clone(), name.clone());
            }
            let mut names = BTreeSet::new();
            let mut listeners = Vec::new();
            for (i, listener) in spec.listeners.iter().enumerate() {
                let at = |field: &str| format!("spec.listeners[{i}].{field}");
                let listener_name = &listener.name;
                if listener_name.is_empty() {
                    e.err(at("name"), "must not be empty");
                } else if !names.insert(listener_name.clone()) {
                    let message = format!("duplicate listener {listener_name:?} in this Gateway");
                    e.err(at("name"), message);
                }
                let address = listener.address.as_deref();
                let address = address.unwrap_or(api::DEFAULT_LISTENER_ADDRESS);
                let Ok(ip) = address.parse::<IpAddr>() else {
                    e.err(at("address"), format!("{address:?} is not an IP address"));
                    continue;
                };
                let Some(port) = u16::try_from(listener.port).ok().filter(|p| *p != 0) else {
                    e.err(at("port"), "must be between 1 and 65535");
                    continue;
                };
                let socket = SocketAddr::new(ip, port);
                if let Some((gateway, other)) = sockets.get(&socket) {
                    let message = format!(
                        "{socket} is already used by listener {other:?} of Gateway {gateway:?}"
                    );
                    e.err(at("port"), message);
                    continue;
                }
                sockets.insert(socket, (name.clone(), listener_name.clone()));
                listeners.push(Listener {
                    name: listener_name.clone(),
                    address: ip.to_string(),
                    port,
                    max_request_bytes: listener
                        .max_request_bytes
                        .unwrap_or(api::DEFAULT_MAX_REQUEST_BYTES),
                });
            }
            let ca_bundle_path = spec.ca_bundle_path.clone();
            let ca_bundle_path =
                ca_bundle_path.unwrap_or_else(|| api::DEFAULT_CA_BUNDLE_PATH.into());
            let xds_clients = spec.xds_clients.iter().flatten().enumerate();
            let xds_clients = xds_clients
                .filter_map(|(i, client)| match xds_client(client) {
                    Ok(client) => {
                        if let Some(why) = foreign_account(e.object, e.restrictions, &client) {
                            e.err(format!("spec.xdsClients[{i}]"), why);
                            return None;
                        }
                        Some(client)
                    }
                    Err(why) => {
                        e.err(format!("spec.xdsClients[{i}]"), why);
                        None
                    }
                })
                .collect();
            let client_auth = spec.client_auth.as_ref();
            let client_auth =
                client_auth.and_then(|c| client_auth::client_auth(c, &mut e, secrets));
            let gateway = Gateway {
                name: name.clone(),
                node_cluster,
                listeners,
                ca_bundle_path,
                xds_clients,
                client_auth,
            };
            model.gateways.insert(name.clone(), gateway);
        }
    }

    fn policies(&mut self, model: &mut Model, secrets: &Secrets) {
        for Doc {
            origin,
            object,
            spec,
        } in std::mem::take(&mut self.policies)
        {
            let spec = spec.clone();
            let mut e = self.sink(origin, object);
            // A block for another type is a mistake the user should hear about.
            for (present, field, ty) in [
                (spec.api_key.is_some(), "spec.apiKey", PolicyType::APIKey),
                (
                    spec.aws_credentials.is_some(),
                    "spec.awsCredentials",
                    PolicyType::AWSCredentials,
                ),
            ] {
                if present && spec.type_ != ty {
                    let message = format!("is not allowed when type is {:?}", spec.type_);
                    e.err(field, message);
                }
            }
            let kind = match spec.type_ {
                PolicyType::APIKey => match spec.api_key {
                    Some(key) => policy::api_key(key, &mut e, secrets),
                    None => {
                        e.err("spec.apiKey", "is required when type is APIKey");
                        None
                    }
                },
                PolicyType::AWSCredentials => match spec.aws_credentials {
                    Some(aws) => policy::aws(aws, &mut e, secrets),
                    None => {
                        let message = "is required when type is AWSCredentials";
                        e.err("spec.awsCredentials", message);
                        None
                    }
                },
                PolicyType::AzureCredentials => match spec.azure_credentials {
                    Some(azure) => policy::azure(azure, &mut e, secrets),
                    None => {
                        let message = "is required when type is AzureCredentials";
                        e.err("spec.azureCredentials", message);
                        None
                    }
                },
            };
            if let Some(kind) = kind {
                let name = object.name.clone();
                let policy = SecurityPolicy {
                    name: name.clone(),
                    kind,
                };
                model.policies.insert(name, policy);
            }
        }
    }

    fn backends(&mut self, model: &mut Model) {
        for Doc {
            origin,
            object,
            spec,
        } in std::mem::take(&mut self.backends)
        {
            let spec = spec.clone();
            let absent = spec
                .security_policy
                .as_deref()
                .and_then(|p| self.absent(Kind::BackendSecurityPolicy, p));
            let mut e = self.sink(origin, object);
            let endpoint = parse_endpoint(&spec.endpoint);
            let endpoint = endpoint.map_err(|m| e.err("spec.endpoint", m)).ok();
            let security_policy = spec.security_policy;
            if let Some(message) = absent {
                e.missing("spec.securityPolicy", message);
            }
            // Judged on the scheme alone so that a bad host still lets `tls` be checked.
            let https = spec.endpoint.starts_with("https://");
            let tls = match spec.tls {
                Some(_) if !https => {
                    e.err("spec.tls", "is only allowed with an https endpoint");
                    None
                }
                tls if https => {
                    let api::BackendTls { ca_file, sni } = tls.unwrap_or_default();
                    let ca_pem = ca_file.map(|file| {
                        e.resolve(&file)
                            .and_then(|p| read_ca(&p).map_err(Fault::from))
                    });
                    let ca_pem = ca_pem.transpose().map_err(|f| e.err("spec.tls.caFile", f));
                    if sni.as_deref().is_some_and(|sni| !is_host_name(sni)) {
                        e.err("spec.tls.sni", "is not a valid host name");
                    }
                    let ca_pem = ca_pem.ok().flatten();
                    Some(UpstreamTls { ca_pem, sni })
                }
                _ => None,
            };
            let policy = security_policy.as_ref().and_then(|p| model.policies.get(p));
            let aws_policy = policy.is_some_and(|p| matches!(p.kind, PolicyKind::Aws(_)));
            let azure_policy = policy.is_some_and(|p| matches!(p.kind, PolicyKind::Azure(_)));
            if azure_policy && spec.provider != api::Provider::AzureOpenAI {
                e.err("spec.securityPolicy", "AzureCredentials are Entra ID tokens for Azure OpenAI: the provider must be AzureOpenAI");
            }
            if aws_policy && spec.provider != api::Provider::AWSBedrock {
                e.err(
                    "spec.securityPolicy",
                    "AWSCredentials sign for Bedrock: the provider must be AWSBedrock",
                );
            }
            if let Some(endpoint) = endpoint {
                let name = object.name.clone();
                let backend = Backend {
                    name: name.clone(),
                    provider: provider(spec.provider),
                    endpoint,
                    tls,
                    security_policy,
                };
                model.backends.insert(name, backend);
            }
        }
    }

    fn routes(&mut self, model: &mut Model) {
        for Doc {
            origin,
            object,
            spec,
        } in std::mem::take(&mut self.routes)
        {
            let absent_gateway = self.absent(Kind::Gateway, &spec.gateway);
            let absent_backends: Vec<Vec<Option<String>>> = spec
                .rules
                .iter()
                .map(|r| {
                    let absent = |b: &api::BackendRef| self.absent(Kind::Backend, &b.name);
                    r.backends.iter().map(absent).collect()
                })
                .collect();
            let spec = spec.clone();
            let mut e = self.sink(origin, object);
            let gateway = spec.gateway;
            if let Some(message) = absent_gateway {
                e.missing("spec.gateway", message);
            }
            let mut rules = Vec::new();
            for ((i, rule), absent) in spec.rules.into_iter().enumerate().zip(absent_backends) {
                let matches = matches(i, rule.matches.unwrap_or_default(), &mut e);
                let at = format!("spec.rules[{i}].backends");
                let mut backends = Vec::new();
                for ((b, backend), absent) in rule.backends.into_iter().enumerate().zip(absent) {
                    let api::BackendRef {
                        name,
                        weight,
                        priority,
                    } = backend;
                    if let Some(message) = absent {
                        e.missing(format!("{at}[{b}].name"), message);
                    }
                    let weight = weight.unwrap_or(1);
                    let priority = priority.unwrap_or(0);
                    backends.push(WeightedBackend {
                        name,
                        weight,
                        priority,
                    });
                }
                let retry = retry(i, rule.retry, &backends, &mut e);
                let resolved: Vec<&Backend> = backends
                    .iter()
                    .filter_map(|b| model.backends.get(&b.name))
                    .collect();
                let signed = resolved.iter().any(|b| {
                    let policy = b
                        .security_policy
                        .as_ref()
                        .and_then(|p| model.policies.get(p));
                    policy.is_some_and(|p| matches!(p.kind, PolicyKind::Aws(_)))
                });
                let hosts: BTreeSet<String> =
                    resolved.iter().map(|b| b.endpoint.authority()).collect();
                if signed && hosts.len() > 1 {
                    // Envoy rewrites Host per endpoint only after upstream filters ran on a new
                    // connection, so SigV4 would sign the wrong Host.
                    e.err(at.clone(), "a backend signed with AWSCredentials can only share a rule with backends of the same endpoint host and port");
                }
                let tiers: BTreeSet<u32> = backends.iter().map(|b| b.priority).collect();
                if backends.is_empty() {
                    e.err(at.clone(), "a rule needs at least one backend");
                }
                let single = tiers.len() == 1;
                for tier in tiers {
                    let total: u64 = backends
                        .iter()
                        .filter(|b| b.priority == tier)
                        .map(|b| u64::from(b.weight))
                        .sum();
                    if total == 0 {
                        let of = if single {
                            String::new()
                        } else {
                            format!(" of priority {tier}")
                        };
                        let message =
                            format!("every weight{of} is 0; at least one must be positive");
                        e.err(at.clone(), message);
                    } else if total > u64::from(api::limits::WEIGHT) {
                        let message =
                            format!("weights add up to more than {}", api::limits::WEIGHT);
                        e.err(at.clone(), message);
                    }
                }
                let clients = rule.clients;
                for (c, id) in clients.iter().flatten().enumerate() {
                    if !client_auth::is_client_id(id) {
                        let message =
                            format!("{id:?} is not a client id (printable ASCII, no spaces)");
                        e.err(format!("spec.rules[{i}].clients[{c}]"), message);
                    }
                }
                rules.push(Rule {
                    matches,
                    backends,
                    retry,
                    clients,
                });
            }
            let name = object.name.clone();
            let route = Route {
                name: name.clone(),
                gateway,
                rules,
            };
            model.routes.insert(name, route);
        }
    }
}

fn doc<'a, T>(origin: &'a Origin, object: &'a ObjectRef, spec: T) -> Doc<'a, T> {
    Doc {
        origin,
        object,
        spec,
    }
}

/// The matches of rule `i`.
fn matches(i: usize, specs: Vec<api::MatchSpec>, e: &mut Sink<'_>) -> Vec<Match> {
    let mut matches = Vec::new();
    for (j, m) in specs.into_iter().enumerate() {
        let at = format!("spec.rules[{i}].matches[{j}]");
        let path_prefix = m.path_prefix;
        if let Some(prefix) = path_prefix.as_deref().filter(|p| !p.starts_with('/')) {
            let message = format!("{prefix:?} must start with /");
            e.err(format!("{at}.pathPrefix"), message);
        }
        let mut headers = Vec::new();
        for (k, api::HeaderMatchSpec { name, value }) in m.headers.into_iter().flatten().enumerate()
        {
            if !is_header_name(&name) {
                let message = format!("{name:?} is not a lowercase HTTP header name");
                e.err(format!("{at}.headers[{k}].name"), message);
            }
            headers.push(HeaderMatch { name, value });
        }
        let model = match (m.model, m.model_prefix) {
            (Some(_), Some(_)) => {
                e.err(at.clone(), "model and modelPrefix exclude each other");
                None
            }
            (Some(exact), None) => Some(ModelMatch::Exact(exact)),
            (None, Some(prefix)) => Some(ModelMatch::Prefix(prefix)),
            (None, None) => None,
        };
        if let Some(ModelMatch::Exact(name) | ModelMatch::Prefix(name)) = &model
            && name.chars().any(|c| c.is_control())
        {
            e.err(at.clone(), "a model name has no control characters");
        }
        matches.push(Match {
            path_prefix,
            headers,
            model,
        });
    }
    matches
}

/// The retry policy of rule `i`; see [`api::RetrySpec`] for the defaults.
fn retry(
    i: usize,
    spec: Option<api::RetrySpec>,
    backends: &[WeightedBackend],
    e: &mut Sink<'_>,
) -> Retry {
    let at = format!("spec.rules[{i}].retry");
    let spec = spec.unwrap_or(api::RetrySpec {
        attempts: None,
        on: None,
        per_try_timeout: None,
    });
    let tiers = backends
        .iter()
        .map(|b| b.priority)
        .collect::<BTreeSet<_>>()
        .len();
    let attempts = spec
        .attempts
        .unwrap_or_else(|| u32::try_from(tiers.max(1)).unwrap_or(1));
    let mut on = BTreeSet::new();
    match spec.on {
        None => {
            on.extend([
                RetryOn::ServerError,
                RetryOn::RateLimited,
                RetryOn::ConnectFailure,
                RetryOn::Reset,
            ]);
        }
        Some(list) => {
            for (k, word) in list.iter().enumerate() {
                let word = match word {
                    api::IntOrString::Int(n) => n.to_string(),
                    api::IntOrString::String(s) => s.clone(),
                };
                let parsed = match word.as_str() {
                    "5xx" => RetryOn::ServerError,
                    "429" => RetryOn::RateLimited,
                    "connect-failure" => RetryOn::ConnectFailure,
                    "reset" => RetryOn::Reset,
                    other => {
                        let message =
                            format!("{other:?} is not one of 5xx, 429, connect-failure, reset");
                        e.err(format!("{at}.on[{k}]"), message);
                        continue;
                    }
                };
                on.insert(parsed);
            }
        }
    }
    let per_try_timeout = match spec.per_try_timeout.as_deref() {
        None => DEFAULT_PER_TRY_TIMEOUT,
        Some(text) => match policy::parse_duration(text, MAX_PER_TRY_TIMEOUT) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                e.err(format!("{at}.perTryTimeout"), "must be positive");
                DEFAULT_PER_TRY_TIMEOUT
            }
            Err(message) => {
                e.err(format!("{at}.perTryTimeout"), message);
                DEFAULT_PER_TRY_TIMEOUT
            }
        },
    };
    Retry {
        attempts,
        on: on.into_iter().collect(),
        per_try_timeout,
    }
}

/// Long generations routinely take minutes.
const DEFAULT_PER_TRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
const MAX_PER_TRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

fn provider(provider: api::Provider) -> crate::model::Provider {
    use crate::model::Provider as P;
    match provider {
        api::Provider::OpenAI => P::OpenAI,
        api::Provider::AzureOpenAI => P::AzureOpenAI,
        api::Provider::Anthropic => P::Anthropic,
        api::Provider::GoogleGemini => P::GoogleGemini,
        api::Provider::Mistral => P::Mistral,
        api::Provider::AWSBedrock => P::AWSBedrock,
        api::Provider::Generic => P::Generic,
    }
}

fn read_ca(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let pem = fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!("{shown} has no -----BEGIN CERTIFICATE----- block"));
    }
    Ok(pem)
}

/// Why a Gateway may not list `client`: a ServiceAccount of another namespace than the
/// Gateway's (Kubernetes mode) unless the operator allows it. Otherwise a tenant could hand its
/// Gateway, and its credentials, to another tenant's workload.
fn foreign_account(
    gateway: &ObjectRef,
    restrictions: &Restrictions,
    client: &XdsClient,
) -> Option<Fault> {
    let (Some(own), XdsClient::ServiceAccount { namespace, name }) = (&gateway.namespace, client)
    else {
        return None;
    };
    if restrictions.cross_namespace_xds_clients || namespace == own {
        return None;
    }
    Some(Fault::not_allowed(format!(
        "serviceAccount {namespace}/{name} is not in the Gateway's namespace {own:?} \
         (--allow-cross-namespace-xds-clients allows it)"
    )))
}

/// One `xdsClients` entry, or why it cannot match any client.
fn xds_client(spec: &api::XdsClientSpec) -> Result<XdsClient, String> {
    match (&spec.spiffe, &spec.dns_name, &spec.service_account) {
        (Some(uri), None, None) => {
            if !uri.starts_with("spiffe://") || uri.len() == "spiffe://".len() {
                return Err(format!("spiffe {uri:?} must be a spiffe:// URI"));
            }
            Ok(XdsClient::Spiffe(uri.clone()))
        }
        (None, Some(dns), None) => {
            let rest = dns.strip_prefix("*.").unwrap_or(dns);
            if !is_host_name(rest) || rest.contains('*') {
                return Err(format!(
                    "dnsName {dns:?} must be a DNS name; `*` is allowed only as the whole first label"
                ));
            }
            Ok(XdsClient::DnsName(dns.to_ascii_lowercase()))
        }
        (None, None, Some(sa)) => {
            if sa.namespace.is_empty() || sa.name.is_empty() {
                return Err("serviceAccount needs a namespace and a name".to_owned());
            }
            Ok(XdsClient::ServiceAccount {
                namespace: sa.namespace.clone(),
                name: sa.name.clone(),
            })
        }
        _ => Err("needs exactly one of spiffe, dnsName and serviceAccount".to_owned()),
    }
}
