//! The controllers and what they share: one [`Context`] with the Kubernetes client, the Gebeta
//! client, metrics, the event publisher and settings.

pub mod access_token;
pub mod backoff;
pub mod compact;
pub mod conditions;
pub mod events;
pub mod own_writes;
pub mod reason;
pub mod relist;
pub mod service_account;
pub mod upstream_audit;

use std::{sync::Arc, time::Duration};

use k8s_openapi::{api::core::v1::ObjectReference, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{
    Api, Client, Resource,
    api::{Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        events::{Event, EventType, Reporter},
        reflector,
        watcher::{self, watcher},
    },
};
use serde::{Serialize, de::DeserializeOwned};

use crate::{crd::metadata::OPERATOR_DOMAIN, gebeta::GebetaClient, metrics::Metrics};

/// Field manager of every write the operator makes (server-side apply and status patches).
pub const FIELD_MANAGER: &str = "gebeta-operator";
/// Label on every object the operator creates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "gebeta-operator";

/// Where the operator's default Gebeta user token lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretLocation {
    pub namespace: String,
    pub name: String,
    pub key: String,
}

/// Settings the controllers read; filled from the command line by the binary.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The operator's own management credentials, used when an object names none.
    pub default_user_token: Option<SecretLocation>,
    /// Namespaces whose objects may use `default_user_token` (`None`: every namespace).
    pub default_credentials_namespaces: Option<Vec<String>>,
    /// How often an unchanged object is compared with the upstream account (drift detection).
    pub resync_interval: Duration,
    /// Lifetime assumed for an access token whose JWT carries no `exp` ([assumed]).
    pub default_token_lifetime: Duration,
    /// Longest access-token lifetime believed; a longer one is planned with the default.
    pub max_token_lifetime: Duration,
    /// Work done at once, per controller (for access tokens: calls and writes, earliest
    /// expiry first; see `access_token::gate`).
    pub max_concurrent_reconciles: u16,
    /// How long after an access token's last Gebeta call a call only a refresh request or
    /// changed inputs ask for waits (see `access_token::plan::DEFAULT_NUDGE_INTERVAL`).
    pub refresh_request_interval: Duration,
    /// Identity of this replica in events (the pod name).
    pub instance: String,
    /// How often the leader audits the organization's upstream accounts and exports the
    /// counts as metrics (`None`: never; see [`upstream_audit`]).
    pub audit_interval: Option<Duration>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_user_token: None,
            default_credentials_namespaces: None,
            resync_interval: Duration::from_secs(600),
            default_token_lifetime: Duration::from_secs(3600),
            max_token_lifetime: Duration::from_secs(30 * 24 * 3600),
            max_concurrent_reconciles: 16,
            refresh_request_interval: access_token::plan::DEFAULT_NUDGE_INTERVAL,
            instance: "gebeta-operator".into(),
            audit_interval: None,
        }
    }
}

/// Whether `meta` belongs to the object with `uid`: the managed-by label and a controller
/// owner reference to that UID. The one ownership check of both controllers: an object
/// failing it is never written over or deleted.
pub fn is_ours(meta: &ObjectMeta, uid: &str) -> bool {
    let labelled = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY);
    let owned = meta
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.uid == uid && r.controller == Some(true));
    labelled && owned
}

/// An event a plan decided to publish (its note never holds a secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventNote {
    pub type_: EventType,
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
}

impl EventNote {
    pub fn warning(reason: &'static str, action: &'static str, note: &str) -> EventNote {
        EventNote {
            type_: EventType::Warning,
            reason,
            action,
            note: note.to_string(),
        }
    }

    pub fn normal(reason: &'static str, action: &'static str, note: &str) -> EventNote {
        EventNote {
            type_: EventType::Normal,
            ..EventNote::warning(reason, action, note)
        }
    }
}

/// What every reconcile gets.
pub struct Context {
    pub kube: Client,
    pub gebeta: GebetaClient,
    pub metrics: Arc<Metrics>,
    pub events: events::EventPublisher,
    pub settings: Settings,
    /// Status versions this process wrote, to skip stale copies from the watch cache.
    pub own_writes: own_writes::OwnWrites,
}

