//! The `GebetaAccessToken` controller: exchanges a client token and a server token for a
//! short-lived access token, keeps it in a Secret that workloads mount, and refreshes it
//! before it expires.
//!
//! # One reconcile: fetch → plan → act → report
//!
//! 1. fetch (`Reconcile::fetch`): the target Secret and the operator-only refresh Secret
//!    (see [`secret`]) from the owned-Secret cache, and, unless suspended, the input tokens
//!    (a Secret key, or a ready `GebetaServiceAccount`'s token Secret), reused while no
//!    watch event touched them; every name is recorded in a reverse index before it is read,
//!    so a later change of it wakes the object;
//! 2. plan ([`plan::Situation::decide`], pure): nothing until the planned refresh time
//!    ([`schedule`]), or refresh with the stored refresh token, or authenticate (first
//!    token, changed inputs, dead or possibly rotated refresh token), or wait for a backoff;
//! 3. act (`Reconcile::act`), after a permit from the deadline [`gate`]: the call, then
//!    only what differs: the refresh Secret first (a rotated refresh token must survive a
//!    crash), then the target Secret; then restart the opted-in `rolloutRestartTargets`;
//! 4. report ([`report::report`], pure): the status (written if it changed), the events
//!    (on transitions only) and when to look again.
//!
//! A reconcile with nothing due makes no Gebeta call and no Kubernetes write, which is also
//! what happens for every object after an operator restart while its token is still fresh:
//! the token's effective times are read back from the Secrets.
//!
//! # Failures
//!
//! - refresh answers 401 (or 400): the refresh token is dead; authenticate again with both
//!   tokens;
//! - auth answers 401/400: `InvalidCredentials`, backoff;
//! - 5xx, 429, timeouts, transport errors: `UpstreamUnavailable`; the current token is kept
//!   and `Ready` stays `True` while it is valid, `TokenExpired` after; backoff
//!   ([`schedule::retry_delay`]), honouring `Retry-After`;
//! - an answer that is not a token (unreadable body, empty, not a JWT, already expired):
//!   `InvalidTokenFromUpstream`, nothing is written but a rotated refresh token;
//! - bad inputs (`SecretNotFound`, `SecretKeyNotFound`, `InvalidSecret`, `SourceNotReady`):
//!   no new session can be opened, the token in the Secret is left as it is, and an open
//!   session keeps being refreshed;
//! - the target (or refresh) Secret exists and is not ours: `SecretConflict`, nothing is
//!   touched.
//!
//! # Triggers
//!
//! The objects themselves; the Secrets they own (metadata-only watch, by label); every Secret
//! of the watched namespaces by metadata only, mapped through the reverse index (input
//! Secrets and a foreign Secret in the way); `GebetaServiceAccount`s by metadata, mapped the
//! same way; timers.
//!
//! # Annotations
//!
//! - `gebeta.app/refresh: <any new value>` on the object refreshes now, once per value
//!   (recorded in `status.observedRefreshRequest`);
//! - `gebeta.app/restartedAt: <issuedAt of the token>` is set on the pod template of every
//!   rollout-restart target after a new token is written (one change per new token).

pub mod accounts;
pub mod flat_cache;
pub mod gate;
pub mod index;
pub mod owned;
pub mod plan;
pub mod report;
pub mod schedule;
pub mod secret;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, StatefulSet},
    core::v1::Secret,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    core::PartialObjectMeta,
    runtime::{
        controller::{self, Action},
        events::EventType,
        reflector::ObjectRef,
        watcher::{self, watcher},
    },
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::{
    accounts::Accounts,
    gate::{DeadlineGate, Key, Permit},
    index::{RefIndex, Refs},
    owned::OwnedSecrets,
    plan::{Call, Decision, Problem, Situation, reason},
    report::{Exchanged, Observed},
    schedule::TokenTimes,
    secret::{Keys, RefreshState},
};
use super::compact::{Compact, Compactable};
use super::{
    Context, FIELD_MANAGER, MANAGED_BY, MANAGED_BY_LABEL, Readiness, WatchScope, conditions,
    service_account::ACCOUNT_ID_ANNOTATION,
};
use crate::{
    crd::{
        GebetaAccessToken, GebetaAccessTokenStatus, GebetaServiceAccount,
        access_token::{TokenSource, WorkloadKind},
        common::parse_duration,
    },
    gebeta::{self, Token, decode_claims},
    metrics::Metrics,
};

/// Annotation on a `GebetaAccessToken`: a new value requests a refresh now.
pub const REFRESH_ANNOTATION: &str = "gebeta.app/refresh";
/// Pod-template annotation set on rollout-restart targets after a new token.
pub const RESTARTED_AT_ANNOTATION: &str = "gebeta.app/restartedAt";
/// Annotation a workload must carry (on its own metadata) to be restarted by a
/// `GebetaAccessToken` of its namespace: the token's name, or a comma-separated list.
pub const RESTART_OPT_IN_ANNOTATION: &str = "gebeta.app/restart-on-new-token";

const CONTROLLER: &str = "access_token";
/// Longest wait between two reconciles of an object (a safety net for missed events).
const MAX_REQUEUE: Duration = Duration::from_secs(3600);
/// Recheck of an object blocked by its spec, inputs or a foreign Secret (watches usually
/// wake it sooner).
const BLOCKED_RECHECK: Duration = Duration::from_secs(300);
/// Retry of rollout restarts that failed transiently.
const RESTART_RETRY: Duration = Duration::from_secs(5);
/// Recheck of an object whose cached copy is older than our own write (the write's watch
/// event normally wakes it first).
const STALE_RECHECK: Duration = Duration::from_secs(2);
/// How long a reconcile waits for the caches' first list, and when it tries again after.
const CACHE_WAIT: Duration = Duration::from_secs(5);
const CACHE_RECHECK: Duration = Duration::from_secs(1);
/// Recheck of an object whose refresh waits in the deadline gate's queue: a safety net, as
/// the gate triggers its reconcile when its turn comes.
const DEFERRED_RECHECK: Duration = Duration::from_secs(300);
/// How long a permit the gate reserved for an object waits for that object's reconcile
/// before it is handed on (the object went away before its turn).
const RESERVATION_TTL: Duration = Duration::from_secs(30);
/// How long the cache may lag behind one of our writes before it is believed anyway (our
/// write may have been undone, e.g. the Secret deleted, with the events coalesced).
const EXPECTATION_TTL: Duration = Duration::from_secs(30);

/// Errors that end a reconcile early; retried with backoff by [`error_policy`].
#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("Kubernetes API: {}", crate::controllers::describe_kube_error(.0))]
    Kube(#[from] kube::Error),
}

impl Error {
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
        }
    }
}

/// A write of ours to an owned Secret that the cache may not show yet.
#[derive(Clone, Debug)]
struct Written {
    /// Version of the copy the write was made from (`None`: the write created the Secret).
    before: Option<String>,
    /// Version the write produced.
    after: Option<String>,
    at: std::time::Instant,
}

/// Input tokens read from the API server, reused while no watch event touched an input.
#[derive(Clone, Debug)]
struct CachedInputs {
    /// The index's input epoch and the object's generation when they were read.
    epoch: u64,
    generation: Option<i64>,
    read_at: std::time::Instant,
    /// Everything the object depends on, as recorded when they were read.
    refs: Refs,
    value: Result<(Token, Token), Problem>,
    /// Upstream account ids of the GebetaServiceAccount sources (from their token Secrets).
    accounts: Vec<String>,
}

