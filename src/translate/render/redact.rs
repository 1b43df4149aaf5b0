//! Structural redaction of rendered resources: the message descriptors, not string matching,
//! decide which JSON values are secret.

use super::RenderError;
use prost_reflect::{ExtensionDescriptor, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::Value;

/// What every secret string becomes.
pub const REDACTED: &str = "<redacted>";

/// The option Envoy's APIs mark secret fields with (and Envoy's own config dump redacts).
const SENSITIVE_OPTION: &str = "udpa.annotations.sensitive";

/// Fields redacted although their proto does not mark them sensitive: all of an AWS inline
/// credential goes, as the access key id names the IAM user.
const ALSO_SENSITIVE: &[&str] =
    &["envoy.extensions.common.aws.v3.InlineCredentialProvider.access_key_id"];

/// Redacts descriptor-driven secret fields of `json`, the proto3 JSON of a `message`.
pub struct Redactor {
    sensitive: ExtensionDescriptor,
}

impl Redactor {
    /// Needs the `sensitive` option in `message`'s pool: without it nothing would be redacted.
    pub fn new(message: &MessageDescriptor) -> Result<Self, RenderError> {
        let sensitive = message
            .parent_pool()
            .get_extension_by_name(SENSITIVE_OPTION)
            .ok_or(RenderError::MissingType(SENSITIVE_OPTION.to_owned()))?;
        Ok(Self { sensitive })
    }

    /// Walks `json` alongside `message`, masking every string under a sensitive field.
    pub fn redact(&self, json: &mut Value, message: &MessageDescriptor) -> Result<(), RenderError> {
        let Value::Object(object) = json else {
            return Ok(());
        };
        let message = if message.full_name() == "google.protobuf.Any" {
            let Some(Value::String(url)) = object.get("@type") else {
                return Ok(());
            };
            let name = url.rsplit('/').next().unwrap_or(url);
            message
                .parent_pool()
                .get_message_by_name(name)
                .ok_or_else(|| RenderError::MissingType(name.to_owned()))?
        } else {
            message.clone()
        };
        // Well-known types have their own JSON forms (durations, wrappers, structs) and no
        // secret fields.
        if message.package_name() == "google.protobuf" {
            return Ok(());
        }
        for (key, value) in object.iter_mut() {
            if key == "@type" {
                continue;
            }
            let field = message
                .get_field_by_json_name(key)
                .or_else(|| message.get_field_by_name(key))
                .ok_or_else(|| RenderError::UnexpectedField {
                    message: message.full_name().to_owned(),
                    field: key.clone(),
                })?;
            if self.is_sensitive(&field) {
                mask(value);
                continue;
            }
            let Kind::Message(inner) = field.kind() else {
                continue;
            };
            if field.is_map() {
                let Kind::Message(values) = inner.map_entry_value_field().kind() else {
                    continue;
                };
                if let Value::Object(map) = value {
                    for v in map.values_mut() {
                        self.redact(v, &values)?;
                    }
                }
            } else if let Value::Array(items) = value {
                for item in items {
                    self.redact(item, &inner)?;
                }
            } else {
                self.redact(value, &inner)?;
            }
        }
        Ok(())
    }

    fn is_sensitive(&self, field: &FieldDescriptor) -> bool {
        ALSO_SENSITIVE.contains(&field.full_name())
            || field
                .options()
                .get_extension(&self.sensitive)
                .as_bool()
                .unwrap_or(false)
    }
}

/// Replaces every non-empty string below `value` (bytes are base64 strings in JSON). Empty
/// strings stay: an empty secret is the fail-closed form, and showing it reveals nothing.
/// Type URLs and map keys stay so the reader sees what kind of secret it is.
fn mask(value: &mut Value) {
    match value {
        Value::String(s) if !s.is_empty() => *s = REDACTED.to_owned(),
        Value::Array(items) => items.iter_mut().for_each(mask),
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key != "@type" {
                    mask(v);
                }
            }
        }
        _ => {}
    }
}
