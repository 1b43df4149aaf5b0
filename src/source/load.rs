//! Turns configuration files into a validated [`Model`], reporting every problem at once.
//!
//! Loading has two passes: every document of every file is parsed first (so that names
//! declared anywhere are known), then each object is validated and its references resolved.

use crate::api::{self, PolicyType};
use crate::model::{
    Backend, Endpoint, Gateway, HeaderMatch, Listener, Match, Model, PolicyKind, Route, Rule,
    SecretString, SecurityPolicy, UpstreamTls, WeightedBackend,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderName;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod policy;
#[cfg(test)]
mod tests;

/// A configuration that passed validation, and the files it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub model: Model,
    /// The configuration files read, in processing order.
    pub files: Vec<PathBuf>,
}

/// One problem, located down to the field where possible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based index of the YAML document within the file; 0 when the whole file is at fault.
    pub document: usize,
    /// The object concerned, e.g. `Route "chat"`.
    pub object: Option<String>,
    /// Path of the offending field, e.g. `spec.rules[0].backends[1].name`; empty if none.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.document > 0 {
            write!(f, ": document {}", self.document)?;
        }
        if let Some(object) = &self.object {
            write!(f, " ({object})")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a configuration; `Display` prints one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// Operator-imposed limits on what objects may point Tessera at (Kubernetes mode).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restrictions {
    /// When set, every file path must be absolute and lie under one of these directories.
    pub file_dirs: Option<Vec<PathBuf>>,
    /// When set, endpoint overrides (STS, OIDC issuer/token endpoint, Entra authority) must
    /// start with one of these prefixes.
    pub endpoints: Option<Vec<String>>,
}

/// Validates objects that come from an API rather than files. Each document is labelled with
/// `source` (which errors name in place of a file) and its index; all must be from one
/// namespace, since references resolve by name.
pub fn load_documents(
    source: &Path,
    documents: impl IntoIterator<Item = Value>,
    restrictions: &Restrictions,
) -> (Model, Vec<ConfigError>) {
    let restrictions = Arc::new(restrictions.clone());
    let mut loader = Loader::default();
    for (i, value) in documents.into_iter().enumerate() {
        let mut origin = Origin::new(source, i + 1);
        origin.restrictions = restrictions.clone();
        loader.read_document(origin, value);
    }
    loader.finish()
}

/// Loads a configuration file, or every `*.yaml`/`*.yml` file directly inside a directory.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    let files = config_files(path).map_err(|e| ConfigErrors(vec![e]))?;
    if files.is_empty() {
        tracing::warn!(path = %path.display(), "no *.yaml or *.yml configuration files found");
    }
    let mut loader = Loader::default();
    for file in &files {
        tracing::debug!(file = %file.display(), "reading configuration");
        loader.read_file(file);
    }
    let (model, mut errors) = loader.finish();
    if errors.is_empty() {
        return Ok(Loaded { model, files });
    }
    // Validation runs in passes; regroup so each file's problems read top to bottom.
    errors.sort_by(|a, b| (&a.file, a.document).cmp(&(&b.file, b.document)));
    Err(ConfigErrors(errors))
}