/// The input token at `place`, from the Secret found there (`None`: there is none).
fn read_input(
    place: &InputPlace,
    found: Option<&Secret>,
) -> Result<(Token, Option<String>), Problem> {
    let InputPlace {
        which,
        secret: name,
        key,
        account,
    } = place;
    let Some(account) = account else {
        let Some(s) = found else {
            return Err(Problem::new(
                reason::SECRET_NOT_FOUND,
                format!("Secret {name} ({which}) not found"),
            ));
        };
        return secret::read_input_token(s, key)
            .map(|t| (t, None))
            .map_err(|p| {
                let (reason, what) = match p {
                    secret::ValueProblem::Missing => (reason::SECRET_KEY_NOT_FOUND, "has no key"),
                    secret::ValueProblem::Empty => {
                        (reason::INVALID_SECRET, "has an empty value at key")
                    }
                    secret::ValueProblem::Malformed => {
                        (reason::INVALID_SECRET, "has no valid token at key")
                    }
                };
                Problem::new(reason, format!("Secret {name} ({which}) {what} {key}"))
            });
    };
    let not_ready = |why: String| Err(Problem::new(reason::SOURCE_NOT_READY, why));
    let Some(s) = found else {
        return not_ready(format!(
            "token Secret {name} of GebetaServiceAccount {account} ({which}) not found"
        ));
    };
    match secret::read_input_token(s, key) {
        Ok(token) => Ok((token, s.annotations().get(ACCOUNT_ID_ANNOTATION).cloned())),
        Err(_) => not_ready(format!(
            "token Secret {name} of GebetaServiceAccount {account} ({which}) has no usable key \
             token"
        )),
    }
}

/// Where one input token is read from (see [`Reconcile::input_place`]).
struct InputPlace {
    /// "client token" or "server token", for messages.
    which: &'static str,
    secret: String,
    key: String,
    /// The GebetaServiceAccount whose token Secret this is, if any.
    account: Option<String>,
}

/// A token the API issued that could not be written yet (a Kubernetes write failed): the next
/// attempt writes it instead of calling the API again.
#[derive(Clone, Debug)]
struct Unwritten {
    session: RefreshState,
    token: Option<(Token, TokenTimes)>,
}

/// What the controller remembers of one object between reconciles (lost on restart, which
/// costs at most one early retry and one read of the inputs).
#[derive(Clone, Debug, Default)]
struct ObjState {
    /// Digest of the object's UID ([`crate::controllers::digest64`]): a new object under the
    /// same name starts afresh. Only compared, so not kept as the 36-character string.
    uid: u64,
    /// Consecutive failed Gebeta calls.
    failures: u32,
    /// No call before this time...
    retry_at: Option<Timestamp>,
    /// ...unless the inputs (fingerprint) or the manual refresh request changed since.
    retry_key: Option<Box<(Option<String>, Option<String>)>>,
    /// No call before this time whatever changed: the API's `Retry-After`.
    server_not_before: Option<Timestamp>,
    /// The last Gebeta call (see [`plan::DEFAULT_NUDGE_INTERVAL`]).
    last_call: Option<Timestamp>,
    /// The last refresh timed out: it may have rotated the refresh token.
    refresh_outcome_unknown: bool,
    /// Consecutive reconciles that ended in an error.
    api_errors: u32,
    /// Expiry of the token in the Secret, to bound the backoff after Kubernetes errors.
    expires_at: Option<Timestamp>,
    /// `restartedAt` value still to be set on the rollout-restart targets.
    pending_restart: Option<String>,
    /// Failed attempts in a row at setting it (see [`report::restart_retry`]).
    restart_failures: u32,
    /// Our writes to owned Secrets the cache may not show yet, by Secret name (at most the
    /// token and the refresh Secret). Freed when empty: a `HashMap` kept its table (~0.5 KiB)
    /// in every object that ever wrote.
    written: Vec<(String, Written)>,
    inputs: Option<CachedInputs>,
    /// Boxed, as `retry_key`: rarely set, and every object's state is a slot in one table.
    unwritten: Option<Box<Unwritten>>,
    /// A type change of the target Secret was reported.
    type_change_reported: bool,
}

/// The controller's context: the shared [`Context`], the reverse index, the caches, the
/// deadline gate and per-object memory.
pub struct Shared {
    ctx: Arc<Context>,
    index: Arc<RefIndex>,
    gate: Arc<DeadlineGate>,
    /// Orders and bounds the reads of input tokens the same way: a new process reads every
    /// object's inputs once, and unbounded that burst held every token's reconcile and its
    /// request at once (at 10,000 tokens a restarted process peaked at 933 MiB) while the
    /// tokens due first waited in it like any other.
    reads: Arc<DeadlineGate>,
    /// The Secrets this controller owns, of every watched namespace.
    owned: Arc<OwnedSecrets>,
    /// What inputs read of the GebetaServiceAccounts of every watched namespace.
    accounts: Arc<Accounts>,
    /// True once every cache has its first full list: before, an absent Secret proves nothing.
    caches_ready: Readiness,
    /// Boxed: a table keeps room for up to twice its entries, and a state is 352 bytes.
    states: Mutex<HashMap<(String, String), Box<ObjState>>>,
}