impl Context {
    pub fn new(
        kube: Client,
        gebeta: GebetaClient,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> Arc<Self> {
        let reporter = Reporter {
            controller: MANAGED_BY.into(),
            instance: Some(settings.instance.clone()),
        };
        let events = events::EventPublisher::new(kube.clone(), reporter);
        Arc::new(Context {
            kube,
            gebeta,
            metrics,
            events,
            settings,
            own_writes: own_writes::OwnWrites::default(),
        })
    }

    /// Writes an object's status (server-side apply as the operator's field manager) and notes
    /// the version written, and the one it was written over (`before`, when the caller knows
    /// it), as our own (see [`own_writes`]). The one status writer of both controllers.
    pub async fn write_status<K>(
        &self,
        api: &Api<K>,
        name: &str,
        before: Option<&str>,
        status: &impl Serialize,
    ) -> Result<K, kube::Error>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let patch = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": status,
        });
        let written = api
            .patch_status(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        let meta = written.meta();
        self.own_writes.record_over(
            meta.uid.as_deref().unwrap_or_default(),
            before,
            meta.resource_version.as_deref(),
        );
        Ok(written)
    }

    /// Publishes the events a plan decided, in order.
    pub async fn publish(&self, regarding: &ObjectReference, events: Vec<EventNote>) {
        for e in events {
            self.event(regarding, e.type_, e.reason, e.action, e.note)
                .await;
        }
    }

    /// Publishes an event; a failure to publish is logged, never fatal to a reconcile.
    /// `note` must never contain a secret.
    pub async fn event(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(err) = self.events.publish(&event, regarding).await {
            tracing::warn!(%err, reason, "could not publish event");
        }
    }
}

/// Stands in a cached object for the annotations left out: a digest of them, so that any
/// change a user makes still changes the object as the controllers see it (an annotation
/// nudge ends a service account's backoff). A key with a space is not a valid annotation key,
/// so no real annotation can clash with it.
pub const OTHER_ANNOTATIONS_DIGEST: &str = "gebeta.app/ digest of other annotations";

/// A 64-bit digest of a value kept only to be compared (a UID, a resource version, a
/// namespace and name): a key without an allocation. Two values whose digests collide (odds
/// 2⁻⁶⁴) are taken as one.
pub fn digest64<T: std::hash::Hash + ?Sized>(value: &T) -> u64 {
    use std::hash::{DefaultHasher, Hasher};
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// Below this capacity a per-object table is not shrunk (see [`shrink_if_sparse`]).
pub const SHRINK_FLOOR: usize = 64;

/// Gives a per-object table's room back once it is mostly empty: a burst (an apply, a
/// restart) leaves it sized for every object. Amortised: it shrinks to twice its length, so
/// by half or more each time.
pub fn shrink_if_sparse<K: Eq + std::hash::Hash, V>(map: &mut std::collections::HashMap<K, V>) {
    if map.capacity() > SHRINK_FLOOR && map.len() * 4 < map.capacity() {
        map.shrink_to((map.len() * 2).max(SHRINK_FLOOR));
    }
}

/// A controller whose cache keeps its objects trimmed by [`trim_metadata`] (see
/// [`settled_controller`]).
pub fn lean_controller<K>(api: kube::Api<K>, config: watcher::Config) -> Controller<K>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Unpin + Send + Sync,
{
    settled_controller(api, config, |obj: &mut K| trim_metadata(obj.meta_mut()))
}

/// A controller over the objects `api` lists, cached as `keep` leaves them, whose reconciles
/// are woken only for objects its cache shows (see [`relist`]; kube's `Controller::new`
/// wakes them during a relist, before its cache shows the new list).
pub fn settled_controller<K>(
    api: kube::Api<K>,
    config: watcher::Config,
    keep: impl FnMut(&mut K) + Send + 'static,
) -> Controller<K>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Unpin + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let events = watcher(api, config).modify(keep).reflect(writer);
    Controller::for_stream(relist::settled_touched(events, reader.clone()), reader)
}

/// A Kubernetes error as status messages and event notes show it: the API server's own message
/// and code, not the `Debug` dump of its `Status` (which doubled the text and pushed event notes
/// past the API server's 1 KiB limit, so the event was refused).
pub fn describe_kube_error(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => format!("{} (HTTP {})", status.message, status.code),
        other => other.to_string(),
    }
}

