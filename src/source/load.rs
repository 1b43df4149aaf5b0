//! Turns configuration into a validated [`Model`], reporting every problem at once.
//!
//! Sources hand the loader typed [`Object`]s: files are parsed into them first (`yaml.rs`),
//! Kubernetes objects arrive typed. Validation (`validate.rs`, `policy.rs`) checks each object
//! against its schema's bounds and rules, then resolves references by name. Two ways to load:
//! [`load`] is all or nothing; [`load_partial`] leaves out invalid objects, and then whatever
//! depends on them, and returns the rest with a problem for each object left out.

use crate::model::{AllowedEndpoints, Model};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

mod client_auth;
mod error;
mod input;
mod policy;
mod schema;
mod sink;
mod syntax;
#[cfg(test)]
mod tests;
mod validate;
mod yaml;

pub use error::{ConfigError, ConfigErrors, ErrorClass, Kind, ObjectRef};
pub use input::{Object, Origin, SecretData, Spec};
pub use yaml::{MAX_FILE_BYTES, MAX_FLOW_DEPTH, MAX_VALUES, Parsed, read};

/// A configuration that passed validation, and the files it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub model: Model,
    /// The configuration files read, in processing order.
    pub files: Vec<PathBuf>,
}

/// Operator-imposed limits on what objects may point Tessera at (Kubernetes mode).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restrictions {
    /// When set, every file path must be absolute and lie under one of these directories.
    pub file_dirs: Option<Vec<PathBuf>>,
    /// When set, endpoint overrides (STS, OIDC issuer/token endpoint, Entra authority) and
    /// token endpoints found by OIDC discovery must be at one of these origins.
    pub endpoints: Option<AllowedEndpoints>,
    /// Whether a Gateway's `xdsClients` may name ServiceAccounts of other namespaces
    /// (`--allow-cross-namespace-xds-clients`); only objects with a namespace are checked.
    pub cross_namespace_xds_clients: bool,
}

/// Loads a configuration file, or every `*.yaml`/`*.yml` file directly inside a directory;
/// any error fails the whole configuration.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    let mut parsed = read(path);
    set_aside_client_key_files(&mut parsed);
    let Parsed {
        files,
        objects,
        mut errors,
    } = parsed;
    if files.is_empty() && errors.is_empty() {
        tracing::warn!(path = %path.display(), "no *.yaml or *.yml configuration files found");
    }
    let objects: Vec<&Object> = objects.iter().collect();
    let (model, invalid) = validate::validate(&objects, &BTreeSet::new(), &Restrictions::default());
    errors.extend(invalid);
    if errors.is_empty() {
        return Ok(Loaded { model, files });
    }
    // Validation runs in passes; regroup so each file's problems read top to bottom.
    errors.sort_by(|a, b| (&a.file, a.document).cmp(&(&b.file, b.document)));
    Err(ConfigErrors(errors))
}

/// A Gateway's client-key file may sit beside the configuration as `*.yaml` (a map client id
/// -> key): it is a credential, read by its own reader, never a configuration file.
fn set_aside_client_key_files(parsed: &mut Parsed) {
    let keys: BTreeSet<PathBuf> = parsed
        .objects
        .iter()
        .filter_map(|o| {
            let Some(Spec::Gateway(spec)) = o.spec() else {
                return None;
            };
            let file = spec
                .client_auth
                .as_ref()?
                .api_keys
                .as_ref()?
                .file
                .as_ref()?;
            Some(o.origin().file.parent()?.join(file))
        })
        .collect();
    if keys.is_empty() {
        return;
    }
    parsed.files.retain(|f| !keys.contains(f));
    parsed.objects.retain(|o| !keys.contains(&o.origin().file));
    parsed.errors.retain(|e| !keys.contains(&e.file));
}

/// What [`load_partial`] could use, and why the rest was left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Partial {
    /// Every object that validates once the invalid ones (and their dependants) are left out.
    pub model: Model,
    /// The problems of every object left out; each names its object.
    pub errors: Vec<ConfigError>,
}

/// Validates `objects` (all of one namespace: references resolve by name), leaving out each
/// invalid object, then whatever refers to what was left out, until the rest validates.
/// Unreadable objects (see [`read`]) are left out from the start.
pub fn load_partial(objects: &[Object], restrictions: &Restrictions) -> Partial {
    let mut at: BTreeMap<(&Path, usize), Vec<usize>> = BTreeMap::new();
    for (i, o) in objects.iter().enumerate() {
        let key = (o.origin().file.as_path(), o.origin().document);
        at.entry(key).or_default().push(i);
    }
    let mut left_out: BTreeSet<usize> = (0..objects.len())
        .filter(|&i| objects[i].spec().is_none())
        .collect();
    let mut errors: Vec<ConfigError> = Vec::new();
    // Every error names a kept object, so each pass leaves out at least one more: this ends.
    loop {
        let kept: Vec<&Object> = (0..objects.len())
            .filter(|i| !left_out.contains(i))
            .map(|i| &objects[i])
            .collect();
        let names = left_out
            .iter()
            .map(|&i| objects[i].reference())
            .map(|r| (r.kind, r.name.clone()))
            .collect();
        let (model, found) = validate::validate(&kept, &names, restrictions);
        if found.is_empty() {
            return Partial { model, errors };
        }
        // An object left out is not validated again, so its errors are never repeated.
        let mut progressed = false;
        for error in &found {
            let key = (error.file.as_path(), error.document);
            for &i in at.get(&key).into_iter().flatten() {
                progressed |= left_out.insert(i);
            }
        }
        errors.extend(found);
        if !progressed {
            // Only an error outside every object could get here; trust nothing then.
            return Partial {
                model: Model::default(),
                errors,
            };
        }
    }
}
