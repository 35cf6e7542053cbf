//! The GebetaAccessToken controller against a real API server (etcd + kube-apiserver +
//! kube-controller-manager) and the in-process simulator, with token lifetimes of seconds.
//!
//! Each test has its own namespace, simulator and controller (watching only that namespace),
//! so the tests run concurrently.

mod support;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use gebeta_operator::{
    controllers::{
        Context, Readiness, Settings, WatchScope,
        access_token::{
            self, REFRESH_ANNOTATION, RESTART_OPT_IN_ANNOTATION, RESTARTED_AT_ANNOTATION,
        },
        conditions,
    },
    crd::{Condition, GebetaAccessToken, GebetaAccessTokenStatus, GebetaServiceAccount},
    gebeta::{
        AccountState, ClientConfig, GebetaClient, Platform, RetryPolicy, Scope, decode_claims,
    },
    metrics::{Metrics, ReconcileLabels},
    sim::{Fault, Sim, SimConfig, SimHandle},
};
use jiff::Timestamp;
use k8s_openapi::{
    ByteString,
    api::{apps::v1::Deployment, core::v1::Secret, events::v1::Event},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(60);
const INPUTS: &str = "gebeta-inputs";

/// One test's world: a namespace, a simulator with a client and a server account made "in
/// the dashboard", their tokens in Secret `gebeta-inputs`, and the controller in-process.
struct Fixture {
    client: Client,
    ns: String,
    sim: SimHandle,
    base_url: String,
    server_id: String,
    operator: Option<Operator>,
}

struct Operator {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    metrics: Arc<Metrics>,
}

impl Fixture {
    async fn new(prefix: &str, ttl_secs: u64, rotate: bool) -> Fixture {
        let client = support::client();
        let ns = support::namespace(&client, prefix).await;
        let sim = Sim::start(SimConfig {
            token_ttl: Duration::from_secs(ttl_secs),
            rotate_refresh_tokens: rotate,
            ..SimConfig::default()
        })
        .await
        .expect("start the simulator");
        let (_, client_token) = sim.create_dashboard_account(Platform::Web, vec![Scope::Tile]);
        let (server_id, server_token) =
            sim.create_dashboard_account(Platform::Web, vec![Scope::Tile, Scope::Direction]);
        let base_url = sim.base_url();
        let fixture = Fixture {
            client,
            ns,
            sim,
            base_url,
            server_id,
            operator: None,
        };
        fixture
            .put_secret(
                INPUTS,
                &[("client", &client_token), ("server", &server_token)],
            )
            .await;
        fixture
    }

    /// A running controller with one Ready object `maps` writing Secret `maps-token`.
    async fn with_ready_token(
        prefix: &str,
        ttl_secs: u64,
        rotate: bool,
    ) -> (Fixture, GebetaAccessTokenStatus) {
        let mut f = Fixture::new(prefix, ttl_secs, rotate).await;
        f.start();
        f.create("maps", Fixture::spec("maps-token")).await;
        let status = f.wait_ready("maps").await;
        (f, status)
    }

    fn start(&mut self) {
        self.start_with(Settings::default());
    }

    /// The identity the in-process controller acts as, so that the audit log tells its
    /// requests from the test's.
    fn operator_user(&self) -> String {
        format!("operator-{}", self.ns)
    }

    fn start_with(&mut self, settings: Settings) {
        assert!(self.operator.is_none(), "already running");
        let gebeta = GebetaClient::new(ClientConfig {
            base_url: self.base_url.clone(),
            request_timeout: Duration::from_secs(2),
            // One attempt per call: the controller's own backoff is what these tests observe.
            retry: RetryPolicy::no_retries(),
            ..ClientConfig::default()
        })
        .expect("a Gebeta client");
        let metrics = Metrics::new();
        let kube = support::control_plane()
            .client_as(&self.operator_user(), &["system:masters"])
            .expect("a client for the operator");
        let ctx = Context::new(kube, gebeta, metrics.clone(), settings);
        let scope = WatchScope {
            namespaces: vec![self.ns.clone()],
            label_selector: None,
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(access_token::run(
            ctx,
            scope,
            shutdown.clone(),
            Readiness::default(),
        ));
        self.operator = Some(Operator {
            shutdown,
            task,
            metrics,
        });
    }

    /// Graceful stop: running reconciles finish, nothing new starts.
    async fn stop(&mut self) {
        if let Some(op) = self.operator.take() {
            op.shutdown.cancel();
            tokio::time::timeout(Duration::from_secs(30), op.task)
                .await
                .expect("the controller stops within 30 s")
                .expect("the controller task does not panic");
        }
    }

    fn metrics(&self) -> Arc<Metrics> {
        self.operator.as_ref().expect("running").metrics.clone()
    }

    /// Successful reconciles so far (of the running controller).
    fn reconciles(&self) -> u64 {
        let labels = ReconcileLabels {
            controller: "access_token",
            result: "ok".into(),
        };
        self.metrics().reconciles.get_or_create(&labels).get()
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn gats(&self) -> Api<GebetaAccessToken> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn put_secret(&self, name: &str, data: &[(&str, &str)]) {
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        };
        self.secrets()
            .patch(
                name,
                &PatchParams::apply("test").force(),
                &Patch::Apply(&secret),
            )
            .await
            .unwrap();
    }

    /// Replaces the whole data of Secret `name`.
    async fn replace_secret_data(&self, name: &str, data: &[(&str, &str)]) {
        let mut secret = self.secrets().get(name).await.unwrap();
        secret.data = Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        );
        self.secrets()
            .replace(name, &PostParams::default(), &secret)
            .await
            .unwrap();
    }

    /// A spec reading both tokens from `gebeta-inputs`.
    fn spec(secret_name: &str) -> Value {
        json!({
            "clientToken": {"secretKeyRef": {"name": INPUTS, "key": "client"}},
            "serverToken": {"secretKeyRef": {"name": INPUTS, "key": "server"}},
            "secretName": secret_name,
        })
    }

    async fn create(&self, name: &str, spec: Value) {
        let obj: GebetaAccessToken = serde_json::from_value(json!({
            "apiVersion": "gebeta.app/v1alpha1",
            "kind": "GebetaAccessToken",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .unwrap();
        self.gats()
            .create(&PostParams::default(), &obj)
            .await
            .unwrap();
    }

    async fn merge(&self, name: &str, patch: Value) {
        self.gats()
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    }

    async fn status(&self, name: &str) -> GebetaAccessTokenStatus {
        self.gats()
            .get(name)
            .await
            .unwrap()
            .status
            .unwrap_or_default()
    }

    /// Waits until the Ready condition has `reason` and the status passes `check`.
    async fn wait_status(
        &self,
        name: &str,
        reason: &str,
        check: impl Fn(&GebetaAccessTokenStatus) -> bool,
    ) -> GebetaAccessTokenStatus {
        let api = self.gats();
        let check = &check;
        support::eventually(DEADLINE, &format!("{name}: Ready reason {reason}"), || {
            let api = api.clone();
            async move {
                let status = api.get(name).await.ok()?.status?;
                (ready(&status)?.reason == reason && check(&status)).then_some(status)
            }
        })
        .await
    }

    async fn wait_ready(&self, name: &str) -> GebetaAccessTokenStatus {
        let status = self.wait_status(name, "Ready", |_| true).await;
        assert_eq!(ready(&status).unwrap().status, "True");
        status
    }

    async fn token(&self, secret_name: &str) -> Option<String> {
        let secret = self.secrets().get_opt(secret_name).await.unwrap()?;
        value(&secret, "token")
    }

    /// Waits until Secret `secret_name` holds a token other than `old`.
    async fn wait_new_token(&self, secret_name: &str, old: &str) -> String {
        let secrets = self.secrets();
        support::eventually(DEADLINE, &format!("a new token in {secret_name}"), || {
            let secrets = secrets.clone();
            async move {
                let token = value(&secrets.get_opt(secret_name).await.ok()??, "token")?;
                (token != old).then_some(token)
            }
        })
        .await
    }

    /// Waits until the controller has completed `n` more reconciles than `since`.
    async fn wait_reconciles(&self, since: u64, n: u64) {
        support::eventually(DEADLINE, "reconciles", || {
            let now = self.reconciles();
            std::future::ready((now >= since + n).then_some(()))
        })
        .await
    }

    /// Wakes the controller for every object reading `gebeta-inputs`, without changing any
    /// object (a label on the input Secret changes its metadata only).
    async fn touch_inputs(&self, value: &str) {
        let patch = json!({"metadata": {"labels": {"touched": value}}});
        self.secrets()
            .patch(INPUTS, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    }

    async fn events(&self, object: &str) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(object))
            .collect()
    }

    async fn wait_event(&self, object: &str, reason: &str) -> Event {
        support::eventually(DEADLINE, &format!("{object}: event {reason}"), || async {
            self.events(object)
                .await
                .into_iter()
                .find(|e| e.reason.as_deref() == Some(reason))
        })
        .await
    }

    fn route_url(&self) -> String {
        format!(
            "{}/route?origin=9.0222,38.7469&destination=9.05,38.75",
            self.base_url
        )
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(op) = self.operator.take() {
            op.shutdown.cancel();
            op.task.abort();
        }
    }
}

fn ready(status: &GebetaAccessTokenStatus) -> Option<&Condition> {
    status.conditions.iter().find(|c| c.type_ == "Ready")
}

fn value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|v| String::from_utf8(v.0.clone()).unwrap())
}

fn claims(token: &str) -> (i64, i64) {
    let c = decode_claims(token).expect("a JWT");
    (c.iat.expect("iat"), c.exp.expect("exp"))
}

async fn route_status(url: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("the simulator answers")
        .status()
        .as_u16()
}

/// Reads the Secret continuously and calls `/route` with whatever token it holds.
struct Checker {
    stop: CancellationToken,
    task: JoinHandle<()>,
    report: Arc<Mutex<Report>>,
}

#[derive(Debug, Default, Clone)]
struct Report {
    /// Distinct tokens in order: (token, iat, exp, first seen).
    tokens: Vec<(String, i64, i64, Timestamp)>,
    checks: u64,
    rejections: Vec<String>,
    /// Smallest time left on the old token when the new one was first seen (seconds).
    min_margin: Option<f64>,
    /// Earliest replacement of a token, as the fraction of its lifetime (exp - iat) elapsed.
    min_replaced_at_fraction: Option<f64>,
}

impl Report {
    fn observe(&mut self, current: &str, now: Timestamp) {
        if self.tokens.last().map(|t| t.0.as_str()) == Some(current) {
            return;
        }
        let (iat, exp) = claims(current);
        let now_s = now.as_millisecond() as f64 / 1000.0;
        if let Some((_, prev_iat, prev_exp, _)) = self.tokens.last() {
            let margin = *prev_exp as f64 - now_s;
            self.min_margin = Some(self.min_margin.map_or(margin, |m| m.min(margin)));
            let fraction = (now_s - *prev_iat as f64) / (*prev_exp - *prev_iat) as f64;
            self.min_replaced_at_fraction = Some(
                self.min_replaced_at_fraction
                    .map_or(fraction, |f| f.min(fraction)),
            );
        }
        self.tokens.push((current.to_string(), iat, exp, now));
    }
}

impl Checker {
    fn spawn(fixture: &Fixture, secret_name: &str) -> Checker {
        let secrets = fixture.secrets();
        let url = fixture.route_url();
        let secret_name = secret_name.to_string();
        let stop = CancellationToken::new();
        let report = Arc::new(Mutex::new(Report::default()));
        let (token, shared) = (stop.clone(), report.clone());
        let task = tokio::spawn(async move {
            while !token.is_cancelled() {
                if let Ok(Some(secret)) = secrets.get_opt(&secret_name).await
                    && let Some(current) = value(&secret, "token")
                {
                    let now = Timestamp::now();
                    shared.lock().unwrap().observe(&current, now);
                    let status = route_status(&url, &current).await;
                    let mut report = shared.lock().unwrap();
                    report.checks += 1;
                    if status != 200 {
                        let (_, exp) = claims(&current);
                        report.rejections.push(format!(
                            "HTTP {status} at {now} for a token expiring at {exp}"
                        ));
                    }
                }
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        });
        Checker { stop, task, report }
    }

    /// Waits until the checker has used `token`.
    async fn wait_seen(&self, token: &str) {
        support::eventually(DEADLINE, "the checker uses the new token", || {
            let seen = self
                .report
                .lock()
                .unwrap()
                .tokens
                .iter()
                .any(|t| t.0 == token);
            std::future::ready(seen.then_some(()))
        })
        .await
    }

    async fn finish(self) -> Report {
        self.stop.cancel();
        self.task.await.expect("the checker does not panic");
        self.report.lock().unwrap().clone()
    }
}

/// Runs the controller across several token lifetimes while a checker uses the token.
async fn keeps_a_valid_token(rotate: bool) {
    let ttl = 4;
    let mut f = Fixture::new(
        if rotate { "gat-rotate" } else { "gat-norotate" },
        ttl,
        rotate,
    )
    .await;
    f.start();
    let checker = Checker::spawn(&f, "maps-token");
    let started = std::time::Instant::now();
    f.create("maps", Fixture::spec("maps-token")).await;
    f.wait_ready("maps").await;
    // Five lifetimes of refreshes.
    let first = f.token("maps-token").await.unwrap();
    let (first_iat, _) = claims(&first);
    support::eventually(Duration::from_secs(60), "five lifetimes", || async {
        let token = f.token("maps-token").await?;
        (claims(&token).0 >= first_iat + 5 * ttl as i64).then_some(())
    })
    .await;
    f.stop().await;
    let elapsed = started.elapsed().as_secs_f64();
    let last = f.token("maps-token").await.unwrap();
    checker.wait_seen(&last).await;
    let report = checker.finish().await;
    let tokens: Vec<String> = report.tokens.iter().map(|t| t.0.clone()).collect();
    let (auth, refresh) = (f.sim.calls("auth"), f.sim.calls("refresh"));
    println!(
        "rotate={rotate} ttl={ttl}s: {} checks, {} tokens, auth={auth}, refresh={refresh} \
         in {elapsed:.1}s ({:.2} refreshes per lifetime), smallest margin {:.2}s, \
         earliest replacement at {:.0}% of a lifetime",
        report.checks,
        tokens.len(),
        refresh as f64 * ttl as f64 / elapsed,
        report.min_margin.unwrap_or(f64::NAN),
        100.0 * report.min_replaced_at_fraction.unwrap_or(f64::NAN),
    );
    assert!(
        report.rejections.is_empty(),
        "rejected: {:?}",
        report.rejections
    );
    assert!(
        report.checks >= 50,
        "the checker ran ({} checks)",
        report.checks
    );
    assert_eq!(auth, 1, "one auth for one token source");
    assert_eq!(
        refresh,
        tokens.len() as u64 - 1,
        "one refresh per token, none wasted"
    );
    assert!(tokens.len() >= 6, "{} tokens", tokens.len());
    assert!(
        report.min_margin.unwrap() > 0.0,
        "a token was replaced only after it expired"
    );
    // Never refreshed before half of the lifetime (iat has whole-second precision).
    assert!(
        report.min_replaced_at_fraction.unwrap() >= 0.5,
        "replaced at {:?} of a lifetime",
        report.min_replaced_at_fraction
    );
    assert_eq!(
        f.sim.status_count("refresh", 200),
        refresh,
        "no failed refresh"
    );
    if rotate {
        assert_eq!(
            f.sim.live_refresh_tokens(),
            1,
            "rotation kept exactly one live refresh token"
        );
    }
    // The refresh token never reached the Secret workloads mount.
    let target = f.secrets().get("maps-token").await.unwrap();
    assert_eq!(
        target.data.as_ref().unwrap().keys().collect::<Vec<_>>(),
        ["expiresAt", "token"]
    );
    let refresh_secret = f.secrets().get("maps-gebeta-refresh").await.unwrap();
    assert!(value(&refresh_secret, "refreshToken").is_some_and(|t| t.starts_with("gbr_")));
    assert_eq!(
        value(&refresh_secret, "sourceFingerprint").map(|f| f.len()),
        Some(64)
    );
}

#[tokio::test]
async fn token_stays_valid_across_lifetimes_without_rotation() {
    keeps_a_valid_token(false).await;
}

#[tokio::test]
async fn token_stays_valid_across_lifetimes_with_rotation() {
    keeps_a_valid_token(true).await;
}

#[tokio::test]
async fn dead_refresh_token_leads_to_a_new_auth() {
    let (f, _) = Fixture::with_ready_token("gat-reauth", 4, true).await;
    let first = f.token("maps-token").await.unwrap();
    // Leaving ACTIVE kills the account's refresh tokens (even after coming back).
    assert!(
        f.sim
            .set_account_state(&f.server_id, AccountState::Suspended)
    );
    assert!(f.sim.set_account_state(&f.server_id, AccountState::Active));
    assert_eq!(f.sim.live_refresh_tokens(), 0);
    let second = f.wait_new_token("maps-token", &first).await;
    assert_eq!(
        f.sim.status_count("refresh", 401),
        1,
        "the dead refresh token was tried once"
    );
    assert_eq!(f.sim.calls("auth"), 2, "then a new auth");
    assert_eq!(route_status(&f.route_url(), &second).await, 200);
    // An injected 401 on refresh does the same.
    f.sim.inject("refresh", Fault::Status(401, None), 1);
    let third = f.wait_new_token("maps-token", &second).await;
    assert_eq!(f.sim.calls("auth"), 3);
    assert_eq!(route_status(&f.route_url(), &third).await, 200);
    let status = f.wait_ready("maps").await;
    assert_eq!(status.last_failure_reason, None);
}

#[tokio::test]
async fn short_outage_is_bridged_by_the_current_token() {
    let (f, _) = Fixture::with_ready_token("gat-blip", 10, false).await;
    let checker = Checker::spawn(&f, "maps-token");
    let first = f.token("maps-token").await.unwrap();
    f.sim.inject("refresh", Fault::Status(503, None), 1000);
    // The refresh fails: Ready stays True (the token is valid) and says why.
    let status = f
        .wait_status("maps", "UpstreamUnavailable", |s| {
            s.last_failure_reason.as_deref() == Some("UpstreamUnavailable")
        })
        .await;
    let cond = ready(&status).unwrap();
    assert_eq!(cond.status, "True");
    assert!(cond.message.contains("valid until"), "{}", cond.message);
    assert_eq!(
        f.token("maps-token").await.as_deref(),
        Some(first.as_str()),
        "the Secret keeps its token"
    );
    f.sim.clear_faults();
    let second = f.wait_new_token("maps-token", &first).await;
    let status = f.wait_ready("maps").await;
    assert_eq!(status.last_failure_reason, None);
    checker.wait_seen(&second).await;
    let report = checker.finish().await;
    assert!(
        report.rejections.is_empty(),
        "rejected: {:?}",
        report.rejections
    );
    let (_, first_exp) = claims(&first);
    let replaced = report
        .tokens
        .iter()
        .find(|t| t.0 == second)
        .map(|t| t.3)
        .expect("the checker saw the new token");
    assert!(
        replaced.as_second() < first_exp,
        "replaced before the old token expired"
    );
    assert_eq!(f.sim.calls("auth"), 1);
    f.wait_event("maps", "UpstreamUnavailable").await;
    f.wait_event("maps", "Recovered").await;
}

#[tokio::test]
async fn long_outage_reports_expiry_then_recovers() {
    let (f, _) = Fixture::with_ready_token("gat-outage", 3, false).await;
    let first = f.token("maps-token").await.unwrap();
    let outage = std::time::Instant::now();
    f.sim.inject("*", Fault::Status(503, None), 1000);
    let status = f
        .wait_status("maps", "TokenExpired", |s| {
            s.last_failure_reason.as_deref() == Some("UpstreamUnavailable")
        })
        .await;
    assert_eq!(ready(&status).unwrap().status, "False");
    assert!(
        ready(&status).unwrap().message.contains("expired at"),
        "{:?}",
        ready(&status)
    );
    assert_eq!(
        f.token("maps-token").await.as_deref(),
        Some(first.as_str()),
        "the old token is kept, never emptied"
    );
    f.wait_event("maps", "TokenExpired").await;
    // Long enough to tell exponential backoff (about 6 calls in 16 s) from a fixed 1 s retry
    // (16).
    support::eventually(DEADLINE, "16 s of outage", || {
        std::future::ready((outage.elapsed() >= Duration::from_secs(16)).then_some(()))
    })
    .await;
    let failed = f.sim.status_count("refresh", 503) + f.sim.status_count("auth", 503);
    let secs = outage.elapsed().as_secs_f64();
    f.sim.clear_faults();
    assert!(
        (failed as f64) <= secs / 2.0,
        "{failed} failed calls in {secs:.1}s: backoff, not a tight loop"
    );
    let second = f.wait_new_token("maps-token", &first).await;
    f.wait_ready("maps").await;
    assert_eq!(route_status(&f.route_url(), &second).await, 200);
    f.wait_event("maps", "Recovered").await;
}

#[tokio::test]
async fn restart_mid_lifetime_makes_no_calls_until_due() {
    let (mut f, before) = Fixture::with_ready_token("gat-restart", 20, true).await;
    let target = f.secrets().get("maps-token").await.unwrap();
    let refresh = f.secrets().get("maps-gebeta-refresh").await.unwrap();
    let (iat, exp) = claims(&value(&target, "token").unwrap());
    f.stop().await;
    f.sim.reset_stats();
    f.start();
    f.wait_reconciles(0, 1).await;
    assert!(
        Timestamp::now().as_second() < iat + 10,
        "the restart happened mid-lifetime"
    );
    assert_eq!(
        (f.sim.calls("auth"), f.sim.calls("refresh")),
        (0, 0),
        "no Gebeta call after a restart"
    );
    let target_after = f.secrets().get("maps-token").await.unwrap();
    let refresh_after = f.secrets().get("maps-gebeta-refresh").await.unwrap();
    assert_eq!(target_after.resource_version(), target.resource_version());
    assert_eq!(refresh_after.resource_version(), refresh.resource_version());
    assert_eq!(f.status("maps").await, before, "no status write");
    assert!(
        f.metrics()
            .encode()
            .contains(&format!("name=\"maps\"}} {exp}")),
        "the expiry metric is back"
    );
    // When due, a refresh with the stored (rotated) refresh token: still no auth.
    let old = value(&target, "token").unwrap();
    f.wait_new_token("maps-token", &old).await;
    assert_eq!((f.sim.calls("auth"), f.sim.calls("refresh")), (0, 1));
}

#[tokio::test]
async fn changed_input_token_means_a_new_auth() {
    let (f, _) = Fixture::with_ready_token("gat-inputs", 60, false).await;
    let first = f.token("maps-token").await.unwrap();
    let inputs = f.secrets().get(INPUTS).await.unwrap();
    let (new_server, new_server_token) = f
        .sim
        .create_dashboard_account(Platform::Web, vec![Scope::Tile]);
    let client_token = value(&inputs, "client").unwrap();
    f.put_secret(
        INPUTS,
        &[("client", &client_token), ("server", &new_server_token)],
    )
    .await;
    let second = f.wait_new_token("maps-token", &first).await;
    assert_eq!(
        decode_claims(&second).unwrap().sub.as_deref(),
        Some(new_server.as_str())
    );
    assert_eq!((f.sim.calls("auth"), f.sim.calls("refresh")), (2, 0));
    assert_eq!(route_status(&f.route_url(), &second).await, 200);
    f.wait_ready("maps").await;
}

#[tokio::test]
async fn bad_inputs_give_clear_conditions_and_overwrite_nothing() {
    let mut f = Fixture::new("gat-badin", 60, false).await;
    f.start();
    let spec = json!({
        "clientToken": {"secretKeyRef": {"name": "late", "key": "client"}},
        "serverToken": {"secretKeyRef": {"name": "late", "key": "server"}},
        "secretName": "maps-token",
    });
    f.create("maps", spec).await;
    let s = f.wait_status("maps", "SecretNotFound", |_| true).await;
    assert!(
        ready(&s)
            .unwrap()
            .message
            .contains("Secret late (client token) not found"),
        "{:?}",
        ready(&s)
    );
    let inputs = f.secrets().get(INPUTS).await.unwrap();
    let (client, server) = (
        value(&inputs, "client").unwrap(),
        value(&inputs, "server").unwrap(),
    );
    f.put_secret("late", &[("client", &client)]).await;
    let s = f.wait_status("maps", "SecretKeyNotFound", |_| true).await;
    assert!(
        ready(&s)
            .unwrap()
            .message
            .contains("(server token) has no key server"),
        "{:?}",
        ready(&s)
    );
    f.put_secret("late", &[("client", &client), ("server", " \n")])
        .await;
    let s = f.wait_status("maps", "InvalidSecret", |_| true).await;
    assert!(
        ready(&s).unwrap().message.contains("empty value"),
        "{:?}",
        ready(&s)
    );
    f.put_secret("late", &[("client", &client), ("server", "two words")])
        .await;
    f.wait_status("maps", "InvalidSecret", |s| {
        ready(s).is_some_and(|c| c.message.contains("no valid token"))
    })
    .await;
    assert!(
        f.secrets().get_opt("maps-token").await.unwrap().is_none(),
        "nothing written"
    );
    assert_eq!(f.sim.calls("auth"), 0, "no call with bad inputs");
    f.wait_event("maps", "SecretNotFound").await;
    f.wait_event("maps", "SecretKeyNotFound").await;
    // Fixed: a token.
    f.put_secret(
        "late",
        &[("client", &client), ("server", &format!("{server}\n"))],
    )
    .await;
    f.wait_ready("maps").await;
    let target = f.secrets().get("maps-token").await.unwrap();
    let token = value(&target, "token").unwrap();
    // Broken again: reported, and the working token stays.
    f.replace_secret_data("late", &[("client", &client)]).await;
    let s = f.wait_status("maps", "SecretKeyNotFound", |_| true).await;
    assert_eq!(ready(&s).unwrap().status, "False");
    assert!(
        ready(&s).unwrap().message.contains("is valid until"),
        "{:?}",
        ready(&s)
    );
    assert!(s.expires_at.is_some());
    let after = f.secrets().get("maps-token").await.unwrap();
    assert_eq!(
        after.resource_version(),
        target.resource_version(),
        "the token Secret is untouched"
    );
    assert_eq!(route_status(&f.route_url(), &token).await, 200);
    assert_eq!(f.sim.calls("auth"), 1);
}

#[tokio::test]
async fn service_account_source_is_used_once_ready() {
    let mut f = Fixture::new("gat-gsa", 60, false).await;
    f.start();
    let inputs = f.secrets().get(INPUTS).await.unwrap();
    let client = value(&inputs, "client").unwrap();
    let spec = json!({
        "clientToken": {"serviceAccountRef": {"name": "web"}},
        "serverToken": {"secretKeyRef": {"name": INPUTS, "key": "server"}},
        "secretName": "maps-token",
    });
    let offset = support::audit_offset();
    f.create("maps", spec).await;
    let s = f.wait_status("maps", "SourceNotReady", |_| true).await;
    assert!(
        ready(&s)
            .unwrap()
            .message
            .contains("GebetaServiceAccount web (client token) not found")
    );
    let gsas: Api<GebetaServiceAccount> = Api::namespaced(f.client.clone(), &f.ns);
    let gsa: GebetaServiceAccount = serde_json::from_value(json!({
        "apiVersion": "gebeta.app/v1alpha1", "kind": "GebetaServiceAccount",
        "metadata": {"name": "web"}, "spec": {"platform": "WEB", "scopes": ["TILE"]},
    }))
    .unwrap();
    gsas.create(&PostParams::default(), &gsa).await.unwrap();
    f.wait_status("maps", "SourceNotReady", |s| {
        ready(s).is_some_and(|c| c.message.contains("is not Ready"))
    })
    .await;
    // Waiting for a source, the object has nothing to write and reads none of its Secrets
    // (the audit log is written before each answer, so these reads would be in it by now).
    let (reads, _) = operator_requests(&f, offset);
    let own: Vec<_> = reads
        .iter()
        .filter(|r| r.contains("maps-token") || r.contains("maps-gebeta-refresh"))
        .collect();
    assert!(
        own.is_empty(),
        "reads while waiting for the source: {own:?}"
    );
    // What the service-account controller would do: the token Secret, then a Ready status.
    f.put_secret("web-secret", &[("token", &client)]).await;
    let status = json!({"status": {"tokenSecretName": "web-secret", "conditions": [{
        "type": "Ready", "status": "True", "reason": "Ready", "message": "",
        "lastTransitionTime": conditions::now_rfc3339(),
    }]}});
    gsas.patch_status("web", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
    f.wait_ready("maps").await;
    let first = f.token("maps-token").await.unwrap();
    assert_eq!(f.sim.calls("auth"), 1);
    // The account's token changes (rotation): a new auth with it.
    let (_, new_client) = f
        .sim
        .create_dashboard_account(Platform::Web, vec![Scope::Tile]);
    f.put_secret("web-secret", &[("token", &new_client)]).await;
    let second = f.wait_new_token("maps-token", &first).await;
    assert_eq!(f.sim.calls("auth"), 2);
    assert_eq!(route_status(&f.route_url(), &second).await, 200);
}

/// A new object reads its inputs once: one GET of a Secret that holds both tokens, and none
/// of its own Secrets beyond the one look for a foreign Secret in the way.
#[tokio::test]
async fn a_new_object_reads_a_secret_named_twice_once() {
    let mut f = Fixture::new("gat-reads", 60, false).await;
    f.start();
    let offset = support::audit_offset();
    f.create("maps", Fixture::spec("maps-token")).await;
    f.wait_ready("maps").await;
    let (reads, _) = operator_requests(&f, offset);
    let count = |what: &str| reads.iter().filter(|r| *r == what).count();
    assert_eq!(count(&format!("secrets {INPUTS} get")), 1, "{reads:?}");
    assert!(count("secrets maps-token get") <= 1, "{reads:?}");
    assert!(count("secrets maps-gebeta-refresh get") <= 1, "{reads:?}");
}

/// A fake API answering every auth and refresh with `{"accessToken": <current value>}`.
async fn fake_upstream(access_token: Arc<Mutex<String>>) -> String {
    use axum::{Json, Router, extract::State, routing::post};
    async fn answer(State(token): State<Arc<Mutex<String>>>) -> Json<Value> {
        let token = token.lock().unwrap().clone();
        Json(json!({"data": {"accessToken": token, "refreshToken": "fake-refresh-token"}}))
    }
    let app = Router::new()
        .route("/api/v1/external/auth", post(answer))
        .route("/api/v1/external/refresh", post(answer))
        .with_state(access_token);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/api/v1")
}

fn unsigned_jwt(iat: i64, exp: i64) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let payload =
        URL_SAFE_NO_PAD.encode(json!({"iat": iat, "exp": exp, "sub": "fake"}).to_string());
    format!("{header}.{payload}.c2lnbmF0dXJl")
}

#[tokio::test]
async fn malformed_or_expired_tokens_from_the_api_are_never_written() {
    let answer = Arc::new(Mutex::new("not-a-jwt".to_string()));
    let mut f = Fixture::new("gat-nonjwt", 60, false).await;
    f.base_url = fake_upstream(answer.clone()).await;
    f.start();
    f.create("maps", Fixture::spec("maps-token")).await;
    let s = f
        .wait_status("maps", "InvalidTokenFromUpstream", |_| true)
        .await;
    assert_eq!(ready(&s).unwrap().status, "False");
    assert!(
        ready(&s).unwrap().message.contains("not a JWT"),
        "{:?}",
        ready(&s)
    );
    assert!(
        f.secrets().get_opt("maps-token").await.unwrap().is_none(),
        "no token written"
    );
    // A good token.
    let now = Timestamp::now().as_second();
    let good = unsigned_jwt(now, now + 120);
    *answer.lock().unwrap() = good.clone();
    f.wait_ready("maps").await;
    assert_eq!(f.token("maps-token").await.as_deref(), Some(good.as_str()));
    let written = f.secrets().get("maps-token").await.unwrap();
    // Then garbage on a manual refresh: the good token stays, Ready stays True while valid.
    *answer.lock().unwrap() = "not-a-jwt".into();
    f.merge(
        "maps",
        json!({"metadata": {"annotations": {REFRESH_ANNOTATION: "1"}}}),
    )
    .await;
    let s = f
        .wait_status("maps", "InvalidTokenFromUpstream", |_| true)
        .await;
    assert_eq!(ready(&s).unwrap().status, "True");
    assert_eq!(
        s.observed_refresh_request, None,
        "the request is not done yet"
    );
    // An already expired token is refused as well.
    *answer.lock().unwrap() = unsigned_jwt(now - 120, now - 60);
    f.wait_status("maps", "InvalidTokenFromUpstream", |s| {
        s.last_failure_message
            .as_deref()
            .is_some_and(|m| m.contains("already expired"))
    })
    .await;
    let after = f.secrets().get("maps-token").await.unwrap();
    assert_eq!(
        after.resource_version(),
        written.resource_version(),
        "the Secret was never touched"
    );
    // Back to good tokens: the pending manual refresh completes.
    let now = Timestamp::now().as_second();
    let better = unsigned_jwt(now, now + 120);
    *answer.lock().unwrap() = better.clone();
    let s = f
        .wait_status("maps", "Ready", |s| {
            s.observed_refresh_request.as_deref() == Some("1")
        })
        .await;
    assert_eq!(s.last_failure_reason, None);
    assert_eq!(
        f.token("maps-token").await.as_deref(),
        Some(better.as_str())
    );
}

#[tokio::test]
async fn unreadable_answers_from_the_api_are_reported() {
    let mut f = Fixture::new("gat-garbage", 60, false).await;
    f.sim.inject("auth", Fault::Garbage, 1000);
    f.start();
    f.create("maps", Fixture::spec("maps-token")).await;
    let s = f
        .wait_status("maps", "InvalidTokenFromUpstream", |_| true)
        .await;
    assert_eq!(ready(&s).unwrap().status, "False");
    assert!(f.secrets().get_opt("maps-token").await.unwrap().is_none());
    f.wait_event("maps", "InvalidTokenFromUpstream").await;
    f.sim.clear_faults();
    f.wait_ready("maps").await;
    let token = f.token("maps-token").await.unwrap();
    assert_eq!(route_status(&f.route_url(), &token).await, 200);
}

#[tokio::test]
async fn invalid_credentials_are_reported() {
    let mut f = Fixture::new("gat-creds", 60, false).await;
    assert!(
        f.sim
            .set_account_state(&f.server_id, AccountState::Suspended)
    );
    f.start();
    f.create("maps", Fixture::spec("maps-token")).await;
    let s = f.wait_status("maps", "InvalidCredentials", |_| true).await;
    assert_eq!(ready(&s).unwrap().status, "False");
    assert_eq!(s.last_failure_reason.as_deref(), Some("InvalidCredentials"));
    f.wait_event("maps", "InvalidCredentials").await;
    // Backoff, not a tight loop: over 10 s, attempts at about 0, 2, 6 s (a fixed 1 s retry
    // would make 10).
    let window = std::time::Instant::now();
    support::eventually(DEADLINE, "a 10 s window", || {
        std::future::ready((window.elapsed() >= Duration::from_secs(10)).then_some(()))
    })
    .await;
    let calls = f.sim.calls("auth");
    assert!(calls <= 4, "{calls} auth calls in 10 s");
    // Fixed inputs are tried at once, whatever the backoff.
    let (_, server) = f
        .sim
        .create_dashboard_account(Platform::Web, vec![Scope::Tile]);
    let inputs = f.secrets().get(INPUTS).await.unwrap();
    f.put_secret(
        INPUTS,
        &[
            ("client", &value(&inputs, "client").unwrap()),
            ("server", &server),
        ],
    )
    .await;
    f.wait_ready("maps").await;
}

#[tokio::test]
async fn foreign_secret_is_a_conflict_and_left_alone() {
    let mut f = Fixture::new("gat-conflict", 60, false).await;
    f.put_secret("taken", &[("token", "someone else's")]).await;
    let foreign = f.secrets().get("taken").await.unwrap();
    f.start();
    f.create("maps", Fixture::spec("taken")).await;
    let s = f.wait_status("maps", "SecretConflict", |_| true).await;
    assert_eq!(ready(&s).unwrap().status, "False");
    let event = f.wait_event("maps", "SecretConflict").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    // More reconciles: still one event, no write, no call.
    let n = f.reconciles();
    f.touch_inputs("1").await;
    f.wait_reconciles(n, 1).await;
    let events: Vec<_> = f
        .events("maps")
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("SecretConflict"))
        .collect();
    assert_eq!(events.len(), 1);
    assert!(
        events[0].series.is_none(),
        "published once: {:?}",
        events[0].series
    );
    let still = f.secrets().get("taken").await.unwrap();
    assert_eq!(still.resource_version(), foreign.resource_version());
    assert_eq!(value(&still, "token").as_deref(), Some("someone else's"));
    assert_eq!(f.sim.calls("auth"), 0);
    // The Secret goes away: the object takes the name.
    f.secrets()
        .delete("taken", &DeleteParams::default())
        .await
        .unwrap();
    f.wait_ready("maps").await;
    let ours = f.secrets().get("taken").await.unwrap();
    assert_eq!(ours.owner_references()[0].name, "maps");
}

/// Objects labelled `REFUSE_LABEL=yes` get this in the API server's refusals.
const REFUSAL: &str = "refused by the test";
const REFUSE_LABEL: &str = "test.example.com/refuse-writes";

/// A ValidatingAdmissionPolicy (and binding) refusing `operations` on `resource` (core or
/// apps) of objects labelled `REFUSE_LABEL=yes` in the fixture's namespace: how a test makes
/// the API server refuse the operator's writes. Deleted when dropped.
struct Refusal {
    client: kube::Client,
    name: String,
}

impl Refusal {
    async fn create(f: &Fixture, resource: &str, operations: &[&str]) -> Refusal {
        use k8s_openapi::api::admissionregistration::v1::{
            ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
        };
        let name = format!("{}-refuse-{resource}", f.ns);
        let pp = PostParams::default();
        let policy = json!({
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{
                    "apiGroups": ["", "apps"], "apiVersions": ["v1"],
                    "operations": operations, "resources": [resource],
                }]},
                "validations": [{"expression": "false", "message": REFUSAL}],
            }
        });
        Api::<ValidatingAdmissionPolicy>::all(f.client.clone())
            .create(&pp, &serde_json::from_value(policy).unwrap())
            .await
            .unwrap();
        let binding = json!({
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": f.ns}},
                    "objectSelector": {"matchLabels": {REFUSE_LABEL: "yes"}},
                },
            }
        });
        Api::<ValidatingAdmissionPolicyBinding>::all(f.client.clone())
            .create(&pp, &serde_json::from_value(binding).unwrap())
            .await
            .unwrap();
        Refusal {
            client: f.client.clone(),
            name,
        }
    }

    /// Deletes the binding: the API server stops refusing (after its policy cache notices).
    async fn lift(&self) {
        use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding;
        Api::<ValidatingAdmissionPolicyBinding>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::default())
            .await
            .unwrap();
    }
}

