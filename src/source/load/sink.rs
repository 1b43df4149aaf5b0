//! Where validation reports: a [`Sink`] for one object, which knows where the object came
//! from and what the operator allows, and files each problem with its class.

use super::Restrictions;
use super::error::{ConfigError, ErrorClass, ObjectRef};
use super::input::Origin;
use std::path::{Component, Path, PathBuf};

/// A problem with a field, before it is tied to an object: its class and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fault {
    class: ErrorClass,
    message: String,
}

impl Fault {
    pub(super) fn not_allowed(message: String) -> Self {
        let class = ErrorClass::NotAllowed;
        Self { class, message }
    }
}

impl From<String> for Fault {
    fn from(message: String) -> Self {
        let class = ErrorClass::Invalid;
        Self { class, message }
    }
}

impl From<&str> for Fault {
    fn from(message: &str) -> Self {
        message.to_owned().into()
    }
}

/// Reports errors about one object.
pub(super) struct Sink<'a> {
    pub(super) origin: &'a Origin,
    pub(super) object: &'a ObjectRef,
    pub(super) restrictions: &'a Restrictions,
    pub(super) errors: &'a mut Vec<ConfigError>,
}

impl Sink<'_> {
    /// Reports a problem with `field` (`Invalid` unless the fault says otherwise).
    pub(super) fn err(&mut self, field: impl Into<String>, fault: impl Into<Fault>) {
        let Fault { class, message } = fault.into();
        self.errors.push(ConfigError {
            file: self.origin.file.clone(),
            document: self.origin.document,
            object: Some(self.object.clone()),
            field: field.into(),
            message,
            class,
        });
    }

    pub(super) fn missing(&mut self, field: impl Into<String>, message: String) {
        let class = ErrorClass::MissingReference;
        self.err(field, Fault { class, message });
    }

    /// The object's own name.
    pub(super) fn name(&self) -> &str {
        &self.object.name
    }

    /// Relative paths inside a document are relative to its file, not the working directory.
    /// Under restrictions (Kubernetes mode) a path must be absolute, without `..`, and inside
    /// an allowed directory: a tenant must not make Tessera read its own secrets.
    pub(super) fn resolve(&self, path: &str) -> Result<PathBuf, Fault> {
        let Some(dirs) = &self.restrictions.file_dirs else {
            return Ok(self
                .origin
                .file
                .parent()
                .unwrap_or(Path::new(""))
                .join(path));
        };
        let p = Path::new(path);
        let escapes = p.components().any(|c| matches!(c, Component::ParentDir));
        if !p.is_absolute() || escapes {
            let message = format!("{path:?} must be an absolute path without \"..\"");
            return Err(Fault::not_allowed(message));
        }
        if dirs.iter().any(|d| p.starts_with(d)) {
            Ok(p.to_path_buf())
        } else {
            Err(Fault::not_allowed(format!(
                "{path:?} is outside the directories the operator allowed (--allow-file-dir)"
            )))
        }
    }

    /// Under restrictions, an endpoint override must be at an allowed origin.
    pub(super) fn allow_endpoint(&self, url: &str) -> Result<(), Fault> {
        match &self.restrictions.endpoints {
            Some(allowed) if !allowed.allows(url) => Err(Fault::not_allowed(format!(
                "{url:?} is not an endpoint the operator allowed (--allow-endpoint)"
            ))),
            _ => Ok(()),
        }
    }
}
