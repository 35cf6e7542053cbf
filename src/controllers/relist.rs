//! Triggers from a reflected watch that never run ahead of the store they come with.
//!
//! When a watch is lost (the API server restarts, a `resourceVersion` is too old) kube-runtime
//! lists again: `Init`, one `InitApply` per object, `InitDone`. Its store keeps showing the old
//! list until `InitDone` and only then swaps the new one in, but its `touched_objects`
//! passes every `InitApply` on at once. A reconcile woken by one therefore reads the store
//! *before* the object it was woken for is in it: an object created while the watch was down
//! is "not found" (kube's controller reports `ObjectNotFound` and forgets the request), and an
//! access token woken by a new service account sees no such account, remembers that answer, and
//! is never woken again (the account is already Ready: no later event). Objects deleted while
//! the watch was down wake nobody either, since a list names only what exists.
//!
//! [`settled_touched`] holds a list's triggers back until the store shows the list, then wakes
//! what it changed: objects new or at another version, and objects gone from it.

use std::hash::Hash;

use futures::{Stream, StreamExt, stream};
use kube::{
    Resource,
    runtime::{
        reflector::{ObjectRef, Store},
        watcher,
    },
};

/// The objects a watch touched, for a controller's triggers, from its events *after* they
/// were applied to `store` (place it after `.reflect(writer)` of that store): applies and
/// deletes at once; a (re)list's changes once it is complete.
pub fn settled_touched<K, S>(
    events: S,
    store: Store<K>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let mut relist: Option<Relist<K>> = None;
    events.flat_map(move |event| {
        let now: Box<dyn Iterator<Item = Result<K, watcher::Error>> + Send> = match event {
            Ok(watcher::Event::Apply(obj) | watcher::Event::Delete(obj)) => {
                Box::new(std::iter::once(Ok(obj)))
            }
            Err(err) => Box::new(std::iter::once(Err(err))),
            Ok(watcher::Event::Init) => {
                // The store still shows the previous list (if any) until `InitDone`.
                relist = Some(Relist {
                    before: store.state(),
                    changed: Vec::new(),
                });
                Box::new(std::iter::empty())
            }
            Ok(watcher::Event::InitApply(obj)) => {
                let key = ObjectRef::from_obj(&obj);
                let unchanged = store.get(&key).is_some_and(|cached| {
                    cached.meta().resource_version == obj.meta().resource_version
                });
                if !unchanged {
                    relist.get_or_insert_default().changed.push(key);
                }
                Box::new(std::iter::empty())
            }
            Ok(watcher::Event::InitDone) => match relist.take() {
                None => Box::new(std::iter::empty()),
                Some(Relist { before, changed }) => {
                    let store = store.clone();
                    let gone_store = store.clone();
                    // Lazily, one clone at a time: a first list is every object.
                    let gone = before
                        .into_iter()
                        .filter(move |old| gone_store.get(&ObjectRef::from_obj(&**old)).is_none())
                        .map(|old| Ok((*old).clone()));
                    let listed = changed
                        .into_iter()
                        .filter_map(move |key| store.get(&key).map(|obj| Ok((*obj).clone())));
                    Box::new(gone.chain(listed))
                }
            },
        };
        stream::iter(now)
    })
}

/// What a list in progress has seen.
struct Relist<K: Resource> {
    /// The store's objects when the list began.
    before: Vec<std::sync::Arc<K>>,
    /// Listed objects the store did not show at their listed version.
    changed: Vec<ObjectRef<K>>,
}

impl<K: Resource> Default for Relist<K> {
    fn default() -> Self {
        Relist {
            before: Vec::new(),
            changed: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::{FutureExt, channel::mpsc};
    use k8s_openapi::{api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::ObjectMeta};
    use kube::runtime::{WatchStreamExt, reflector};

    use super::*;

    fn cm(name: &str, version: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(version.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn touched(out: Vec<ConfigMap>) -> Vec<String> {
        out.into_iter()
            .map(|c| {
                format!(
                    "{}@{}",
                    c.metadata.name.unwrap(),
                    c.metadata.resource_version.unwrap()
                )
            })
            .collect()
    }

    /// Feeds events one by one and records, for each trigger, whether the store showed that
    /// very object when the trigger came out.
    #[test]
    fn a_relist_wakes_its_changes_only_once_the_store_shows_them() {
        let (reader, writer) = reflector::store::<ConfigMap>();
        let (tx, rx) = mpsc::unbounded();
        let mut triggers = Box::pin(settled_touched(rx.reflect(writer), reader.clone()));
        let mut step = |events: Vec<watcher::Event<ConfigMap>>| {
            for e in events {
                tx.unbounded_send(Ok(e)).unwrap();
            }
            let mut out = Vec::new();
            while let Some(Some(item)) = triggers.next().now_or_never() {
                let obj = item.unwrap();
                let shown = reader
                    .get(&ObjectRef::from_obj(&obj))
                    .and_then(|o| o.metadata.resource_version.clone());
                let deleted = shown.is_none();
                assert!(
                    deleted || shown == obj.metadata.resource_version,
                    "a trigger for {:?} before the store shows it",
                    obj.metadata.name
                );
                out.push(obj);
            }
            out
        };
        use watcher::Event::*;
        // The first list: nothing until it is complete, then every object.
        assert!(step(vec![Init, InitApply(cm("a", "1")), InitApply(cm("b", "1"))]).is_empty());
        assert_eq!(touched(step(vec![InitDone])), ["a@1", "b@1"]);
        // Live events at once.
        assert_eq!(touched(step(vec![Apply(cm("a", "2"))])), ["a@2"]);
        // A relist after the watch was lost: c is new, a unchanged, b deleted meanwhile.
        assert!(
            step(vec![Init, InitApply(cm("a", "2")), InitApply(cm("c", "5"))]).is_empty(),
            "no trigger while the store shows the old list"
        );
        assert_eq!(
            touched(step(vec![InitDone])),
            ["b@1", "c@5"],
            "the deleted and the new object, not the unchanged one"
        );
        assert!(reader.get(&ObjectRef::new("b").within("ns")).is_none());
        // A relist that starts over before it completes.
        assert!(
            step(vec![
                Init,
                InitApply(cm("a", "3")),
                Init,
                InitApply(cm("a", "3"))
            ])
            .is_empty()
        );
        assert_eq!(
            touched(step(vec![InitDone])),
            ["c@5", "a@3"],
            "c is gone: the list that completed does not name it"
        );
    }
}