impl Drop for Refusal {
    fn drop(&mut self) {
        use k8s_openapi::api::admissionregistration::v1::{
            ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
        };
        let (client, name) = (self.client.clone(), self.name.clone());
        // Best effort, as the namespace the binding selects goes with the test anyway.
        tokio::spawn(async move {
            let dp = DeleteParams::default();
            let _ = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
                .delete(&name, &dp)
                .await;
            let _ = Api::<ValidatingAdmissionPolicy>::all(client)
                .delete(&name, &dp)
                .await;
        });
    }
}

/// A rollout-restart patch the API server refuses is reported (`RolloutRestartFailed`, with
/// the API server's message) and retried with backoff; once the refusal is lifted the
/// workload is restarted for the token it missed.
#[tokio::test]
async fn a_refused_rollout_restart_is_reported_and_retried() {
    let mut f = Fixture::new("gat-restart-refused", 60, false).await;
    let deployments: Api<Deployment> = Api::namespaced(f.client.clone(), &f.ns);
    let web = deployment(json!({
        "name": "web",
        "labels": {REFUSE_LABEL: "yes"},
        "annotations": {RESTART_OPT_IN_ANNOTATION: "maps"},
    }));
    deployments
        .create(&PostParams::default(), &web)
        .await
        .unwrap();
    let refusal = Refusal::create(&f, "deployments", &["UPDATE"]).await;
    support::eventually(DEADLINE, "the policy refuses updates of web", || {
        let deployments = deployments.clone();
        async move {
            let probe = Patch::Merge(json!({"metadata": {"annotations": {"probe": "x"}}}));
            match deployments
                .patch("web", &PatchParams::default(), &probe)
                .await
            {
                Err(kube::Error::Api(s)) if s.message.contains(REFUSAL) => Some(()),
                _ => None,
            }
        }
    })
    .await;
    f.start();
    let mut spec = Fixture::spec("maps-token");
    spec["rolloutRestartTargets"] = json!([{"kind": "Deployment", "name": "web"}]);
    f.create("maps", spec).await;
    f.wait_ready("maps").await;
    let failed = f.wait_event("maps", "RolloutRestartFailed").await;
    let note = failed.note.unwrap_or_default();
    assert!(
        note.contains("Deployment/web") && note.contains(REFUSAL),
        "{note}"
    );
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    refusal.lift().await;
    let restarted = support::eventually(DEADLINE, "web restarted", || {
        let deployments = deployments.clone();
        async move {
            let web = deployments.get("web").await.ok()?;
            web.spec
                .template
                .metadata?
                .annotations?
                .get(RESTARTED_AT_ANNOTATION)
                .cloned()
        }
    })
    .await;
    let (iat, _) = claims(&f.token("maps-token").await.unwrap());
    assert_eq!(
        restarted,
        conditions::format_time(Timestamp::from_second(iat).unwrap())
    );
    assert_eq!(
        f.sim.calls("auth"),
        1,
        "retrying the restart called nothing"
    );
}

