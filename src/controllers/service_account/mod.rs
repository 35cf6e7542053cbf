//! The `GebetaServiceAccount` controller: one upstream service account per object, created,
//! patched, suspended, reactivated, rotated and deleted to match the spec.
//!
//! Shape: `reconcile` runs kube's finalizer helper and dispatches to [`apply`] or [`cleanup`].
//! `apply` decides which rotation to run ([`plan::rotation_to_run`]: the annotation, one in
//! progress, or a scheduled one due), then `sync` walks the crash-safe sequence in a fixed
//! order — recover an interrupted creation, rotate (record, then create the replacement),
//! retire replaced accounts (after the grace, [`plan::consumers_behind`]), read the account
//! (or adopt, or recreate one deleted upstream, or create) — and decides what to do about the
//! account it read with one pure function, [`plan::assess`]: report (unknown values, revoked,
//! immutable fields), patch the drift (event from [`plan::patch_event`]), or nothing.
//! `finish` sets the conditions and writes status only when it changed. Reasons come from
//! [`crate::controllers::reason`]; backoff, the status writer and the ownership check are
//! the ones the access-token controller uses.
//!
//! # Crash-safe creation
//! The API returns an account's token once, at creation, and has no idempotency key. So:
//! 1. `status.pendingCreation` is written before the create call;
//! 2. the token is written to its Secret (annotated with the account id) before anything else;
//! 3. then `status.accountId` is recorded and `pendingCreation` cleared.
//!
//! A reconcile that finds `pendingCreation` set lists the organization's accounts and takes
//! every account whose description carries this object's marker ([`plan::marker`]): the one
//! named by the token Secret's annotation is kept (its token was stored); every other one is
//! deleted (its token is lost), and creation starts over if none was kept. Whatever moment
//! the operator dies, the object ends with exactly one live account and no orphan.

pub mod plan;
pub mod user_token;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{StreamExt, future::join_all};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{
    ByteString,
    api::core::v1::{ObjectReference, Secret},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{ListParams, PartialObjectMeta, Patch, PatchParams},
    runtime::{
        WatchStreamExt,
        controller::Action,
        events::EventType,
        finalizer::{Event as Finalizer, finalizer},
        watcher,
    },
};
use tokio_util::sync::CancellationToken;

use super::{
    Context, FIELD_MANAGER, MANAGED_BY, MANAGED_BY_LABEL, Readiness, WatchScope,
    backoff::{jitter_seed, retry_delay},
    compact::{Compact, Compactable},
    conditions::{self, format_time},
    reason,
};
use crate::{
    crd::{
        DeletionPolicy, GebetaAccessToken, GebetaServiceAccount, GebetaServiceAccountStatus,
        service_account::PendingCreation,
    },
    gebeta::{self, AccountPatch, AccountState, Token},
};

/// Holds an object until its upstream account is cleaned up according to `deletionPolicy`.
pub const FINALIZER: &str = "gebeta.app/upstream-account";
/// Set to a new value to get a fresh account (and token); the old one is retired according to
/// `deletionPolicy`. Also the way out of `RevokedUpstream`.
pub const ROTATE_ANNOTATION: &str = "gebeta.app/rotate";
/// `"true"` lets a deletion finish without touching the upstream account (for when cleanup can
/// never succeed, e.g. the management credentials are gone for good).
pub const SKIP_CLEANUP_ANNOTATION: &str = "gebeta.app/skip-upstream-cleanup";
/// On the token Secret: the id of the account whose token it holds.
pub const ACCOUNT_ID_ANNOTATION: &str = "gebeta.app/account-id";
/// On the token Secret: the name of the owning GebetaServiceAccount.
pub const SERVICE_ACCOUNT_LABEL: &str = "gebeta.app/service-account";
/// Key of the token in the token Secret.
pub const TOKEN_KEY: &str = "token";

const CONTROLLER: &str = "service_account";

/// Failures that end a reconcile with an error (Kubernetes trouble); Gebeta and input problems
/// are reported in status instead and never reach here.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API error: {}", crate::controllers::describe_kube_error(.0))]
    Kube(#[from] kube::Error),
    #[error("upstream cleanup failed: {0}")]
    Cleanup(String),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl Error {
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Cleanup(_) => "cleanup",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

/// A problem reported in status: a stable reason, a message without secrets, and when to look
/// again.
#[derive(Debug)]
struct Failure {
    reason: &'static str,
    message: String,
    retry_after: Option<Duration>,
}

impl Failure {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Failure {
            reason,
            message: message.into(),
            retry_after: None,
        }
    }

    fn upstream(err: &gebeta::Error, doing: &str) -> Self {
        let reason = match err {
            gebeta::Error::Unauthorized { .. } => reason::INVALID_CREDENTIALS,
            gebeta::Error::Validation { .. } => reason::UPSTREAM_REJECTED,
            gebeta::Error::Config { .. } => reason::CONFIGURATION_ERROR,
            _ => reason::UPSTREAM_UNAVAILABLE,
        };
        Failure {
            reason,
            message: format!("{doing}: {err}"),
            retry_after: err.retry_after(),
        }
    }
}

impl From<kube::Error> for Failure {
    fn from(err: kube::Error) -> Self {
        Failure::new(
            reason::KUBERNETES_ERROR,
            crate::controllers::describe_kube_error(&err),
        )
    }
}

/// How often a rotation waiting for its consumers looks at them again: at first...
const CONSUMER_RECHECK: Duration = Duration::from_secs(5);
/// ...and at most this far apart once they have lagged for minutes: each look lists the
/// namespace's access tokens and reads the account upstream, and a consumer that cannot switch
/// (its other token source broken) keeps a rotation waiting for as long as it stays so.
const CONSUMER_RECHECK_MAX: Duration = Duration::from_secs(60);

/// The wait before the next look at consumers that have lagged `waited` past the grace
/// period: a fifth of it, within [`CONSUMER_RECHECK`] and [`CONSUMER_RECHECK_MAX`].
fn consumer_recheck(waited: Duration) -> Duration {
    (waited / 5).clamp(CONSUMER_RECHECK, CONSUMER_RECHECK_MAX)
}

/// The object is in sync, but a rotation waits before retiring the replaced account.
#[derive(Debug)]
struct Waiting {
    note: String,
    /// When to look again.
    recheck: Duration,
}

/// When the next scheduled rotation is due, for an account the operator made and rotates.
fn next_rotation(
    gsa: &GebetaServiceAccount,
    status: &GebetaServiceAccountStatus,
) -> Option<Timestamp> {
    let schedule = plan::schedule(&gsa.spec).ok().flatten()?;
    if status.adopted || status.account_id.is_none() {
        return None;
    }
    let since = status
        .last_rotation_time
        .as_deref()
        .or(status.created_at.as_deref())?
        .parse::<Timestamp>()
        .ok()?;
    let seed = jitter_seed(&gsa.uid().unwrap_or_default());
    Some(plan::next_rotation(since, schedule.interval, seed))
}

/// `wake`, or sooner if the next scheduled rotation (`next`, computed by [`next_rotation`],
/// not read back from the status, whose times are rounded to the second) comes first.
fn earliest(wake: Duration, next: Option<Timestamp>) -> Duration {
    match next {
        Some(at) => {
            let until = Duration::try_from(Timestamp::now().duration_until(at)).unwrap_or_default();
            wake.min(until + Duration::from_millis(100))
        }
        None => wake,
    }
}

/// What is known about an object between reconciles.
#[derive(Debug, Clone, Copy)]
struct Check {
    /// When the next upstream comparison is due, and the generation it compares.
    due: Instant,
    generation: Option<i64>,
    /// [`Reconciler::token_secret_events`] when the token Secret was last found in place (0:
    /// not yet).
    token_secret_seen: u64,
}

/// State of the controller beyond the shared context.
struct Reconciler {
    ctx: Arc<Context>,
    /// Per object UID: consecutive failures and until when to wait before the next attempt.
    failures: Mutex<HashMap<String, Backoff>>,
    /// When each object's next upstream comparison is due, and at which generation (a reconcile
    /// triggered by our own writes or by a restart makes no Gebeta call until the resync is
    /// due), and when its token Secret was last found in place. Keyed by the UID's digest ([`super::digest64`]): one entry per object, for good.
    checked: Mutex<HashMap<u64, Check>>,
    /// Counts the events of the watch on the token Secrets (relists included): a token Secret
    /// found in place at the current count has not changed since, and is not read again.
    /// Starts at 1 (0 in [`Check`] is "never found").
    token_secret_events: Arc<AtomicU64>,
    /// The controllers' caches, to tell whether the object named by an account's marker exists.
    stores: Mutex<Vec<kube::runtime::reflector::Store<CachedAccount>>>,
    /// The caches see every namespace: an owner absent from them is gone.
    cluster_wide: bool,
}

impl Reconciler {
    /// Another object (in the caches) that names `account_id` in `spec.accountId` and comes
    /// first: one that already holds the account keeps it; among equals, the older (then the
    /// smaller UID). As `namespace/name`.
    fn earlier_adopter(&self, gsa: &GebetaServiceAccount, account_id: &str) -> Option<String> {
        // Others are compared by their summary: they name `account_id` (filtered below), so
        // holding the account they name is holding this one.
        let order = |holds: bool, meta: &ObjectMeta| {
            (
                !holds,
                meta.creation_timestamp.as_ref().map(|t| t.0),
                meta.uid.clone(),
            )
        };
        let holds = gsa
            .status
            .as_ref()
            .is_some_and(|s| s.adopted && s.account_id.as_deref() == Some(account_id));
        let mine = order(holds, &gsa.metadata);
        self.stores
            .lock()
            .expect("not poisoned")
            .iter()
            .flat_map(|s| s.state())
            .filter(|o| o.meta().uid != gsa.metadata.uid)
            .filter(|o| o.summary().named_account.as_deref() == Some(account_id))
            .filter(|o| o.meta().deletion_timestamp.is_none())
            .filter(|o| order(o.summary().holds_named, o.meta()) < mine)
            .map(|o| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()))
            .min()
    }

    /// Whether the object with `uid` may still exist: it is in a cache, or it could be in a
    /// namespace this operator does not watch.
    fn object_may_exist(&self, uid: &str) -> bool {
        !self.cluster_wide
            || self
                .stores
                .lock()
                .expect("not poisoned")
                .iter()
                .flat_map(|s| s.state())
                .any(|o| o.meta().uid.as_deref() == Some(uid))
    }
}

