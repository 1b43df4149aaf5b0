//! What the loader reports: one error per problem, naming the object it is about and the class
//! of problem, so that consumers (Kubernetes status) never read the message to decide anything.

use crate::api;
use std::fmt;
use std::path::PathBuf;

/// The kinds of object a configuration holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Gateway,
    Backend,
    BackendSecurityPolicy,
    Route,
    Secret,
}

impl Kind {
    /// Every kind, in the order the loader validates them.
    pub const ALL: [Kind; 5] = [
        Kind::Gateway,
        Kind::Backend,
        Kind::BackendSecurityPolicy,
        Kind::Route,
        Kind::Secret,
    ];

    /// The `kind` field of a document.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gateway => "Gateway",
            Kind::Backend => "Backend",
            Kind::BackendSecurityPolicy => "BackendSecurityPolicy",
            Kind::Route => "Route",
            Kind::Secret => "Secret",
        }
    }

    /// The `apiVersion` a document of this kind must carry.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Secret => api::SECRET_API_VERSION,
            _ => api::API_VERSION,
        }
    }

    /// The kind a document's `kind` field names, if Tessera knows it.
    pub fn parse(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == kind)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies an object: kind, namespace (Kubernetes only), name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub kind: Kind,
    pub namespace: Option<String>,
    /// Empty when the document has no usable name.
    pub name: String,
}

impl ObjectRef {
    /// An object of `kind` named `name` in `namespace`.
    pub fn new(kind: Kind, namespace: Option<&str>, name: impl Into<String>) -> Self {
        let namespace = namespace.map(str::to_owned);
        let name = name.into();
        Self {
            kind,
            namespace,
            name,
        }
    }
}

/// What is wrong, as far as a consumer needs to act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The object itself is malformed or breaks a rule.
    Invalid,
    /// The object names another one that does not exist (or is left out).
    MissingReference,
    /// The object asks for something the operator did not allow (a file outside
    /// `--allow-file-dir`, an endpoint not in `--allow-endpoint`).
    NotAllowed,
}

/// One problem, located down to the field where possible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file (or, for API objects, the source label) the document came from.
    pub file: PathBuf,
    /// 1-based index of the YAML document within the file; 0 when the whole file is at fault.
    pub document: usize,
    /// The object concerned; `None` when the document names no kind Tessera knows.
    pub object: Option<ObjectRef>,
    /// Path of the offending field, e.g. `spec.rules[0].backends[1].name`; empty if none.
    pub field: String,
    pub message: String,
    pub class: ErrorClass,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.document > 0 {
            write!(f, ": document {}", self.document)?;
        }
        match &self.object {
            Some(o) if o.name.is_empty() => write!(f, " ({})", o.kind)?,
            Some(o) => write!(f, " ({} {:?})", o.kind, o.name)?,
            None => {}
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