/// A token Secret write the API server refuses is reported (status and an event, reason
/// `SecretWriteFailed`) without a new Gebeta call per retry, and the report goes with the first
/// write that succeeds: it is applied like every status write, so the next apply clears it (a
/// merge patch left it owned by another entry of ours, in status for good).
#[tokio::test]
async fn a_refused_secret_write_is_reported_then_cleared_once_written() {
    let mut f = Fixture::new("gat-refused-write", 60, false).await;
    let refusal = Refusal::create(&f, "secrets", &["CREATE", "UPDATE"]).await;
    let secrets = f.secrets();
    support::eventually(DEADLINE, "the policy refuses labelled Secrets", || {
        let secrets = secrets.clone();
        async move {
            let probe: Secret = serde_json::from_value(
                json!({"metadata": {"name": "probe", "labels": {REFUSE_LABEL: "yes"}}}),
            )
            .unwrap();
            match secrets.create(&PostParams::default(), &probe).await {
                Err(kube::Error::Api(s)) if s.message.contains(REFUSAL) => Some(()),
                Ok(_) => {
                    let _ = secrets.delete("probe", &DeleteParams::default()).await;
                    None
                }
                Err(_) => None,
            }
        }
    })
    .await;

    f.start();
    let mut spec = Fixture::spec("maps-token");
    spec["secretTemplate"] = json!({"labels": {REFUSE_LABEL: "yes"}});
    f.create("maps", spec).await;
    let gats = f.gats();
    let failed = support::eventually(DEADLINE, "SecretWriteFailed in status", || {
        let gats = gats.clone();
        async move {
            let status = gats.get("maps").await.ok()?.status?;
            (status.last_failure_reason.as_deref() == Some("SecretWriteFailed")).then_some(status)
        }
    })
    .await;
    let message = failed.last_failure_message.unwrap_or_default();
    assert!(message.contains("without a new call"), "{message}");
    assert!(
        message.contains(REFUSAL) && !message.contains("Status {"),
        "the API server's message, not a dump of its answer: {message}"
    );
    let event = f.wait_event("maps", "SecretWriteFailed").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(secrets.get_opt("maps-token").await.unwrap().is_none());

    refusal.lift().await;
    let status = f.wait_ready("maps").await;
    assert_eq!(
        (status.last_failure_reason, status.last_failure_message),
        (None, None),
        "the write failure is over"
    );
    assert!(f.token("maps-token").await.is_some());
    assert_eq!(
        (f.sim.calls("auth"), f.sim.calls("refresh")),
        (1, 0),
        "the answer waited in memory: one call for every attempt to store it"
    );
}