/// Exponential backoff state of one object.
struct Backoff {
    failures: u32,
    until: Instant,
    /// What the user controls ([`user_fingerprint`]) when the backoff started: a change ends
    /// the wait at once, while reconciles caused by our own status writes wait it out.
    fingerprint: u64,
}

/// A hash of what a user changes to fix a problem: the spec (via the generation) and the
/// annotations (rotation, cleanup skip, or any nudge).
fn user_fingerprint(meta: &ObjectMeta) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    meta.generation.hash(&mut hasher);
    meta.annotations.hash(&mut hasher);
    hasher.finish()
}

/// A service account as the controller's cache keeps it (see [`compact`]).
type CachedAccount = Compact<GebetaServiceAccount>;

/// What scans of every cached account read: the `objects` gauge, and the search for an
/// earlier adopter of an upstream account (see [`Reconciler::earlier_adopter`]).
#[derive(Clone, Debug, PartialEq)]
pub struct AccountSummary {
    pub ready: bool,
    /// `spec.accountId`.
    pub named_account: Option<Box<str>>,
    /// The status holds the account `spec.accountId` names, adopted.
    pub holds_named: bool,
}

impl Compactable for GebetaServiceAccount {
    type Summary = AccountSummary;

    fn summarize(&self) -> AccountSummary {
        let status = self.status.as_ref();
        AccountSummary {
            ready: status.is_some_and(|s| conditions::is_true(&s.conditions, conditions::READY)),
            named_account: self.spec.account_id.as_deref().map(Box::from),
            holds_named: status.is_some_and(|s| {
                s.adopted && s.account_id.is_some() && s.account_id == self.spec.account_id
            }),
        }
    }
}

impl Reconciler {
    /// Records a failure and returns how long to wait before the next attempt.
    fn backoff(&self, uid: &str, fingerprint: u64, floor: Option<Duration>) -> Duration {
        let mut failures = self.failures.lock().expect("not poisoned");
        let entry = failures.entry(uid.to_string()).or_insert(Backoff {
            failures: 0,
            until: Instant::now(),
            fingerprint,
        });
        entry.failures = entry.failures.saturating_add(1);
        // The backoff both controllers use; an account has no token lifetime to bound it.
        let delay = retry_delay(entry.failures, floor, None, rand::random::<f64>());
        entry.until = Instant::now() + delay;
        entry.fingerprint = fingerprint;
        delay
    }

