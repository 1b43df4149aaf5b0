//! One unreadable custom resource must not stall the watch of its kind: the API server's
//! schema can let through what Tessera's types refuse (an object stored under an older or
//! looser CRD, a value out of a Rust type's range). Reflectors hold [`Guarded`] objects, so a
//! list or watch event always decodes; an unreadable object keeps its metadata and status and
//! is reported (`Accepted=False`) instead of failing every list of its kind.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Deserializer, de::Error as _};
use serde_json::Value as Json;
use std::borrow::Cow;

/// An object as watched: typed, or unreadable with why.
#[derive(Debug, Clone)]
pub struct Guarded<K>(pub Result<K, Unreadable>);

/// What is kept of an object Tessera's types could not read.
#[derive(Debug, Clone)]
pub struct Unreadable {
    /// The first field that failed and why (`spec.listeners[0].port: invalid type: ...`).
    pub error: String,
    /// Its name, namespace and generation, which status needs.
    pub metadata: ObjectMeta,
    /// The status last written, so the writer patches only when it changes.
    pub status: Json,
}

impl<'de, K: serde::de::DeserializeOwned> Deserialize<'de> for Guarded<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Json::deserialize(deserializer)?;
        let error = match serde_path_to_error::deserialize::<_, K>(&value) {
            Ok(object) => return Ok(Guarded(Ok(object))),
            Err(e) => e.to_string(),
        };
        // Without readable metadata the object cannot even be named: that one fails as before.
        let metadata = ObjectMeta::deserialize(value.get("metadata").unwrap_or(&Json::Null))
            .map_err(D::Error::custom)?;
        let status = value.get("status").cloned().unwrap_or(Json::Null);
        Ok(Guarded(Err(Unreadable {
            error,
            metadata,
            status,
        })))
    }
}

impl<K: Resource> Resource for Guarded<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        match &self.0 {
            Ok(object) => object.meta(),
            Err(unreadable) => &unreadable.metadata,
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match &mut self.0 {
            Ok(object) => object.meta_mut(),
            Err(unreadable) => &mut unreadable.metadata,
        }
    }
}

impl<K: serde::Serialize> Guarded<K> {
    /// The object's current `status` (null when none was written).
    pub fn status(&self) -> Json {
        match &self.0 {
            Ok(object) => serde_json::to_value(object)
                .ok()
                .and_then(|v| v.get("status").cloned())
                .unwrap_or(Json::Null),
            Err(unreadable) => unreadable.status.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::GatewayResource;
    use serde_json::json;

    #[test]
    fn an_unreadable_object_keeps_its_name_status_and_reason() {
        let bad = json!({
            "apiVersion": "tessera.dev/v1alpha1", "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "a", "generation": 2},
            "spec": {"nodeCluster": "edge", "listeners": "oops"},
            "status": {"observedGeneration": 1},
        });
        let g: Guarded<GatewayResource> = serde_json::from_value(bad).unwrap();
        assert_eq!(g.meta().name.as_deref(), Some("gw"));
        assert_eq!(g.status(), json!({"observedGeneration": 1}));
        let Err(u) = &g.0 else { panic!("readable") };
        assert!(u.error.starts_with("spec.listeners"), "{}", u.error);
        // A list with one unreadable item still decodes, the others typed.
        let good = json!({
            "apiVersion": "tessera.dev/v1alpha1", "kind": "Gateway",
            "metadata": {"name": "ok", "namespace": "a"},
            "spec": {"nodeCluster": "edge", "listeners": []},
        });
        let list: Vec<Guarded<GatewayResource>> =
            serde_json::from_value(json!([good, {"metadata": {"name": "x"}, "spec": 1}])).unwrap();
        assert!(list[0].0.is_ok());
        assert!(list[1].0.is_err());
    }
}