/// A Deployment with `metadata` (its name is also its pods' `app` label).
fn deployment(metadata: Value) -> Deployment {
    let name = metadata["name"].clone();
    serde_json::from_value(json!({
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]},
            },
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn rollout_restart_once_per_new_token() {
    let mut f = Fixture::new("gat-rollout", 3, false).await;
    let deployments: Api<Deployment> = Api::namespaced(f.client.clone(), &f.ns);
    // `web` asks to be restarted by `maps`; `bystander` did not ask.
    for (name, annotations) in [
        ("web", json!({RESTART_OPT_IN_ANNOTATION: "other, maps"})),
        ("bystander", json!({})),
    ] {
        deployments
            .create(
                &PostParams::default(),
                &deployment(json!({"name": name, "annotations": annotations})),
            )
            .await
            .unwrap();
    }
    f.start();
    let mut spec = Fixture::spec("maps-token");
    spec["rolloutRestartTargets"] = json!([
        {"kind": "Deployment", "name": "web"},
        {"kind": "Deployment", "name": "missing"},
        {"kind": "Deployment", "name": "bystander"},
    ]);
    f.create("maps", spec).await;
    f.wait_ready("maps").await;
    let first = f.token("maps-token").await.unwrap();
    let second = f.wait_new_token("maps-token", &first).await;
    f.wait_new_token("maps-token", &second).await;
    f.stop().await;
    let tokens = f.sim.calls("auth") + f.sim.calls("refresh");
    let last = f.token("maps-token").await.unwrap();
    let web = deployments.get("web").await.unwrap();
    let annotation = web
        .spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()[RESTARTED_AT_ANNOTATION]
        .clone();
    let (iat, _) = claims(&last);
    assert_eq!(
        annotation,
        conditions::format_time(Timestamp::from_second(iat).unwrap())
    );
    assert_eq!(
        web.metadata.generation,
        Some(1 + tokens as i64),
        "one pod-template change per new token ({tokens} tokens)"
    );
    let status = f.status("maps").await;
    assert_eq!(
        ready(&status).unwrap().reason,
        "Ready",
        "a missing target is not fatal"
    );
    let missing = f.wait_event("maps", "RolloutTargetNotFound").await;
    assert!(missing.note.unwrap_or_default().contains("missing"));
    let refused = f.wait_event("maps", "RolloutTargetNotOptedIn").await;
    assert!(refused.note.unwrap_or_default().contains("bystander"));
    let bystander = deployments.get("bystander").await.unwrap();
    assert_eq!(
        bystander.metadata.generation,
        Some(1),
        "a workload that did not opt in is never restarted"
    );
}

#[tokio::test]
async fn manual_refresh_and_suspension() {
    let (f, _) = Fixture::with_ready_token("gat-manual", 30, false).await;
    let first = f.token("maps-token").await.unwrap();
    f.merge(
        "maps",
        json!({"metadata": {"annotations": {REFRESH_ANNOTATION: "1"}}}),
    )
    .await;
    let second = f.wait_new_token("maps-token", &first).await;
    f.wait_status("maps", "Ready", |s| {
        s.observed_refresh_request.as_deref() == Some("1")
    })
    .await;
    let n = f.reconciles();
    f.touch_inputs("1").await;
    f.wait_reconciles(n, 1).await;
    assert_eq!(
        (f.sim.calls("auth"), f.sim.calls("refresh")),
        (1, 1),
        "one refresh per request"
    );
    // Suspended: no calls, even when asked; Ready tells the token is still valid.
    f.merge("maps", json!({"spec": {"suspended": true}})).await;
    let s = f.wait_status("maps", "Suspended", |_| true).await;
    assert_eq!(ready(&s).unwrap().status, "True");
    f.merge(
        "maps",
        json!({"metadata": {"annotations": {REFRESH_ANNOTATION: "2"}}}),
    )
    .await;
    let n = f.reconciles();
    f.touch_inputs("2").await;
    f.wait_reconciles(n, 1).await;
    assert_eq!(f.sim.calls("refresh"), 1, "no call while suspended");
    assert_eq!(
        f.token("maps-token").await.as_deref(),
        Some(second.as_str())
    );
    // Resumed: the pending request is served.
    f.merge("maps", json!({"spec": {"suspended": false}})).await;
    f.wait_new_token("maps-token", &second).await;
    f.wait_status("maps", "Ready", |s| {
        s.observed_refresh_request.as_deref() == Some("2")
    })
    .await;
    assert_eq!((f.sim.calls("auth"), f.sim.calls("refresh")), (1, 2));
}

/// The refresh annotation is the tenant's: rewriting it in a loop gets one Gebeta call per
/// `--refresh-request-interval` (10 s), serving the latest value, not a call (and a permit of the shared
/// deadline gate) per value.
#[tokio::test]
async fn a_loop_of_refresh_requests_makes_one_call_per_interval() {
    let (f, _) = Fixture::with_ready_token("gat-nudge-loop", 60, false).await;
    let started = std::time::Instant::now();
    const REQUESTS: usize = 30;
    for i in 0..REQUESTS {
        f.merge(
            "maps",
            json!({"metadata": {"annotations": {REFRESH_ANNOTATION: format!("loop-{i}")}}}),
        )
        .await;
    }
    let asking = started.elapsed();
    let last = format!("loop-{}", REQUESTS - 1);
    f.wait_status("maps", "Ready", |s| {
        s.observed_refresh_request.as_deref() == Some(last.as_str())
    })
    .await;
    let calls = f.sim.calls("auth") + f.sim.calls("refresh") - 1;
    let interval = gebeta_operator::controllers::access_token::plan::DEFAULT_NUDGE_INTERVAL;
    let allowed = 1 + (asking.as_secs_f64() / interval.as_secs_f64()).ceil() as u64;
    println!("{calls} calls for {REQUESTS} requests written in {asking:?}");
    assert!(
        calls <= allowed,
        "{calls} calls for {REQUESTS} requests written in {asking:?} (at most {allowed})"
    );
}

#[tokio::test]
async fn noop_reconciles_write_nothing_and_deletion_cleans_up() {
    let (f, status) = Fixture::with_ready_token("gat-noop", 60, false).await;
    let target = f.secrets().get("maps-token").await.unwrap();
    let refresh = f.secrets().get("maps-gebeta-refresh").await.unwrap();
    let calls = (f.sim.calls("auth"), f.sim.calls("refresh"));
    // Woken through an input Secret, then through the object itself.
    let n = f.reconciles();
    f.touch_inputs("1").await;
    f.wait_reconciles(n, 1).await;
    let n = f.reconciles();
    f.merge(
        "maps",
        json!({"metadata": {"annotations": {"example.com/unrelated": "x"}}}),
    )
    .await;
    f.wait_reconciles(n, 1).await;
    assert_eq!(
        f.secrets()
            .get("maps-token")
            .await
            .unwrap()
            .resource_version(),
        target.resource_version()
    );
    assert_eq!(
        f.secrets()
            .get("maps-gebeta-refresh")
            .await
            .unwrap()
            .resource_version(),
        refresh.resource_version()
    );
    assert_eq!(f.status("maps").await, status, "no status write");
    assert_eq!(
        (f.sim.calls("auth"), f.sim.calls("refresh")),
        calls,
        "no Gebeta call"
    );
    // The Secret is ours, with the documented shape.
    assert_eq!(
        target.labels()["app.kubernetes.io/managed-by"],
        "gebeta-operator"
    );
    assert_eq!(target.labels()["gebeta.app/access-token"], "maps");
    assert_eq!(refresh.labels()["gebeta.app/refresh-for"], "maps");
    assert_eq!(value(&target, "expiresAt"), status.expires_at);
    // A template change, and an edit of the Secret, are applied without a Gebeta call.
    f.merge(
        "maps",
        json!({"spec": {"secretTemplate": {"labels": {"team": "maps"}}}}),
    )
    .await;
    let tomorrow = base64::engine::general_purpose::STANDARD.encode("tomorrow");
    let tampered = json!({"data": {"expiresAt": tomorrow}});
    f.secrets()
        .patch(
            "maps-token",
            &PatchParams::default(),
            &Patch::Merge(tampered),
        )
        .await
        .unwrap();
    let secrets = f.secrets();
    let expected = &status.expires_at;
    let restored =
        support::eventually(DEADLINE, "the template applied and the edit undone", || {
            let secrets = secrets.clone();
            async move {
                let s = secrets.get("maps-token").await.ok()?;
                let ok = s.labels().get("team").is_some_and(|v| v == "maps")
                    && value(&s, "expiresAt") == *expected;
                ok.then_some(s)
            }
        })
        .await;
    assert_eq!(
        value(&restored, "token"),
        value(&target, "token"),
        "the same token"
    );
    assert_eq!(
        (f.sim.calls("auth"), f.sim.calls("refresh")),
        calls,
        "no Gebeta call"
    );
    // Deleting the object deletes both Secrets (garbage collection) and its metric.
    assert!(f.metrics().encode().contains("name=\"maps\""));
    f.gats()
        .delete("maps", &DeleteParams::default())
        .await
        .unwrap();
    let secrets = f.secrets();
    support::eventually(DEADLINE, "both Secrets garbage-collected", || {
        let secrets = secrets.clone();
        async move {
            let gone = secrets.get_opt("maps-token").await.ok()?.is_none()
                && secrets.get_opt("maps-gebeta-refresh").await.ok()?.is_none();
            gone.then_some(())
        }
    })
    .await;
    let metrics = f.metrics();
    support::eventually(DEADLINE, "the expiry metric removed", || {
        std::future::ready((!metrics.encode().contains("name=\"maps\"")).then_some(()))
    })
    .await;
}

/// Kubernetes requests the in-process controller made in this test's namespace since
/// `offset` of the audit log: `(reads, writes by "kind name verb")`.
fn operator_requests(
    f: &Fixture,
    offset: u64,
) -> (Vec<String>, std::collections::BTreeMap<String, u64>) {
    let events = support::audit_since(offset);
    let user = f.operator_user();
    let mut reads = Vec::new();
    let mut writes = std::collections::BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e.user == user && e.namespace == f.ns)
    {
        let what = format!("{} {} {}", e.kind(), e.name, e.verb);
        if e.is_write() {
            *writes.entry(what).or_default() += 1;
        } else if e.is_read() {
            reads.push(what);
        }
    }
    (reads, writes)
}