    /// How long the object still has to wait after a failure, unless the user changed it.
    fn waiting(&self, uid: &str, fingerprint: u64) -> Option<Duration> {
        let failures = self.failures.lock().expect("not poisoned");
        let entry = failures.get(uid).filter(|b| b.fingerprint == fingerprint)?;
        entry
            .until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    fn succeeded(&self, uid: &str) {
        self.failures.lock().expect("not poisoned").remove(uid);
    }

    /// The time until the next upstream comparison is due, or None when it is due now.
    /// After a restart the first comparison of each healthy object is spread over one resync
    /// interval, so a restart never stampedes the API.
    fn resync_due_in(&self, uid: &str, generation: Option<i64>, healthy: bool) -> Option<Duration> {
        if !healthy {
            return None;
        }
        let now = Instant::now();
        let mut checked = self.checked.lock().expect("not poisoned");
        match checked.get(&super::digest64(uid)) {
            Some(check) if check.generation == generation => check
                .due
                .checked_duration_since(now)
                .filter(|d| !d.is_zero()),
            Some(_) => None,
            None => {
                let delay = self
                    .ctx
                    .settings
                    .resync_interval
                    .mul_f64(rand::random::<f64>());
                checked.insert(
                    super::digest64(uid),
                    Check {
                        due: now + delay,
                        generation,
                        token_secret_seen: 0,
                    },
                );
                Some(delay)
            }
        }
    }

    fn mark_checked(&self, uid: &str, generation: Option<i64>) {
        let due = Instant::now() + self.ctx.settings.resync_interval;
        self.checked
            .lock()
            .expect("not poisoned")
            .entry(super::digest64(uid))
            .and_modify(|check| {
                check.due = due;
                check.generation = generation;
            })
            .or_insert(Check {
                due,
                generation,
                token_secret_seen: 0,
            });
    }

    /// The count of token-Secret events to record once the object's token Secret is found in
    /// place, or `None` when it was found at this count already (nothing to read). Taken
    /// before the Secret is read: an event after it makes the next check read again.
    fn token_secret_to_check(&self, uid: &str) -> Option<u64> {
        let now = self.token_secret_events.load(Ordering::Acquire);
        let seen = self
            .checked
            .lock()
            .expect("not poisoned")
            .get(&super::digest64(uid))
            .map(|c| c.token_secret_seen);
        (seen != Some(now)).then_some(now)
    }

    /// Records that the token Secret was found in place at count `seen` (for an object already
    /// known: one being created is checked again at its next reconcile).
    fn token_secret_found(&self, uid: &str, seen: u64) {
        if let Some(check) = self
            .checked
            .lock()
            .expect("not poisoned")
            .get_mut(&super::digest64(uid))
        {
            check.token_secret_seen = seen;
        }
    }

    fn forget(&self, uid: &str) {
        self.ctx.own_writes.forget(uid);
        self.checked
            .lock()
            .expect("not poisoned")
            .remove(&super::digest64(uid));
        self.failures.lock().expect("not poisoned").remove(uid);
    }
}

fn with_jitter(base: Duration, fraction: f64) -> Duration {
    let factor = 1.0 + fraction * (2.0 * rand::random::<f64>() - 1.0);
    base.mul_f64(factor.max(0.0))
}

/// Runs the controller until `shutdown` is cancelled.
pub async fn run(
    ctx: Arc<Context>,
    scope: WatchScope,
    shutdown: CancellationToken,
    readiness: Readiness,
) {
    let reconciler = Arc::new(Reconciler {
        ctx: ctx.clone(),
        failures: Mutex::default(),
        checked: Mutex::default(),
        token_secret_events: Arc::new(AtomicU64::new(1)),
        stores: Mutex::default(),
        cluster_wide: scope.namespaces.is_empty(),
    });
    let secrets_config = watcher::Config::default()
        .labels(SERVICE_ACCOUNT_LABEL)
        .any_semantic();
    let mut stores = Vec::new();
    let controllers: Vec<_> = scope
        .namespaces()
        .into_iter()
        .map(|ns| {
            let api: Api<CachedAccount> = scope.api_in(&ctx.kube, ns.as_deref());
            let secrets: Api<PartialObjectMeta<Secret>> = scope.api_in(&ctx.kube, ns.as_deref());
            // kube's `owns`, with every event counted first (see `token_secret_events`).
            let events = reconciler.token_secret_events.clone();
            let token_secrets = watcher(secrets, secrets_config.clone())
                .inspect(move |_| {
                    events.fetch_add(1, Ordering::AcqRel);
                })
                .touched_objects();
            let controller = crate::controllers::lean_controller(api, scope.watcher_config())
                .owns_stream(token_secrets)
                .with_config(
                    kube::runtime::controller::Config::default()
                        .concurrency(ctx.settings.max_concurrent_reconciles),
                )
                .graceful_shutdown_on(shutdown.clone().cancelled_owned());
            readiness.track(controller.store());
            stores.push(controller.store());
            reconciler
                .stores
                .lock()
                .expect("not poisoned")
                .push(controller.store());
            let reconciler = reconciler.clone();
            async move {
                controller
                    .run(reconcile, error_policy, reconciler)
                    .for_each(|result| async move {
                        if let Err(err) = result {
                            tracing::debug!(%err, "service account reconcile ended with an error");
                        }
                    })
                    .await
            }
        })
        .collect();
    super::report_ready_counts(
        CONTROLLER,
        stores,
        ctx.metrics.clone(),
        shutdown.clone(),
        |gsa: &CachedAccount| gsa.summary().ready,
    );
    tokio::join!(
        join_all(controllers),
        user_token::run(ctx.clone(), scope.clone(), shutdown),
    );
}

async fn reconcile(cached: Arc<CachedAccount>, rec: Arc<Reconciler>) -> Result<Action, Error> {
    let gsa = Arc::new(cached.expand());
    let started = Instant::now();
    let ns = gsa.namespace().unwrap_or_default();
    let span = tracing::info_span!("reconcile", controller = CONTROLLER, namespace = %ns, name = %gsa.name_any());
    let api: Api<GebetaServiceAccount> = Api::namespaced(rec.ctx.kube.clone(), &ns);
    let result = tracing::Instrument::instrument(
        finalizer(&api, FINALIZER, gsa, |event| async {
            match event {
                Finalizer::Apply(gsa) => apply(&gsa, &api, &rec).await,
                Finalizer::Cleanup(gsa) => cleanup(&gsa, &api, &rec).await,
            }
        }),
        span,
    )
    .await
    .map_err(|err| match err {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    });
    let label = match &result {
        Ok(_) => "ok",
        Err(e) => e.label(),
    };
    rec.ctx
        .metrics
        .observe_reconcile(CONTROLLER, label, started.elapsed());
    result
}

fn error_policy(gsa: Arc<CachedAccount>, err: &Error, rec: Arc<Reconciler>) -> Action {
    let delay = rec.backoff(
        &gsa.uid().unwrap_or_default(),
        user_fingerprint(gsa.meta()),
        None,
    );
    tracing::warn!(namespace = %gsa.namespace().unwrap_or_default(), name = %gsa.name_any(), %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The name of the Secret that holds the account's token.
pub fn token_secret_name(gsa: &GebetaServiceAccount) -> String {
    gsa.spec
        .token_secret_name
        .clone()
        .unwrap_or_else(|| format!("{}-token", gsa.name_any()))
}

fn object_ref(gsa: &GebetaServiceAccount) -> ObjectReference {
    gsa.object_ref(&())
}

async fn apply(
    gsa: &GebetaServiceAccount,
    api: &Api<GebetaServiceAccount>,
    rec: &Reconciler,
) -> Result<Action, Error> {
    let ctx = &rec.ctx;
    let uid = gsa.uid().unwrap_or_default();
    if ctx
        .own_writes
        .is_superseded(&uid, gsa.metadata.resource_version.as_deref())
    {
        // A copy from between two of our own status writes: the event of the later write
        // brings the current one (the requeue only guards against a lost event).
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    if let Some(wait) = rec.waiting(&uid, user_fingerprint(&gsa.metadata)) {
        // Backing off after a failure (this reconcile comes from our own status write or a
        // Secret event): no API call until the wait is over or the user changes the object.
        return Ok(Action::requeue(wait));
    }
    let original = gsa.status.clone().unwrap_or_default();
    let mut status = original.clone();
    let generation = gsa.metadata.generation;
    let now = Timestamp::now();
    let next = next_rotation(gsa, &status);
    status.next_rotation_time = next.map(format_time);
    let rotate = gsa.annotations().get(ROTATE_ANNOTATION).cloned();
    let requested = rotate.filter(|r| Some(r) != status.observed_rotation.as_ref());
    let rotation = plan::rotation_to_run(
        requested.as_deref(),
        status.rotation_in_progress.as_deref(),
        next,
        now,
    );

    let healthy = conditions::is_true(&status.conditions, conditions::READY)
        && status.observed_generation == generation
        && status.pending_creation.is_none()
        && rotation.is_none()
        && status.retiring.is_empty()
        && status.account_id.is_some();
    if let Some(due_in) = rec.resync_due_in(&uid, generation, healthy) {
        // Nothing changed since the last comparison: only check the token Secret is still ours.
        match check_token_secret(gsa, &status, rec).await {
            Ok(()) if status == original => {
                let wake = earliest(due_in + Duration::from_secs(1), next);
                return Ok(Action::requeue(wake));
            }
            Ok(()) => return finish(gsa, api, rec, original, status, Ok(None)).await,
            Err(failure) => return finish(gsa, api, rec, original, status, Err(failure)).await,
        }
    }

    let outcome = sync(gsa, api, rec, &mut status, rotation).await;
    if outcome.is_ok() {
        rec.mark_checked(&uid, generation);
    }
    finish(gsa, api, rec, original, status, outcome).await
}

/// Sets conditions from the outcome, writes status if it changed, emits an event when the
/// Ready reason changes, and decides when to look again.
async fn finish(
    gsa: &GebetaServiceAccount,
    api: &Api<GebetaServiceAccount>,
    rec: &Reconciler,
    original: GebetaServiceAccountStatus,
    mut status: GebetaServiceAccountStatus,
    outcome: Result<Option<Waiting>, Failure>,
) -> Result<Action, Error> {
    let ctx = &rec.ctx;
    let uid = gsa.uid().unwrap_or_default();
    let generation = gsa.metadata.generation;
    let now = conditions::now_rfc3339();
    let previous_reason =
        conditions::get(&original.conditions, conditions::READY).map(|c| c.reason.clone());
    status.observed_generation = generation;
    // `sync` may have created the account or rotated it: the schedule counts from the new
    // time, and the status that first reads Ready already shows it (not a write later).
    let next = next_rotation(gsa, &status);
    status.next_rotation_time = next.map(format_time);
    let action = match &outcome {
        Ok(waiting) => {
            rec.succeeded(&uid);
            let (reason, message) = match (status.state, status.adopted, waiting) {
                (_, _, Some(w)) => (reason::ROTATING, w.note.clone()),
                (Some(AccountState::Suspended), _, _) => (reason::SUSPENDED, "the account is suspended, as the spec asks".to_string()),
                (_, true, _) => (reason::READY, "the adopted account matches the spec; its token is not managed by the operator".to_string()),
                _ => (reason::READY, "the account is active and matches the spec".to_string()),
            };
            conditions::set(
                &mut status.conditions,
                conditions::READY,
                true,
                reason,
                message,
                generation,
                &now,
            );
            conditions::set(
                &mut status.conditions,
                conditions::SYNCED,
                true,
                reason::SYNCED,
                "",
                generation,
                &now,
            );
            let resync = with_jitter(ctx.settings.resync_interval, 0.1);
            let wake = match waiting {
                Some(w) => resync.min(w.recheck),
                None => resync,
            };
            Action::requeue(earliest(wake, next))
        }
        Err(failure) => {
            conditions::set(
                &mut status.conditions,
                conditions::READY,
                false,
                failure.reason,
                &failure.message,
                generation,
                &now,
            );
            conditions::set(
                &mut status.conditions,
                conditions::SYNCED,
                false,
                failure.reason,
                &failure.message,
                generation,
                &now,
            );
            if previous_reason.as_deref() != Some(failure.reason) {
                ctx.event(
                    &object_ref(gsa),
                    EventType::Warning,
                    failure.reason,
                    "Reconcile",
                    failure.message.clone(),
                )
                .await;
            }
            tracing::info!(reason = failure.reason, message = %failure.message, "not ready");
            Action::requeue(rec.backoff(&uid, user_fingerprint(&gsa.metadata), failure.retry_after))
        }
    };
    let recovered = outcome.is_ok()
        && previous_reason
            .as_deref()
            .is_some_and(|r| r != reason::READY && r != reason::SUSPENDED && r != reason::ROTATING);
    if recovered {
        ctx.event(
            &object_ref(gsa),
            EventType::Normal,
            reason::RECOVERED,
            "Reconcile",
            "the account is in sync again".into(),
        )
        .await;
    }
    if status != original {
        write_status(api, ctx, gsa, &status).await?;
    }
    Ok(action)
}

/// Writes status and notes the resulting version (see [`crate::controllers::own_writes`]).
/// Writes `status` over the object `gsa` is a copy of. The copy is stale once the write
/// lands: recording it as written over keeps a later reconcile from acting on it while the
/// watch lags (at 10,000 objects it lagged long enough that such a copy, without the new
/// account's id but with its token Secret, sent a reconcile to list every upstream account
/// to recover a creation that had not been lost: 43,308 page reads while applying).
async fn write_status(
    api: &Api<GebetaServiceAccount>,
    ctx: &Context,
    gsa: &GebetaServiceAccount,
    status: &GebetaServiceAccountStatus,
) -> Result<(), kube::Error> {
    let copy = gsa.metadata.resource_version.as_deref();
    ctx.write_status(api, &gsa.name_any(), copy, status)
        .await
        .map(drop)
}

/// Loads the management credentials: the object's `userTokenSecretRef`, or the operator's
/// default user token.
async fn user_token(gsa: &GebetaServiceAccount, ctx: &Context) -> Result<Token, Failure> {
    let ns = gsa.namespace().unwrap_or_default();
    let (namespace, name, key) = match (
        &gsa.spec.user_token_secret_ref,
        &ctx.settings.default_user_token,
    ) {
        (Some(r), _) => (ns.clone(), r.name.clone(), r.key.clone()),
        (None, Some(default)) => {
            if let Some(allowed) = &ctx.settings.default_credentials_namespaces
                && !allowed.contains(&ns)
            {
                return Err(Failure::new(
                    reason::CREDENTIALS_NOT_ALLOWED,
                    format!(
                        "the operator's default user token may not be used in namespace {ns}: \
                         set spec.userTokenSecretRef to a user token Secret of this namespace, or \
                         ask the cluster admin to allow the namespace \
                         (--default-credentials-namespaces)"
                    ),
                ));
            }
            (
                default.namespace.clone(),
                default.name.clone(),
                default.key.clone(),
            )
        }
        (None, None) => {
            return Err(Failure::new(
                reason::MISSING_CREDENTIALS,
                "no management credentials: set spec.userTokenSecretRef or configure the operator's default user token",
            ));
        }
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.kube.clone(), &namespace);
    let secret = secrets.get_opt(&name).await?.ok_or_else(|| {
        Failure::new(
            reason::MISSING_CREDENTIALS,
            format!("user token Secret {namespace}/{name} not found"),
        )
    })?;
    if gsa.metadata.deletion_timestamp.is_none() {
        if secret.metadata.deletion_timestamp.is_some() {
            // Kept only so that objects being deleted can clean up (see `user_token`): a
            // deleted credential is not used for anything else.
            return Err(Failure::new(
                reason::MISSING_CREDENTIALS,
                format!(
                    "user token Secret {namespace}/{name} is being deleted; it is kept only \
                     until the objects using it are cleaned up"
                ),
            ));
        }
        if namespace == ns {
            // Kept readable until this object's cleanup is done (see `user_token`).
            user_token::protect(ctx, &secret).await?;
        }
    }
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&key))
        .map(|b| String::from_utf8_lossy(&b.0).trim().to_string());
    match value {
        Some(v) if !v.is_empty() => Ok(Token::new(v)),
        Some(_) => Err(Failure::new(
            reason::MISSING_CREDENTIALS,
            format!("key {key:?} of Secret {namespace}/{name} is empty"),
        )),
        None => Err(Failure::new(
            reason::MISSING_CREDENTIALS,
            format!("Secret {namespace}/{name} has no key {key:?}"),
        )),
    }
}

/// Brings the upstream account in line with the spec. Writes status itself where crash
/// safety requires it (before and after creating an account).
async fn sync(
    gsa: &GebetaServiceAccount,
    api: &Api<GebetaServiceAccount>,
    rec: &Reconciler,
    status: &mut GebetaServiceAccountStatus,
    rotation: Option<String>,
) -> Result<Option<Waiting>, Failure> {
    let ctx = &rec.ctx;
    let schedule =
        plan::schedule(&gsa.spec).map_err(|message| Failure::new(reason::INVALID_SPEC, message))?;
    let user = user_token(gsa, ctx).await?;
    let uid = gsa.uid().unwrap_or_default();

    if status.pending_creation.is_some() {
        recover_pending_creation(gsa, api, ctx, &user, status).await?;
    }

    let mut waiting = None;
    if let Some(requested) = rotation {
        if status.adopted {
            return Err(Failure::new(
                reason::ROTATION_UNSUPPORTED,
                "an adopted account cannot be rotated: its token is not managed by the operator",
            ));
        }
        if let Some(current) = status.account_id.clone() {
            if status.rotation_in_progress.as_ref() != Some(&requested) {
                // Recorded before the replacement exists: whatever happens next, the account
                // being replaced is not forgotten.
                status.rotation_in_progress = Some(requested.clone());
                if !status.retiring.contains(&current) {
                    status.retiring.push(current.clone());
                }
                write_status(api, ctx, gsa, status).await?;
            }
            if status.retiring.contains(&current) {
                // Recorded with the new account (`create` writes status): the schedule counts
                // from here, and the replaced account stays usable for the grace period.
                let now = Timestamp::now();
                let grace = schedule.map_or(Duration::ZERO, |s| s.grace);
                status.last_rotation_time = Some(format_time(now));
                status.retire_after = (!grace.is_zero()).then(|| {
                    format_time(
                        now.checked_add(SignedDuration::try_from(grace).unwrap_or_default())
                            .unwrap_or(now),
                    )
                });
                create(gsa, api, ctx, &user, status).await?;
                let new = status.account_id.as_deref().unwrap_or_default();
                publish_rotated(gsa, ctx, new, &current).await;
            }
        }
        waiting = retire_replaced(gsa, api, ctx, &user, status).await?;
        if status.retiring.is_empty() {
            status.rotation_in_progress = None;
            if !requested.starts_with(plan::SCHEDULED_PREFIX) {
                status.observed_rotation = Some(requested);
            }
        }
    } else if !status.retiring.is_empty() {
        // A rotation no longer asked for may have left the current account recorded as
        // replaced before its replacement existed: it is not replaced, and not retired.
        if let Some(current) = status.account_id.clone()
            && status.retiring.contains(&current)
        {
            status.retiring.retain(|r| *r != current);
            status.rotation_in_progress = None;
            write_status(api, ctx, gsa, status).await?;
        }
        waiting = retire_replaced(gsa, api, ctx, &user, status).await?;
    }

    let account = match (status.account_id.clone(), gsa.spec.account_id.clone()) {
        (Some(id), _) => match ctx.gebeta.get_account(&user, &id).await {
            Ok(account) => Some(account),
            Err(err) if err.is_not_found() && status.adopted => {
                return Err(Failure::new(
                    reason::ADOPTED_ACCOUNT_NOT_FOUND,
                    format!("account {id} named in spec.accountId does not exist upstream"),
                ));
            }
            Err(err) if err.is_not_found() => {
                ctx.event(
                    &object_ref(gsa),
                    EventType::Warning,
                    reason::ACCOUNT_DELETED_UPSTREAM,
                    "Recreate",
                    format!("account {id} was deleted outside Kubernetes; creating a new one"),
                )
                .await;
                status.account_id = None;
                status.state = None;
                status.created_at = None;
                None
            }
            Err(err) => return Err(Failure::upstream(&err, "reading the account")),
        },
        (None, Some(adopt)) => match ctx.gebeta.get_account(&user, &adopt).await {
            Ok(account) => {
                refuse_foreign_account(rec, gsa, &account)?;
                status.account_id = Some(adopt.clone());
                status.adopted = true;
                ctx.event(
                    &object_ref(gsa),
                    EventType::Normal,
                    reason::ADOPTED,
                    "Adopt",
                    format!("managing existing account {adopt}"),
                )
                .await;
                Some(account)
            }
            Err(err) if err.is_not_found() => {
                return Err(Failure::new(
                    reason::ADOPTED_ACCOUNT_NOT_FOUND,
                    format!("account {adopt} named in spec.accountId does not exist upstream"),
                ));
            }
            Err(err) => return Err(Failure::upstream(&err, "reading the account to adopt")),
        },
        (None, None) => None,
    };

    let account = match account {
        Some(account) => account,
        None => {
            create(gsa, api, ctx, &user, status).await?;
            check_token_secret(gsa, status, rec).await?;
            return Ok(waiting);
        }
    };

    if status.adopted
        && let Err(failure) = refuse_foreign_account(rec, gsa, &account)
    {
        // Adopted before the other object's marker was checked: let go of the account, so
        // that neither a patch nor this object's deletion touches it.
        status.account_id = None;
        status.adopted = false;
        status.state = None;
        return Err(failure);
    }
    // Plan (pure): report a problem, patch what drifted, or nothing.
    if let Some(state) = account.known_state() {
        status.state = Some(state);
    }
    if account.created_at.is_some() {
        // The API may leave it out; the operator's own record (see `create`) stays.
        status.created_at = account.created_at.clone();
    }
    let owner_uid = (!status.adopted).then_some(uid.as_str());
    if let plan::Verdict::Patch { patch, changed } = plan::assess(&gsa.spec, &account, owner_uid)
        .map_err(|(reason, message)| Failure::new(reason, message))?
    {
        let updated = ctx
            .gebeta
            .patch_account(&user, &account.id, &patch)
            .await
            .map_err(|e| Failure::upstream(&e, "updating the account"))?;
        status.state = updated.known_state();
        let spec_unchanged = status.observed_generation == gsa.metadata.generation;
        let event = plan::patch_event(&account.id, &patch, &changed, spec_unchanged);
        ctx.publish(&object_ref(gsa), vec![event]).await;
    }
    if !status.adopted {
        check_token_secret(gsa, status, rec).await?;
    }
    Ok(waiting)
}

async fn publish_rotated(gsa: &GebetaServiceAccount, ctx: &Context, new: &str, old: &str) {
    let note = format!("created account {new} with a new token; retiring account {old}");
    ctx.event(
        &object_ref(gsa),
        EventType::Normal,
        reason::ROTATED,
        "Rotate",
        note,
    )
    .await;
}

/// After a crash between the create call and recording its result: keep the account whose
/// token reached the Secret, delete every other account carrying this object's marker.
async fn recover_pending_creation(
    gsa: &GebetaServiceAccount,
    api: &Api<GebetaServiceAccount>,
    ctx: &Context,
    user: &Token,
    status: &mut GebetaServiceAccountStatus,
) -> Result<(), Failure> {
    let uid = gsa.uid().unwrap_or_default();
    let accounts = ctx.gebeta.list_accounts(user).await.map_err(|e| {
        Failure::upstream(&e, "listing accounts to recover an interrupted creation")
    })?;
    let stored = stored_account_id(gsa, ctx).await?;
    let mut kept = None;
    for account in accounts
        .iter()
        .filter(|a| plan::marker_uid(&a.description) == Some(uid.as_str()))
    {
        if Some(&account.id) == status.account_id.as_ref() {
            continue;
        }
        if Some(&account.id) == stored.as_ref() && account.status != AccountState::Revoked {
            kept = Some(account.clone());
            continue;
        }
        delete_upstream(ctx, user, &account.id)
            .await
            .map_err(|e| Failure::upstream(&e, "deleting an account whose token was lost"))?;
        ctx.event(
            &object_ref(gsa),
            EventType::Normal,
            reason::ORPHAN_DELETED,
            "Recover",
            format!(
                "deleted account {} created before an interruption; its token was never stored",
                account.id
            ),
        )
        .await;
    }
    let previous = status.account_id.clone();
    if let Some(account) = kept {
        status.account_id = Some(account.id.clone());
        status.state = account.known_state();
        if account.created_at.is_some() {
            // The API may leave it out; the operator's own record (see `create`) stays.
            status.created_at = account.created_at.clone();
        }
        status.token_secret_name = Some(token_secret_name(gsa));
        ctx.event(
            &object_ref(gsa),
            EventType::Normal,
            reason::RECOVERED,
            "Recover",
            format!(
                "recorded account {} created before an interruption",
                account.id
            ),
        )
        .await;
        // The interrupted creation was a rotation's: its event was never published.
        if let Some(old) = previous.as_ref().filter(|old| **old != account.id) {
            publish_rotated(gsa, ctx, &account.id, old).await;
        }
    }
    // A rotation that got as far as storing the new token: the old account goes the way of
    // every replaced one (a rotation records it before creating, this covers older records).
    if let (Some(old), Some(new)) = (previous, status.account_id.as_ref())
        && old != *new
        && !status.retiring.contains(&old)
    {
        status.retiring.push(old);
    }
    status.pending_creation = None;
    write_status(api, ctx, gsa, status).await?;
    // A grace still running is reported by the rotation that resumes after this.
    retire_replaced(gsa, api, ctx, user, status).await.map(drop)
}

/// Creates the account, stores its token, records its id — in that order, see the module docs.
async fn create(
    gsa: &GebetaServiceAccount,
    api: &Api<GebetaServiceAccount>,
    ctx: &Context,
    user: &Token,
    status: &mut GebetaServiceAccountStatus,
) -> Result<(), Failure> {
    let uid = gsa.uid().unwrap_or_default();
    let secrets = secrets_api(gsa, ctx);
    let secret_name = token_secret_name(gsa);
    let existing = secrets.get_opt(&secret_name).await?;
    if let Some(existing) = &existing
        && !owned_by(existing, gsa)
    {
        return Err(Failure::new(
            reason::SECRET_CONFLICT,
            format!(
                "Secret {secret_name} exists and is not managed by this GebetaServiceAccount; refusing to overwrite it"
            ),
        ));
    }
    let stored = existing
        .as_ref()
        .and_then(|s| s.annotations().get(ACCOUNT_ID_ANNOTATION).cloned());
    if stored.is_some() && stored != status.account_id {
        // Our token Secret names an account the status does not: this copy of the object
        // predates a creation that happened. Recover that account instead of making a second
        // one (recovery keeps the account whose token was stored).
        recover_pending_creation(gsa, api, ctx, user, status).await?;
        if status.account_id.is_some() {
            return Ok(());
        }
    }

    status.pending_creation = Some(PendingCreation {
        started_at: conditions::now_rfc3339(),
    });
    write_status(api, ctx, gsa, status).await?;

    let created = match ctx
        .gebeta
        .create_account(user, &plan::account_config(&gsa.spec, &uid))
        .await
    {
        Ok(created) => created,
        Err(err @ gebeta::Error::CreateOutcomeUnknown { .. }) => {
            // The account may exist: the next reconcile lists accounts to find out.
            let mut failure = Failure::upstream(
                &err,
                "creating the account (outcome unknown, will check upstream)",
            );
            failure.retry_after = Some(Duration::from_secs(2));
            return Err(failure);
        }
        Err(err) => {
            // Refused before anything was created.
            status.pending_creation = None;
            return Err(Failure::upstream(&err, "creating the account"));
        }
    };
    let account = created.account;

    if let Err(err) = store_token(gsa, &secrets, &secret_name, &account.id, &created.token).await {
        // The token exists only in memory: without it the account is useless, so remove it
        // rather than leave an orphan (the pending marker makes the next reconcile check).
        if let Err(cleanup) = delete_upstream(ctx, user, &account.id).await {
            tracing::warn!(account = %account.id, %cleanup, "could not delete an account whose token could not be stored");
        }
        return Err(Failure::new(
            reason::KUBERNETES_ERROR,
            format!("storing the new account's token in Secret {secret_name}: {err}"),
        ));
    }

    status.account_id = Some(account.id.clone());
    status.state = account.known_state();
    // The schedule of rotations counts from here when the API gives no creation time.
    status.created_at = account
        .created_at
        .clone()
        .or_else(|| Some(conditions::now_rfc3339()));
    status.token_secret_name = Some(secret_name.clone());
    status.adopted = false;
    status.pending_creation = None;
    write_status(api, ctx, gsa, status).await?;
    ctx.event(
        &object_ref(gsa),
        EventType::Normal,
        reason::CREATED,
        "Create",
        format!(
            "created account {} and stored its token in Secret {secret_name}",
            account.id
        ),
    )
    .await;

    let desired = plan::desired_state(&gsa.spec);
    if account.status != desired {
        let patch = AccountPatch {
            status: Some(desired),
            ..Default::default()
        };
        let updated = ctx
            .gebeta
            .patch_account(user, &account.id, &patch)
            .await
            .map_err(|e| Failure::upstream(&e, "setting the new account's state"))?;
        status.state = updated.known_state();
    }
    Ok(())
}

/// Writes the token Secret, retrying briefly: the token cannot be fetched again.
async fn store_token(
    gsa: &GebetaServiceAccount,
    secrets: &Api<Secret>,
    name: &str,
    account_id: &str,
    token: &Token,
) -> Result<(), kube::Error> {
    let secret = token_secret(gsa, name, account_id, token);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut attempt = 0;
    loop {
        match secrets.patch(name, &params, &Patch::Apply(&secret)).await {
            Ok(_) => return Ok(()),
            Err(err) if attempt < 4 => {
                attempt += 1;
                tracing::warn!(%err, attempt, "storing the token failed; retrying");
                tokio::time::sleep(Duration::from_millis(250 * (1 << attempt))).await;
            }
            Err(err) => return Err(err),
        }
    }
}

/// The desired token Secret: owned by the object, labelled, annotated with the account id.
pub fn token_secret(
    gsa: &GebetaServiceAccount,
    name: &str,
    account_id: &str,
    token: &Token,
) -> Secret {
    let mut data = BTreeMap::new();
    data.insert(
        TOKEN_KEY.to_string(),
        ByteString(token.expose().as_bytes().to_vec()),
    );
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            namespace: gsa.namespace(),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                (SERVICE_ACCOUNT_LABEL.to_string(), gsa.name_any()),
            ])),
            annotations: Some(BTreeMap::from([(
                ACCOUNT_ID_ANNOTATION.to_string(),
                account_id.to_string(),
            )])),
            owner_references: gsa.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    }
}