/// Leaves out of a cached object what no controller reads: `managedFields` (the fields every
/// manager owns), labels (selection happens in the API server) and annotations other than the
/// operator's (under [`OPERATOR_DOMAIN`], the ones the controllers read), which are replaced by
/// their digest. At tens of thousands of objects these are a
/// large part of the cache (labels alone: a 560-byte tree node per object; a GitOps tool's
/// `last-applied-configuration` annotation: the whole object again).
pub fn trim_metadata(meta: &mut ObjectMeta) {
    use std::hash::{Hash, Hasher};
    meta.managed_fields = None;
    meta.labels = None;
    let Some(annotations) = meta.annotations.take() else {
        return;
    };
    let (mut kept, others): (
        std::collections::BTreeMap<_, _>,
        std::collections::BTreeMap<_, _>,
    ) = annotations
        .into_iter()
        .partition(|(k, _)| k.split_once('/').is_some_and(|(p, _)| p == OPERATOR_DOMAIN));
    if !others.is_empty() {
        let mut digest = std::collections::hash_map::DefaultHasher::new();
        others.hash(&mut digest);
        kept.insert(
            OTHER_ANNOTATIONS_DIGEST.into(),
            format!("{:016x}", digest.finish()),
        );
    }
    meta.annotations = (!kept.is_empty()).then_some(kept);
}

/// Which objects a controller watches: all namespaces (empty list) or the listed ones, and
/// optionally only objects matching a label selector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchScope {
    pub namespaces: Vec<String>,
    pub label_selector: Option<String>,
}

impl WatchScope {
    /// One `Api` per watched namespace (or one cluster-wide `Api`).
    pub fn apis<K>(&self, client: &Client) -> Vec<kube::Api<K>>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        if self.namespaces.is_empty() {
            vec![kube::Api::all(client.clone())]
        } else {
            self.namespaces
                .iter()
                .map(|ns| kube::Api::namespaced(client.clone(), ns))
                .collect()
        }
    }

    /// The watched namespaces, `None` standing for all namespaces.
    pub fn namespaces(&self) -> Vec<Option<String>> {
        if self.namespaces.is_empty() {
            vec![None]
        } else {
            self.namespaces.iter().cloned().map(Some).collect()
        }
    }

    /// An `Api` in namespace `ns`, or across all namespaces for `None`.
    pub fn api_in<K>(&self, client: &Client, ns: Option<&str>) -> kube::Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match ns {
            Some(ns) => kube::Api::namespaced(client.clone(), ns),
            None => kube::Api::all(client.clone()),
        }
    }

    /// The watcher configuration for the primary resource.
    pub fn watcher_config(&self) -> kube::runtime::watcher::Config {
        let config = kube::runtime::watcher::Config::default().any_semantic();
        match &self.label_selector {
            Some(selector) => config.labels(selector),
            None => config,
        }
    }
}

/// Tracks the watches that have not synced yet; `/readyz` turns true when none is left.
#[derive(Clone, Default)]
pub struct Readiness {
    pending: Arc<std::sync::atomic::AtomicUsize>,
    registered: Arc<std::sync::atomic::AtomicBool>,
}

impl Readiness {
    /// Registers a watch; call [`SyncGuard::synced`] once its first list has completed.
    pub fn register(&self) -> SyncGuard {
        self.registered
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.pending
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        SyncGuard {
            pending: self.pending.clone(),
        }
    }

    /// True when at least one watch was registered and every registered watch has synced.
    pub fn is_ready(&self) -> bool {
        self.registered.load(std::sync::atomic::Ordering::SeqCst)
            && self.pending.load(std::sync::atomic::Ordering::SeqCst) == 0
    }

    /// Marks a store's watch synced once the store has its first complete list.
    pub fn track<K>(&self, store: kube::runtime::reflector::Store<K>)
    where
        K: kube::Resource + Clone + Send + Sync + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
    {
        let guard = self.register();
        tokio::spawn(async move {
            // Polled again every 250 ms: the store's readiness future keeps only the waker of
            // its last poller, and the controller's own applier polls it too, so a single
            // `.await` here may never be woken.
            loop {
                match tokio::time::timeout(Duration::from_millis(250), store.wait_until_ready())
                    .await
                {
                    Ok(Ok(())) => break guard.synced(),
                    Ok(Err(_)) => break,
                    Err(_elapsed) => continue,
                }
            }
        });
    }
}

