//! Server-side apply of children, without writes at steady state.
//!
//! Before applying, the operator looks the child up in its cache and compares: when every
//! field it wants is already there with the wanted value, it writes nothing (and sends no
//! request at all). A hash of the wanted object, kept
//! in an annotation, makes a field the spec no longer sets count as a difference too (a
//! containment check alone cannot see a removal). Someone else's edit of an operator-owned
//! field is drift: the comparison fails and the apply (with `force`) puts it back.

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::children::meta::MANAGER;
use crate::controller::cache::{ChildCache, Lookup};
use crate::error::{Error, Result};

/// Annotation holding the hash of the object the operator last wanted.
pub const DESIRED_HASH_ANNOTATION: &str = "kea.dev/desired-hash";

/// Adds the [`DESIRED_HASH_ANNOTATION`] to `object`, computed over the object without it.
pub fn with_desired_hash<K: Resource + Serialize>(mut object: K) -> Result<K> {
    object
        .meta_mut()
        .annotations
        .get_or_insert_default()
        .remove(DESIRED_HASH_ANNOTATION);
    let hash = fnv1a64(serde_json::to_string(&object)?.as_bytes());
    object
        .meta_mut()
        .annotations
        .get_or_insert_default()
        .insert(DESIRED_HASH_ANNOTATION.to_owned(), format!("{hash:016x}"));
    Ok(object)
}

/// FNV-1a, 64 bits: tiny, and stable across Rust releases (unlike `DefaultHasher`), so the
/// annotation does not change when the operator is rebuilt.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Whether `actual` holds everything in `wanted`: every field of a wanted object is in the
/// actual one with a contained value, and every element of a wanted list is contained in some
/// element of the actual list. Empty wanted lists, maps and nulls count as absent, because the
/// API server drops them.
pub fn json_contains(actual: &Value, wanted: &Value) -> bool {
    match (actual, wanted) {
        (_, Value::Null) => true,
        (Value::Object(actual), Value::Object(wanted)) => {
            wanted.iter().all(|(key, value)| match actual.get(key) {
                Some(actual_value) => json_contains(actual_value, value),
                None => is_empty(value),
            })
        }
        (Value::Array(actual), Value::Array(wanted)) => wanted.iter().all(|value| {
            actual
                .iter()
                .any(|candidate| json_contains(candidate, value))
        }),
        (Value::Null, wanted) => is_empty(wanted),
        (actual, wanted) => actual == wanted,
    }
}

/// Whether a wanted value may be missing from the stored object: the API server drops
/// Go zero values of `omitempty` fields (`initialDelaySeconds: 0`, `""`, `false`), so their
/// absence is no difference, and treating it as one would re-apply on every reconcile.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.is_empty(),
        Value::Number(number) => number.as_f64() == Some(0.0),
        Value::String(text) => text.is_empty(),
        Value::Bool(flag) => !flag,
    }
}

/// Whether `object` names the owner with `owner_uid` as its controller.
pub fn is_controlled_by<K: Resource>(object: &K, owner_uid: &str) -> bool {
    object
        .owner_references()
        .iter()
        .any(|r| controls(r, owner_uid))
}

fn controls(reference: &OwnerReference, owner_uid: &str) -> bool {
    reference.controller == Some(true) && reference.uid == owner_uid
}

/// What a reconcile wrote, by kind and name: the objects it applied (because they changed)
/// and those it deleted, for its log lines, its write count and its `Applied` and `Deleted`
/// events.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The objects applied because they differed from what was wanted.
    pub applied: Vec<String>,
    /// The objects deleted because they are no longer wanted.
    pub deleted: Vec<String>,
}

impl Changes {
    /// Adds what `other` wrote.
    pub fn extend(&mut self, other: Changes) {
        self.applied.extend(other.applied);
        self.deleted.extend(other.deleted);
    }

    /// How many writes that was.
    pub fn writes(&self) -> usize {
        self.applied.len() + self.deleted.len()
    }
}

/// What [`apply_child`] did.
#[derive(Debug)]
pub struct Applied<K> {
    /// The child as it is now in the API server.
    pub object: K,
    /// Whether a write was needed.
    pub changed: bool,
}