fn secrets_api(gsa: &GebetaServiceAccount, ctx: &Context) -> Api<Secret> {
    Api::namespaced(ctx.kube.clone(), &gsa.namespace().unwrap_or_default())
}

/// Whether the Secret was written by the operator for this object.
fn owned_by(secret: &Secret, gsa: &GebetaServiceAccount) -> bool {
    super::is_ours(&secret.metadata, &gsa.uid().unwrap_or_default())
}

/// An owned account's token Secret must exist and be ours: the token cannot be fetched again.
/// Read (its metadata only) when the watch on token Secrets has seen an event since it was
/// last found in place: a periodic check of an unchanged Secret costs no request.
async fn check_token_secret(
    gsa: &GebetaServiceAccount,
    status: &GebetaServiceAccountStatus,
    rec: &Reconciler,
) -> Result<(), Failure> {
    if status.adopted || status.account_id.is_none() {
        return Ok(());
    }
    let uid = gsa.uid().unwrap_or_default();
    let Some(events) = rec.token_secret_to_check(&uid) else {
        return Ok(());
    };
    let name = token_secret_name(gsa);
    match secrets_api(gsa, &rec.ctx).get_metadata_opt(&name).await? {
        Some(secret) if super::is_ours(&secret.metadata, &uid) => {
            rec.token_secret_found(&uid, events);
            Ok(())
        }
        Some(_) => Err(Failure::new(
            reason::SECRET_CONFLICT,
            format!("Secret {name} is no longer managed by this GebetaServiceAccount"),
        )),
        None => Err(Failure::new(
            reason::TOKEN_SECRET_MISSING,
            format!(
                "Secret {name} with the account's token was deleted; the API cannot return the token again. Set the annotation {ROTATE_ANNOTATION} to a new value to get a new account"
            ),
        )),
    }
}