fn config_files(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let unreadable = |e| Origin::new(path, 0).error("", format!("cannot read: {e}"));
    if !fs::metadata(path).map_err(unreadable)?.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(path).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Hidden names cover swap and lock files (`.foo.yaml.swp`, `.#foo.yaml`); the suffix
        // test rules out backups (`foo.yaml~`, `#foo.yaml#`) and non-config files like keys.
        // `is_file` follows symlinks, which is how Kubernetes mounts ConfigMaps.
        let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        if yaml && !name.starts_with(['.', '#']) && entry.path().is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Every kind a document may have, with the `apiVersion` it must carry.
const KINDS: [(&str, &str); 5] = [
    ("Gateway", api::API_VERSION),
    ("Backend", api::API_VERSION),
    ("BackendSecurityPolicy", api::API_VERSION),
    ("Route", api::API_VERSION),
    ("Secret", api::SECRET_API_VERSION),
];

/// Where a document came from; every error about it carries this.
#[derive(Debug, Clone)]
struct Origin {
    file: PathBuf,
    document: usize,
    object: Option<String>,
    restrictions: Arc<Restrictions>,
}

impl Origin {
    fn new(file: &Path, document: usize) -> Self {
        let file = file.to_path_buf();
        Self {
            file,
            document,
            object: None,
            restrictions: Arc::default(),
        }
    }

    fn error(&self, field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            document: self.document,
            object: self.object.clone(),
            field: field.into(),
            message: message.into(),
        }
    }

    fn sink<'a>(&'a self, errors: &'a mut Vec<ConfigError>) -> Sink<'a> {
        Sink {
            origin: self,
            errors,
        }
    }

    /// Relative paths inside a document are relative to its file, not the working directory.
    /// Under restrictions (Kubernetes mode) a path must be absolute, without `..`, and inside
    /// an allowed directory: a tenant must not make Tessera read its own secrets.
    fn resolve(&self, path: &str) -> Result<PathBuf, String> {
        let Some(dirs) = &self.restrictions.file_dirs else {
            return Ok(self.file.parent().unwrap_or(Path::new("")).join(path));
        };
        let p = Path::new(path);
        let escapes = p
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir));
        if !p.is_absolute() || escapes {
            return Err(format!("{path:?} must be an absolute path without \"..\""));
        }
        if dirs.iter().any(|d| p.starts_with(d)) {
            Ok(p.to_path_buf())
        } else {
            Err(format!(
                "{path:?} is outside the directories the operator allowed (--allow-file-dir)"
            ))
        }
    }

    /// Under restrictions, an endpoint override must start with an allowed prefix.
    fn allow_endpoint(&self, url: &str) -> Result<(), String> {
        match &self.restrictions.endpoints {
            Some(allowed) if !allowed.iter().any(|a| url.starts_with(a.as_str())) => Err(format!(
                "{url:?} is not an endpoint the operator allowed (--allow-endpoint)"
            )),
            _ => Ok(()),
        }
    }
}

/// Reports errors about one document.
struct Sink<'a> {
    origin: &'a Origin,
    errors: &'a mut Vec<ConfigError>,
}

impl Sink<'_> {
    fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(self.origin.error(field, message));
    }
}

/// A parsed document awaiting validation.
struct Doc<T> {
    origin: Origin,
    name: String,
    obj: T,
}

/// Decoded Secret values by Secret name and key.
type Secrets = BTreeMap<String, BTreeMap<String, SecretString>>;