/// Over several lifetimes, each new token costs no Kubernetes read and only the writes that
/// change something: the token Secret, the refresh Secret when the refresh token rotated, and
/// the status.
async fn refreshes_read_nothing(rotate: bool) {
    let (f, _) = Fixture::with_ready_token("gat-requests", 4, rotate).await;
    // The first token's event is published after its status: waited for, so that it is not
    // taken for a write of the refreshes below.
    f.wait_event("maps", "Issued").await;
    let audit = support::control_plane().audit_log().expect("audit log");
    let offset = audit.end();
    let since = Timestamp::now();
    let mut token = f.token("maps-token").await.unwrap();
    for _ in 0..3 {
        token = f.wait_new_token("maps-token", &token).await;
    }
    // The status of the last token, then nothing more to do.
    let (_, exp) = claims(&token);
    f.wait_status("maps", "Ready", |s| {
        s.expires_at
            .as_deref()
            .and_then(|e| e.parse::<Timestamp>().ok())
            .is_some_and(|e| e.as_second() == exp)
    })
    .await;
    let issued = f
        .sim
        .issued_access_tokens()
        .into_iter()
        .filter(|t| t.at > since)
        .count() as u64;
    assert!(issued >= 3, "{issued} tokens issued");
    let (reads, writes) = operator_requests(&f, offset);
    assert!(
        reads.is_empty(),
        "no Kubernetes reads for {issued} refreshes, saw {reads:?}"
    );
    let count = |what: &str| writes.get(what).copied().unwrap_or_default();
    assert_eq!(
        count("secrets maps-token patch"),
        issued,
        "one token Secret write per token: {writes:?}"
    );
    assert_eq!(
        count("secrets maps-gebeta-refresh patch"),
        if rotate { issued } else { 0 },
        "the refresh Secret is written only when the refresh token rotated: {writes:?}"
    );
    let status_writes = count("gebetaaccesstokens/status maps patch");
    assert!(
        (issued - 1..=issued).contains(&status_writes),
        "one status write per token ({issued} tokens): {writes:?}"
    );
    let other: u64 = writes.values().sum::<u64>()
        - count("secrets maps-token patch")
        - count("secrets maps-gebeta-refresh patch")
        - status_writes;
    assert_eq!(other, 0, "no other writes: {writes:?}");
}