/// Revokes then deletes an account; an account already gone counts as deleted.
async fn delete_upstream(ctx: &Context, user: &Token, id: &str) -> Result<(), gebeta::Error> {
    match request_revoke(ctx, user, id).await {
        // Refused outright (not a passing failure): deleting is still what the policy asks
        // for, and what settles it.
        Ok(()) | Err(gebeta::Error::Validation { .. }) => {}
        Err(err) => return Err(err),
    }
    match ctx.gebeta.delete_account(user, id).await {
        Err(err) if !err.is_not_found() => Err(err),
        _ => Ok(()),
    }
}

/// Revokes an account; one gone counts as revoked. A refusal (4xx) counts only if the account
/// reads as REVOKED afterwards: that a 400 means "already revoked" is an assumption about the
/// API, and any other refusal (a proxy, a changed API) would otherwise leave it ACTIVE while
/// the object reported it revoked and went away.
async fn revoke_upstream(ctx: &Context, user: &Token, id: &str) -> Result<(), gebeta::Error> {
    match request_revoke(ctx, user, id).await {
        Err(err @ gebeta::Error::Validation { .. }) => {
            match ctx.gebeta.get_account(user, id).await {
                Ok(account) if account.known_state() == Some(AccountState::Revoked) => Ok(()),
                Err(e) if e.is_not_found() => Ok(()),
                _ => Err(err),
            }
        }
        other => other,
    }
}

