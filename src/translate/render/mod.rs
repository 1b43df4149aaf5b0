//! Envoy resources as readable proto3 JSON, secret values redacted: what `tessera translate`
//! prints and what the golden tests compare.
//!
//! Resources are decoded with the committed descriptor set ([`descriptors`]), nested `Any`s
//! included, so a reader sees the real filter configs. A type missing from the set, or a field
//! the set does not know (a newer envoy-types), is an error naming it, never silently dropped.

pub mod descriptors;
mod redact;

pub use redact::REDACTED;

use crate::credentials::Material;
use crate::model::Model;
use crate::translate::credential::{self, CredentialForm};
use crate::translate::{names, translate};
use crate::xds::resource::type_url;
use crate::xds::{GatewayConfig, Resource};
use prost_reflect::{
    DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage, Value as Field,
};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Why a resource could not be rendered. Messages name types and resources, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("the embedded descriptor set is unreadable: {0}")]
    Descriptors(String),
    #[error(
        "type {0} is not in the descriptor set: add it to ROOTS in \
         src/translate/render/descriptors.rs and run \
         `TESSERA_UPDATE_DESCRIPTORS=1 cargo test --lib descriptor_set`"
    )]
    MissingType(String),
    #[error("{resource}: {type_name} does not decode: {reason}")]
    Decode {
        resource: String,
        type_name: String,
        reason: String,
    },
    #[error(
        "{resource}: {type_name} has field(s) {numbers:?} the descriptor set does not know; \
         regenerate it: `TESSERA_UPDATE_DESCRIPTORS=1 cargo test --lib descriptor_set`"
    )]
    UnknownFields {
        resource: String,
        type_name: String,
        numbers: Vec<u32>,
    },
    #[error("{message} has no field {field:?}")]
    UnexpectedField { message: String, field: String },
    #[error("{resource}: {reason}")]
    Json { resource: String, reason: String },
}

/// What `tessera translate` prints for every gateway, keyed by the node cluster it serves.
///
/// Credentials are what a node would receive just after `tessera serve` started: long-lived
/// ones with the material in `materials` (read from their files and Secrets, by credential
/// name), a revoked one (absent) in its fail-closed form; minted ones (AWS web identity,
/// Azure) as their fail-closed placeholder, because they exist only once a running Tessera has
/// minted them.
pub fn offline(
    model: &Model,
    materials: &BTreeMap<String, Material>,
) -> Result<BTreeMap<String, Value>, RenderError> {
    let forms: BTreeMap<String, CredentialForm> = credential::forms(model)
        .map(|(name, form)| (names::credential(&name), form))
        .collect();
    let mut out = BTreeMap::new();
    for (node_cluster, config) in translate(model) {
        let credentials: Vec<Arc<Resource>> = config
            .credentials
            .iter()
            .filter_map(|name| {
                let form = forms.get(name)?;
                Some(credential::resource(name, form, materials.get(name)))
            })
            .collect();
        out.insert(node_cluster, gateway(&config, &credentials)?);
    }
    Ok(out)
}

/// One gateway's resources by xDS type (`clusters`, `listeners`, `routes`, `secrets`,
/// `extensionConfigs`), each a list in name order.
pub fn gateway(
    config: &GatewayConfig,
    credentials: &[Arc<Resource>],
) -> Result<Value, RenderError> {
    let mut by_type: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let served = [
        ("clusters", &config.clusters),
        ("listeners", &config.listeners),
        ("routes", &config.routes),
    ];
    for (key, set) in served {
        let list = by_type.entry(key).or_default();
        for r in set.resources.values() {
            list.push(resource(r)?);
        }
    }
    let mut credentials: Vec<&Arc<Resource>> = credentials.iter().collect();
    credentials.sort_by(|a, b| a.name.cmp(&b.name));
    for r in credentials {
        let key = match r.any.type_url.as_str() {
            type_url::SECRET => "secrets",
            type_url::EXTENSION_CONFIG => "extensionConfigs",
            _ => "other",
        };
        by_type.entry(key).or_default().push(resource(r)?);
    }
    let object: Map<String, Value> = by_type
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::Array(v)))
        .collect();
    Ok(Value::Object(object))
}

/// One resource as proto3 JSON with `@type`, nested `Any`s decoded, secrets redacted.
pub fn resource(resource: &Resource) -> Result<Value, RenderError> {
    let pool = descriptors::pool().map_err(RenderError::Descriptors)?;
    let any = pool
        .get_message_by_name("google.protobuf.Any")
        .ok_or_else(|| RenderError::MissingType("google.protobuf.Any".to_owned()))?;
    let mut message = DynamicMessage::new(any.clone());
    message.set_field_by_name("type_url", Field::String(resource.any.type_url.clone()));
    let bytes = resource.any.value.clone().into();
    message.set_field_by_name("value", Field::Bytes(bytes));
    check(&message, pool, &resource.name)?;
    let mut json = serde_json::to_value(&message).map_err(|e| RenderError::Json {
        resource: resource.name.clone(),
        reason: e.to_string(),
    })?;
    let redactor = redact::Redactor::new(&any)?;
    redactor.redact(&mut json, &any)?;
    Ok(json)
}

/// Decodes every `Any` below `message` and refuses fields the descriptors do not know, so
/// nothing is silently left out of the JSON.
fn check(
    message: &DynamicMessage,
    pool: &DescriptorPool,
    resource: &str,
) -> Result<(), RenderError> {
    let descriptor = message.descriptor();
    let unknown: Vec<u32> = message.unknown_fields().map(|f| f.number()).collect();
    if !unknown.is_empty() {
        return Err(RenderError::UnknownFields {
            resource: resource.to_owned(),
            type_name: descriptor.full_name().to_owned(),
            numbers: unknown,
        });
    }
    if descriptor.full_name() == "google.protobuf.Any" {
        let url = message.get_field_by_name("type_url");
        let url = url.as_deref().and_then(Field::as_str).unwrap_or_default();
        let name = url.rsplit('/').next().unwrap_or(url);
        let inner = pool
            .get_message_by_name(name)
            .ok_or_else(|| RenderError::MissingType(name.to_owned()))?;
        let value = message.get_field_by_name("value");
        let bytes = value
            .as_deref()
            .and_then(Field::as_bytes)
            .cloned()
            .unwrap_or_default();
        let decoded = decode(inner, &bytes, resource)?;
        return check(&decoded, pool, resource);
    }
    for (_, value) in message.fields() {
        check_value(value, pool, resource)?;
    }
    Ok(())
}

fn check_value(value: &Field, pool: &DescriptorPool, resource: &str) -> Result<(), RenderError> {
    match value {
        Field::Message(m) => check(m, pool, resource),
        Field::List(items) => items
            .iter()
            .try_for_each(|v| check_value(v, pool, resource)),
        Field::Map(map) => map
            .values()
            .try_for_each(|v| check_value(v, pool, resource)),
        _ => Ok(()),
    }
}

fn decode(
    descriptor: MessageDescriptor,
    bytes: &[u8],
    resource: &str,
) -> Result<DynamicMessage, RenderError> {
    let type_name = descriptor.full_name().to_owned();
    DynamicMessage::decode(descriptor, bytes).map_err(|e| RenderError::Decode {
        resource: resource.to_owned(),
        type_name,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