/// Keeps the `objects{controller,ready}` gauge current from the controllers' stores, every
/// few seconds until `shutdown`.
pub fn report_ready_counts<K>(
    controller: &'static str,
    stores: Vec<kube::runtime::reflector::Store<K>>,
    metrics: Arc<Metrics>,
    shutdown: tokio_util::sync::CancellationToken,
    is_ready: fn(&K) -> bool,
) where
    K: kube::Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    every(Duration::from_secs(5), shutdown, move || {
        let (mut ready, mut not_ready) = (0, 0);
        for obj in stores.iter().flat_map(|s| s.state()) {
            if is_ready(&obj) {
                ready += 1;
            } else {
                not_ready += 1;
            }
        }
        metrics.set_objects(controller, ready, not_ready);
    });
}

/// Runs `f` every `period` (the first time at once) until `shutdown`, on a task of its own.
pub fn every(
    period: Duration,
    shutdown: tokio_util::sync::CancellationToken,
    mut f: impl FnMut() + Send + 'static,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => f(),
            }
        }
    });
}

/// One watch that has to sync before the operator is ready.
pub struct SyncGuard {
    pending: Arc<std::sync::atomic::AtomicUsize>,
}

impl SyncGuard {
    pub fn synced(self) {
        self.pending
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Runs every controller until `shutdown` is cancelled. The one place controllers are wired.
pub async fn run_all(
    ctx: Arc<Context>,
    scope: WatchScope,
    shutdown: tokio_util::sync::CancellationToken,
    readiness: Readiness,
) {
    tokio::join!(
        service_account::run(
            ctx.clone(),
            scope.clone(),
            shutdown.clone(),
            readiness.clone()
        ),
        access_token::run(ctx.clone(), scope.clone(), shutdown.clone(), readiness),
        upstream_audit::run(ctx, scope, shutdown),
    );
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn meta(annotations: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some("acct".into()),
            labels: Some(BTreeMap::from([("team".into(), "maps".into())])),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            finalizers: Some(vec!["gebeta.app/cleanup".into()]),
            ..ObjectMeta::default()
        }
    }

    fn trimmed(annotations: &[(&str, &str)]) -> ObjectMeta {
        let mut m = meta(annotations);
        trim_metadata(&mut m);
        m
    }

    #[test]
    fn trimmed_objects_keep_the_operators_annotations_and_a_digest_of_the_rest() {
        let m = trimmed(&[
            ("gebeta.app/rotate", "1"),
            ("kubectl.kubernetes.io/last-applied-configuration", "{...}"),
        ]);
        assert_eq!(m.labels, None);
        assert_eq!(m.finalizers, meta(&[]).finalizers, "finalizers are read");
        let a = m.annotations.unwrap();
        assert_eq!(a.get("gebeta.app/rotate").map(String::as_str), Some("1"));
        assert!(a.contains_key(OTHER_ANNOTATIONS_DIGEST));
        assert_eq!(a.len(), 2);
        // Only the operator's: no digest; none at all: none.
        let ours = trimmed(&[("gebeta.app/refresh", "x")]).annotations.unwrap();
        assert_eq!(ours.keys().collect::<Vec<_>>(), ["gebeta.app/refresh"]);
        assert_eq!(trimmed(&[]).annotations, None);
    }

    #[test]
    fn any_change_to_other_annotations_changes_the_digest() {
        let digest =
            |a: &[(&str, &str)]| trimmed(a).annotations.unwrap()[OTHER_ANNOTATIONS_DIGEST].clone();
        let base = digest(&[("nudge", "1")]);
        assert_eq!(base, digest(&[("nudge", "1"), ("gebeta.app/rotate", "1")]));
        assert_ne!(base, digest(&[("nudge", "2")]));
        assert_ne!(base, digest(&[("nudge2", "1")]));
        assert_ne!(base, digest(&[("nudge", "1"), ("other", "")]));
    }
}