/// Asks for the account's revocation; one gone counts as revoked, a refusal is returned as
/// it came (what it means is the caller's to decide: a delete follows anyway).
async fn request_revoke(ctx: &Context, user: &Token, id: &str) -> Result<(), gebeta::Error> {
    let patch = AccountPatch {
        status: Some(AccountState::Revoked),
        ..Default::default()
    };
    match ctx.gebeta.patch_account(user, id, &patch).await {
        Err(err) if err.is_not_found() => Ok(()),
        result => result.map(drop),
    }
}

/// The account id on this object's own token Secret: the account whose token was stored.
async fn stored_account_id(
    gsa: &GebetaServiceAccount,
    ctx: &Context,
) -> Result<Option<String>, kube::Error> {
    let secret = secrets_api(gsa, ctx)
        .get_opt(&token_secret_name(gsa))
        .await?;
    Ok(secret
        .as_ref()
        .filter(|s| owned_by(s, gsa))
        .and_then(|s| s.annotations().get(ACCOUNT_ID_ANNOTATION).cloned()))
}

/// Refuses to adopt an account that carries the marker of another object that may still
/// exist: two objects would fight over its description, and deleting one would delete the
/// other's account.
fn refuse_foreign_account(
    rec: &Reconciler,
    gsa: &GebetaServiceAccount,
    account: &gebeta::Account,
) -> Result<(), Failure> {
    let uid = gsa.uid().unwrap_or_default();
    match plan::marker_uid(&account.description) {
        Some(owner) if owner != uid && rec.object_may_exist(owner) => Err(Failure::new(
            reason::ACCOUNT_MANAGED_ELSEWHERE,
            format!(
                "account {} is managed by another GebetaServiceAccount (UID {owner}); one \
                 account has one owner: delete this object (it leaves the account alone), or delete the \
                 other object first",
                account.id
            ),
        )),
        // Adopted accounts carry no marker: two objects adopting one account would patch it
        // in turn for ever. The first to exist keeps it; the second is told.
        _ => match rec.earlier_adopter(gsa, &account.id) {
            Some(first) => Err(Failure::new(
                reason::ACCOUNT_MANAGED_ELSEWHERE,
                format!(
                    "account {} is already adopted by GebetaServiceAccount {first}; one account \
                     has one owner: delete this object (it leaves the account alone), or delete the other \
                     object first",
                    account.id
                ),
            )),
            None => Ok(()),
        },
    }
}

