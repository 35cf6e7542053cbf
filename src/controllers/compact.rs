//! The controllers' own objects as their caches keep them: the metadata kube-runtime reads,
//! a small decoded summary that scans of the whole cache read, and the rest of the object
//! (spec and status) as one JSON string, decoded again once per reconcile.
//!
//! A kube-runtime store keeps each object as its type: a `GebetaAccessToken` is a 936-byte
//! struct before any of its strings (a `GebetaServiceAccount` 848), and every field of its spec
//! and status is an allocation of its own. At 10,000 token and account pairs the two stores
//! were the largest holder of the operator's heap (3.2 KiB a pair, measured with heaptrack at
//! 1,000). Kept compact, an object is its metadata, its summary and one string.

use std::{borrow::Cow, fmt::Debug};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Deserializer, Serialize, de::DeserializeOwned};

/// A kind whose cache keeps its objects compact.
pub trait Compactable:
    Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static
{
    /// What scans of the whole cache read (e.g. whether the object is Ready), kept decoded.
    type Summary: Clone + Debug + PartialEq + Send + Sync + 'static;

    fn summarize(&self) -> Self::Summary;
}

/// An object of kind `K` as a controller's cache keeps it.
#[derive(Clone, Debug)]
pub struct Compact<K: Compactable> {
    meta: ObjectMeta,
    summary: K::Summary,
    /// The object without its metadata, as JSON written from a `K`, less the envelope every
    /// object of the kind starts with (see [`envelope`]), when it starts so.
    rest: Box<str>,
}

/// How every object of kind `K` without metadata starts as JSON: its API version, kind and
/// empty metadata (~75 bytes an object, kept once rather than in each).
fn envelope<K: Compactable>() -> String {
    format!(
        r#"{{"apiVersion":"{}","kind":"{}","metadata":{{}}"#,
        K::api_version(&()),
        K::kind(&())
    )
}

impl<K: Compactable> Compact<K> {
    pub fn new(mut obj: K) -> Self {
        let summary = obj.summarize();
        let meta = std::mem::take(obj.meta_mut());
        // Serializing a typed object to a string does not fail: every map key is a string.
        let json = serde_json::to_string(&obj).expect("a typed object serializes to JSON");
        // What follows the envelope starts with `,` or `}`, never `{` as a whole object does.
        let rest = match json.strip_prefix(&envelope::<K>()) {
            Some(tail) => tail.into(),
            None => json.into_boxed_str(),
        };
        Compact {
            meta,
            summary,
            rest,
        }
    }

    /// The object as the API server sent it (less what the cache trimmed from its metadata).
    pub fn expand(&self) -> K {
        // `rest` was written from a `K` by `new`, and the types read back what they write
        // (`compact_objects_read_back_as_they_were`).
        let json = match self.rest.starts_with('{') {
            true => Cow::Borrowed(&*self.rest),
            false => Cow::Owned(envelope::<K>() + &self.rest),
        };
        let mut obj: K =
            serde_json::from_str(&json).expect("a compact object reads back as its kind");
        *obj.meta_mut() = self.meta.clone();
        obj
    }

    pub fn summary(&self) -> &K::Summary {
        &self.summary
    }
}

impl<K: Compactable> From<K> for Compact<K> {
    fn from(obj: K) -> Self {
        Compact::new(obj)
    }
}

impl<'de, K: Compactable> Deserialize<'de> for Compact<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        K::deserialize(deserializer).map(Compact::new)
    }
}