impl Shared {
    fn states(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Box<ObjState>>> {
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops everything kept about a deleted object.
    fn forget(&self, ns: &str, name: &str) {
        self.ctx.metrics.forget_token(ns, name);
        self.index.remove(ns, name);
        let key = (ns.to_string(), name.to_string());
        self.gate.forget(&key);
        self.reads.forget(&key);
        if let Some(state) = self.states().remove(&key) {
            self.ctx.own_writes.forget_digest(state.uid);
        }
    }
}

/// Runs the controller until `shutdown` is cancelled: one `Controller` per watched namespace
/// (or one for the cluster), all sharing the reverse index and the deadline gate.
pub async fn run(
    ctx: Arc<Context>,
    scope: WatchScope,
    shutdown: CancellationToken,
    readiness: Readiness,
) {
    let client = ctx.kube.clone();
    let owned_selector = format!(
        "{MANAGED_BY_LABEL}={MANAGED_BY},{}",
        secret::ACCESS_TOKEN_LABEL
    );
    let caches_ready = Readiness::default();
    let owned = Arc::new(OwnedSecrets::default());
    let accounts = Arc::new(Accounts::default());
    let mut streams = Vec::new();
    for ((owned_api, accounts_api), namespace) in scope
        .apis::<Secret>(&client)
        .into_iter()
        .zip(scope.apis::<GebetaServiceAccount>(&client))
        .zip(scope.namespaces())
    {
        let owned_events = owned.clone().reflect(
            namespace.clone(),
            watcher(
                owned_api,
                watcher::Config::default()
                    .labels(&owned_selector)
                    .any_semantic(),
            ),
            vec![readiness.register(), caches_ready.register()],
        );
        let account_events = accounts.clone().reflect(
            namespace,
            watcher(accounts_api, watcher::Config::default().any_semantic()),
            vec![readiness.register(), caches_ready.register()],
        );
        streams.push((owned_events, account_events));
    }
    // The gate asks for a reconcile of an object whose turn came through its namespace's
    // controller (see `gate`).
    let (turn_senders, turn_receivers): (Vec<_>, Vec<_>) = scope
        .namespaces()
        .into_iter()
        .map(|ns| {
            let (tx, rx) = futures::channel::mpsc::unbounded::<ObjectRef<CachedToken>>();
            ((ns, tx), rx)
        })
        .unzip();
    let turn_senders = Arc::new(turn_senders);
    let trigger = || -> gate::Trigger {
        let senders = turn_senders.clone();
        Box::new(move |(ns, name): &Key| {
            let sender = senders
                .iter()
                .find(|(scope, _)| scope.as_deref().is_none_or(|s| s == ns));
            if let Some((_, tx)) = sender {
                let _ = tx.unbounded_send(ObjectRef::new(name).within(ns));
            }
        })
    };
    let permits = ctx.settings.max_concurrent_reconciles.into();
    let gate = DeadlineGate::deferring(permits, trigger());
    let reads = DeadlineGate::deferring(permits, trigger());
    let shared = Arc::new(Shared {
        ctx,
        index: Arc::default(),
        gate: gate.clone(),
        reads,
        owned,
        accounts,
        caches_ready,
        states: Mutex::default(),
    });
    tend_gates(
        gate,
        shared.reads.clone(),
        shared.ctx.metrics.clone(),
        shutdown.clone(),
    );
    let mut runs = Vec::new();
    let mut stores = Vec::new();
    let apis = scope
        .apis::<CachedToken>(&client)
        .into_iter()
        .zip(scope.apis::<PartialObjectMeta<Secret>>(&client));
    for (((objects, secrets), (owned_events, account_events)), turns) in
        apis.zip(streams).zip(turn_receivers)
    {
        let by_secret = shared.index.clone();
        let by_account = shared.index.clone();
        let controller = super::lean_controller(objects, scope.watcher_config())
            .owns_stream(owned_events)
            .watches(
                secrets,
                watcher::Config::default().any_semantic(),
                move |s: PartialObjectMeta<Secret>| {
                    let owner = s
                        .labels()
                        .get(secret::ACCESS_TOKEN_LABEL)
                        .filter(|_| {
                            s.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
                        })
                        .map(String::as_str);
                    by_secret.for_secret(
                        s.metadata.namespace.as_deref().unwrap_or_default(),
                        &s.name_any(),
                        owner,
                    )
                },
            )
            .watches_stream(
                account_events,
                move |a: PartialObjectMeta<GebetaServiceAccount>| {
                    by_account.for_account(
                        a.metadata.namespace.as_deref().unwrap_or_default(),
                        &a.name_any(),
                    )
                },
            )
            .reconcile_on(turns)
            // No limit here: a reconcile with nothing to do only reads caches, and the work
            // that costs waits at the deadline gate (see `gate`).
            .with_config(controller::Config::default())
            .graceful_shutdown_on(shutdown.clone().cancelled_owned());
        let store = controller.store();
        readiness.track(store.clone());
        stores.push(store.clone());
        let index = shared.index.clone();
        tokio::spawn(async move {
            if store.wait_until_ready().await.is_ok() {
                for obj in store.state() {
                    index.add_spec_refs(&obj.expand());
                }
            }
        });
        let shared = shared.clone();
        let run = controller.run(reconcile, error_policy, shared.clone()).for_each(move |result| {
            match result {
                Ok(_) => {}
                Err(controller::Error::ObjectNotFound(obj)) => {
                    // Woken for an object that is gone (its Secrets being garbage-collected).
                    shared.forget(obj.namespace.as_deref().unwrap_or_default(), &obj.name);
                }
                Err(controller::Error::ReconcilerFailed(err, obj)) => {
                    tracing::warn!(object = %obj, error = %err, "access token reconcile failed");
                }
                Err(err) => tracing::warn!(error = %err, "access token controller"),
            }
            std::future::ready(())
        });
        runs.push(run);
    }
    super::report_ready_counts(
        CONTROLLER,
        stores,
        shared.ctx.metrics.clone(),
        shutdown,
        |gat: &CachedToken| *gat.summary(),
    );
    futures::future::join_all(runs).await;
}

/// Keeps the overdue-refresh gauges current and hands on the reservations of both gates never
/// claimed, every second until `shutdown`.
fn tend_gates(
    gate: Arc<DeadlineGate>,
    reads: Arc<DeadlineGate>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    super::every(Duration::from_secs(1), shutdown, move || {
        gate.reclaim(RESERVATION_TTL);
        reads.reclaim(RESERVATION_TTL);
        let backlog = gate.backlog();
        metrics.refreshes_overdue.set(backlog.waiting as i64);
        metrics
            .refresh_oldest_overdue
            .set(backlog.oldest_wait_seconds);
    });
}

/// Boxed: kube-runtime's runner keeps each running reconcile's future inline in a hash table
/// that never shrinks, sized by the largest burst of reconciles at once (this controller sets
/// no limit), and this future is about 5 KiB. Boxed, a slot is the box's pointer beside the
/// runner's own wrapper, and the 5 KiB live only while the reconcile does.
fn reconcile(
    obj: Arc<CachedToken>,
    shared: Arc<Shared>,
) -> futures::future::BoxFuture<'static, Result<Action, Error>> {
    Box::pin(async move {
        // Waited for before the object is decoded: every reconcile of a new process starts at
        // once and waits here, and decoded, each held a whole object meanwhile.
        if !caches_synced(&shared).await {
            return Ok(Action::requeue(CACHE_RECHECK));
        }
        reconcile_object(Arc::new(obj.expand()), shared).await
    })
}

/// Waits a little for the caches' first full list (at start-up the objects' own watch may be
/// ahead of them); false if they are still not there.
async fn caches_synced(shared: &Shared) -> bool {
    let deadline = tokio::time::Instant::now() + CACHE_WAIT;
    while !shared.caches_ready.is_ready() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// An access token as the controller's cache keeps it (see [`compact`]).
pub type CachedToken = Compact<GebetaAccessToken>;

/// Summarized as whether it is Ready (the `objects` gauge counts them).
impl Compactable for GebetaAccessToken {
    type Summary = bool;

    fn summarize(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| super::conditions::is_true(&s.conditions, super::conditions::READY))
    }
}

async fn reconcile_object(
    obj: Arc<GebetaAccessToken>,
    shared: Arc<Shared>,
) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let span =
        tracing::info_span!("reconcile", controller = CONTROLLER, namespace = %ns, name = %name);
    let key = (ns.clone(), name.clone());
    // Taken out for the reconcile and put back after it: the runner never reconciles one
    // object twice at once, and `error_policy` runs after the put-back.
    let state = shared.states().remove(&key).map(|s| *s).unwrap_or_default();
    let mut run = Reconcile::new(&shared, ns, name, state);
    // Triggered by a gate when this object's turn came: its permit waits here.
    run.permit = shared.gate.claim(&key);
    run.read_permit = shared.reads.claim(&key);
    let result = run.reconcile(obj.clone()).instrument(span.clone()).await;
    match &result {
        Ok(_) => run.state.api_errors = 0,
        Err(e) if run.state.unwritten.is_some() => {
            run.report_write_failure(&obj, e).instrument(span).await
        }
        Err(_) => {}
    }
    drop(run.permit.take());
    if !run.gone {
        shared.states().insert(key, Box::new(run.state));
    }
    let label = match &result {
        Ok(_) => "ok",
        Err(e) => e.label(),
    };
    shared
        .ctx
        .metrics
        .observe_reconcile(CONTROLLER, label, started.elapsed());
    result
}

fn error_policy(obj: Arc<CachedToken>, err: &Error, shared: Arc<Shared>) -> Action {
    let key = (obj.namespace().unwrap_or_default(), obj.name_any());
    let (errors, remaining) = {
        let mut states = shared.states();
        let state = states.entry(key).or_default();
        state.api_errors = state.api_errors.saturating_add(1);
        let now = Timestamp::now();
        let remaining = state
            .expires_at
            .filter(|e| *e > now)
            .and_then(|e| Duration::try_from(now.duration_until(e)).ok());
        (state.api_errors, remaining)
    };
    // Bounded by the token's remaining lifetime, as after a Gebeta failure: an API server
    // that comes back must find the token still being looked after.
    let delay = schedule::retry_delay(errors, None, remaining, rand::random::<f64>());
    tracing::warn!(error = %err, retry_in = ?delay, "access token reconcile failed; retrying");
    Action::requeue(delay)
}

/// Result of a Gebeta exchange.
enum Exchange {
    /// A new token is in the target Secret.
    Issued(TokenTimes),
    Failed {
        problem: Problem,
        retry_after: Option<Duration>,
    },
}

/// What one reconcile found (see [`Reconcile::fetch`]).
struct Fetched {
    /// The target Secret, if ours.
    target: Option<Secret>,
    had_token_secret: bool,
    /// The refresh Secret (ours, or in the way).
    refresh: Option<Secret>,
    /// The spec or a foreign Secret blocks the object.
    hard_blocker: Option<Problem>,
    current_token: Option<String>,
    token_present: bool,
    session: RefreshState,
    /// Effective times of the token in the target Secret.
    times: Option<TokenTimes>,
}

/// What deciding and calling did (see [`Reconcile::act`]).
#[derive(Default)]
struct Acted {
    decision: Option<Decision>,
    exchanged: Option<Exchanged>,
    input_problem: Option<Problem>,
}

/// The cache shows a copy older than one of our own writes: acting on it would repeat work.
struct Stale;

/// One reconcile of one object.
struct Reconcile<'a> {
    shared: &'a Shared,
    ns: String,
    name: String,
    state: ObjState,
    api: Api<GebetaAccessToken>,
    secrets: Api<Secret>,
    /// The deadline of this reconcile's work (see [`gate`]) and the permit once taken.
    deadline: Timestamp,
    permit: Option<Permit>,
    /// A permit of the read gate, from a turn that came, until the inputs read takes it.
    read_permit: Option<Permit>,
    /// The live target Secret's type was kept over the template's: `(live, wanted)`.
    type_kept: Option<(String, String)>,
    /// The object is gone: its memory is dropped.
    gone: bool,
}