/// Names declared per kind, with where each was first defined.
type Declared = BTreeMap<(&'static str, String), Origin>;

#[derive(Default)]
struct Loader {
    errors: Vec<ConfigError>,
    /// Includes documents that later fail, so that one broken object does not cascade into
    /// "does not exist" errors wherever it is referenced.
    declared: Declared,
    gateways: Vec<Doc<api::Gateway>>,
    backends: Vec<Doc<api::Backend>>,
    policies: Vec<Doc<api::BackendSecurityPolicy>>,
    routes: Vec<Doc<api::Route>>,
    secrets: Vec<Doc<api::Secret>>,
}

impl Loader {
    fn read_file(&mut self, file: &Path) {
        let text = fs::read_to_string(file).map_err(|e| format!("cannot read: {e}"));
        let text = match text {
            Ok(text) => text,
            Err(message) => return self.errors.push(Origin::new(file, 0).error("", message)),
        };
        let mut previous = None;
        for (i, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let origin = Origin::new(file, i + 1);
            match Value::deserialize(document) {
                Ok(Value::Null) => {}
                Ok(value) => self.read_document(origin, value),
                Err(e) => {
                    let message = yaml_error(&e);
                    // libyaml errors are sticky: after a syntax error the iterator never ends
                    // and every further "document" repeats the same error.
                    if previous.as_ref() == Some(&message) {
                        break;
                    }
                    self.errors.push(origin.error("", message.clone()));
                    previous = Some(message);
                }
            }
        }
    }

    fn read_document(&mut self, mut origin: Origin, value: Value) {
        let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = value.get("metadata").and_then(|m| m.get("name"));
        origin.object = match name.and_then(Value::as_str) {
            _ if kind.is_empty() => None,
            Some(name) if !name.is_empty() => Some(format!("{kind} {name:?}")),
            _ => Some(kind.to_owned()),
        };
        let mut e = origin.sink(&mut self.errors);
        if !value.is_mapping() {
            return e.err("", "must be a mapping with apiVersion, kind, metadata");
        }
        if kind.is_empty() {
            return e.err("kind", "is required");
        }
        let Some(&(kind, version)) = KINDS.iter().find(|(k, _)| *k == kind) else {
            let known = KINDS.map(|(k, _)| k).join(", ");
            return e.err("kind", format!("unknown kind {kind:?}; expected {known}"));
        };
        let found = value.get("apiVersion").and_then(Value::as_str);
        if found != Some(version) {
            let found = found.map_or(String::new(), |v| format!(", not {v:?}"));
            let message = format!("must be {version:?} for {kind}{found}");
            e.err("apiVersion", message);
        }
        let name = match name {
            Some(Value::String(name)) if !name.is_empty() => self.declare(kind, &origin, name),
            // A name of the wrong type is left to the typed pass, which reports the type.
            Some(name) if !name.is_null() && !name.is_string() => None,
            _ => {
                e.err("metadata.name", "is required");
                None
            }
        };
        let (errors, origin) = (&mut self.errors, &origin);
        match kind {
            "Gateway" => add(&mut self.gateways, errors, origin, name, value),
            "Backend" => add(&mut self.backends, errors, origin, name, value),
            "BackendSecurityPolicy" => add(&mut self.policies, errors, origin, name, value),
            "Route" => add(&mut self.routes, errors, origin, name, value),
            _ => add(&mut self.secrets, errors, origin, name, value),
        }
    }

    /// Records a name; `None` (after reporting) when the kind already has it.
    fn declare(&mut self, kind: &'static str, origin: &Origin, name: &str) -> Option<String> {
        if let Some(first) = self.declared.get(&(kind, name.to_owned())) {
            let message = format!(
                "duplicate {kind} {name:?}; first defined in {} document {}",
                first.file.display(),
                first.document
            );
            self.errors.push(origin.error("metadata.name", message));
            return None;
        }
        self.declared
            .insert((kind, name.to_owned()), origin.clone());
        Some(name.to_owned())
    }

    fn finish(mut self) -> (Model, Vec<ConfigError>) {
        let mut model = Model::default();
        let secrets = self.secrets();
        self.gateways(&mut model);
        self.policies(&mut model, &secrets);
        self.backends(&mut model);
        self.routes(&mut model);
        (model, self.errors)
    }

    fn secrets(&mut self) -> Secrets {
        let mut secrets = BTreeMap::new();
        for Doc { origin, name, obj } in std::mem::take(&mut self.secrets) {
            let mut e = origin.sink(&mut self.errors);
            let mut values = BTreeMap::new();
            for (key, encoded) in obj.data.iter().flat_map(|d| &d.0) {
                // Like Kubernetes, tolerate line breaks inside long base64 values.
                let encoded: String = encoded.split_ascii_whitespace().collect();
                // Neither decoder error is passed on: they quote the offending bytes.
                match STANDARD.decode(encoded).map(String::from_utf8) {
                    Ok(Ok(value)) => drop(values.insert(key.clone(), SecretString::new(value))),
                    Ok(Err(_)) => e.err(format!("data.{key}"), "is not valid UTF-8 once decoded"),
                    Err(_) => e.err(format!("data.{key}"), "is not valid base64"),
                }
            }
            for (key, value) in obj.string_data.iter().flat_map(|d| &d.0) {
                values.insert(key.clone(), SecretString::new(value.as_str()));
            }
            secrets.insert(name, values);
        }
        secrets
    }

    fn gateways(&mut self, model: &mut Model) {
        let mut clusters = BTreeMap::new();
        let mut sockets = BTreeMap::new();
        for Doc { origin, name, obj } in std::mem::take(&mut self.gateways) {
            let spec = obj.spec;
            let mut e = origin.sink(&mut self.errors);
            let node_cluster = spec.node_cluster;
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
            for (i, listener) in spec.listeners.into_iter().enumerate() {
                let at = |field: &str| format!("spec.listeners[{i}].{field}");
                let listener_name = listener.name;
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
                    name: listener_name,
                    address: ip.to_string(),
                    port,
                });
            }
            let ca_bundle_path = spec.ca_bundle_path;
            let ca_bundle_path =
                ca_bundle_path.unwrap_or_else(|| api::DEFAULT_CA_BUNDLE_PATH.into());
            let gateway = Gateway {
                name: name.clone(),
                node_cluster,
                listeners,
                ca_bundle_path,
            };
            model.gateways.insert(name, gateway);
        }
    }

    fn policies(&mut self, model: &mut Model, secrets: &Secrets) {
        for Doc { origin, name, obj } in std::mem::take(&mut self.policies) {
            let spec = obj.spec;
            let mut e = origin.sink(&mut self.errors);
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
                    e.err(
                        field,
                        format!("is not allowed when type is {:?}", spec.type_),
                    );
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
                    Some(aws) => policy::aws(&name, aws, &mut e, secrets),
                    None => {
                        e.err(
                            "spec.awsCredentials",
                            "is required when type is AWSCredentials",
                        );
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
                model
                    .policies
                    .insert(name.clone(), SecurityPolicy { name, kind });
            }
        }
    }

    fn backends(&mut self, model: &mut Model) {
        for Doc { origin, name, obj } in std::mem::take(&mut self.backends) {
            let spec = obj.spec;
            let mut e = origin.sink(&mut self.errors);
            let endpoint = parse_endpoint(&spec.endpoint);
            let endpoint = endpoint.map_err(|m| e.err("spec.endpoint", m)).ok();
            let security_policy = spec.security_policy;
            if let Some(policy) = &security_policy
                && !has(&self.declared, "BackendSecurityPolicy", policy)
            {
                let message = format!("BackendSecurityPolicy {policy:?} does not exist");
                e.err("spec.securityPolicy", message);
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
                    let ca_pem =
                        ca_file.map(|file| origin.resolve(&file).and_then(|p| read_ca(&p)));
                    let ca_pem = ca_pem.transpose().map_err(|m| e.err("spec.tls.caFile", m));
                    if sni.as_deref().is_some_and(|sni| !is_host_name(sni)) {
                        e.err("spec.tls.sni", "is not a valid host name");
                    }
                    let ca_pem = ca_pem.ok().flatten();
                    Some(UpstreamTls { ca_pem, sni })
                }
                _ => None,
            };
            let aws_policy = security_policy
                .as_ref()
                .and_then(|p| model.policies.get(p))
                .is_some_and(|p| matches!(p.kind, PolicyKind::Aws(_)));
            let azure_policy = security_policy
                .as_ref()
                .and_then(|p| model.policies.get(p))
                .is_some_and(|p| matches!(p.kind, PolicyKind::Azure(_)));
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
        for Doc { origin, name, obj } in std::mem::take(&mut self.routes) {
            let spec = obj.spec;
            let mut e = origin.sink(&mut self.errors);
            let gateway = spec.gateway;
            if !has(&self.declared, "Gateway", &gateway) {
                let message = format!("Gateway {gateway:?} does not exist");
                e.err("spec.gateway", message);
            }
            let mut rules = Vec::new();
            for (i, rule) in spec.rules.into_iter().enumerate() {
                let mut matches = Vec::new();
                for (j, m) in rule.matches.into_iter().flatten().enumerate() {
                    let at = format!("spec.rules[{i}].matches[{j}]");
                    let path_prefix = m.path_prefix;
                    if let Some(prefix) = path_prefix.as_deref().filter(|p| !p.starts_with('/')) {
                        let message = format!("{prefix:?} must start with /");
                        e.err(format!("{at}.pathPrefix"), message);
                    }
                    let mut headers = Vec::new();
                    for (k, api::HeaderMatchSpec { name, value }) in
                        m.headers.into_iter().flatten().enumerate()
                    {
                        if !is_header_name(&name) {
                            let message = format!("{name:?} is not a lowercase HTTP header name");
                            e.err(format!("{at}.headers[{k}].name"), message);
                        }
                        headers.push(HeaderMatch { name, value });
                    }
                    matches.push(Match {
                        path_prefix,
                        headers,
                    });
                }
                let at = format!("spec.rules[{i}].backends");
                let mut backends = Vec::new();
                for (b, api::BackendRef { name, weight }) in rule.backends.into_iter().enumerate() {
                    if !has(&self.declared, "Backend", &name) {
                        let message = format!("Backend {name:?} does not exist");
                        e.err(format!("{at}[{b}].name"), message);
                    }
                    let weight = weight.unwrap_or(1);
                    backends.push(WeightedBackend { name, weight });
                }
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
                let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
                if backends.is_empty() {
                    e.err(at, "a rule needs at least one backend");
                } else if total == 0 {
                    e.err(at, "every weight is 0; at least one must be positive");
                } else if total > u64::from(u32::MAX) {
                    e.err(at, format!("weights add up to more than {}", u32::MAX));
                }
                rules.push(Rule { matches, backends });
            }
            let route = Route {
                name: name.clone(),
                gateway,
                rules,
            };
            model.routes.insert(name, route);
        }
    }
}