impl<K: Compactable> Resource for Compact<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{GebetaAccessToken, GebetaServiceAccount};

    fn metadata() -> serde_json::Value {
        serde_json::json!({
            "name": "a", "namespace": "team", "uid": "u-1", "resourceVersion": "7",
            "generation": 3, "finalizers": ["gebeta.app/upstream-account"],
            "annotations": {"gebeta.app/refresh": "1"},
            "creationTimestamp": "2026-12-01T10:00:00Z"
        })
    }

    /// An object with `fields` (spec, status) and [`metadata`]; its kind is the type it is read
    /// as, which writes `apiVersion` and `kind` back.
    fn object(mut fields: serde_json::Value) -> serde_json::Value {
        fields["metadata"] = metadata();
        fields
    }

    fn condition() -> serde_json::Value {
        serde_json::json!({
            "type": "Ready", "status": "True", "reason": "TokenRefreshed",
            "message": "refreshed", "lastTransitionTime": "2026-12-01T10:00:00Z",
            "observedGeneration": 3
        })
    }

    fn round_trip<K: Compactable>(json: serde_json::Value) -> Compact<K> {
        let obj: K = serde_json::from_value(json).expect("a valid object");
        let compact: Compact<K> =
            serde_json::from_value(serde_json::to_value(&obj).unwrap()).expect("reads as its kind");
        let json = |k: &K| serde_json::to_value(k).unwrap();
        assert_eq!(json(&compact.expand()), json(&obj));
        assert_eq!(compact.meta(), obj.meta());
        assert!(
            compact.rest.starts_with(",\"spec\""),
            "kept without the envelope: {}",
            compact.rest
        );
        compact
    }

    #[test]
    fn compact_objects_read_back_as_they_were() {
        let token = round_trip::<GebetaAccessToken>(object(serde_json::json!({
            "spec": {
                "clientToken": {"serviceAccountRef": {"name": "client"}},
                "serverToken": {"secretKeyRef": {"name": "dash", "key": "server"}},
                "secretName": "maps-token",
                "secretTemplate": {
                    "type": "Opaque", "labels": {"app": "maps"},
                    "annotations": {"team": "geo"}, "tokenKey": "jwt", "expiresAtKey": "exp"
                },
                "refreshBefore": "5m",
                "rolloutRestartTargets": [{"kind": "Deployment", "name": "web"}],
                "suspended": false
            },
            "status": {
                "expiresAt": "2026-12-01T11:00:00Z", "issuedAt": "2026-12-01T10:00:00Z",
                "lastRefreshTime": "2026-12-01T10:00:00Z",
                "nextRefreshTime": "2026-12-01T10:50:00Z",
                "lastFailureReason": "GebetaUnavailable", "lastFailureMessage": "HTTP 503",
                "sourceAccountIds": ["acc-1", "acc-2"], "observedRefreshRequest": "1",
                "observedGeneration": 3, "conditions": [condition()]
            }
        })));
        assert!(*token.summary());
        let account = round_trip::<GebetaServiceAccount>(object(serde_json::json!({
            "spec": {
                "platform": "WEB", "isAdmin": false, "description": "maps",
                "scopes": ["TILE", "GEOCODING"], "suspended": false, "deletionPolicy": "Orphan",
                "tokenSecretName": "maps-sa-token", "accountId": "acc-1",
                "userTokenSecretRef": {"name": "user", "key": "token"},
                "rotation": {"interval": "720h", "gracePeriod": "1h"}
            },
            "status": {
                "accountId": "acc-1", "state": "ACTIVE", "adopted": true,
                "tokenSecretName": "maps-sa-token",
                "pendingCreation": {"startedAt": "2026-12-01T10:00:00Z"},
                "createdAt": "2026-12-01T10:00:00Z", "observedRotation": "720h",
                "rotationInProgress": "acc-3", "retiring": ["acc-0"],
                "retireAfter": "2026-12-01T11:00:00Z",
                "lastRotationTime": "2026-12-01T10:00:00Z",
                "nextRotationTime": "2026-12-31T10:00:00Z",
                "observedGeneration": 3, "conditions": [condition()]
            }
        })));
        let summary = account.summary();
        assert!(summary.ready && summary.holds_named);
        assert_eq!(summary.named_account.as_deref(), Some("acc-1"));
    }

    #[test]
    fn an_object_kept_whole_reads_back_too() {
        let compact = round_trip::<GebetaAccessToken>(object(serde_json::json!({
            "spec": {
                "clientToken": {"serviceAccountRef": {"name": "client"}},
                "serverToken": {"serviceAccountRef": {"name": "server"}},
                "secretName": "maps-token"
            }
        })));
        let whole = Compact::<GebetaAccessToken> {
            rest: (envelope::<GebetaAccessToken>() + &compact.rest).into(),
            ..compact.clone()
        };
        assert_eq!(
            serde_json::to_value(whole.expand()).unwrap(),
            serde_json::to_value(compact.expand()).unwrap()
        );
    }

    #[test]
    fn a_compact_object_keeps_its_kind_for_the_api() {
        type Cached = Compact<GebetaAccessToken>;
        assert_eq!(Cached::kind(&()), "GebetaAccessToken");
        assert_eq!(Cached::api_version(&()), "gebeta.app/v1alpha1");
        assert_eq!(Cached::plural(&()), "gebetaaccesstokens");
        assert_eq!(
            Cached::url_path(&(), Some("team")),
            GebetaAccessToken::url_path(&(), Some("team"))
        );
    }
}
