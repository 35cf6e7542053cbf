//! Watches that record what the operator does, with timestamps, without polling objects one
//! by one: when each object first became Ready (and whether it ever stopped being Ready), and
//! every access token the operator wrote (when, replacing which, and how long before the old
//! one's expiry).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

use super::objects::{account_conditions, is_ready, ready_condition, token_conditions};
use crate::{
    controllers::{MANAGED_BY, MANAGED_BY_LABEL},
    crd::{GebetaAccessToken, GebetaServiceAccount, common::Condition},
    gebeta::decode_claims,
};

/// `(namespace, name)`.
pub type Key = (String, String);

fn key_of<K: kube::Resource>(obj: &K) -> Key {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Which of the two kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    ServiceAccount,
    AccessToken,
}

/// What the Ready watch has seen of one object.
#[derive(Clone, Debug, Default)]
pub struct ReadyState {
    /// When the watch first saw `Ready=True`.
    pub first_ready: Option<Timestamp>,
    /// `Ready` as last seen.
    pub ready: bool,
    /// Reason and message of the last `Ready` condition seen.
    pub reason: String,
    pub message: String,
    /// Times the object went from Ready to not Ready.
    pub lost_ready: Vec<Timestamp>,
    /// Deleted since.
    pub deleted: bool,
}

/// Records when every `GebetaServiceAccount` and `GebetaAccessToken` (in a namespace or the
/// cluster, optionally matching a label selector) becomes Ready.
pub struct ReadyTracker {
    state: Arc<Mutex<HashMap<(Kind, Key), ReadyState>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl ReadyTracker {
    pub fn start(client: &Client, namespace: Option<&str>, selector: Option<&str>) -> Self {
        let state = Arc::new(Mutex::new(HashMap::new()));
        let mut config = watcher::Config::default().any_semantic();
        if let Some(selector) = selector {
            config = config.labels(selector);
        }
        let tasks = vec![
            spawn_ready_watch::<GebetaServiceAccount>(
                api(client, namespace),
                config.clone(),
                Kind::ServiceAccount,
                state.clone(),
                account_conditions,
            ),
            spawn_ready_watch::<GebetaAccessToken>(
                api(client, namespace),
                config,
                Kind::AccessToken,
                state.clone(),
                token_conditions,
            ),
        ];
        ReadyTracker { state, tasks }
    }

    /// Objects of `kind` seen Ready at least once (and not deleted).
    pub fn ever_ready(&self, kind: Kind) -> usize {
        lock(&self.state)
            .iter()
            .filter(|((k, _), s)| *k == kind && s.first_ready.is_some() && !s.deleted)
            .count()
    }

    /// Objects of `kind` Ready now.
    pub fn ready_now(&self, kind: Kind) -> usize {
        lock(&self.state)
            .iter()
            .filter(|((k, _), s)| *k == kind && s.ready && !s.deleted)
            .count()
    }

    /// A copy of everything seen.
    pub fn snapshot(&self) -> HashMap<(Kind, Key), ReadyState> {
        lock(&self.state).clone()
    }

    /// One object's state.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<ReadyState> {
        lock(&self.state)
            .get(&(kind, (namespace.to_string(), name.to_string())))
            .cloned()
    }

    /// Times any object stopped being Ready at or after `since`.
    pub fn lost_ready_since(&self, since: Timestamp) -> Vec<(Kind, Key, Timestamp)> {
        let mut lost = Vec::new();
        for ((kind, key), s) in lock(&self.state).iter() {
            for t in s.lost_ready.iter().filter(|t| **t >= since) {
                lost.push((*kind, key.clone(), *t));
            }
        }
        lost
    }
}

