//! The cache of the Secrets this controller owns (token and refresh Secrets, label-selected),
//! which lets a refresh read nothing from the API server.
//!
//! It holds one such Secret per token object and its refresh Secret, so at thousands of
//! tokens it is most of the operator's memory. It keeps what the controller reads (labels,
//! annotations, owner references, type, data and the keys of our own applies, see
//! [`secret::compact_managed_fields`]) in flat vectors: a `BTreeMap` of the API types
//! allocates room for eleven entries, these Secrets have two or three. Measured per token
//! Secret: 7.8 KiB as a kube-runtime store kept it, 3.5 KiB with our managedFields entry
//! compacted, 1.6 KiB here. The strings every owned Secret repeats (label, annotation and data
//! keys, the owner's kind and API version) are not allocated per Secret, and each Secret's
//! fields are one box beside its key in the table: at 1,000 tokens this cache and the accounts'
//! went 2.76 → 2.38 MiB (heaptrack). Readers get a [`Secret`] built from it.

use std::collections::BTreeMap;

use super::{
    flat_cache::{FlatCache, Kept, Key},
    secret,
};
use crate::crd::access_token::{DEFAULT_EXPIRES_AT_KEY, DEFAULT_TOKEN_KEY};
use k8s_openapi::{
    ByteString,
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, ObjectMeta, OwnerReference},
};

/// What is kept of one Secret, boxed: a table keeps room for up to twice its entries.
pub struct Lean(Box<Fields>);

struct Fields {
    uid: Option<Box<str>>,
    resource_version: Option<Box<str>>,
    type_: Option<Text>,
    labels: Box<[(Text, Text)]>,
    annotations: Box<[(Text, Text)]>,
    owner_references: Box<[Owner]>,
    data: Box<[(Text, Box<[u8]>)]>,
    /// Our managed-fields entry in the compact form, with its manager and operation implied.
    applied: Option<Box<str>>,
}

/// An owner reference (ours name a `GebetaAccessToken`, so kind and API version are known).
struct Owner {
    api_version: Text,
    kind: Text,
    name: Box<str>,
    uid: Box<str>,
    controller: Option<bool>,
    block_owner_deletion: Option<bool>,
}

/// A string of a cached Secret: one the operator writes to every Secret it owns (label and
/// data keys, the owner's kind) is not allocated again for each Secret.
enum Text {
    Known(&'static str),
    Owned(Box<str>),
}

/// The strings every owned Secret repeats.
const KNOWN: [&str; 14] = [
    crate::controllers::MANAGED_BY_LABEL,
    crate::controllers::MANAGED_BY,
    secret::ACCESS_TOKEN_LABEL,
    secret::REFRESH_FOR_LABEL,
    secret::ISSUED_AT_ANNOTATION,
    secret::EXPIRES_AT_ANNOTATION,
    secret::REFRESH_TOKEN_KEY,
    secret::SOURCE_FINGERPRINT_KEY,
    secret::SOURCE_ACCOUNTS_KEY,
    DEFAULT_TOKEN_KEY,
    DEFAULT_EXPIRES_AT_KEY,
    "Opaque",
    "gebeta.app/v1alpha1",
    "GebetaAccessToken",
];

impl Text {
    fn new(s: String) -> Text {
        match KNOWN.iter().find(|k| **k == s) {
            Some(known) => Text::Known(known),
            None => Text::Owned(s.into_boxed_str()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Text::Known(s) => s,
            Text::Owned(s) => s,
        }
    }
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
                Some(FieldsV1(serde_json::Value::String(compact))) => Some(compact.into()),
                _ => None,
            });
        let texts = |m: Option<BTreeMap<String, String>>| {
            m.into_iter()
                .flatten()
                .map(|(k, v)| (Text::new(k), Text::new(v)))
                .collect()
        };
        let meta = s.metadata;
        let key = (
            meta.namespace.unwrap_or_default(),
            meta.name.unwrap_or_default(),
        );
        let owner = |o: OwnerReference| Owner {
            api_version: Text::new(o.api_version),
            kind: Text::new(o.kind),
            name: o.name.into(),
            uid: o.uid.into(),
            controller: o.controller,
            block_owner_deletion: o.block_owner_deletion,
        };
        let fields = Fields {
            uid: meta.uid.map(Into::into),
            resource_version: meta.resource_version.map(Into::into),
            type_: s.type_.map(Text::new),
            labels: texts(meta.labels),
            annotations: texts(meta.annotations),
            owner_references: meta
                .owner_references
                .into_iter()
                .flatten()
                .map(owner)
                .collect(),
            data: s
                .data
                .into_iter()
                .flatten()
                .map(|(k, v)| (Text::new(k), v.0.into()))
                .collect(),
            applied,
        };
        (key, Lean(Box::new(fields)))
    }

    fn secret(&self, (namespace, name): &Key) -> Secret {
        let f = &self.0;
        let map = |pairs: &[(Text, Text)]| {
            (!pairs.is_empty()).then(|| {
                pairs
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
                    .collect::<BTreeMap<_, _>>()
            })
        };
        let owner = |o: &Owner| OwnerReference {
            api_version: o.api_version.as_str().to_owned(),
            kind: o.kind.as_str().to_owned(),
            name: o.name.to_string(),
            uid: o.uid.to_string(),
            controller: o.controller,
            block_owner_deletion: o.block_owner_deletion,
        };
        Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                uid: f.uid.as_deref().map(String::from),
                resource_version: f.resource_version.as_deref().map(String::from),
                labels: map(&f.labels),
                annotations: map(&f.annotations),
                owner_references: (!f.owner_references.is_empty())
                    .then(|| f.owner_references.iter().map(owner).collect()),
                managed_fields: f.applied.as_deref().map(|compact| {
                    vec![ManagedFieldsEntry {
                        manager: Some(crate::controllers::FIELD_MANAGER.into()),
                        operation: Some("Apply".into()),
                        fields_v1: Some(FieldsV1(serde_json::Value::String(compact.into()))),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            },
            type_: f.type_.as_ref().map(|t| t.as_str().to_owned()),
            data: (!f.data.is_empty()).then(|| {
                f.data
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), ByteString(v.to_vec())))
                    .collect()
            }),
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
        self.0.resource_version.as_deref()
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
                // Strings the cache keeps once for all Secrets, and others.
                labels: Some(BTreeMap::from([
                    ("a".into(), "1".into()),
                    (
                        crate::controllers::MANAGED_BY_LABEL.into(),
                        crate::controllers::MANAGED_BY.into(),
                    ),
                ])),
                annotations: Some(BTreeMap::from([("b".into(), "2".into())])),
                owner_references: Some(vec![
                    OwnerReference {
                        api_version: "gebeta.app/v1alpha1".into(),
                        kind: "GebetaAccessToken".into(),
                        name: "t".into(),
                        uid: "owner".into(),
                        controller: Some(true),
                        block_owner_deletion: Some(true),
                    },
                    OwnerReference {
                        api_version: "v1".into(),
                        kind: "ConfigMap".into(),
                        name: "other".into(),
                        uid: "other-owner".into(),
                        ..Default::default()
                    },
                ]),
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
            data: Some(BTreeMap::from([
                ("token".into(), ByteString(token.as_bytes().to_vec())),
                ("other".into(), ByteString(vec![0, 255])),
            ])),
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
