//! Which `GebetaAccessToken`s a Secret or a `GebetaServiceAccount` matters to, so that a
//! metadata-only watch of Secrets (and of service accounts) can wake exactly those objects.
//!
//! Entries come from two places: the objects' specs, once the reflector store of
//! `GebetaAccessToken`s has its first full list ([`RefIndex::add_spec_refs`]), and each
//! reconcile, which records everything the object depends on before reading it (including the
//! token Secret a referenced service account names) with [`RefIndex::set`]. Recording before
//! reading means a change that lands after the read always finds the entry.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::RwLock,
};

use kube::{ResourceExt, runtime::reflector::ObjectRef};

use crate::crd::GebetaAccessToken;

type Key = (String, String);

/// What one object depends on (names in its namespace).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refs {
    pub secrets: BTreeSet<String>,
    pub accounts: BTreeSet<String>,
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
    by_secret: HashMap<Key, HashSet<String>>,
    by_account: HashMap<Key, HashSet<String>>,
    refs: HashMap<Key, Refs>,
}

/// Reverse index from Secrets and service accounts to the objects that use them.
#[derive(Default)]
pub struct RefIndex {
    inner: RwLock<Inner>,
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
    }

    /// Objects that depend on Secret `ns/secret`.
    pub fn for_secret(&self, ns: &str, secret: &str) -> Vec<ObjectRef<GebetaAccessToken>> {
        Self::refs(&self.read().by_secret, ns, secret)
    }

    /// Objects that depend on service account `ns/account`.
    pub fn for_account(&self, ns: &str, account: &str) -> Vec<ObjectRef<GebetaAccessToken>> {
        Self::refs(&self.read().by_account, ns, account)
    }

    fn refs(
        map: &HashMap<Key, HashSet<String>>,
        ns: &str,
        name: &str,
    ) -> Vec<ObjectRef<GebetaAccessToken>> {
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
    use super::*;
    use crate::crd::{
        GebetaAccessTokenSpec, LocalObjectReference, SecretKeySelector, access_token::TokenSource,
    };

    fn names(refs: Vec<ObjectRef<GebetaAccessToken>>) -> BTreeSet<String> {
        refs.into_iter().map(|r| r.name).collect()
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
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
        assert_eq!(names(index.for_secret("ns", "shared")), set(&["a", "b"]));
        assert_eq!(names(index.for_secret("ns", "a-out")), set(&["a"]));
        assert_eq!(names(index.for_account("ns", "gsa-2")), set(&["b"]));
        assert!(
            index.for_secret("other-ns", "shared").is_empty(),
            "namespaced"
        );
        assert!(index.for_secret("ns", "unrelated").is_empty());
        assert_eq!(
            index.for_secret("ns", "shared")[0].namespace.as_deref(),
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
        assert_eq!(names(index.for_secret("ns", "gsa-1-token")), set(&["a"]));
        // The spec changed: the old input is forgotten.
        let changed = gat("a", "client-v2", "gsa-1");
        index.set("ns", "a", Refs::of_spec(&changed));
        assert!(index.for_secret("ns", "client").is_empty());
        assert!(index.for_secret("ns", "gsa-1-token").is_empty());
        assert_eq!(names(index.for_secret("ns", "client-v2")), set(&["a"]));
        index.remove("ns", "a");
        assert!(index.for_secret("ns", "client-v2").is_empty());
        assert!(index.for_account("ns", "gsa-1").is_empty());
        assert!(index.is_empty());
    }
}
