//! The bounds the CRD schemas declare (`maxLength`, `minLength`, `maxItems`, `minimum`,
//! `maximum`), checked on every spec. The API server applies them to custom resources; this
//! applies the very same schema to files, and to objects created before a CRD gained a bound.
//! Patterns and CEL rules are not evaluated here: the loader checks those rules itself.

use super::error::Kind;
use crate::api::{BackendResource, BackendSecurityPolicyResource, GatewayResource, RouteResource};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray,
};
use kube::CustomResourceExt;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// The `spec` schema of each custom resource kind, generated once.
static SPECS: LazyLock<BTreeMap<Kind, JSONSchemaProps>> = LazyLock::new(|| {
    let spec = |crd: CustomResourceDefinition| {
        let version = crd.spec.versions.into_iter().next()?;
        let root = version.schema?.open_api_v3_schema?;
        root.properties?.remove("spec")
    };
    [
        (Kind::Gateway, spec(GatewayResource::crd())),
        (Kind::Backend, spec(BackendResource::crd())),
        (
            Kind::BackendSecurityPolicy,
            spec(BackendSecurityPolicyResource::crd()),
        ),
        (Kind::Route, spec(RouteResource::crd())),
    ]
    .into_iter()
    .filter_map(|(kind, schema)| Some((kind, schema?)))
    .collect()
});

/// Every bound `spec` (of a `kind`) breaks, as (field path, message).
pub(super) fn violations(kind: Kind, spec: &Json) -> Vec<(String, String)> {
    let mut found = Vec::new();
    if let Some(schema) = SPECS.get(&kind) {
        walk(schema, spec, "spec".to_owned(), &mut found);
    }
    found
}

fn walk(schema: &JSONSchemaProps, value: &Json, at: String, found: &mut Vec<(String, String)>) {
    match value {
        Json::String(s) => {
            // Kubernetes counts characters, not bytes.
            let len = s.chars().count() as i64;
            if let Some(max) = schema.max_length.filter(|max| len > *max) {
                found.push((at, format!("must be at most {max} characters")));
            } else if let Some(min) = schema.min_length.filter(|min| len < *min) {
                let message = match min {
                    1 => "must not be empty".to_owned(),
                    _ => format!("must be at least {min} characters"),
                };
                found.push((at, message));
            }
        }
        Json::Number(n) => {
            let n = n.as_f64().unwrap_or(f64::NAN);
            let (min, max) = (schema.minimum, schema.maximum);
            let below = min.is_some_and(|m| n < m);
            let above = max.is_some_and(|m| n > m);
            if below || above {
                let message = match (min, max) {
                    (Some(min), Some(max)) => format!("must be between {min} and {max}"),
                    (Some(min), None) => format!("must be at least {min}"),
                    (None, max) => format!("must be at most {}", max.unwrap_or_default()),
                };
                found.push((at, message));
            }
        }
        Json::Array(items) => {
            if let Some(max) = schema.max_items.filter(|max| items.len() as i64 > *max) {
                found.push((at, format!("must have at most {max} items")));
                // Checking a million items one by one would only repeat the point.
                return;
            }
            if let Some(JSONSchemaPropsOrArray::Schema(item)) = &schema.items {
                for (i, v) in items.iter().enumerate() {
                    walk(item, v, format!("{at}[{i}]"), found);
                }
            }
        }
        Json::Object(fields) => {
            let Some(properties) = &schema.properties else {
                return;
            };
            for (name, v) in fields {
                if let Some(property) = properties.get(name) {
                    walk(property, v, format!("{at}.{name}"), found);
                }
            }
        }
        Json::Null | Json::Bool(_) => {}
    }
}