impl<'a> Reconcile<'a> {
    fn new(shared: &'a Shared, ns: String, name: String, state: ObjState) -> Self {
        let client = shared.ctx.kube.clone();
        Reconcile {
            api: Api::namespaced(client.clone(), &ns),
            secrets: Api::namespaced(client, &ns),
            shared,
            ns,
            name,
            state,
            deadline: Timestamp::now(),
            permit: None,
            read_permit: None,
            type_kept: None,
            gone: false,
        }
    }

    fn ctx(&self) -> &Context {
        &self.shared.ctx
    }

    fn forget(&mut self) -> Action {
        // This reconcile holds the object's state (see `reconcile`), so its versions are
        // forgotten here rather than by `Shared::forget`.
        self.shared.forget(&self.ns, &self.name);
        self.ctx().own_writes.forget_digest(self.state.uid);
        self.gone = true;
        Action::await_change()
    }

    /// Waits, once per reconcile, for the right to call or write (earliest deadline first).
    async fn work(&mut self) {
        if self.permit.is_none() {
            self.permit = Some(self.shared.gate.acquire(self.deadline).await);
        }
    }

    /// An owned Secret from the cache, unless the cache has not caught up on our last write.
    fn owned(&mut self, name: &str) -> Result<Option<Secret>, Stale> {
        let copy = self.shared.owned.get(&self.ns, name);
        let written = &mut self.state.written;
        if let Some(at) = written.iter().position(|(n, _)| n == name) {
            let w = &written[at].1;
            let rv = copy.as_ref().and_then(|s| s.resource_version());
            if rv != w.after && rv == w.before && w.at.elapsed() < EXPECTATION_TTL {
                return Err(Stale);
            }
            // Caught up, or changed by someone since (or our write was lost): the cache rules.
            written.swap_remove(at);
            if written.is_empty() {
                *written = Vec::new();
            }
        }
        Ok(copy)
    }

    /// The steps and Kubernetes calls here are boxed at their awaits (`Box::pin`): a future is
    /// as large as its largest await, and every object can have a reconcile parked at a gate
    /// (10,000 after a restart), so inline they made each ~10 KiB; boxed, a parked one holds
    /// only the frames on its path (measured 7,128 -> 2,440 bytes for this one).
    async fn reconcile(&mut self, obj: Arc<GebetaAccessToken>) -> Result<Action, Error> {
        if obj.metadata.deletion_timestamp.is_some() {
            return Ok(self.forget());
        }
        let uid = obj.uid().unwrap_or_default();
        let uid_digest = crate::controllers::digest64(uid.as_str());
        if self.state.uid != uid_digest {
            self.state = ObjState {
                uid: uid_digest,
                ..ObjState::default()
            };
        }
        if self
            .ctx()
            .own_writes
            .is_superseded(&uid, obj.resource_version().as_deref())
        {
            // Our own status write is on its way to the cache; its event wakes us again.
            return Ok(Action::requeue(STALE_RECHECK));
        }
        // What the object depends on is indexed before anything is read, so that a change
        // landing after the read wakes it (the names an earlier read found included).
        let refs = match &self.state.inputs {
            Some(cached) if cached.generation == obj.metadata.generation => cached.refs.clone(),
            _ => Refs::of_spec(&obj),
        };
        self.shared.index.set(&self.ns, &self.name, refs);
        let request = obj
            .annotations()
            .get(REFRESH_ANNOTATION)
            .filter(|v| !v.is_empty())
            .cloned();
        if !Box::pin(self.read_inputs_first(&obj)).await?
            || !self.queue_if_due(&obj, request.as_deref())
        {
            return Ok(Action::requeue(DEFERRED_RECHECK));
        }
        let now = Timestamp::now();
        let prev = obj.status.clone().unwrap_or_default();
        let Some(mut fetched) = Box::pin(self.fetch(&obj)).await? else {
            return Ok(Action::requeue(STALE_RECHECK));
        };
        self.deadline = fetched
            .times
            .filter(|t| t.is_valid_at(now))
            .map_or(now, |t| t.expires_at);
        self.state.expires_at = fetched.times.map(|t| t.expires_at);
        let manual_request = request.is_some() && request != prev.observed_refresh_request;
        let spec = &obj.spec;
        let blocked = fetched.hard_blocker.is_some();

        // Decide and call (or store an earlier answer).
        let acted = if blocked || spec.suspended {
            Acted::default()
        } else {
            Box::pin(self.act(&obj, now, &mut fetched, request.clone(), manual_request)).await?
        };
        if let Some(t) = fetched.times {
            self.ctx()
                .metrics
                .set_token_expiry(&self.ns, &self.name, t.expires_at.as_second());
        }
        let issued = matches!(acted.exchanged, Some(Exchanged::Issued(_)));

        // The current token's Secret as the spec wants it (template changed, or edited by
        // someone): written only if something we own differs.
        if !blocked
            && !spec.suspended
            && !issued
            && let (Some(token), Some(t)) = (fetched.current_token.as_deref(), fetched.times)
            && t.is_valid_at(now)
        {
            let mut current = fetched.target.clone();
            let desired = secret::target_secret(&obj, token, &t);
            Box::pin(self.apply_secret(desired, &mut current)).await?;
        }

        // Rollout restarts for a new token.
        let restart_skipped = if blocked {
            Vec::new()
        } else {
            Box::pin(self.restart_targets(&obj)).await
        };

        // Report: status, events, next look.
        let type_kept = self
            .type_kept
            .take()
            .filter(|_| !self.state.type_change_reported);
        self.state.type_change_reported |= type_kept.is_some();
        let report = report::report(&Observed {
            now,
            name: &self.name,
            generation: obj.metadata.generation,
            prev: &prev,
            secret_name: &spec.secret_name,
            suspended: spec.suspended,
            refresh_before: refresh_before(&obj),
            seed: schedule::jitter_seed(&uid),
            hard_blocker: fetched.hard_blocker,
            input_problem: acted.input_problem,
            decision: acted.decision,
            exchanged: acted.exchanged,
            token_present: fetched.token_present,
            times: fetched.times,
            had_token_secret: fetched.had_token_secret,
            request: request.as_deref(),
            manual_request,
            type_kept,
            restart_skipped,
            restart_retry: self
                .state
                .pending_restart
                .as_ref()
                .map(|_| report::restart_retry(self.state.restart_failures)),
            source_accounts: fetched
                .refresh
                .as_ref()
                .map(|r| RefreshState::from_secret(r).source_accounts)
                .unwrap_or_default(),
        });
        if report.status != prev {
            Box::pin(self.write_status(obj.resource_version(), &report.status)).await?;
        }
        Box::pin(self.ctx().publish(&obj.object_ref(&()), report.events)).await;
        let after =
            Duration::try_from(Timestamp::now().duration_until(report.wake_at)).unwrap_or_default();
        Ok(Action::requeue(after.max(Duration::from_millis(50))))
    }

    /// Reads the inputs *before* anything is copied out of the caches when this process has no
    /// read of them it can reuse (a new process, or an input changed), at its turn at the read
    /// gate (by the token's expiry from the status). Without a free read permit the object
    /// keeps its place in the read gate's queue and this returns false, as in
    /// [`Self::queue_if_due`]. After a restart every object reads its inputs once; parked at
    /// the read gate after the fetch, each held copies of both owned Secrets (at 10,000
    /// tokens the restarted process peaked ~120 MiB above its steady RSS).
    async fn read_inputs_first(&mut self, obj: &GebetaAccessToken) -> Result<bool, Error> {
        // A turn that came is used now or handed on: held on, it would keep a read slot
        // through the Gebeta call.
        let claimed = self.read_permit.take();
        if obj.spec.suspended || self.cached_inputs(obj).is_some() {
            return Ok(true);
        }
        if !self.sources_ready(obj) {
            return Ok(true);
        }
        self.deadline = plan::deadline_from_status(obj.status.as_ref(), Timestamp::now());
        self.read_permit = claimed.or_else(|| {
            self.shared
                .reads
                .try_acquire_or_defer(&self.key(), self.deadline)
        });
        if self.read_permit.is_none() {
            return Ok(false);
        }
        // Kept in the state: the plan reuses them while no input changes.
        let _inputs = Box::pin(self.inputs(obj)).await?;
        Ok(true)
    }