/// Retires every replaced account still listed in `status.retiring`, recording each success
/// at once; the first failure stops it with reason `RetireFailed` (retried with backoff).
async fn retire_replaced(
    gsa: &GebetaServiceAccount,
    api: &Api<GebetaServiceAccount>,
    ctx: &Context,
    user: &Token,
    status: &mut GebetaServiceAccountStatus,
) -> Result<Option<Waiting>, Failure> {
    if let Some(waiting) = grace(gsa, ctx, status).await? {
        return Ok(Some(waiting));
    }
    // The current account is in `retiring` only while its rotation has not made the
    // replacement yet (an interrupted create that recovery undid): it stays there, so that the
    // rotation creates again instead of finishing with the old account still in use.
    while let Some(id) = status
        .retiring
        .iter()
        .find(|id| status.account_id.as_ref() != Some(*id))
        .cloned()
    {
        retire(ctx, user, &id, gsa.effective_deletion_policy())
            .await
            .map_err(|f| {
                ctx.metrics.retire_failed();
                Failure {
                    reason: reason::RETIRE_FAILED,
                    message: format!(
                        "account {id} was replaced but is not retired yet ({}); it stays \
                         usable until this succeeds",
                        f.message
                    ),
                    retry_after: f.retry_after,
                }
            })?;
        ctx.event(
            &object_ref(gsa),
            EventType::Normal,
            reason::RETIRED,
            "Rotate",
            format!(
                "replaced account {id} retired (deletionPolicy {:?})",
                gsa.effective_deletion_policy()
            ),
        )
        .await;
        status.retiring.retain(|r| *r != id);
        if status.retiring.is_empty() {
            status.retire_after = None;
        }
        write_status(api, ctx, gsa, status).await?;
    }
    Ok(None)
}

