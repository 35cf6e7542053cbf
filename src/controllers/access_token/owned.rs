//! The cache of the Secrets this controller owns (token and refresh Secrets, label-selected),
//! which lets a refresh read nothing from the API server.
//!
//! It holds one such Secret per token object and its refresh Secret, so at thousands of
//! tokens it is most of the operator's memory. It keeps what the controller reads (labels,
//! annotations, owner references, type, data and the keys of our own applies, see
//! [`secret::compact_managed_fields`]) in flat vectors: a `BTreeMap` of the API types
//! allocates room for eleven entries, these Secrets have two or three. Measured per token
//! Secret: 7.8 KiB as a kube-runtime store kept it, 3.5 KiB with our managedFields entry
//! compacted, 1.6 KiB here. Readers get a [`Secret`] built from it.

use std::collections::BTreeMap;

use super::{
    flat_cache::{FlatCache, Kept, Key},
    secret,
};
use k8s_openapi::{
    ByteString,
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, ObjectMeta, OwnerReference},
};

/// What is kept of one Secret.
pub struct Lean {
    uid: Option<String>,
    resource_version: Option<String>,
    type_: Option<String>,
    labels: Box<[(String, String)]>,
    annotations: Box<[(String, String)]>,
    owner_references: Box<[OwnerReference]>,
    data: Box<[(String, ByteString)]>,
    /// Our managed-fields entry in the compact form, with its manager and operation implied.
    applied: Option<String>,
}

impl Lean {
    fn of(mut s: Secret) -> (Key, Lean) {
        secret::compact_managed_fields(&mut s);
        let applied = s
            .metadata
            .managed_fields
            .take()
            .into_iter()
            .flatten()
            .find_map(|e| match e.fields_v1 {
                Some(FieldsV1(serde_json::Value::String(compact))) => Some(compact),
                _ => None,
            });
        let flat = |m: Option<BTreeMap<String, String>>| m.into_iter().flatten().collect();
        let meta = s.metadata;
        let key = (
            meta.namespace.unwrap_or_default(),
            meta.name.unwrap_or_default(),
        );
        let lean = Lean {
            uid: meta.uid,
            resource_version: meta.resource_version,
            type_: s.type_,
            labels: flat(meta.labels),
            annotations: flat(meta.annotations),
            owner_references: meta.owner_references.unwrap_or_default().into(),
            data: s.data.into_iter().flatten().collect(),
            applied,
        };
        (key, lean)
    }