fn has(declared: &Declared, kind: &'static str, name: &str) -> bool {
    declared.contains_key(&(kind, name.to_owned()))
}

/// Queues a document for validation, if it has a usable name and deserializes.
fn add<T: DeserializeOwned>(
    docs: &mut Vec<Doc<T>>,
    errors: &mut Vec<ConfigError>,
    origin: &Origin,
    name: Option<String>,
    value: Value,
) {
    let object = typed(errors, origin, value);
    docs.extend(name.zip(object).map(|(name, obj)| Doc {
        origin: origin.clone(),
        name,
        obj,
    }));
}

/// Deserializes through `serde_path_to_error` so that errors name the field.
fn typed<T: DeserializeOwned>(
    errors: &mut Vec<ConfigError>,
    origin: &Origin,
    value: Value,
) -> Option<T> {
    let error = match serde_path_to_error::deserialize(value) {
        Ok(typed) => return Some(typed),
        Err(error) => error,
    };
    let mut field = error.path().to_string();
    if field == "." {
        field.clear();
    }
    let mut message = error.inner().to_string();
    // serde blames the enclosing struct for a missing field; point at the field itself.
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some((missing, _)) = rest.split_once('`')
    {
        field = format!("{field}.{missing}")
            .trim_start_matches('.')
            .to_owned();
        message = "is required".to_owned();
    }
    // serde's type errors quote the offending value, which in a Secret is key material.
    let secret_field = field.starts_with("data") || field.starts_with("stringData");
    if secret_field && !message.starts_with("unknown field") {
        message = "must be a map from key names to string values".to_owned();
    }
    errors.push(origin.error(field, message));
    None
}

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

