//! Which `GebetaAccessToken`s a Secret or a `GebetaServiceAccount` matters to, so that a
//! metadata-only watch of Secrets (and of service accounts) can wake exactly those objects.
//!
//! Entries come from two places: the objects' specs, once the reflector store of
//! `GebetaAccessToken`s has its first full list ([`RefIndex::add_spec_refs`]), and each
//! reconcile, which records everything the object depends on before reading it (including the
//! token Secret a referenced service account names) with [`RefIndex::set`]. Recording before
//! reading means a change that lands after the read always finds the entry.
//!
//! Each object also has an *input epoch*, bumped whenever a watch event maps to it through
//! the index: a reconcile that read its inputs at epoch `e` may reuse them while the epoch is
//! still `e`, so a refresh reads no input Secret from the API server.

use std::{collections::HashMap, sync::RwLock};

use kube::{ResourceExt, runtime::reflector::ObjectRef};

use super::CachedToken;
use crate::crd::GebetaAccessToken;

type Key = (String, String);

/// What one object depends on (names in its namespace).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refs {
    pub secrets: Names,
    pub accounts: Names,
}

/// A few names (an object depends on one to five; a Secret is used by one object or a few),
/// sorted and without repeats, in one allocation of their exact size. Every object keeps two `Refs` (here
/// and with its remembered inputs) and appears in the reverse maps under each name it uses;
/// as `BTreeSet`s each set cost a 280-byte tree node even for one name (13 MiB at 10,000
/// objects, measured with jemalloc's size-class statistics), as `HashSet`s a 128-byte table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names(Vec<String>);

impl Names {
    pub fn insert(&mut self, name: String) {
        if let Err(at) = self.0.binary_search(&name) {
            self.0.insert(at, name);
            // A vector grown from empty has room for four names (96 bytes), and most of
            // these hold one for good.
            self.0.shrink_to_fit();
        }
    }