impl Drop for ReadyTracker {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn spawn_ready_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    kind: Kind,
    state: Arc<Mutex<HashMap<(Kind, Key), ReadyState>>>,
    conditions: fn(&K) -> &[Condition],
) -> JoinHandle<()>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    tokio::spawn(async move {
        let mut stream = watcher(api, config).default_backoff().boxed();
        while let Some(event) = stream.next().await {
            let now = Timestamp::now();
            let Ok(event) = event else { continue };
            let (obj, deleted) = match event {
                watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) => (obj, false),
                watcher::Event::Delete(obj) => (obj, true),
                watcher::Event::Init | watcher::Event::InitDone => continue,
            };
            let conds = conditions(&obj);
            let ready = is_ready(conds);
            let mut state = lock(&state);
            let entry = state.entry((kind, key_of(&obj))).or_default();
            if deleted {
                entry.deleted = true;
                entry.ready = false;
                continue;
            }
            entry.deleted = false;
            if ready && entry.first_ready.is_none() {
                entry.first_ready = Some(now);
            }
            if entry.ready && !ready {
                entry.lost_ready.push(now);
            }
            entry.ready = ready;
            if let Some(c) = ready_condition(conds) {
                entry.reason = c.reason.clone();
                entry.message = c.message.clone();
            }
        }
    })
}

/// One access token the operator wrote into a target Secret.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenWrite {
    pub namespace: String,
    pub name: String,
    /// When the watch saw the new token.
    pub at: Timestamp,
    /// `exp`/`iat` of the new token (None: not a readable JWT).
    pub exp: Option<i64>,
    pub iat: Option<i64>,
    /// `exp`/`iat` of the token it replaced (None for the first token of a Secret).
    pub old_exp: Option<i64>,
    pub old_iat: Option<i64>,
}

impl TokenWrite {
    /// For a replacement: seconds between the new token's arrival and the old one's expiry
    /// (negative: the Secret held an expired token for that long).
    pub fn margin_seconds(&self) -> Option<f64> {
        let old_exp = self.old_exp?;
        Some(old_exp as f64 - self.at.as_millisecond() as f64 / 1000.0)
    }

    /// Lifetime of the token it replaced (`exp - iat`), seconds.
    pub fn old_lifetime(&self) -> Option<i64> {
        Some(self.old_exp? - self.old_iat?)
    }

    /// The new token is a JWT with an `exp` after the moment it was seen.
    pub fn new_token_valid(&self) -> bool {
        self.exp
            .is_some_and(|exp| (exp as f64) > self.at.as_millisecond() as f64 / 1000.0)
    }
}

#[derive(Default)]
struct TokenLog {
    /// Target Secret -> (token, exp, iat).
    current: HashMap<Key, (String, Option<i64>, Option<i64>)>,
    writes: Vec<TokenWrite>,
    /// Every secret value seen: access tokens, refresh tokens, account tokens.
    values: HashSet<String>,
}

/// Watches every Secret the operator manages (in a namespace or the cluster): records each
/// access token written to a target Secret, and collects every secret value it sees (access,
/// refresh and service-account tokens) for leak checks.
pub struct TokenObserver {
    log: Arc<Mutex<TokenLog>>,
    task: JoinHandle<()>,
}

/// The key of the access token in target Secrets (the default; the benchmark and tests use
/// no `secretTemplate.tokenKey`).
const TOKEN_KEY: &str = "token";
const REFRESH_TOKEN_KEY: &str = "refreshToken";
const REFRESH_FOR_LABEL: &str = "gebeta.app/refresh-for";
const ACCESS_TOKEN_LABEL: &str = "gebeta.app/access-token";

impl TokenObserver {
    pub fn start(client: &Client, namespace: Option<&str>) -> Self {
        let log = Arc::new(Mutex::new(TokenLog::default()));
        let config = watcher::Config::default()
            .labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"))
            .any_semantic();
        let secrets: Api<Secret> = api(client, namespace);
        let shared = log.clone();
        let task = tokio::spawn(async move {
            let mut stream = watcher(secrets, config).default_backoff().boxed();
            while let Some(event) = stream.next().await {
                let now = Timestamp::now();
                let Ok(event) = event else { continue };
                let secret = match event {
                    watcher::Event::Apply(s) | watcher::Event::InitApply(s) => s,
                    watcher::Event::Delete(s) => {
                        lock(&shared).current.remove(&key_of(&s));
                        continue;
                    }
                    watcher::Event::Init | watcher::Event::InitDone => continue,
                };
                record(&mut lock(&shared), &secret, now);
            }
        });
        TokenObserver { log, task }
    }

    /// Every access token written so far, in the order seen.
    pub fn writes(&self) -> Vec<TokenWrite> {
        lock(&self.log).writes.clone()
    }

