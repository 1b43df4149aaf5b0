//! Configuration files → typed [`Object`]s. Every document is checked for `apiVersion`, `kind`
//! and `metadata.name`, then deserialized into the schema type of its kind with the failing
//! field named. Input is bounded before it can cost much: a size cap per file, a cap on flow
//! nesting (libyaml takes seconds on a megabyte of `[`), and a cap on the values a file may
//! expand to, which is what stops alias bombs.

use super::error::{ConfigError, ErrorClass, Kind, ObjectRef};
use super::input::{Object, Origin, SecretData, Spec};
use crate::api;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::de::{DeserializeOwned, DeserializeSeed};
use serde_yaml::Value;
use std::cell::Cell;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

mod caps;
#[cfg(test)]
mod tests;

use caps::{Budgeted, flow_depth_exceeds};

/// Largest configuration file read: 1 MiB, the size of a ConfigMap. Parsing costs at most about
/// 170 bytes of memory per byte of YAML (measured on 1 MiB of `- - - …`), so one file stays
/// under about 180 MB whatever it holds.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Most values (scalars, sequences, mappings) one file may expand to. A 1 MiB file holds at
/// most about half a million without aliases; anything beyond is alias expansion.
pub const MAX_VALUES: usize = 1 << 20;
/// Deepest nesting of flow collections (`[`, `{`). The YAML parser rejects more than 128
/// levels of any nesting anyway, but only after it has read the whole document.
pub const MAX_FLOW_DEPTH: usize = 100;

/// What reading configuration files produced.
#[derive(Debug, Default)]
pub struct Parsed {
    /// The configuration files read, in processing order.
    pub files: Vec<PathBuf>,
    /// Every document that names a known kind, including unreadable ones.
    pub objects: Vec<Object>,
    /// Problems found while reading (syntax, schema, unknown kinds, unreadable files).
    pub errors: Vec<ConfigError>,
}

/// Reads a configuration file, or every `*.yaml`/`*.yml` file directly inside a directory.
pub fn read(path: &Path) -> Parsed {
    let mut parsed = Parsed::default();
    match config_files(path) {
        Ok(files) => parsed.files = files,
        Err(e) => parsed
            .errors
            .push(file_error(path, format!("cannot read: {e}"))),
    }
    for file in parsed.files.clone() {
        tracing::debug!(file = %file.display(), "reading configuration");
        read_file(&file, &mut parsed);
    }
    parsed
}

fn config_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !fs::metadata(path)?.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(path)? {
        let entry = entry?;
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

/// An error about a whole file.
fn file_error(file: &Path, message: impl Into<String>) -> ConfigError {
    error(&Origin::new(file, 0), None, "", message)
}

fn error(
    origin: &Origin,
    object: Option<&ObjectRef>,
    field: impl Into<String>,
    message: impl Into<String>,
) -> ConfigError {
    ConfigError {
        file: origin.file.clone(),
        document: origin.document,
        object: object.cloned(),
        field: field.into(),
        message: message.into(),
        class: ErrorClass::Invalid,
    }
}

/// Reads at most [`MAX_FILE_BYTES`], so a huge file (or a device) costs nothing.
fn read_text(file: &Path) -> Result<String, String> {
    let cannot = |e: std::io::Error| format!("cannot read: {e}");
    let mut text = String::new();
    fs::File::open(file)
        .map_err(cannot)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(cannot)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        let mib = MAX_FILE_BYTES >> 20;
        return Err(format!(
            "is larger than {mib} MiB, the limit per configuration file; split it into several files"
        ));
    }
    Ok(text)
}

fn read_file(file: &Path, out: &mut Parsed) {
    let text = match read_text(file) {
        Ok(text) => text,
        Err(message) => return out.errors.push(file_error(file, message)),
    };
    if flow_depth_exceeds(&text, MAX_FLOW_DEPTH) {
        let message = format!("invalid YAML: [ and {{ nest more than {MAX_FLOW_DEPTH} deep");
        return out.errors.push(file_error(file, message));
    }
    let budget = Cell::new(MAX_VALUES);
    for (i, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let origin = Origin::new(file, i + 1);
        match Budgeted(&budget).deserialize(document) {
            Ok(Value::Null) => {}
            Ok(value) => read_document(origin, value, out),
            Err(e) => {
                // Nothing after a YAML error is trustworthy: libyaml repeats a syntax error
                // forever, and after an unknown alias serde_yaml hands out the rest of the
                // broken document as a new one, which panics when read.
                return out.errors.push(error(&origin, None, "", yaml_error(&e)));
            }
        }
    }
}