    pub fn remove(&mut self, name: &str) {
        if let Ok(at) = self.0.binary_search_by(|n| n.as_str().cmp(name)) {
            self.0.remove(at);
            self.0.shrink_to_fit();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, String> {
        self.0.iter()
    }
}

impl Extend<String> for Names {
    fn extend<I: IntoIterator<Item = String>>(&mut self, names: I) {
        names.into_iter().for_each(|n| self.insert(n));
    }
}

impl IntoIterator for Names {
    type Item = String;
    type IntoIter = std::vec::IntoIter<String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Names {
    type Item = &'a String;
    type IntoIter = std::slice::Iter<'a, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl Refs {
    /// What the spec names: input Secrets, the target Secret (so the deletion of a foreign
    /// Secret in the way wakes the object) and referenced service accounts.
    pub fn of_spec(obj: &GebetaAccessToken) -> Refs {
        let mut refs = Refs::default();
        refs.secrets.insert(obj.spec.secret_name.clone());
        for source in [&obj.spec.client_token, &obj.spec.server_token] {
            if let Some(s) = &source.secret_key_ref {
                refs.secrets.insert(s.name.clone());
            }
            if let Some(a) = &source.service_account_ref {
                refs.accounts.insert(a.name.clone());
            }
        }
        refs
    }
}

#[derive(Default)]
struct Inner {
    by_secret: HashMap<Key, Names>,
    by_account: HashMap<Key, Names>,
    refs: HashMap<Key, Refs>,
}

/// Input epochs, apart from the index so that the mappers' bumps do not take its write lock.
/// Keyed by a digest of the object's namespace and name ([`epoch_key`]): as `(String,
/// String)` keys every object paid ~100 bytes and two allocations (1.3 MiB at 10,000 tokens).
/// Two objects whose keys collide (odds 2⁻⁶⁴ a pair) share one epoch: a bump for either makes
/// both read their inputs again, which is only extra work.
#[derive(Default)]
struct Epochs {
    by_object: HashMap<u64, u64>,
}

fn epoch_key(ns: &str, name: &str) -> u64 {
    // A `str` hashes with a terminator, so no two (namespace, name) pairs feed the same bytes.
    crate::controllers::digest64(&(ns, name))
}

/// Reverse index from Secrets and service accounts to the objects that use them.
#[derive(Default)]
pub struct RefIndex {
    inner: RwLock<Inner>,
    epochs: std::sync::Mutex<Epochs>,
}

fn key(ns: &str, name: &str) -> Key {
    (ns.to_string(), name.to_string())
}

impl Inner {
    fn unlink(&mut self, ns: &str, name: &str) {
        let Some(old) = self.refs.remove(&key(ns, name)) else {
            return;
        };
        for (map, names) in [
            (&mut self.by_secret, &old.secrets),
            (&mut self.by_account, &old.accounts),
        ] {
            for target in names {
                let k = key(ns, target);
                if let Some(set) = map.get_mut(&k) {
                    set.remove(name);
                    if set.is_empty() {
                        map.remove(&k);
                    }
                }
            }
        }
    }

    fn link(&mut self, ns: &str, name: &str, refs: Refs) {
        for s in &refs.secrets {
            self.by_secret
                .entry(key(ns, s))
                .or_default()
                .insert(name.to_string());
        }
        for a in &refs.accounts {
            self.by_account
                .entry(key(ns, a))
                .or_default()
                .insert(name.to_string());
        }
        self.refs.insert(key(ns, name), refs);
    }
}

impl RefIndex {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces what object `ns/name` depends on.
    pub fn set(&self, ns: &str, name: &str, refs: Refs) {
        let mut inner = self.write();
        if inner.refs.get(&key(ns, name)) == Some(&refs) {
            return;
        }
        inner.unlink(ns, name);
        inner.link(ns, name, refs);
    }

    /// Adds what the spec of `obj` names, keeping what a reconcile recorded.
    pub fn add_spec_refs(&self, obj: &GebetaAccessToken) {
        let (Some(ns), name) = (obj.namespace(), obj.name_any()) else {
            return;
        };
        let mut inner = self.write();
        let mut refs = inner
            .refs
            .get(&key(&ns, &name))
            .cloned()
            .unwrap_or_default();
        let spec = Refs::of_spec(obj);
        refs.secrets.extend(spec.secrets);
        refs.accounts.extend(spec.accounts);
        inner.unlink(&ns, &name);
        inner.link(&ns, &name, refs);
    }

    /// Forgets object `ns/name` (deleted).
    pub fn remove(&self, ns: &str, name: &str) {
        self.write().unlink(ns, name);
        self.epochs().by_object.remove(&epoch_key(ns, name));
    }

    fn epochs(&self) -> std::sync::MutexGuard<'_, Epochs> {
        self.epochs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The input epoch of object `ns/name`.
    pub fn epoch(&self, ns: &str, name: &str) -> u64 {
        self.epochs()
            .by_object
            .get(&epoch_key(ns, name))
            .copied()
            .unwrap_or_default()
    }

    /// Objects that depend on Secret `ns/secret`. Their input epochs move on, except that of
    /// `owner`, the object the Secret belongs to (its own writes change none of its inputs).
    pub fn for_secret(
        &self,
        ns: &str,
        secret: &str,
        owner: Option<&str>,
    ) -> Vec<ObjectRef<CachedToken>> {
        let objects = Self::refs(&self.read().by_secret, ns, secret);
        let (own, inputs_of): (Vec<_>, Vec<_>) = objects
            .into_iter()
            .partition(|o| Some(o.name.as_str()) == owner);
        let mut objects = self.bump(inputs_of);
        objects.extend(own);
        objects
    }

    /// Objects that depend on service account `ns/account` (their input epochs move on).
    pub fn for_account(&self, ns: &str, account: &str) -> Vec<ObjectRef<CachedToken>> {
        self.bump(Self::refs(&self.read().by_account, ns, account))
    }

    fn bump(&self, objects: Vec<ObjectRef<CachedToken>>) -> Vec<ObjectRef<CachedToken>> {
        if !objects.is_empty() {
            let mut epochs = self.epochs();
            for o in &objects {
                let ns = o.namespace.as_deref().unwrap_or_default();
                *epochs.by_object.entry(epoch_key(ns, &o.name)).or_default() += 1;
            }
        }
        objects
    }

    fn refs(map: &HashMap<Key, Names>, ns: &str, name: &str) -> Vec<ObjectRef<CachedToken>> {
        map.get(&key(ns, name))
            .into_iter()
            .flatten()
            .map(|n| ObjectRef::new(n).within(ns))
            .collect()
    }

    /// Number of objects indexed (for tests and debugging).
    pub fn len(&self) -> usize {
        self.read().refs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn names_stay_sorted_unique_and_exactly_sized() {
        let mut names = Names::default();
        names.extend(["b", "a", "b"].map(String::from));
        assert_eq!(names.0, ["a", "b"]);
        assert_eq!(
            names.0.capacity(),
            2,
            "no room kept for names that never come"
        );
        names.remove("a");
        assert_eq!((names.0.len(), names.0.capacity()), (1, 1));
    }
    use crate::crd::{
        GebetaAccessTokenSpec, LocalObjectReference, SecretKeySelector, access_token::TokenSource,
    };

    fn names(refs: Vec<ObjectRef<CachedToken>>) -> BTreeSet<String> {
        refs.into_iter().map(|r| r.name).collect()
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_are_a_sorted_set() {
        let mut names = Names::default();
        names.extend(["b", "a", "c", "a", "b"].map(String::from));
        names.insert("0".into());
        assert_eq!(names.iter().collect::<Vec<_>>(), ["0", "a", "b", "c"]);
        let mut other = Names::default();
        other.extend(["c", "0", "b", "a"].map(String::from));
        assert_eq!(names, other, "equal whatever the insertion order");
        names.remove("b");
        names.remove("x");
        assert_eq!(names.iter().collect::<Vec<_>>(), ["0", "a", "c"]);
        ["0", "a", "c"].iter().for_each(|n| names.remove(n));
        assert!(names.is_empty());
    }

    fn gat(name: &str, client_secret: &str, account: &str) -> GebetaAccessToken {
        let mut obj = GebetaAccessToken::new(
            name,
            GebetaAccessTokenSpec {
                client_token: TokenSource {
                    service_account_ref: None,
                    secret_key_ref: Some(SecretKeySelector {
                        name: client_secret.into(),
                        key: "token".into(),
                    }),
                },
                server_token: TokenSource {
                    service_account_ref: Some(LocalObjectReference {
                        name: account.into(),
                    }),
                    secret_key_ref: None,
                },
                secret_name: format!("{name}-out"),
                secret_template: None,
                refresh_before: None,
                rollout_restart_targets: vec![],
                suspended: false,
            },
        );
        obj.metadata.namespace = Some("ns".into());
        obj
    }

    #[test]
    fn maps_secrets_and_accounts_to_objects() {
        let index = RefIndex::default();
        index.add_spec_refs(&gat("a", "shared", "gsa-1"));
        index.add_spec_refs(&gat("b", "shared", "gsa-2"));
        assert_eq!(
            names(index.for_secret("ns", "shared", None)),
            set(&["a", "b"])
        );
        assert_eq!(names(index.for_secret("ns", "a-out", None)), set(&["a"]));
        assert_eq!(names(index.for_account("ns", "gsa-2")), set(&["b"]));
        assert!(
            index.for_secret("other-ns", "shared", None).is_empty(),
            "namespaced"
        );
        assert!(index.for_secret("ns", "unrelated", None).is_empty());
        assert_eq!(
            index.for_secret("ns", "shared", None)[0]
                .namespace
                .as_deref(),
            Some("ns")
        );
    }

    #[test]
    fn reconcile_replaces_and_spec_adds() {
        let index = RefIndex::default();
        let obj = gat("a", "client", "gsa-1");
        // The reconcile resolved the account's token Secret.
        let mut refs = Refs::of_spec(&obj);
        refs.secrets.insert("gsa-1-token".into());
        index.set("ns", "a", refs);
        // A late spec seeding keeps it.
        index.add_spec_refs(&obj);
        assert_eq!(
            names(index.for_secret("ns", "gsa-1-token", None)),
            set(&["a"])
        );
        // The spec changed: the old input is forgotten.
        let changed = gat("a", "client-v2", "gsa-1");
        index.set("ns", "a", Refs::of_spec(&changed));
        assert!(index.for_secret("ns", "client", None).is_empty());
        assert!(index.for_secret("ns", "gsa-1-token", None).is_empty());
        assert_eq!(
            names(index.for_secret("ns", "client-v2", None)),
            set(&["a"])
        );
        index.remove("ns", "a");
        assert!(index.for_secret("ns", "client-v2", None).is_empty());
        assert!(index.for_account("ns", "gsa-1").is_empty());
        assert!(index.is_empty());
    }

    #[test]
    fn input_events_move_the_epoch_on_but_own_secrets_do_not() {
        let index = RefIndex::default();
        index.add_spec_refs(&gat("a", "shared", "gsa-1"));
        index.add_spec_refs(&gat("b", "shared", "gsa-1"));
        assert_eq!(index.epoch("ns", "a"), 0);
        index.for_secret("ns", "shared", None);
        assert_eq!((index.epoch("ns", "a"), index.epoch("ns", "b")), (1, 1));
        // a's own target Secret wakes a, but is not one of its inputs.
        assert_eq!(
            names(index.for_secret("ns", "a-out", Some("a"))),
            set(&["a"])
        );
        assert_eq!(index.epoch("ns", "a"), 1);
        index.for_account("ns", "gsa-1");
        assert_eq!((index.epoch("ns", "a"), index.epoch("ns", "b")), (2, 2));
        index.remove("ns", "a");
        assert_eq!(index.epoch("ns", "a"), 0);
    }
}