fn yaml_error(error: &serde_yaml::Error) -> String {
    match error.location() {
        // serde_yaml usually says where already; make sure the position is never lost.
        Some(at) if !error.to_string().contains(" at line ") => {
            let (line, column) = (at.line(), at.column());
            format!("invalid YAML: {error} at line {line} column {column}")
        }
        _ => format!("invalid YAML: {error}"),
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

/// Envoy matches and sets headers in lowercase, so uppercase names would never match.
fn is_header_name(name: &str) -> bool {
    !name.bytes().any(|b| b.is_ascii_uppercase()) && HeaderName::from_bytes(name.as_bytes()).is_ok()
}

/// A DNS name or dotted IPv4 address.
fn is_host_name(host: &str) -> bool {
    let labels = || host.split('.');
    if labels().all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit())) {
        return host.parse::<Ipv4Addr>().is_ok();
    }
    let label_char = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    host.len() <= 253
        && labels().all(|l| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(label_char)
        })
}

/// Parses `http(s)://host[:port]`; the error says what is wrong.
fn parse_endpoint(endpoint: &str) -> Result<Endpoint, String> {
    let bad = |why: &str| Err(format!("{endpoint:?} {why}"));
    let (tls, rest) = if let Some(rest) = endpoint.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = endpoint.strip_prefix("http://") {
        (false, rest)
    } else {
        return bad("must start with http:// or https://");
    };
    // A lone trailing slash is what people paste from provider docs; it is not a path.
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@']) {
        return bad("must be just scheme://host[:port], without path, query, fragment or user");
    }
    let (host, port) = match rest.strip_prefix('[').map(|r| r.split_once(']')) {
        Some(Some((host, port))) if host.parse::<Ipv6Addr>().is_ok() => (host, port),
        Some(_) => return bad("does not have a valid IPv6 address"),
        None => rest.split_at(rest.find(':').unwrap_or(rest.len())),
    };
    if !rest.starts_with('[') && !is_host_name(host) {
        return bad("does not have a valid host (IPv6 addresses go in brackets)");
    }
    let default = if tls { 443 } else { 80 };
    let port = match port.strip_prefix(':') {
        None if port.is_empty() => default,
        Some(digits) if digits.bytes().all(|b| b.is_ascii_digit()) => match digits.parse() {
            Ok(port) if port != 0 => port,
            _ => return bad("must have a port between 1 and 65535"),
        },
        _ => return bad("must have a port between 1 and 65535"),
    };
    let host = host.to_owned();
    Ok(Endpoint { host, port, tls })
}