    /// Takes this reconcile's turn at the deadline gate *before* anything is copied out of the
    /// caches when its status says a call is due (see [`plan::due_from_status`]). If no permit
    /// is free, the object keeps a place in the gate's queue and this returns false: the
    /// reconcile ends, and the gate triggers a new one when the object's turn comes (see
    /// [`gate`]). In a burst (every token due after an outage, or asked to refresh) no
    /// reconcile stays parked: kube-runtime's runner polls each running reconcile whenever it
    /// wakes, and a parked one held its frames (and, waiting after the fetch, copies of both
    /// owned Secrets: at 10,000 tokens ~12 KiB an object above the steady RSS).
    fn queue_if_due(&mut self, obj: &GebetaAccessToken, request: Option<&str>) -> bool {
        let now = Timestamp::now();
        let held = [self.state.retry_at, self.state.server_not_before]
            .into_iter()
            .flatten()
            .any(|r| r > now);
        if self.permit.is_some() || held {
            return true;
        }
        let due = plan::due_from_status(obj.status.as_ref(), request, obj.spec.suspended, now);
        // A token's first call queues here too, once its inputs read well: parked in `act`
        // instead, every new token of an apply held a slot of kube-runtime's runner, whose
        // table keeps its largest size for good (~0.55 KiB a slot; at 1,000 tokens 1.1 MiB).
        let first = || {
            plan::names_no_token(obj.status.as_ref(), obj.spec.suspended)
                && self
                    .cached_inputs(obj)
                    .is_some_and(|cached| cached.value.is_ok())
        };
        let Some(deadline) = due.or_else(|| first().then_some(now)) else {
            return true;
        };
        self.deadline = deadline;
        self.permit = self.shared.gate.try_acquire_or_defer(&self.key(), deadline);
        self.permit.is_some()
    }

    /// What exists: owned Secrets from the cache; a name the cache lacks is looked up, as a
    /// Secret there that is not ours (no labels) must never be written over. `None` when the
    /// cache has not caught up with one of our writes.
    async fn fetch(&mut self, obj: &GebetaAccessToken) -> Result<Option<Fetched>, Error> {
        let spec = &obj.spec;
        let uid = obj.uid().unwrap_or_default();
        let keys = Keys::of(obj);
        let refresh_name = secret::refresh_secret_name(&self.name);
        let (Ok(target), Ok(refresh)) = (self.owned(&spec.secret_name), self.owned(&refresh_name))
        else {
            return Ok(None);
        };
        // A name the cache lacks is read, as a Secret of someone else's may be in the way,
        // unless a source is not ready: then there is nothing to write yet, and the read
        // waits for the sources (while a large apply is under way, objects wait for their
        // service accounts through many reconciles, and these reads were most of the
        // operator's requests).
        let sources_ready = self.sources_ready(obj);
        let target = match target {
            None if sources_ready => self.secrets.get_opt(&spec.secret_name).await?,
            found => found,
        };
        let refresh = match refresh {
            None if sources_ready => self.secrets.get_opt(&refresh_name).await?,
            found => found,
        };
        let spec_problem = check_spec(obj, &keys, &refresh_name);
        let conflict = [(&target, &spec.secret_name), (&refresh, &refresh_name)]
            .into_iter()
            .find(|(s, _)| {
                s.as_ref()
                    .is_some_and(|s| !secret::is_ours(&s.metadata, &uid))
            })
            .map(|(_, name)| conflict(name));
        let hard_blocker = spec_problem.or(conflict);
        let target = target.filter(|s| secret::is_ours(&s.metadata, &uid));
        let current_token = target
            .as_ref()
            .and_then(|s| secret::read_value(s, &keys.token));
        let session = match &refresh {
            Some(s) if hard_blocker.is_none() => RefreshState::from_secret(s),
            _ => RefreshState::default(),
        };
        let times = current_token.as_deref().and_then(|t| {
            target
                .as_ref()
                .and_then(secret::recorded_times)
                .or_else(|| session.times_of(t))
                .or_else(|| {
                    let claims = decode_claims(t).ok()?;
                    TokenTimes::from_claims(claims.expires_at(), claims.issued_at())
                })
        });
        Ok(Some(Fetched {
            had_token_secret: target.is_some(),
            token_present: current_token.is_some(),
            target,
            refresh,
            hard_blocker,
            current_token,
            session,
            times,
        }))
    }

    /// Decides ([`plan`]) and acts: calls the API (or stores an answer a failed write left
    /// in memory) after taking a permit at the deadline gate. A new token updates `fetched`.
    async fn act(
        &mut self,
        obj: &GebetaAccessToken,
        now: Timestamp,
        fetched: &mut Fetched,
        request: Option<String>,
        manual_request: bool,
    ) -> Result<Acted, Error> {
        let spec = &obj.spec;
        let uid = obj.uid().unwrap_or_default();
        let inputs = Box::pin(self.inputs(obj)).await?;
        let fingerprint = inputs
            .as_ref()
            .ok()
            .map(|(c, s)| secret::source_fingerprint(c, s));
        let retry_key = (fingerprint.clone(), request);
        let retry_at = self
            .state
            .retry_at
            .filter(|_| self.state.retry_key.as_deref() == Some(&retry_key));
        let decision = Situation {
            now,
            token: fetched.times,
            has_session: fetched.session.refresh_token.is_some(),
            fingerprint: fingerprint.as_deref(),
            session_fingerprint: fetched.session.source_fingerprint.as_deref(),
            refresh_before: refresh_before(obj),
            seed: schedule::jitter_seed(&uid),
            manual_request,
            retry_at,
            server_not_before: self.state.server_not_before,
            last_call: self.state.last_call,
            nudge_interval: self.ctx().settings.refresh_request_interval,
            refresh_outcome_unknown: self.state.refresh_outcome_unknown,
        }
        .decide();
        let unwritten = self
            .state
            .unwritten
            .take()
            .filter(|u| u.token.as_ref().is_none_or(|(_, t)| t.is_valid_at(now)));
        let result = match (unwritten, decision) {
            (Some(u), _) => {
                // Answered before but not stored: store it, call nothing. The failed write
                // may have landed after all (an answer lost with the connection), and the
                // cache may not show it yet: read both Secrets so that a write that did land
                // is not made twice.
                self.work().await;
                let ours = |s: Option<Secret>| s.filter(|s| secret::is_ours(&s.metadata, &uid));
                let refresh_name = secret::refresh_secret_name(&self.name);
                let target = ours(Box::pin(self.secrets.get_opt(&spec.secret_name)).await?);
                fetched.refresh = ours(Box::pin(self.secrets.get_opt(&refresh_name)).await?);
                Box::pin(self.store(obj, *u, &mut fetched.refresh, target.as_ref()))
                    .await?
                    .map(Exchange::Issued)
            }
            (None, Decision::Call(call)) => {
                tracing::debug!(?call, "calling the Gebeta API");
                self.work().await;
                let session = fetched.session.clone();
                Some(
                    Box::pin(self.exchange(
                        obj,
                        call,
                        inputs.as_ref().ok(),
                        fingerprint,
                        &session,
                        &mut fetched.refresh,
                        fetched.target.as_ref(),
                    ))
                    .await?,
                )
            }
            (None, _) => None,
        };
        let exchanged = match result {
            Some(Exchange::Issued(new_times)) => {
                tracing::info!(expires_at = %new_times.expires_at, "wrote a new access token");
                self.state.failures = 0;
                self.state.retry_at = None;
                self.state.retry_key = None;
                self.state.server_not_before = None;
                self.state.last_call = Some(now);
                self.state.expires_at = Some(new_times.expires_at);
                fetched.times = Some(new_times);
                fetched.token_present = true;
                if !spec.rollout_restart_targets.is_empty() {
                    self.state.pending_restart = Some(conditions::format_time(new_times.issued_at));
                    self.state.restart_failures = 0;
                }
                Some(Exchanged::Issued(new_times))
            }
            Some(Exchange::Failed {
                problem,
                retry_after,
            }) => {
                self.ctx().metrics.refresh_failed(problem.reason);
                self.state.failures = self.state.failures.saturating_add(1);
                let remaining = fetched
                    .times
                    .filter(|t| t.is_valid_at(now))
                    .map(|t| t.remaining(now));
                let delay = schedule::retry_delay(
                    self.state.failures,
                    retry_after,
                    remaining,
                    rand::random::<f64>(),
                );
                tracing::warn!(
                    reason = problem.reason,
                    error = %problem.message,
                    retry_in = ?delay,
                    "access token exchange failed"
                );
                self.state.retry_at = now
                    .checked_add(SignedDuration::try_from(delay).unwrap_or_default())
                    .ok();
                self.state.retry_key = Some(Box::new(retry_key));
                self.state.server_not_before =
                    self.state.retry_at.filter(|_| retry_after.is_some());
                self.state.last_call = Some(now);
                Some(Exchanged::Failed {
                    problem,
                    retry_at: self.state.retry_at,
                })
            }
            None => None,
        };
        Ok(Acted {
            decision: Some(decision),
            exchanged,
            input_problem: inputs.err(),
        })
    }