/// A rotation's grace: the replaced accounts stay usable until `status.retireAfter`, and
/// then until every access token using this account holds a token from the new one.
async fn grace(
    gsa: &GebetaServiceAccount,
    ctx: &Context,
    status: &GebetaServiceAccountStatus,
) -> Result<Option<Waiting>, Failure> {
    let Some(after) = status.retire_after.as_deref() else {
        return Ok(None);
    };
    let (Some(current), Ok(after)) = (&status.account_id, after.parse::<Timestamp>()) else {
        return Ok(None);
    };
    let replaced = status.retiring.join(", ");
    let now = Timestamp::now();
    if now < after {
        return Ok(Some(Waiting {
            note: format!(
                "account {current} replaced {replaced}, which stays active until {} (grace \
                 period) so that consumers can switch",
                format_time(after)
            ),
            recheck: Duration::try_from(now.duration_until(after)).unwrap_or_default(),
        }));
    }
    let tokens: Api<GebetaAccessToken> =
        Api::namespaced(ctx.kube.clone(), &gsa.namespace().unwrap_or_default());
    let tokens = tokens.list(&ListParams::default()).await?;
    let behind = plan::consumers_behind(&tokens.items, &gsa.name_any(), current);
    if behind.is_empty() {
        return Ok(None);
    }
    Ok(Some(Waiting {
        note: format!(
            "account {current} replaced {replaced}, which stays active until GebetaAccessToken \
             {} hold(s) a token from {current}",
            behind.join(", ")
        ),
        recheck: consumer_recheck(
            Duration::try_from(after.duration_until(now)).unwrap_or_default(),
        ),
    }))
}

/// Disposes of an account the object no longer uses, according to the deletion policy.
async fn retire(
    ctx: &Context,
    user: &Token,
    id: &str,
    policy: DeletionPolicy,
) -> Result<(), Failure> {
    let result = match policy {
        DeletionPolicy::Delete => delete_upstream(ctx, user, id).await,
        DeletionPolicy::Revoke => revoke_upstream(ctx, user, id).await,
        DeletionPolicy::Orphan => Ok(()),
    };
    result.map_err(|e| Failure::upstream(&e, "retiring the replaced account"))
}

async fn cleanup(
    gsa: &GebetaServiceAccount,
    api: &Api<GebetaServiceAccount>,
    rec: &Reconciler,
) -> Result<Action, Error> {
    let ctx = &rec.ctx;
    let uid = gsa.uid().unwrap_or_default();
    let status = gsa.status.clone().unwrap_or_default();
    let oref = object_ref(gsa);
    if gsa
        .annotations()
        .get(SKIP_CLEANUP_ANNOTATION)
        .map(String::as_str)
        == Some("true")
    {
        ctx.event(
            &oref,
            EventType::Warning,
            reason::UPSTREAM_CLEANUP_SKIPPED,
            "Delete",
            format!("{SKIP_CLEANUP_ANNOTATION} is set: the upstream account is left as it is"),
        )
        .await;
        rec.forget(&uid);
        return Ok(Action::await_change());
    }
    let policy = gsa.effective_deletion_policy();
    let orphan = policy == DeletionPolicy::Orphan;
    if (orphan && status.pending_creation.is_none())
        || (status.account_id.is_none()
            && status.pending_creation.is_none()
            && status.retiring.is_empty())
    {
        if let Some(id) = &status.account_id {
            ctx.event(
                &oref,
                EventType::Normal,
                reason::ORPHANED,
                "Delete",
                format!("deletionPolicy Orphan: account {id} is left upstream"),
            )
            .await;
        }
        rec.forget(&uid);
        return Ok(Action::await_change());
    }

    let result = async {
        let user = user_token(gsa, ctx).await?;
        if orphan {
            // Orphan leaves the user's accounts upstream, but an account created before an
            // interruption whose token was never stored is nobody's to keep (no one holds its
            // token): recovery deletes it, as it would have had the object stayed, and records
            // one whose token was stored.
            let mut recovered = status.clone();
            recover_pending_creation(gsa, api, ctx, &user, &mut recovered).await?;
            return Ok(Vec::new());
        }
        let mut ids: Vec<String> = status.account_id.iter().cloned().collect();
        // Replaced accounts not retired yet go with the object.
        ids.extend(status.retiring.iter().cloned());
        ids.sort();
        ids.dedup();
        if status.pending_creation.is_some() {
            let accounts = ctx
                .gebeta
                .list_accounts(&user)
                .await
                .map_err(|e| Failure::upstream(&e, "listing accounts"))?;
            ids.extend(
                accounts
                    .into_iter()
                    .filter(|a| plan::marker_uid(&a.description) == Some(uid.as_str()))
                    .map(|a| a.id),
            );
            ids.sort();
            ids.dedup();
        }
        for id in &ids {
            match policy {
                DeletionPolicy::Delete => delete_upstream(ctx, &user, id)
                    .await
                    .map_err(|e| Failure::upstream(&e, "deleting the account"))?,
                _ => revoke_upstream(ctx, &user, id)
                    .await
                    .map_err(|e| Failure::upstream(&e, "revoking the account"))?,
            }
        }
        Ok::<_, Failure>(ids)
    }
    .await;

    match result {
        Ok(ids) => {
            let (reason, verb) = if policy == DeletionPolicy::Delete {
                (reason::DELETED, "deleted")
            } else {
                (reason::REVOKED, "revoked")
            };
            for id in ids {
                ctx.event(
                    &oref,
                    EventType::Normal,
                    reason,
                    "Delete",
                    format!("account {id} {verb} upstream"),
                )
                .await;
            }
            rec.forget(&uid);
            Ok(Action::await_change())
        }
        Err(failure) => {
            let message = format!(
                "cannot clean up the upstream account ({}): {}. The object stays until this succeeds; to delete it without touching the upstream account, set the annotation {SKIP_CLEANUP_ANNOTATION}=true",
                failure.reason, failure.message
            );
            let mut new_status = status.clone();
            let now = conditions::now_rfc3339();
            conditions::set(
                &mut new_status.conditions,
                conditions::READY,
                false,
                reason::CLEANUP_FAILED,
                &message,
                gsa.metadata.generation,
                &now,
            );
            if new_status != status {
                ctx.event(
                    &oref,
                    EventType::Warning,
                    reason::CLEANUP_FAILED,
                    "Delete",
                    message.clone(),
                )
                .await;
                write_status(api, ctx, gsa, &new_status).await?;
            }
            Err(Error::Cleanup(message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lagging_consumers_are_looked_at_less_often_the_longer_they_lag() {
        let secs = |s: u64| consumer_recheck(Duration::from_secs(s)).as_secs();
        assert_eq!(
            [0, 10, 25, 50, 150, 300, 3600].map(secs),
            [5, 5, 5, 10, 30, 60, 60]
        );
    }
}