#[tokio::test]
async fn refreshes_read_nothing_and_write_two_objects_without_rotation() {
    refreshes_read_nothing(false).await;
}

#[tokio::test]
async fn refreshes_read_nothing_and_write_three_objects_with_rotation() {
    refreshes_read_nothing(true).await;
}

/// More refreshes due at once than the operator may work on (one at a time, each call slow):
/// they are served earliest expiry first, whatever order they were requested in.
#[tokio::test]
async fn due_refreshes_are_served_earliest_expiry_first() {
    const N: usize = 6;
    let mut f = Fixture::new("gat-overload", 300, false).await;
    f.start_with(Settings {
        max_concurrent_reconciles: 1,
        ..Settings::default()
    });
    // Tokens issued in different seconds expire in different seconds.
    let mut expiries = Vec::new();
    for i in 0..N {
        let name = format!("t{i}");
        f.create(&name, Fixture::spec(&format!("{name}-token")))
            .await;
        f.wait_ready(&name).await;
        let (_, exp) = claims(&f.token(&format!("{name}-token")).await.unwrap());
        expiries.push((exp, name));
        support::eventually(DEADLINE, "the next second", || {
            std::future::ready((Timestamp::now().as_second() + 300 > exp).then_some(()))
        })
        .await;
    }
    let distinct: std::collections::BTreeSet<i64> = expiries.iter().map(|e| e.0).collect();
    assert_eq!(distinct.len(), N, "distinct expiries: {expiries:?}");
    // A refresh request comes at least the refresh-request interval after an object's last call: wait
    // until the last token's issue is that far behind, so that every request is due at once.
    let interval = gebeta_operator::controllers::access_token::plan::DEFAULT_NUDGE_INTERVAL;
    let newest_issue = expiries.iter().map(|e| e.0).max().unwrap() - 300;
    support::eventually(DEADLINE, "the last call a nudge interval ago", || {
        std::future::ready(
            (Timestamp::now().as_second() > newest_issue + interval.as_secs() as i64).then_some(()),
        )
    })
    .await;
    let old: Vec<String> = {
        let mut tokens = Vec::new();
        for (_, name) in &expiries {
            tokens.push(f.token(&format!("{name}-token")).await.unwrap());
        }
        tokens
    };

    // Each call now takes 1 s (the client gives up after 2 s); request a refresh of all,
    // latest expiry first.
    f.sim.set_latency(Duration::from_secs(1));
    let since = Timestamp::now();
    for (_, name) in expiries.iter().rev() {
        f.merge(
            name,
            json!({"metadata": {"annotations": {REFRESH_ANNOTATION: "now"}}}),
        )
        .await;
    }
    let metrics = f.metrics();
    let mut peak_overdue = 0;
    let mut new_tokens = Vec::new();
    for ((_, name), old) in expiries.iter().zip(&old) {
        let secret_name = format!("{name}-token");
        let secrets = f.secrets();
        let token = support::eventually(
            Duration::from_secs(120),
            &format!("a new token in {secret_name}"),
            || {
                peak_overdue = peak_overdue.max(metrics.refreshes_overdue.get());
                let secrets = secrets.clone();
                let secret_name = secret_name.clone();
                async move {
                    let token = value(&secrets.get_opt(&secret_name).await.ok()??, "token")?;
                    (token != *old).then_some(token)
                }
            },
        )
        .await;
        new_tokens.push(token);
    }
    // The order the simulator issued the new tokens in.
    let issued: Vec<String> = f
        .sim
        .issued_access_tokens()
        .into_iter()
        .filter(|t| t.at >= since)
        .map(|t| t.token)
        .collect();
    let mut served: Vec<(usize, i64)> = expiries
        .iter()
        .zip(&new_tokens)
        .map(|((exp, name), token)| {
            let at = issued
                .iter()
                .position(|t| t == token)
                .unwrap_or_else(|| panic!("{name}'s new token was issued after the request"));
            (at, *exp)
        })
        .collect();
    assert_eq!(issued.len(), N, "one call per refresh");
    served.sort();
    let order: Vec<i64> = served.iter().map(|s| s.1).collect();
    // The first request finds the operator idle and is served at once; every other waits,
    // and must be served in expiry order.
    let waited = &order[1..];
    assert!(
        waited.windows(2).all(|w| w[0] < w[1]),
        "served in the order of expiries {order:?} (requested latest first)"
    );
    assert!(
        peak_overdue >= 2,
        "the overdue gauge showed the backlog (peak {peak_overdue})"
    );
}