/// Makes the child `wanted` exist as wanted; writes only when the current object differs.
/// Refuses to take over an object of the same name that another owner controls.
///
/// The current object comes from `cache`: a name that is free there is created with one
/// request, and a name that another owner's object holds is refused without one. Only an
/// object of someone else's that names this owner as its controller, or a cache not filled
/// yet, is read from the API server.
pub async fn apply_child<K>(
    api: &Api<K>,
    cache: &ChildCache<K>,
    wanted: K,
    owner_uid: &str,
) -> Result<Applied<K>>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    let wanted = with_desired_hash(wanted)?;
    let name = wanted.name_any();
    let taken = || {
        Error::Conflict(format!(
            "{} {name} exists and is not controlled by this Microservice: delete or rename it",
            K::kind(&())
        ))
    };
    let lookup = match wanted.namespace() {
        Some(namespace) => cache.lookup(&namespace, &name),
        None => Lookup::Unknown,
    };
    let current = match lookup {
        Lookup::Ours(cached) => Some(K::clone(&cached)),
        Lookup::Free => None,
        Lookup::Other(owners) if !owners.iter().any(|r| controls(r, owner_uid)) => {
            return Err(taken());
        }
        Lookup::Other(_) | Lookup::Unknown => api.get_opt(&name).await?,
    };
    if let Some(current) = current {
        if !is_controlled_by(&current, owner_uid) {
            return Err(taken());
        }
        if json_contains(
            &serde_json::to_value(&current)?,
            &serde_json::to_value(&wanted)?,
        ) {
            return Ok(Applied {
                object: current,
                changed: false,
            });
        }
    }
    let object = api
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&wanted),
        )
        .await?;
    Ok(Applied {
        object,
        changed: true,
    })
}

/// Deletes the child `name` in `namespace` if the cache holds it and this owner controls it.
/// Returns whether it deleted something.
pub async fn delete_child<K>(
    api: &Api<K>,
    cache: &ChildCache<K>,
    namespace: &str,
    name: &str,
    owner_uid: &str,
) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    match cache.get(namespace, name) {
        Some(current) if is_controlled_by(current.as_ref(), owner_uid) => {
            match api.delete(name, &DeleteParams::background()).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.is_not_found() => Ok(false),
                Err(err) => Err(err.into()),
            }
        }
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    #[test]
    fn containment_ignores_server_added_fields() {
        let actual = json!({"a": 1, "b": {"c": [ {"x": 1, "y": 2}, {"x": 3} ]}, "extra": true});
        assert!(json_contains(
            &actual,
            &json!({"b": {"c": [{"x": 3}, {"x": 1}]}})
        ));
        assert!(json_contains(
            &actual,
            &json!({"a": 1, "gone": [], "none": null})
        ));
        assert!(!json_contains(&actual, &json!({"a": 2})));
        assert!(!json_contains(&actual, &json!({"b": {"c": [{"x": 4}]}})));
        assert!(!json_contains(&actual, &json!({"missing": "x"})));
    }

    #[test]
    fn zero_values_the_server_omits_are_no_difference() {
        // The stored probe lacks `initialDelaySeconds: 0`, as the API server stores it.
        let stored = json!({"probe": {"periodSeconds": 5}});
        assert!(json_contains(
            &stored,
            &json!({"probe": {"periodSeconds": 5, "initialDelaySeconds": 0, "host": "", "x": false}})
        ));
        assert!(!json_contains(
            &stored,
            &json!({"probe": {"initialDelaySeconds": 3}})
        ));
        assert!(!json_contains(&stored, &json!({"probe": {"x": true}})));
    }

    #[test]
    fn desired_hash_is_stable_and_follows_content() {
        let mut object = ConfigMap::default();
        object.metadata.name = Some("a".into());
        let first = with_desired_hash(object.clone()).expect("hash");
        let again = with_desired_hash(first.clone()).expect("hash");
        assert_eq!(first, again, "hashing ignores the previous hash");
        object.data = Some([("k".to_owned(), "v".to_owned())].into());
        let changed = with_desired_hash(object).expect("hash");
        let hash = |o: &ConfigMap| o.annotations().get(DESIRED_HASH_ANNOTATION).cloned();
        assert_ne!(hash(&first), hash(&changed));
        // Published FNV-1a test vectors: the hash must not depend on the Rust release.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