    /// Both input tokens, or the first problem with them: reused from the last read while no
    /// watch event touched an input (see [`index`]), else read with every name indexed first.
    async fn inputs(
        &mut self,
        obj: &GebetaAccessToken,
    ) -> Result<Result<(Token, Token), Problem>, Error> {
        if let Some(cached) = self.cached_inputs(obj) {
            return Ok(cached.value.clone());
        }
        let epoch = self.shared.index.epoch(&self.ns, &self.name);
        let generation = obj.metadata.generation;
        let mut refs = Refs::of_spec(obj);
        let places = [
            (&obj.spec.client_token, "client token"),
            (&obj.spec.server_token, "server token"),
        ]
        .map(|(source, which)| self.input_place(source, which));
        refs.secrets
            .extend(places.iter().flatten().map(|p| p.secret.clone()));
        self.shared.index.set(&self.ns, &self.name, refs.clone());
        let mut accounts = Vec::new();
        let value = match places {
            // Nothing is read while a source is not ready: the first problem is the answer.
            [Err(problem), _] | [_, Err(problem)] => Err(problem),
            [Ok(client), Ok(server)] => {
                // Both reads at once (one when both name the same Secret): in a fresh process
                // the first due refresh of every object waits for them, and under load each
                // round trip is a large part of its margin.
                let reading = match self.read_permit.take() {
                    Some(permit) => permit,
                    None => self.shared.reads.acquire(self.deadline).await,
                };
                let (client_secret, server_secret) = if client.secret == server.secret {
                    let found = Box::pin(self.secrets.get_opt(&client.secret)).await?;
                    (found.clone(), found)
                } else {
                    Box::pin(futures::future::try_join(
                        self.secrets.get_opt(&client.secret),
                        self.secrets.get_opt(&server.secret),
                    ))
                    .await?
                };
                drop(reading);
                read_input(&client, client_secret.as_ref()).and_then(|(client, client_account)| {
                    read_input(&server, server_secret.as_ref()).map(|(server, server_account)| {
                        accounts.extend(client_account);
                        accounts.extend(server_account);
                        (client, server)
                    })
                })
            }
        };
        self.state.inputs = Some(CachedInputs {
            epoch,
            generation,
            read_at: std::time::Instant::now(),
            refs,
            value: value.clone(),
            accounts,
        });
        Ok(value)
    }

    /// This object's place in the gates' queues.
    fn key(&self) -> Key {
        (self.ns.clone(), self.name.clone())
    }

    /// Whether both inputs have a place to be read from (a source account that is not ready
    /// has none yet).
    fn sources_ready(&self, obj: &GebetaAccessToken) -> bool {
        [&obj.spec.client_token, &obj.spec.server_token]
            .into_iter()
            .all(|source| self.input_place(source, "input").is_ok())
    }

    /// The inputs last read, if no watch event touched them since and the spec is the same.
    fn cached_inputs(&self, obj: &GebetaAccessToken) -> Option<&CachedInputs> {
        let epoch = self.shared.index.epoch(&self.ns, &self.name);
        self.state.inputs.as_ref().filter(|cached| {
            cached.epoch == epoch
                && cached.generation == obj.metadata.generation
                // A problem is looked at again at the blocked object's recheck: it may have
                // been fixed by a change whose event never came (a watch that was down).
                && (cached.value.is_ok() || cached.read_at.elapsed() < BLOCKED_RECHECK / 2)
        })
    }

    /// The source accounts of the inputs last read (see [`CachedInputs::accounts`]).
    fn source_accounts(&self) -> Vec<String> {
        self.state
            .inputs
            .as_ref()
            .map(|i| i.accounts.clone())
            .unwrap_or_default()
    }

    /// Where an input token is read from: the Secret a `secretKeyRef` names, or the token
    /// Secret of a Ready GebetaServiceAccount (from the cache).
    fn input_place(
        &self,
        source: &TokenSource,
        which: &'static str,
    ) -> Result<InputPlace, Problem> {
        if let Some(sel) = &source.secret_key_ref {
            return Ok(InputPlace {
                which,
                secret: sel.name.clone(),
                key: sel.key.clone(),
                account: None,
            });
        }
        let Some(account) = &source.service_account_ref else {
            return Err(Problem::new(
                reason::INVALID_SPEC,
                format!("the {which} names neither serviceAccountRef nor secretKeyRef"),
            ));
        };
        let not_ready = |why: String| Err(Problem::new(reason::SOURCE_NOT_READY, why));
        let Some(gsa) = self.shared.accounts.source(&self.ns, &account.name) else {
            return not_ready(format!(
                "GebetaServiceAccount {} ({which}) not found",
                account.name
            ));
        };
        if !gsa.ready {
            return not_ready(format!(
                "GebetaServiceAccount {} ({which}) is not Ready",
                account.name
            ));
        }
        Ok(InputPlace {
            which,
            secret: gsa.token_secret,
            key: "token".into(),
            account: Some(account.name.clone()),
        })
    }

