//! A cache that keeps of each watched object only what this controller reads, flattened (see
//! [`Kept`]), and passes on the objects the watch touched for the controller's triggers.
//!
//! A (re)list is applied as a whole when it completes, as kube-runtime's stores do, and its
//! triggers wait until then (see [`crate::controllers::relist`] for why): what it changed,
//! including objects deleted while the watch was down.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use futures::{Stream, StreamExt};
use kube::{ResourceExt, runtime::watcher};

use crate::controllers::SyncGuard;

/// Namespace and name.
pub type Key = (String, String);

/// What the cache keeps of one object.
pub trait Kept: Sized + Send + Sync + 'static {
    /// The watched object.
    type Object: kube::Resource + Send + 'static;
    /// What the controller's triggers are given for a touched object.
    type Touched: Send + 'static;

    fn keep(obj: Self::Object) -> Self;
    fn version(&self) -> Option<&str>;
    /// The trigger for an object a watch event carries.
    fn touched_by(obj: &Self::Object) -> Self::Touched;
    /// The trigger for an object the cache holds (or has just dropped) at `key`.
    fn touched(&self, key: &Key) -> Self::Touched;
}

fn key_of<O: kube::Resource>(obj: &O) -> Key {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

/// The kept objects of every watch feeding the cache, by namespace and name.
pub struct FlatCache<V> {
    by_key: RwLock<HashMap<Key, V>>,
}

impl<V> Default for FlatCache<V> {
    fn default() -> Self {
        FlatCache {
            by_key: RwLock::default(),
        }
    }
}

impl<V: Kept> FlatCache<V> {
    /// `read` of what is kept of `namespace/name`, if anything.
    pub fn read<R>(
        &self,
        namespace: &str,
        name: &str,
        read: impl FnOnce(&Key, &V) -> R,
    ) -> Option<R> {
        let key = (namespace.to_string(), name.to_string());
        let by_key = self.by_key.read().unwrap_or_else(|e| e.into_inner());
        by_key.get(&key).map(|kept| read(&key, kept))
    }

    #[cfg(test)]
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.by_key.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Key, V>> {
        self.by_key.write().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    pub fn apply(&self, obj: V::Object) {
        let key = key_of(&obj);
        self.write().insert(key, V::keep(obj));
    }

    /// Whether the cache keeps `key` at `version`.
    fn holds(&self, key: &Key, version: Option<&str>) -> bool {
        let by_key = self.by_key.read().unwrap_or_else(|e| e.into_inner());
        by_key
            .get(key)
            .is_some_and(|kept| kept.version() == version)
    }

    /// Replaces the objects of one watch (a namespace, or the cluster) with a new full list;
    /// returns the triggers of those it dropped.
    fn replace(&self, namespace: Option<&str>, listed: HashMap<Key, V>) -> Vec<V::Touched> {
        let mut by_key = self.write();
        let gone: Vec<Key> = by_key
            .keys()
            .filter(|k| namespace.is_none_or(|n| n == k.0) && !listed.contains_key(*k))
            .cloned()
            .collect();
        let gone = gone
            .into_iter()
            .filter_map(|k| by_key.remove(&k).map(|kept| kept.touched(&k)))
            .collect();
        by_key.extend(listed);
        gone
    }

    /// Keeps the cache from one watch's events and passes on the triggers of what they
    /// touched (see the module). `synced` are released at the first complete list.
    /// `namespace` is the watch's namespace (`None`: cluster-wide).
    pub fn reflect<S>(
        self: Arc<Self>,
        namespace: Option<String>,
        events: S,
        synced: Vec<SyncGuard>,
    ) -> impl Stream<Item = Result<V::Touched, watcher::Error>> + Send
    where
        S: Stream<Item = Result<watcher::Event<V::Object>, watcher::Error>> + Send,
    {
        let mut listing: Option<(HashMap<Key, V>, Vec<Key>)> = None;
        let mut synced = Some(synced);
        events.flat_map(move |event| {
            let touched: Box<dyn Iterator<Item = Result<V::Touched, watcher::Error>> + Send> =
                match event {
                    Ok(watcher::Event::Apply(obj)) => {
                        let touched = V::touched_by(&obj);
                        let key = key_of(&obj);
                        self.write().insert(key, V::keep(obj));
                        Box::new(std::iter::once(Ok(touched)))
                    }
                    Ok(watcher::Event::Delete(obj)) => {
                        self.write().remove(&key_of(&obj));
                        Box::new(std::iter::once(Ok(V::touched_by(&obj))))
                    }
                    Ok(watcher::Event::Init) => {
                        listing = Some(Default::default());
                        Box::new(std::iter::empty())
                    }
                    Ok(watcher::Event::InitApply(obj)) => {
                        let key = key_of(&obj);
                        let kept = V::keep(obj);
                        let (listed, changed) = listing.get_or_insert_default();
                        if !self.holds(&key, kept.version()) {
                            changed.push(key.clone());
                        }
                        listed.insert(key, kept);
                        Box::new(std::iter::empty())
                    }
                    Ok(watcher::Event::InitDone) => {
                        let (listed, changed) = listing.take().unwrap_or_default();
                        let gone = self.replace(namespace.as_deref(), listed);
                        synced
                            .take()
                            .into_iter()
                            .flatten()
                            .for_each(SyncGuard::synced);
                        let cache = self.clone();
                        // Lazily, one at a time: a first list is every object.
                        let changed = changed.into_iter().filter_map(move |(ns, name)| {
                            cache.read(&ns, &name, |key, kept| Ok(kept.touched(key)))
                        });
                        Box::new(gone.into_iter().map(Ok).chain(changed))
                    }
                    Err(err) => Box::new(std::iter::once(Err(err))),
                };
            futures::stream::iter(touched)
        })
    }
}