/// An upstream answering every call with `{"accessToken": <answer>}` and no refresh token;
/// returns its base URL and the number of calls so far.
async fn upstream_without_refresh_tokens(
    answer: Arc<Mutex<String>>,
) -> (String, Arc<std::sync::atomic::AtomicU64>) {
    use axum::{Json, Router, extract::State, routing::post};
    use std::sync::atomic::{AtomicU64, Ordering};
    type Shared = (Arc<Mutex<String>>, Arc<AtomicU64>);
    async fn answer_call(State((token, calls)): State<Shared>) -> Json<Value> {
        calls.fetch_add(1, Ordering::SeqCst);
        let token = token.lock().unwrap().clone();
        Json(json!({"data": {"accessToken": token}}))
    }
    let calls = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route("/api/v1/external/auth", post(answer_call))
        .route("/api/v1/external/refresh", post(answer_call))
        .with_state((answer, calls.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/api/v1"), calls)
}

/// A token without `exp`/`iat` and an answer without a refresh token are planned with the
/// default lifetime and never cause a loop of calls; an `exp` decades away is not believed.
#[tokio::test]
async fn tokens_without_times_or_refresh_tokens_do_not_loop() {
    use std::sync::atomic::Ordering;
    let no_times = format!(
        "{}.{}.c2ln",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256"}"#),
        URL_SAFE_NO_PAD.encode(r#"{"sub":"fake"}"#)
    );
    let answer = Arc::new(Mutex::new(no_times.clone()));
    let mut f = Fixture::new("gat-notimes", 60, false).await;
    let (url, calls) = upstream_without_refresh_tokens(answer.clone()).await;
    f.base_url = url;
    f.start();
    f.create("maps", Fixture::spec("maps-token")).await;
    let status = f.wait_ready("maps").await;
    assert_eq!(
        f.token("maps-token").await.as_deref(),
        Some(no_times.as_str())
    );
    let hour_from_now = |s: &GebetaAccessTokenStatus| {
        let exp: Timestamp = s.expires_at.as_deref().unwrap().parse().unwrap();
        let left = Timestamp::now().duration_until(exp).as_secs();
        (3500..=3600).contains(&left)
    };
    assert!(hour_from_now(&status), "the default lifetime: {status:?}");
    // Wake the object a few times: nothing is due, so nothing is called.
    for i in 0..3 {
        let n = f.reconciles();
        f.touch_inputs(&i.to_string()).await;
        f.wait_reconciles(n, 1).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one call, no loop");
    // A token valid for 30 years: planned with the default lifetime too.
    let now = Timestamp::now().as_second();
    let decades = unsigned_jwt(now, now + 30 * 365 * 86_400);
    *answer.lock().unwrap() = decades.clone();
    f.merge(
        "maps",
        json!({"metadata": {"annotations": {REFRESH_ANNOTATION: "1"}}}),
    )
    .await;
    let status = f
        .wait_status("maps", "Ready", |s| {
            s.observed_refresh_request.as_deref() == Some("1")
        })
        .await;
    assert_eq!(
        f.token("maps-token").await.as_deref(),
        Some(decades.as_str())
    );
    assert!(hour_from_now(&status), "not believed: {status:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// Tokens issued together are refreshed at different times: the planned refresh lands at
/// 2/3 of the lifetime minus a jitter of up to a tenth of it, different per object. Without
/// jitter every object below would plan its refresh 200 s after issue (± rounding to seconds).
#[tokio::test]
async fn refreshes_of_tokens_issued_together_are_spread() {
    let mut f = Fixture::new("gat-jitter", 300, false).await;
    f.start();
    let names: Vec<String> = (0..12).map(|i| format!("t{i}")).collect();
    for name in &names {
        f.create(name, Fixture::spec(&format!("{name}-token")))
            .await;
    }
    let mut offsets = Vec::new();
    for name in &names {
        let status = f.wait_ready(name).await;
        let at = |t: &Option<String>| t.as_deref().unwrap().parse::<Timestamp>().unwrap();
        let offset = at(&status.issued_at).duration_until(at(&status.next_refresh_time));
        offsets.push(offset.as_secs());
    }
    let (min, max) = (
        *offsets.iter().min().unwrap(),
        *offsets.iter().max().unwrap(),
    );
    assert!(
        (170..=200).contains(&min) && (170..=200).contains(&max),
        "planned 2/3 of 300 s minus up to 30 s: {offsets:?}"
    );
    assert!(
        max - min >= 10,
        "refreshes planned {min}-{max} s after issue: not spread ({offsets:?})"
    );
}