    /// Calls the API and stores what it answered (see [`Self::store`]).
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &mut self,
        obj: &GebetaAccessToken,
        call: Call,
        inputs: Option<&(Token, Token)>,
        fingerprint: Option<String>,
        session: &RefreshState,
        refresh: &mut Option<Secret>,
        target: Option<&Secret>,
    ) -> Result<Exchange, Error> {
        let ctx = self.shared.ctx.clone();
        let gebeta = &ctx.gebeta;
        let failed = |call: Call, e: gebeta::Error| {
            let reason = if e.is_unauthorized()
                || (call == Call::Auth && matches!(e, gebeta::Error::Validation { .. }))
            {
                reason::INVALID_CREDENTIALS
            } else if matches!(e, gebeta::Error::Decode { .. }) {
                reason::INVALID_TOKEN_FROM_UPSTREAM
            } else {
                reason::UPSTREAM_UNAVAILABLE
            };
            Exchange::Failed {
                retry_after: e.retry_after(),
                problem: Problem::new(reason, e.to_string()),
            }
        };
        let mut next = session.clone();
        let pair = match (call, session.refresh_token.as_ref()) {
            (Call::Refresh, Some(refresh_token)) => match gebeta.refresh(refresh_token).await {
                Ok(pair) => {
                    next.refresh_token = pair.refresh_token.clone().or(next.refresh_token);
                    pair
                }
                Err(e) if e.is_unauthorized() || matches!(e, gebeta::Error::Validation { .. }) => {
                    tracing::info!(
                        error = %e,
                        "the refresh token was refused; authenticating again"
                    );
                    next.refresh_token = None;
                    match inputs {
                        Some((client, server)) => match gebeta.auth(client, server).await {
                            Ok(pair) => {
                                next.refresh_token = pair.refresh_token.clone();
                                next.source_fingerprint = fingerprint;
                                next.source_accounts = self.source_accounts();
                                pair
                            }
                            Err(e) => {
                                self.apply_secret(secret::refresh_secret(obj, &next), refresh)
                                    .await?;
                                return Ok(failed(Call::Auth, e));
                            }
                        },
                        None => {
                            self.apply_secret(secret::refresh_secret(obj, &next), refresh)
                                .await?;
                            return Ok(Exchange::Failed {
                                problem: Problem::new(
                                    reason::INVALID_CREDENTIALS,
                                    format!(
                                        "{e}; cannot authenticate again until the inputs are fixed"
                                    ),
                                ),
                                retry_after: None,
                            });
                        }
                    }
                }
                Err(e) => {
                    // Without an answer we cannot tell whether the server rotated the refresh
                    // token: the next attempt authenticates rather than risk a refusal.
                    self.state.refresh_outcome_unknown |= outcome_unknown(&e);
                    return Ok(failed(Call::Refresh, e));
                }
            },
            _ => {
                let Some((client, server)) = inputs else {
                    // Unreachable by `decide`: an auth is only planned with usable inputs.
                    return Ok(Exchange::Failed {
                        problem: Problem::new(
                            reason::INVALID_CREDENTIALS,
                            "no usable client and server tokens",
                        ),
                        retry_after: None,
                    });
                };
                match gebeta.auth(client, server).await {
                    Ok(pair) => {
                        next.refresh_token = pair.refresh_token.clone();
                        next.source_fingerprint = fingerprint;
                        next.source_accounts = self.source_accounts();
                        pair
                    }
                    Err(e) => return Ok(failed(Call::Auth, e)),
                }
            }
        };
        self.state.refresh_outcome_unknown = false;
        let settings = &ctx.settings;
        let validated = validate(
            pair.access_token.expose(),
            Timestamp::now(),
            settings.default_token_lifetime,
            settings.max_token_lifetime,
        );
        let answer = Unwritten {
            session: next,
            token: validated
                .as_ref()
                .ok()
                .map(|t| (pair.access_token.clone(), *t)),
        };
        // A rotated refresh token is stored even when the access token is unusable.
        let stored = self.store(obj, answer, refresh, target).await?;
        Ok(match (stored, validated) {
            (Some(times), _) | (None, Ok(times)) => Exchange::Issued(times),
            (None, Err(problem)) => Exchange::Failed {
                problem,
                retry_after: None,
            },
        })
    }

    /// Stores an answer: the refresh Secret first (a rotated refresh token must survive a
    /// crash), then the access token. Until both writes succeed the answer is kept in memory,
    /// and the next attempt writes it instead of calling the API again. Returns the times of
    /// the token written, if any.
    async fn store(
        &mut self,
        obj: &GebetaAccessToken,
        answer: Unwritten,
        refresh: &mut Option<Secret>,
        target: Option<&Secret>,
    ) -> Result<Option<TokenTimes>, Error> {
        self.state.unwritten = Some(Box::new(answer.clone()));
        if answer.session.refresh_token.is_some() || refresh.is_some() {
            Box::pin(self.apply_secret(secret::refresh_secret(obj, &answer.session), refresh))
                .await?;
        }
        if let Some((token, times)) = &answer.token {
            let mut current = target.cloned();
            Box::pin(self.apply_secret(
                secret::target_secret(obj, token.expose(), times),
                &mut current,
            ))
            .await?;
        }
        self.state.unwritten = None;
        Ok(answer.token.map(|(_, times)| times))
    }

    /// Server-side applies `desired` unless `current` already matches it. `current` is updated
    /// to what was written. A Secret's type is immutable: a template asking for another type
    /// keeps the live one (deleting the Secret to recreate it would leave workloads without a
    /// token), and the object reports it.
    async fn apply_secret(
        &mut self,
        mut desired: Secret,
        current: &mut Option<Secret>,
    ) -> Result<(), Error> {
        let name = desired.name_any();
        if let Some(cur) = current.as_ref() {
            if secret::type_differs(cur, &desired) {
                self.type_kept = Some((
                    cur.type_.clone().unwrap_or_else(|| "Opaque".into()),
                    desired.type_.clone().unwrap_or_else(|| "Opaque".into()),
                ));
                desired.type_ = cur.type_.clone();
            }
            if !secret::needs_apply(cur, &desired) {
                return Ok(());
            }
        }
        self.work().await;
        let written = Box::pin(self.secrets.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        ))
        .await?;
        let write = Written {
            before: current.as_ref().and_then(|c| c.resource_version()),
            after: written.resource_version(),
            at: std::time::Instant::now(),
        };
        match self.state.written.iter_mut().find(|(n, _)| *n == name) {
            Some((_, w)) => *w = write,
            None => self.state.written.push((name, write)),
        }
        *current = Some(written);
        Ok(())
    }

    async fn write_status(
        &mut self,
        before: Option<String>,
        status: &GebetaAccessTokenStatus,
    ) -> Result<(), Error> {
        self.work().await;
        Box::pin(
            self.shared
                .ctx
                .write_status(&self.api, &self.name, before.as_deref(), status),
        )
        .await?;
        Ok(())
    }

    /// After a failed Kubernetes write of an answer: says so in status and an event (best
    /// effort: the API server may be what failed). The answer itself waits in memory.
    async fn report_write_failure(&mut self, obj: &GebetaAccessToken, err: &Error) {
        let prev = obj.status.clone().unwrap_or_default();
        if prev.last_failure_reason.as_deref() == Some(reason::SECRET_WRITE_FAILED) {
            return;
        }
        let message = format!(
            "the Gebeta API answered but storing the answer failed ({err}); it is written at \
             the next attempt, without a new call"
        );
        // Applied like every other status write: a merge patch would leave these two fields
        // owned by an update entry of ours, which a later apply that omits them cannot clear.
        let status = GebetaAccessTokenStatus {
            last_failure_reason: Some(reason::SECRET_WRITE_FAILED.into()),
            last_failure_message: Some(message.clone()),
            ..prev
        };
        let before = obj.resource_version();
        let _ = Box::pin(self.shared.ctx.write_status(
            &self.api,
            &self.name,
            before.as_deref(),
            &status,
        ))
        .await;
        self.ctx()
            .event(
                &obj.object_ref(&()),
                EventType::Warning,
                reason::SECRET_WRITE_FAILED,
                "Refresh",
                message,
            )
            .await;
    }

    /// Sets the pending `restartedAt` value on the pod template of every target that opted in
    /// (see [`RESTART_OPT_IN_ANNOTATION`]). Returns the targets that were skipped, with why;
    /// transient failures keep the value pending.
    async fn restart_targets(&mut self, obj: &GebetaAccessToken) -> Vec<(String, &'static str)> {
        let Some(value) = self.state.pending_restart.clone() else {
            return Vec::new();
        };
        self.work().await;
        let client = self.ctx().kube.clone();
        let mut skipped = Vec::new();
        let mut retry = false;
        for target in &obj.spec.rollout_restart_targets {
            let ns = &self.ns;
            let (name, value) = (&target.name, value.as_str());
            let result = match target.kind {
                WorkloadKind::Deployment => {
                    restart(
                        Api::<Deployment>::namespaced(client.clone(), ns),
                        name,
                        &self.name,
                        value,
                    )
                    .await
                }
                WorkloadKind::StatefulSet => {
                    restart(
                        Api::<StatefulSet>::namespaced(client.clone(), ns),
                        name,
                        &self.name,
                        value,
                    )
                    .await
                }
                WorkloadKind::DaemonSet => {
                    restart(
                        Api::<DaemonSet>::namespaced(client.clone(), ns),
                        name,
                        &self.name,
                        value,
                    )
                    .await
                }
            };
            let what = format!("{:?}/{}", target.kind, target.name);
            match result {
                Ok(Restart::Done) => {}
                Ok(Restart::NotFound) => skipped.push((what, reason::ROLLOUT_TARGET_NOT_FOUND)),
                Ok(Restart::NotOptedIn) => {
                    skipped.push((what, reason::ROLLOUT_TARGET_NOT_OPTED_IN))
                }
                Err(e) => {
                    tracing::warn!(
                        kind = ?target.kind,
                        target = %target.name,
                        error = %e,
                        "rollout restart failed; will retry"
                    );
                    // A conflict (the workload changed under the read) is routine: retried
                    // without an event.
                    if !matches!(&e, kube::Error::Api(s) if s.code == 409) {
                        let why = crate::controllers::describe_kube_error(&e);
                        skipped.push((format!("{what} ({why})"), reason::ROLLOUT_RESTART_FAILED));
                    }
                    retry = true;
                }
            }
        }
        if retry {
            self.state.restart_failures = self.state.restart_failures.saturating_add(1);
        } else {
            self.state.pending_restart = None;
            self.state.restart_failures = 0;
        }
        skipped
    }
}

