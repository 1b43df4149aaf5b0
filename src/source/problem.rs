//! Why an object a source read is left out of the model: the contract between the loader's
//! typed errors and what each source reports (Kubernetes status conditions, `/status`).

use super::load::{ConfigError, ErrorClass};

/// Why an object is left out; status turns each into a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The object breaks a rule.
    Invalid,
    /// The object asks for a file or endpoint the operator did not allow.
    NotAllowed,
    /// The object names one that does not exist or is itself left out.
    RefNotFound,
    /// An older Gateway serves the same `nodeCluster`.
    NodeClusterConflict,
    /// This Gateway serves its `nodeCluster`, which newer Gateways claim too (it stays in use).
    NodeClusterContested,
}

impl From<ErrorClass> for Reason {
    fn from(class: ErrorClass) -> Self {
        match class {
            ErrorClass::Invalid => Reason::Invalid,
            ErrorClass::NotAllowed => Reason::NotAllowed,
            ErrorClass::MissingReference => Reason::RefNotFound,
        }
    }
}

/// Why an object is not (fully) in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: Reason,
    /// `field: message`, for people.
    pub message: String,
}

impl From<&ConfigError> for Problem {
    fn from(error: &ConfigError) -> Self {
        let message = if error.field.is_empty() {
            error.message.clone()
        } else {
            format!("{}: {}", error.field, error.message)
        };
        let reason = error.class.into();
        Problem { reason, message }
    }
}