    /// Writes seen at or after `since`.
    pub fn writes_since(&self, since: Timestamp) -> Vec<TokenWrite> {
        lock(&self.log)
            .writes
            .iter()
            .filter(|w| w.at >= since)
            .cloned()
            .collect()
    }

    /// Target Secrets holding a token, with its `exp`.
    pub fn current(&self) -> BTreeMap<Key, Option<i64>> {
        lock(&self.log)
            .current
            .iter()
            .map(|(k, (_, exp, _))| (k.clone(), *exp))
            .collect()
    }

    /// The token each target Secret holds now.
    pub fn current_tokens(&self) -> BTreeMap<Key, String> {
        lock(&self.log)
            .current
            .iter()
            .map(|(k, (t, _, _))| (k.clone(), t.clone()))
            .collect()
    }

    /// Every secret value seen so far.
    pub fn values(&self) -> HashSet<String> {
        lock(&self.log).values.clone()
    }

    /// Where a Secret held an expired token: replacements that came after the old token's
    /// expiry, and Secrets whose current token has expired by `now`. Empty is the goal.
    pub fn expired_holdings(&self, now: Timestamp) -> Vec<String> {
        let log = lock(&self.log);
        let mut found: Vec<String> = log
            .writes
            .iter()
            .filter_map(|w| {
                let margin = w.margin_seconds()?;
                (margin <= 0.0).then(|| {
                    format!(
                        "{}/{}: new token seen at {} = {:.1}s after the old one expired",
                        w.namespace, w.name, w.at, -margin
                    )
                })
            })
            .collect();
        let now_s = now.as_millisecond() as f64 / 1000.0;
        for ((ns, name), (_, exp, _)) in &log.current {
            match exp {
                Some(exp) if (*exp as f64) > now_s => {}
                Some(exp) => found.push(format!(
                    "{ns}/{name}: holds a token that expired at {exp} (now {now_s:.1})"
                )),
                None => found.push(format!("{ns}/{name}: holds a token that is not a JWT")),
            }
        }
        found
    }
}

impl Drop for TokenObserver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn data_str(secret: &Secret, key: &str) -> Option<String> {
    let bytes = &secret.data.as_ref()?.get(key)?.0;
    Some(String::from_utf8_lossy(bytes).into_owned())
}

fn record(log: &mut TokenLog, secret: &Secret, now: Timestamp) {
    let labels = secret.labels();
    if labels.contains_key(REFRESH_FOR_LABEL) {
        if let Some(refresh) = data_str(secret, REFRESH_TOKEN_KEY) {
            log.values.insert(refresh);
        }
        return;
    }
    let Some(token) = data_str(secret, TOKEN_KEY) else {
        return;
    };
    log.values.insert(token.clone());
    if !labels.contains_key(ACCESS_TOKEN_LABEL) {
        // A service account's token Secret: collected for leak checks only.
        return;
    }
    let key = key_of(secret);
    let previous = log.current.get(&key).cloned();
    if previous.as_ref().is_some_and(|(t, _, _)| *t == token) {
        return;
    }
    let claims = decode_claims(&token).ok();
    let exp = claims.as_ref().and_then(|c| c.exp);
    let iat = claims.as_ref().and_then(|c| c.iat);
    log.writes.push(TokenWrite {
        namespace: key.0.clone(),
        name: key.1.clone(),
        at: now,
        exp,
        iat,
        old_exp: previous.as_ref().and_then(|p| p.1),
        old_iat: previous.as_ref().and_then(|p| p.2),
    });
    log.current.insert(key, (token, exp, iat));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins_are_measured_against_the_old_expiry() {
        let at: Timestamp = "2025-01-01T00:00:10Z".parse().unwrap();
        let w = TokenWrite {
            namespace: "a".into(),
            name: "b".into(),
            at,
            exp: Some(at.as_second() + 30),
            iat: Some(at.as_second()),
            old_exp: Some(at.as_second() + 4),
            old_iat: Some(at.as_second() - 26),
        };
        assert_eq!(w.margin_seconds(), Some(4.0));
        assert_eq!(w.old_lifetime(), Some(30));
        assert!(w.new_token_valid());
        let expired = TokenWrite {
            exp: Some(at.as_second()),
            old_exp: None,
            ..w
        };
        assert!(!expired.new_token_valid());
        assert_eq!(expired.margin_seconds(), None);
    }
}