    fn secret(&self, (namespace, name): &Key) -> Secret {
        let map = |pairs: &[(String, String)]| {
            (!pairs.is_empty()).then(|| pairs.iter().cloned().collect::<BTreeMap<_, _>>())
        };
        Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                uid: self.uid.clone(),
                resource_version: self.resource_version.clone(),
                labels: map(&self.labels),
                annotations: map(&self.annotations),
                owner_references: (!self.owner_references.is_empty())
                    .then(|| self.owner_references.to_vec()),
                managed_fields: self.applied.as_ref().map(|compact| {
                    vec![ManagedFieldsEntry {
                        manager: Some(crate::controllers::FIELD_MANAGER.into()),
                        operation: Some("Apply".into()),
                        fields_v1: Some(FieldsV1(serde_json::Value::String(compact.clone()))),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            },
            type_: self.type_.clone(),
            data: (!self.data.is_empty()).then(|| self.data.iter().cloned().collect()),
            ..Default::default()
        }
    }
}

/// The owned Secrets of every watched namespace, by namespace and name.
pub type OwnedSecrets = FlatCache<Lean>;

impl Kept for Lean {
    type Object = Secret;
    /// The owner's trigger reads the owner references.
    type Touched = Secret;

    fn keep(obj: Secret) -> Lean {
        Lean::of(obj).1
    }

    fn version(&self) -> Option<&str> {
        self.resource_version.as_deref()
    }

    fn touched_by(obj: &Secret) -> Secret {
        obj.clone()
    }

    fn touched(&self, key: &Key) -> Secret {
        self.secret(key)
    }
}

impl OwnedSecrets {
    pub fn get(&self, namespace: &str, name: &str) -> Option<Secret> {
        self.read(namespace, name, |key, lean| lean.secret(key))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::StreamExt;
    use kube::runtime::watcher;

    use super::*;
    use crate::controllers::Readiness;

    fn owned(ns: &str, name: &str, token: &str) -> Secret {
        let mut s = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                uid: Some("secret-uid".into()),
                resource_version: Some(format!("v{token}")),
                labels: Some(BTreeMap::from([("a".into(), "1".into())])),
                annotations: Some(BTreeMap::from([("b".into(), "2".into())])),
                owner_references: Some(vec![OwnerReference {
                    uid: "owner".into(),
                    controller: Some(true),
                    ..Default::default()
                }]),
                managed_fields: Some(vec![ManagedFieldsEntry {
                    manager: Some(crate::controllers::FIELD_MANAGER.into()),
                    operation: Some("Apply".into()),
                    fields_v1: Some(FieldsV1(serde_json::json!({
                        "f:data": {"f:token": {}},
                        "f:metadata": {"f:labels": {"f:a": {}}, "f:annotations": {"f:b": {}}},
                    }))),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([(
                "token".into(),
                ByteString(token.as_bytes().to_vec()),
            )])),
            ..Default::default()
        };
        s.metadata.creation_timestamp = None;
        s
    }

    #[test]
    fn a_cached_secret_reads_as_the_listed_one_with_compact_managed_fields() {
        let listed = owned("ns", "t", "a.b.c");
        let mut expected = listed.clone();
        secret::compact_managed_fields(&mut expected);
        let (key, lean) = Lean::of(listed);
        assert_eq!(lean.secret(&key), expected);
    }

    #[tokio::test]
    async fn relists_replace_only_their_namespace_and_sync_once() {
        let cache = Arc::new(OwnedSecrets::default());
        let readiness = Readiness::default();
        let event = |e| Ok::<_, watcher::Error>(e);
        // Another namespace's Secret stays through this watch's relist.
        cache.apply(owned("other", "x", "o"));
        let events = futures::stream::iter([
            event(watcher::Event::Init),
            event(watcher::Event::InitApply(owned("ns", "gone", "g"))),
            event(watcher::Event::InitDone),
            event(watcher::Event::Apply(owned("ns", "t", "1"))),
            event(watcher::Event::Apply(owned("ns", "t", "2"))),
            event(watcher::Event::Init),
            event(watcher::Event::InitApply(owned("ns", "t", "3"))),
        ]);
        let names = |touched: Vec<Result<Secret, watcher::Error>>| -> Vec<String> {
            touched
                .into_iter()
                .map(|s| {
                    let s = s.unwrap();
                    format!(
                        "{}@{}",
                        s.metadata.name.unwrap(),
                        s.metadata.resource_version.unwrap()
                    )
                })
                .collect()
        };
        let touched: Vec<_> = cache
            .clone()
            .reflect(Some("ns".into()), events, vec![readiness.register()])
            .collect()
            .await;
        assert_eq!(
            names(touched),
            ["gone@vg", "t@v1", "t@v2"],
            "the first list once complete, then each change; nothing of the unfinished list"
        );
        assert!(readiness.is_ready(), "synced at the first complete list");
        // The second list has not completed: the cache still shows the watch's last state.
        let token = |s: Secret| s.data.unwrap()["token"].0.clone();
        assert_eq!(token(cache.get("ns", "t").unwrap()), b"2");
        assert!(cache.get("ns", "gone").is_some());
        let events = futures::stream::iter([event(watcher::Event::Delete(owned("ns", "t", "2")))]);
        let touched: Vec<_> = cache
            .clone()
            .reflect(Some("ns".into()), events, vec![])
            .collect()
            .await;
        assert_eq!(names(touched), ["t@v2"]);
        assert!(cache.get("ns", "t").is_none());
        // A completed relist drops what it did not list, in its own namespace only, and
        // wakes the owners of what it changed: the Secret deleted while the watch was down
        // and the one listed at a new version, not an unchanged one.
        cache.apply(owned("ns", "same", "s"));
        let events = futures::stream::iter([
            event(watcher::Event::Init),
            event(watcher::Event::InitApply(owned("ns", "t", "4"))),
            event(watcher::Event::InitApply(owned("ns", "same", "s"))),
            event(watcher::Event::InitDone),
        ]);
        let touched: Vec<_> = cache
            .clone()
            .reflect(Some("ns".into()), events, vec![])
            .collect()
            .await;
        assert_eq!(names(touched), ["gone@vg", "t@v4"]);
        assert_eq!(token(cache.get("ns", "t").unwrap()), b"4");
        assert!(cache.get("ns", "gone").is_none());
        assert!(cache.get("other", "x").is_some());
        assert_eq!(cache.len(), 3);
    }
}
