//! What sources hand the loader: typed specs, each with where it came from. Files are parsed
//! into these (`yaml.rs`); Kubernetes objects arrive typed already.

use super::error::{Kind, ObjectRef};
use crate::api;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where a document came from; every error about it carries this.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    /// The file, or for API objects a label such as `namespace team-a`.
    pub file: PathBuf,
    /// 1-based position within the file; 0 for the file as a whole.
    pub document: usize,
}

impl Origin {
    /// Document `document` of `file`.
    pub fn new(file: impl AsRef<Path>, document: usize) -> Self {
        let file = file.as_ref().to_path_buf();
        Self { file, document }
    }
}

/// A Secret's values by key, already decoded; `Debug` shows the keys only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretData(pub BTreeMap<String, Vec<u8>>);

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// The spec of one object, in the schema users write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    Gateway(api::GatewaySpec),
    Backend(api::BackendSpec),
    /// Boxed: by far the largest spec.
    BackendSecurityPolicy(Box<api::BackendSecurityPolicySpec>),
    Route(api::RouteSpec),
    Secret(SecretData),
}

impl Spec {
    /// The kind of object this spec belongs to.
    pub fn kind(&self) -> Kind {
        match self {
            Spec::Gateway(_) => Kind::Gateway,
            Spec::Backend(_) => Kind::Backend,
            Spec::BackendSecurityPolicy(_) => Kind::BackendSecurityPolicy,
            Spec::Route(_) => Kind::Route,
            Spec::Secret(_) => Kind::Secret,
        }
    }
}

/// One object for the loader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    origin: Origin,
    reference: ObjectRef,
    /// `None` for a document that could not be read (its error is reported already).
    spec: Option<Spec>,
}

impl Object {
    /// An object named `name` (in `namespace`, for API objects) with `spec`.
    pub fn new(origin: Origin, namespace: Option<&str>, name: &str, spec: Spec) -> Self {
        let reference = ObjectRef::new(spec.kind(), namespace, name);
        let spec = Some(spec);
        Self {
            origin,
            reference,
            spec,
        }
    }

    /// A document whose spec could not be read: its name still exists, so all-or-nothing
    /// loading does not also blame everything that refers to it.
    pub(super) fn unreadable(origin: Origin, reference: ObjectRef) -> Self {
        Self {
            origin,
            reference,
            spec: None,
        }
    }

    /// Where the object came from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Kind, namespace and name.
    pub fn reference(&self) -> &ObjectRef {
        &self.reference
    }

    /// The spec, unless the document could not be read.
    pub fn spec(&self) -> Option<&Spec> {
        self.spec.as_ref()
    }
}