fn read_document(origin: Origin, value: Value, out: &mut Parsed) {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_owned();
    let kind_text = text(value.get("kind"));
    let name = value.get("metadata").and_then(|m| m.get("name"));
    let name_text = text(name);
    let kind = Kind::parse(&kind_text);
    let object = kind.map(|k| ObjectRef::new(k, None, name_text.as_str()));
    let errors_before = out.errors.len();
    let mut err = |field: &str, message: String| {
        out.errors
            .push(error(&origin, object.as_ref(), field, message));
    };
    if !value.is_mapping() {
        return err(
            "",
            "must be a mapping with apiVersion, kind, metadata".into(),
        );
    }
    let Some(kind) = kind else {
        if kind_text.is_empty() {
            return err("kind", "is required".into());
        }
        let known = Kind::ALL.map(Kind::as_str).join(", ");
        let shown = name_shown(&name_text);
        return err(
            "kind",
            format!("unknown kind {kind_text:?} in {shown}; expected {known}"),
        );
    };
    let version = kind.api_version();
    let found = value.get("apiVersion").and_then(Value::as_str);
    if found != Some(version) {
        let found = found.map_or(String::new(), |v| format!(", not {v:?}"));
        err(
            "apiVersion",
            format!("must be {version:?} for {kind}{found}"),
        );
    }
    match name {
        Some(Value::String(name)) if !name.is_empty() => {}
        // A name of the wrong type is left to the typed pass, which reports the type.
        Some(name) if !name.is_null() && !name.is_string() => {}
        _ => err("metadata.name", "is required".into()),
    }
    let object = ObjectRef::new(kind, None, name_text.as_str());
    let spec = spec(kind, &origin, &object, value, out);
    if name_text.is_empty() {
        return;
    }
    let clean = out.errors.len() == errors_before;
    out.objects.push(match spec {
        Some(spec) if clean => Object::new(origin, None, &name_text, spec),
        _ => Object::unreadable(origin, object),
    });
}

/// The typed spec of a document of `kind`.
fn spec(
    kind: Kind,
    origin: &Origin,
    object: &ObjectRef,
    value: Value,
    out: &mut Parsed,
) -> Option<Spec> {
    Some(match kind {
        Kind::Gateway => Spec::Gateway(typed::<api::Gateway>(origin, object, value, out)?.spec),
        Kind::Backend => Spec::Backend(typed::<api::Backend>(origin, object, value, out)?.spec),
        Kind::BackendSecurityPolicy => {
            let policy = typed::<api::BackendSecurityPolicy>(origin, object, value, out)?;
            Spec::BackendSecurityPolicy(Box::new(policy.spec))
        }
        Kind::Route => Spec::Route(typed::<api::Route>(origin, object, value, out)?.spec),
        Kind::Secret => {
            let secret = typed::<api::Secret>(origin, object, value, out)?;
            return self::secret(origin, object, secret, out);
        }
    })
}

/// How an unknown-kind document is named in its error.
fn name_shown(name: &str) -> String {
    if name.is_empty() {
        "this document".into()
    } else {
        format!("{name:?}")
    }
}

/// Deserializes through `serde_path_to_error` so that errors name the field.
fn typed<T: DeserializeOwned>(
    origin: &Origin,
    object: &ObjectRef,
    value: Value,
    out: &mut Parsed,
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
    out.errors.push(error_at(origin, object, field, message));
    None
}

fn error_at(origin: &Origin, object: &ObjectRef, field: String, message: String) -> ConfigError {
    error(origin, Some(object), field, message)
}

/// Decodes `data` (base64) and merges `stringData` over it, as Kubernetes does.
fn secret(origin: &Origin, object: &ObjectRef, s: api::Secret, out: &mut Parsed) -> Option<Spec> {
    let mut values = std::collections::BTreeMap::new();
    for (key, encoded) in s.data.iter().flat_map(|d| &d.0) {
        // Like Kubernetes, tolerate line breaks inside long base64 values.
        let encoded: String = encoded.split_ascii_whitespace().collect();
        // The decoder's error is not passed on: it quotes the offending bytes.
        match STANDARD.decode(encoded) {
            Ok(bytes) => drop(values.insert(key.clone(), bytes)),
            Err(_) => {
                let message = "is not valid base64".to_owned();
                out.errors
                    .push(error_at(origin, object, format!("data.{key}"), message));
            }
        }
    }
    for (key, value) in s.string_data.iter().flat_map(|d| &d.0) {
        values.insert(key.clone(), value.clone().into_bytes());
    }
    Some(Spec::Secret(SecretData(values)))
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