/// What became of one rollout-restart target.
enum Restart {
    Done,
    NotFound,
    NotOptedIn,
}

/// Restarts workload `name` (a new `restartedAt` on its pod template) if it opted in to
/// restarts by the access token `token`: creating a GebetaAccessToken must not let anyone
/// restart workloads that did not ask for it with the operator's rights.
async fn restart<K>(
    api: Api<K>,
    name: &str,
    token: &str,
    value: &str,
) -> Result<Restart, kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(workload) = api.get_opt(name).await? else {
        return Ok(Restart::NotFound);
    };
    let opted_in = workload
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(RESTART_OPT_IN_ANNOTATION))
        .is_some_and(|v| v.split(',').any(|t| t.trim() == token));
    if !opted_in {
        return Ok(Restart::NotOptedIn);
    }
    let patch = Patch::Merge(serde_json::json!({
        "metadata": {"resourceVersion": workload.meta().resource_version},
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: value}}}}
    }));
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    api.patch(name, &params, &patch).await?;
    Ok(Restart::Done)
}

fn refresh_before(obj: &GebetaAccessToken) -> Option<Duration> {
    obj.spec.refresh_before.as_deref().and_then(parse_duration)
}

/// A Secret the object needs is in the way.
fn conflict(name: &str) -> Problem {
    Problem::new(
        reason::SECRET_CONFLICT,
        format!(
            "Secret {name} exists and is not managed by this GebetaAccessToken; \
             delete or rename it"
        ),
    )
}

/// Spec problems the schema cannot catch.
fn check_spec(obj: &GebetaAccessToken, keys: &Keys, refresh_name: &str) -> Option<Problem> {
    let problem = |m: String| Some(Problem::new(reason::INVALID_SPEC, m));
    // Admission refuses these too; objects admitted before the rules existed get here.
    if let Some(template) = &obj.spec.secret_template {
        let problems = template.problems();
        if !problems.is_empty() {
            return problem(problems.join("; "));
        }
    }
    // Also with default key names, which the template does not spell out.
    if keys.token == keys.expires_at {
        return problem(format!(
            "secretTemplate.tokenKey and expiresAtKey are both {:?}",
            keys.token
        ));
    }
    if let Some(before) = &obj.spec.refresh_before
        && parse_duration(before).is_none()
    {
        return problem(format!("refreshBefore {before:?} is not a duration"));
    }
    if obj.spec.secret_name == refresh_name {
        return problem(format!(
            "secretName {refresh_name} is the name of the operator's refresh Secret"
        ));
    }
    None
}

/// Whether a failed call may have been carried out by the server (no answer reached us).
fn outcome_unknown(e: &gebeta::Error) -> bool {
    matches!(
        e,
        gebeta::Error::Timeout { .. } | gebeta::Error::Transport { connect: false, .. }
    )
}

/// Checks an access token from the API before it is written: a JWT with an expiry in the
/// future (or no expiry: the default lifetime; an expiry more than `max_lifetime` away is not
/// believed either). Messages never contain the token.
pub fn validate(
    token: &str,
    received: Timestamp,
    default_lifetime: Duration,
    max_lifetime: Duration,
) -> Result<TokenTimes, Problem> {
    let invalid = |m: String| Problem::new(reason::INVALID_TOKEN_FROM_UPSTREAM, m);
    let expired = || invalid("the API answered an access token that is already expired".into());
    if token.trim().is_empty() {
        return Err(invalid("the API answered an empty access token".into()));
    }
    let claims = decode_claims(token).map_err(|e| {
        invalid(format!(
            "the API answered an access token that is unusable: {e}"
        ))
    })?;
    let believable = |exp: &Timestamp| {
        let from = claims.issued_at().unwrap_or(received).min(received);
        SignedDuration::try_from(max_lifetime)
            .ok()
            .and_then(|max| from.checked_add(max).ok())
            .is_some_and(|latest| *exp <= latest)
    };
    let exp = claims.expires_at();
    if let Some(exp) = exp.filter(|e| !believable(e)) {
        tracing::warn!(
            max_lifetime = ?max_lifetime,
            "the API answered an access token valid for longer than the longest lifetime \
             believed; planning with the default lifetime"
        );
        // Not believed as a lifetime, but still a bound: the token is never taken to live past
        // its own `exp` (an `iat` far in the past makes a near `exp` look absurd), and one
        // already expired is never written.
        let default_expiry = SignedDuration::try_from(default_lifetime)
            .ok()
            .and_then(|l| received.checked_add(l).ok())
            .ok_or_else(|| invalid("the default token lifetime is out of range".into()))?;
        return TokenTimes::received(
            Some(exp.min(default_expiry)),
            None,
            received,
            default_lifetime,
        )
        .ok_or_else(expired);
    }
    TokenTimes::received(exp, claims.issued_at(), received, default_lifetime).ok_or_else(expired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::access_token::secret::tests::gat;
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

    fn jwt(payload: &str) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256"}"#),
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn templates_admitted_before_the_rules_are_refused_in_the_reconcile() {
        use crate::crd::access_token::SecretTemplate;
        let check = |template: SecretTemplate| {
            let obj = gat(Some(template));
            check_spec(&obj, &Keys::of(&obj), "maps-gebeta-refresh")
        };
        let p = check(SecretTemplate {
            type_: Some("kubernetes.io/service-account-token".into()),
            ..Default::default()
        })
        .expect("a service-account token type is refused");
        assert_eq!(p.reason, reason::INVALID_SPEC);
        assert!(
            p.message.contains("kubernetes.io/service-account-token"),
            "{}",
            p.message
        );
        let p = check(SecretTemplate {
            annotations: [("gebeta.app/account-id".to_string(), "x".to_string())].into(),
            ..Default::default()
        })
        .expect("the operator's own annotations are refused");
        assert!(p.message.contains("gebeta.app/account-id"), "{}", p.message);
        assert_eq!(
            check(SecretTemplate {
                type_: Some("example.com/gebeta-token".into()),
                labels: [("team".to_string(), "maps".to_string())].into(),
                ..Default::default()
            }),
            None
        );
        // Equal keys through a default name.
        let p = check(SecretTemplate {
            token_key: Some("expiresAt".into()),
            ..Default::default()
        })
        .expect("tokenKey equal to the default expiresAtKey");
        assert_eq!(p.reason, reason::INVALID_SPEC);
    }

    #[test]
    fn validates_tokens_from_the_api() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let hour = Duration::from_secs(3600);
        let month = Duration::from_secs(30 * 24 * 3600);
        let times = |payload: &str| validate(&jwt(payload), now, hour, month).unwrap();
        let ok = times(r#"{"iat":1800000000,"exp":1800000060}"#);
        assert_eq!(ok.lifetime(), Duration::from_secs(60));
        let no_exp = times(r#"{"sub":"x"}"#);
        assert_eq!(no_exp.lifetime(), hour);
        // Valid for ten years: not believed, planned as a token without `exp`.
        let decade = times(r#"{"iat":1800000000,"exp":2115360000}"#);
        assert_eq!(decade.lifetime(), hour);
        assert_eq!(decade.issued_at, now);
        // Just within the limit: believed.
        let long = times(r#"{"iat":1800000000,"exp":1802592000}"#);
        assert_eq!(long.lifetime(), month);
        // Issued 40 days ago (a clock far behind): the lifetime is not believed, but the token
        // still expires at its `exp`, ten minutes from now, not an hour from now.
        let old_iat = times(r#"{"iat":1796544000,"exp":1800000600}"#);
        assert_eq!(old_iat.expires_at.as_second(), 1_800_000_600);
        assert_eq!(old_iat.issued_at, now);
        for (token, what) in [
            ("", "empty"),
            ("not-a-jwt-secret-value", "unusable"),
            (
                &jwt(r#"{"iat":1799990000,"exp":1799999999}"#),
                "already expired",
            ),
            (
                &jwt(r#"{"iat":1796544000,"exp":1799999999}"#),
                "already expired",
            ),
        ] {
            let p = validate(token, now, hour, month).unwrap_err();
            assert_eq!(p.reason, reason::INVALID_TOKEN_FROM_UPSTREAM);
            assert!(p.message.contains(what), "{}", p.message);
            assert!(!p.message.contains("secret-value"), "{}", p.message);
        }
    }
}
