//! Where definitions come from: a directory of YAML files (`file`) or the Kubernetes API
//! (`kubernetes`). Both publish [`Update`]s batched by the one policy in `debounce`; key
//! files are watched for both by `key_files`.

pub mod debounce;
pub mod file;
pub mod key_files;
pub mod kubernetes;
pub mod last_good;
pub mod load;
#[cfg(test)]
mod loader_fuzz;
mod problem;
pub mod watch;

pub use load::{ConfigError, ConfigErrors, Loaded, Restrictions, load, load_partial};
pub use problem::{Problem, Reason};

use crate::model::Model;
use load::ObjectRef;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// A configuration a source can serve: the model, what is wrong with which object, and
/// where it came from.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Snapshot {
    pub model: Model,
    /// Objects left out of the model (or only partly usable), and why.
    pub problems: BTreeMap<ObjectRef, Vec<Problem>>,
    pub info: SourceInfo,
}

/// Where a snapshot came from, as `/status` shows it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    /// The configuration files read, in processing order (file mode).
    pub files: Vec<PathBuf>,
    /// Every problem of the input (file mode), also those that name no object.
    pub errors: Vec<ConfigError>,
    /// Objects served in their last good version because their input is invalid now.
    pub last_good: Vec<ObjectRef>,
    /// When those versions were persisted, if they were read from the state directory.
    pub restored_at: Option<std::time::SystemTime>,
}

/// What a source publishes each time its input settles.
#[derive(Debug, Clone)]
pub enum Update {
    /// A configuration to serve.
    Snapshot(Arc<Snapshot>),
    /// The input as a whole is invalid; the last good configuration keeps serving.
    Rejected(Arc<ConfigErrors>),
}
