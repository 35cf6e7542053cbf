//! The GebetaServiceAccount controller against a real API server and the simulator.

mod support;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use gebeta_operator::{
    controllers::{
        Context, Readiness, SecretLocation, Settings, WatchScope, access_token,
        service_account::{
            self, ACCOUNT_ID_ANNOTATION, FINALIZER, ROTATE_ANNOTATION, SKIP_CLEANUP_ANNOTATION,
        },
    },
    crd::{GebetaAccessToken, GebetaServiceAccount, GebetaServiceAccountStatus},
    gebeta::{AccountState, ClientConfig, GebetaClient, Platform, RetryPolicy, Scope, Token},
    metrics::Metrics,
    sim::{Fault, Sim, SimConfig, SimHandle},
};
use k8s_openapi::{
    ByteString,
    api::{core::v1::Secret, events::v1::Event},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(60);
const USER_TOKEN: &str = "sim-user-token";

/// One test's world: a namespace, a simulator, and the controller running in-process.
struct Fixture {
    readiness: Readiness,
    client: Client,
    ns: String,
    sim: SimHandle,
    operator: Option<Operator>,
    resync: Duration,
    /// Namespaces watched besides `ns`.
    more_namespaces: Vec<String>,
    /// Namespaces allowed to use the default user token (`None`: all).
    allowed: Option<Vec<String>>,
    /// Also run the access-token controller (for GebetaAccessTokens using the accounts).
    tokens: bool,
}

struct Operator {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Fixture {
    async fn new(prefix: &str) -> Self {
        Self::with_resync(prefix, Duration::from_secs(3600)).await
    }

    async fn with_resync(prefix: &str, resync: Duration) -> Self {
        let client = support::client();
        let ns = support::namespace(&client, prefix).await;
        let sim = Sim::start(SimConfig::default())
            .await
            .expect("start the simulator");
        let mut fixture = Fixture {
            readiness: Readiness::default(),
            client,
            ns,
            sim,
            operator: None,
            resync,
            more_namespaces: Vec::new(),
            allowed: None,
            tokens: false,
        };
        fixture.put_user_token(USER_TOKEN).await;
        fixture.start();
        fixture
    }

    fn start(&mut self) {
        let gebeta = GebetaClient::new(ClientConfig {
            base_url: self.sim.base_url(),
            request_timeout: Duration::from_secs(2),
            retry: RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(50),
                max_delay: Duration::from_millis(200),
                max_retry_after: Duration::from_secs(2),
                max_total_wait: Duration::from_secs(3),
            },
            ..ClientConfig::default()
        })
        .expect("a Gebeta client");
        let settings = Settings {
            default_user_token: Some(SecretLocation {
                namespace: self.ns.clone(),
                name: "gebeta-user".into(),
                key: "token".into(),
            }),
            resync_interval: self.resync,
            default_credentials_namespaces: self.allowed.clone(),
            ..Settings::default()
        };
        let kube = support::control_plane()
            .client_as(&self.operator_user(), &["system:masters"])
            .expect("a client for the controller");
        let ctx = Context::new(kube, gebeta, Metrics::new(), settings);
        let scope = WatchScope {
            namespaces: std::iter::once(self.ns.clone())
                .chain(self.more_namespaces.iter().cloned())
                .collect(),
            label_selector: None,
        };
        let shutdown = CancellationToken::new();
        let tokens = self.tokens.then(|| {
            access_token::run(
                ctx.clone(),
                scope.clone(),
                shutdown.clone(),
                self.readiness.clone(),
            )
        });
        let accounts = service_account::run(ctx, scope, shutdown.clone(), self.readiness.clone());
        let task = tokio::spawn(async move {
            match tokens {
                Some(tokens) => drop(tokio::join!(accounts, tokens)),
                None => accounts.await,
            }
        });
        self.operator = Some(Operator { shutdown, task });
    }

    /// The identity the in-process controller acts as, so that the audit log tells its
    /// requests from the test's.
    fn operator_user(&self) -> String {
        format!("operator-{}", self.ns)
    }

    /// Secrets the in-process controller read (get, list) by name in this test's namespace
    /// since `offset` of the audit log.
    fn secrets_read_since(&self, offset: u64) -> Vec<String> {
        let user = self.operator_user();
        support::audit_since(offset)
            .iter()
            .filter(|e| e.user == user && e.namespace == self.ns)
            .filter(|e| e.is_read() && e.resource == "secrets")
            .map(|e| format!("{} {}", e.verb, e.name))
            .collect()
    }

    /// Stops the controller the way a crash does: its in-flight work is simply dropped.
    fn kill(&mut self) {
        if let Some(op) = self.operator.take() {
            op.shutdown.cancel();
            op.task.abort();
        }
    }

    async fn put_user_token(&self, value: &str) {
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("gebeta-user".into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                "token".to_string(),
                ByteString(value.as_bytes().to_vec()),
            )])),
            ..Default::default()
        };
        self.secrets()
            .patch(
                "gebeta-user",
                &PatchParams::apply("test").force(),
                &Patch::Apply(&secret),
            )
            .await
            .unwrap();
    }

    fn gsas(&self) -> Api<GebetaServiceAccount> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn create(&self, name: &str, spec: serde_json::Value) {
        let gsa: GebetaServiceAccount =
            serde_json::from_value(json!({"apiVersion": "gebeta.app/v1alpha1", "kind": "GebetaServiceAccount", "metadata": {"name": name}, "spec": spec}))
                .unwrap();
        self.gsas()
            .create(&PostParams::default(), &gsa)
            .await
            .unwrap();
    }

    async fn patch_spec(&self, name: &str, spec: serde_json::Value) {
        self.gsas()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": spec})),
            )
            .await
            .unwrap();
    }

    async fn annotate(&self, name: &str, key: &str, value: &str) {
        self.gsas()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
            )
            .await
            .unwrap();
    }

    /// Waits until the object's Ready condition has `reason` (and the status passes `extra`).
    async fn wait_reason(&self, name: &str, reason: &str) -> GebetaServiceAccountStatus {
        let api = self.gsas();
        support::eventually(DEADLINE, &format!("{name} Ready reason {reason}"), || {
            let api = api.clone();
            async move {
                let status = api.get(name).await.ok()?.status?;
                let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
                (ready.reason == reason && status.observed_generation.is_some()).then_some(status)
            }
        })
        .await
    }

    /// Waits until the rotation requested with `value` is done (`status.observedRotation`).
    async fn wait_rotation_observed(&self, name: &str, value: &str) -> GebetaServiceAccountStatus {
        let api = self.gsas();
        support::eventually(DEADLINE, &format!("{name}: rotation {value} done"), || {
            let api = api.clone();
            async move {
                let status = api.get(name).await.ok()?.status?;
                (status.observed_rotation.as_deref() == Some(value)).then_some(status)
            }
        })
        .await
    }

    async fn wait_ready(&self, name: &str) -> GebetaServiceAccountStatus {
        let status = self.wait_reason(name, "Ready").await;
        assert_eq!(
            status
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .unwrap()
                .status,
            "True"
        );
        status
    }

    async fn token_of(&self, name: &str) -> (String, String) {
        let secret = self
            .secrets()
            .get(&format!("{name}-token"))
            .await
            .expect("token Secret");
        let token = String::from_utf8(secret.data.as_ref().unwrap()["token"].0.clone()).unwrap();
        (secret.annotations()[ACCOUNT_ID_ANNOTATION].clone(), token)
    }

    async fn wait_gone(&self, name: &str) {
        let api = self.gsas();
        support::eventually(DEADLINE, &format!("{name} deleted"), || {
            let api = api.clone();
            async move { api.get_opt(name).await.ok()?.is_none().then_some(()) }
        })
        .await;
    }

    /// Events are posted after the change they report, so a test waits for them.
    async fn wait_event(&self, reason: &str) {
        support::eventually(DEADLINE, &format!("event {reason}"), || async {
            self.events()
                .await
                .iter()
                .any(|(r, _)| r == reason)
                .then_some(())
        })
        .await
    }

    async fn events(&self) -> Vec<(String, String)> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }

    fn gebeta(&self) -> GebetaClient {
        GebetaClient::new(ClientConfig {
            base_url: self.sim.base_url(),
            ..ClientConfig::default()
        })
        .unwrap()
    }

    /// Accounts upstream that carry this object's ownership marker.
    fn marked_accounts(&self, uid: &str) -> Vec<gebeta_operator::sim::SimAccount> {
        self.sim
            .live_accounts()
            .into_iter()
            .filter(|a| a.description.contains(uid))
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.kill();
    }
}

fn web_account(description: &str) -> serde_json::Value {
    json!({"platform": "WEB", "description": description, "scopes": ["TILE", "DIRECTION"]})
}

#[tokio::test]
async fn created_accounts_become_ready_with_working_tokens() {
    let f = Fixture::new("gsa-create").await;
    f.create("client", web_account("maps client")).await;
    f.create(
        "server",
        json!({"platform": "DESKTOP", "scopes": ["TILE"], "description": "maps server"}),
    )
    .await;
    let client_status = f.wait_ready("client").await;
    let server_status = f.wait_ready("server").await;

    assert_eq!(client_status.state, Some(AccountState::Active));
    assert!(client_status.pending_creation.is_none());
    let (client_id, client_token) = f.token_of("client").await;
    let (server_id, server_token) = f.token_of("server").await;
    assert_eq!(
        client_status.account_id.as_deref(),
        Some(client_id.as_str())
    );
    assert_eq!(
        server_status.account_id.as_deref(),
        Some(server_id.as_str())
    );
    assert_eq!(
        f.sim.calls("create_account"),
        2,
        "exactly one create per object"
    );

    let upstream = f.sim.account(&client_id).expect("account exists upstream");
    let uid = f.gsas().get("client").await.unwrap().uid().unwrap();
    assert_eq!(
        upstream.description,
        format!("maps client [gebeta-operator:{uid}]")
    );
    assert_eq!(upstream.platform, Platform::Web);

    // The stored tokens really work: the API exchanges them for an access token.
    let pair = f
        .gebeta()
        .auth(&Token::new(client_token.clone()), &Token::new(server_token))
        .await
        .expect("auth with the stored tokens");
    assert!(!pair.access_token.expose().is_empty());

    // The token Secret is owned by the object (garbage-collected with it) and labelled.
    let secret = f.secrets().get("client-token").await.unwrap();
    assert_eq!(
        secret.labels()["app.kubernetes.io/managed-by"],
        "gebeta-operator"
    );
    assert_eq!(secret.owner_references()[0].uid, uid);
    let gsa = f.gsas().get("client").await.unwrap();
    assert!(gsa.finalizers().contains(&FINALIZER.to_string()));

    // Secrets stay secret: no status or event carries a token.
    let status_text = serde_json::to_string(&gsa.status).unwrap();
    assert!(!status_text.contains(&client_token));
    f.wait_event("Created").await;
    assert!(
        f.events()
            .await
            .iter()
            .all(|(_, note)| !note.contains(&client_token))
    );
}

/// Readiness follows the watches: false while the API server does not answer them (a proxy
/// holds every connection), true once they have listed.
#[tokio::test]
async fn readiness_turns_true_once_the_watches_have_synced() {
    // A TCP proxy to the API server that forwards nothing until `open` gets permits.
    let open = Arc::new(tokio::sync::Semaphore::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap();
    let mut config = support::control_plane().config();
    let upstream = format!(
        "{}:{}",
        config.cluster_url.host().unwrap(),
        config.cluster_url.port_u16().unwrap()
    );
    let gate = open.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let (gate, upstream) = (gate.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(_permit) = gate.acquire().await else {
                    return;
                };
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    config.cluster_url = format!("https://{proxy}").parse().unwrap();
    let client = Client::try_from(config).unwrap();
    let ns = support::namespace(&support::client(), "gsa-ready").await;
    let readiness = Readiness::default();
    let ctx = Context::new(
        client,
        GebetaClient::new(ClientConfig::default()).unwrap(),
        Metrics::new(),
        Settings::default(),
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(service_account::run(
        ctx,
        WatchScope {
            namespaces: vec![ns],
            label_selector: None,
        },
        shutdown.clone(),
        readiness.clone(),
    ));
    // Not ready over a window of 2 s while nothing can be listed.
    let window = std::time::Instant::now();
    let mut sample = tokio::time::interval(Duration::from_millis(50));
    while window.elapsed() < Duration::from_secs(2) {
        sample.tick().await;
        assert!(!readiness.is_ready(), "ready before any watch synced");
    }
    open.add_permits(1 << 20);
    support::eventually(DEADLINE, "the controller's watches synced", || {
        let readiness = readiness.clone();
        async move { readiness.is_ready().then_some(()) }
    })
    .await;
    shutdown.cancel();
    task.abort();
}

#[tokio::test]
async fn spec_changes_are_patched_upstream() {
    let f = Fixture::new("gsa-update").await;
    f.create("acct", web_account("before")).await;
    let id = f.wait_ready("acct").await.account_id.unwrap();
    let patches_before = f.sim.calls("patch_account");

    f.patch_spec(
        "acct",
        json!({"description": "after", "scopes": ["GEOCODING", "TILE"]}),
    )
    .await;
    let sim = f.sim.clone();
    let acct = support::eventually(DEADLINE, "scopes and description patched upstream", || {
        let sim = sim.clone();
        let id = id.clone();
        async move {
            sim.account(&id).filter(|a| {
                a.description.starts_with("after ") && a.scopes.contains(&Scope::Geocoding)
            })
        }
    })
    .await;
    assert!(!acct.scopes.contains(&Scope::Direction));
    assert_eq!(
        f.sim.calls("patch_account") - patches_before,
        1,
        "one PATCH carries both changes"
    );
    assert_eq!(
        f.sim.calls("create_account"),
        1,
        "an update never recreates"
    );
}

#[tokio::test]
async fn suspend_and_reactivate() {
    let f = Fixture::new("gsa-suspend").await;
    f.create("client", web_account("client")).await;
    f.create("server", web_account("server")).await;
    f.wait_ready("client").await;
    let server_id = f.wait_ready("server").await.account_id.unwrap();
    let (_, client_token) = f.token_of("client").await;
    let (_, server_token) = f.token_of("server").await;
    let (ct, st) = (Token::new(client_token), Token::new(server_token));

    f.patch_spec("server", json!({"suspended": true})).await;
    let status = f.wait_reason("server", "Suspended").await;
    assert_eq!(status.state, Some(AccountState::Suspended));
    assert_eq!(
        f.sim.account(&server_id).unwrap().status,
        AccountState::Suspended
    );
    let refused = f
        .gebeta()
        .auth(&ct, &st)
        .await
        .expect_err("a suspended account cannot authenticate");
    assert!(refused.is_unauthorized());

    f.patch_spec("server", json!({"suspended": false})).await;
    let sim = f.sim.clone();
    support::eventually(DEADLINE, "reactivated upstream", || {
        let sim = sim.clone();
        let id = server_id.clone();
        async move { (sim.account(&id)?.status == AccountState::Active).then_some(()) }
    })
    .await;
    f.wait_ready("server").await;
    f.gebeta()
        .auth(&ct, &st)
        .await
        .expect("auth works again after reactivation");
    assert_eq!(f.sim.calls("create_account"), 2);
}

#[tokio::test]
async fn deletion_policies_are_honoured() {
    let f = Fixture::new("gsa-delete").await;
    for (name, policy) in [("del", "Delete"), ("rev", "Revoke"), ("orph", "Orphan")] {
        let mut spec = web_account(name);
        spec["deletionPolicy"] = json!(policy);
        f.create(name, spec).await;
    }
    let mut ids = BTreeMap::new();
    for name in ["del", "rev", "orph"] {
        ids.insert(name, f.wait_ready(name).await.account_id.unwrap());
    }
    for name in ["del", "rev", "orph"] {
        f.gsas()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    for name in ["del", "rev", "orph"] {
        f.wait_gone(name).await;
    }
    assert!(
        f.sim.account(&ids["del"]).is_none(),
        "Delete removes the account upstream"
    );
    assert_eq!(
        f.sim.account(&ids["rev"]).unwrap().status,
        AccountState::Revoked,
        "Revoke leaves a revoked record"
    );
    assert_eq!(
        f.sim.account(&ids["orph"]).unwrap().status,
        AccountState::Active,
        "Orphan leaves the account untouched"
    );
}

/// A refused revoke (a 409 here; any 4xx but "already revoked") is not taken for a revoke:
/// the object stays until the account reads as REVOKED, and the cleanup is retried.
#[tokio::test]
async fn a_refused_revoke_is_retried_not_reported_done() {
    let f = Fixture::new("gsa-revoke-refused").await;
    let mut spec = web_account("revoke-refused");
    spec["deletionPolicy"] = json!("Revoke");
    f.create("rev", spec).await;
    let id = f.wait_ready("rev").await.account_id.unwrap();
    f.sim.inject("patch_account", Fault::Status(409, None), 1);
    f.gsas()
        .delete("rev", &DeleteParams::default())
        .await
        .unwrap();
    f.wait_gone("rev").await;
    assert_eq!(
        f.sim.account(&id).unwrap().status,
        AccountState::Revoked,
        "the account was revoked before the object went"
    );
    assert!(
        f.sim.calls("patch_account") >= 2,
        "the refused revoke was tried again"
    );
}

/// deletionPolicy Orphan keeps the user's account, not one created before an interruption
/// whose token was never stored (nobody holds its token): deleting the object while that
/// creation is still unresolved deletes it, as recovery would have.
#[tokio::test]
async fn an_orphaned_object_does_not_leave_an_account_whose_token_was_lost() {
    let f = Fixture::new("gsa-orphan-lost").await;
    // The create reaches the API but its answer is lost, and recovery cannot list accounts.
    f.sim.inject("create_account", Fault::DropAfterCreate, 1);
    f.sim
        .inject("list_accounts", Fault::Status(503, None), 100_000);
    let mut spec = web_account("orphan-lost");
    spec["deletionPolicy"] = json!("Orphan");
    f.create("orph", spec).await;
    let sim = f.sim.clone();
    support::eventually(DEADLINE, "the lost create reached the API", || {
        std::future::ready((sim.live_accounts().len() == 1).then_some(()))
    })
    .await;
    let uid = f.gsas().get("orph").await.unwrap().uid().unwrap();
    f.gsas()
        .delete("orph", &DeleteParams::default())
        .await
        .unwrap();
    f.sim.clear_faults();
    f.wait_gone("orph").await;
    let live = f.marked_accounts(&uid);
    assert!(
        live.is_empty(),
        "the account whose token was lost is not left upstream: {live:?}"
    );
    assert_eq!(f.sim.calls("create_account"), 1);
}

#[tokio::test]
async fn an_existing_account_is_adopted_without_creating_one() {
    let f = Fixture::new("gsa-adopt").await;
    let (id, _token) = f
        .sim
        .create_dashboard_account(Platform::Web, vec![Scope::Tile]);
    let mut spec = web_account("adopted by kubernetes");
    spec["accountId"] = json!(id);
    f.create("adopted", spec).await;
    let status = f.wait_ready("adopted").await;
    assert!(status.adopted);
    assert_eq!(status.account_id.as_deref(), Some(id.as_str()));
    assert_eq!(f.sim.calls("create_account"), 0);
    let upstream = f.sim.account(&id).unwrap();
    assert_eq!(
        upstream.description, "adopted by kubernetes",
        "adopted accounts get the spec's description, without a marker"
    );
    assert!(upstream.scopes.contains(&Scope::Direction));
    assert!(
        f.secrets()
            .get_opt("adopted-token")
            .await
            .unwrap()
            .is_none(),
        "no token Secret for an adopted account"
    );

    let mut missing = web_account("ghost");
    missing["accountId"] = json!("no-such-account");
    f.create("ghost", missing).await;
    f.wait_reason("ghost", "AdoptedAccountNotFound").await;

    // The operator did not make the account: with no deletionPolicy, deleting the object
    // leaves it upstream, untouched.
    let (deletes, patches) = (f.sim.calls("delete_account"), f.sim.calls("patch_account"));
    f.gsas()
        .delete("adopted", &DeleteParams::default())
        .await
        .unwrap();
    f.wait_gone("adopted").await;
    assert_eq!(
        f.sim.account(&id).map(|a| a.status),
        Some(AccountState::Active),
        "an adopted account is orphaned by default"
    );
    assert_eq!(
        (f.sim.calls("delete_account"), f.sim.calls("patch_account")),
        (deletes, patches)
    );
    f.wait_event("Orphaned").await;
}

#[tokio::test]
async fn out_of_band_changes_are_handled() {
    let f = Fixture::with_resync("gsa-drift", Duration::from_secs(2)).await;
    f.create("acct", web_account("drift")).await;
    let first = f.wait_ready("acct").await.account_id.unwrap();
    let uid = f.gsas().get("acct").await.unwrap().uid().unwrap();

    // Edited upstream: the resync restores the spec.
    f.sim
        .edit_account(&first, Some("hijacked".into()), Some(vec![Scope::Matrix]));
    let sim = f.sim.clone();
    support::eventually(DEADLINE, "drift corrected", || {
        let sim = sim.clone();
        let id = first.clone();
        async move {
            sim.account(&id)
                .filter(|a| a.description.starts_with("drift [") && a.scopes.contains(&Scope::Tile))
        }
    })
    .await;
    f.wait_event("DriftCorrected").await;

    // Deleted upstream: recreated, with the new token stored.
    f.sim.delete_account(&first);
    let api = f.gsas();
    let second = support::eventually(DEADLINE, "account recreated", || {
        let api = api.clone();
        let first = first.clone();
        async move {
            api.get("acct")
                .await
                .ok()?
                .status?
                .account_id
                .filter(|id| *id != first)
        }
    })
    .await;
    f.wait_ready("acct").await;
    assert_eq!(
        f.token_of("acct").await.0,
        second,
        "the Secret holds the new account's token"
    );
    f.wait_event("AccountDeletedUpstream").await;

    // Revoked upstream: reported, not silently recreated.
    let creates = f.sim.calls("create_account");
    f.sim.set_account_state(&second, AccountState::Revoked);
    f.wait_reason("acct", "RevokedUpstream").await;
    assert_eq!(
        f.sim.calls("create_account"),
        creates,
        "a revoked account is not recreated by itself"
    );

    // The documented way out: ask for a rotation.
    f.annotate("acct", ROTATE_ANNOTATION, "1").await;
    let third = support::eventually(DEADLINE, "rotated to a new account", || {
        let api = api.clone();
        let second = second.clone();
        async move {
            let status = api.get("acct").await.ok()?.status?;
            let ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            status.account_id.filter(|id| *id != second && ready)
        }
    })
    .await;
    assert_eq!(f.token_of("acct").await.0, third);
    assert!(
        f.sim.account(&second).is_none(),
        "deletionPolicy Delete retires the replaced account"
    );
    assert_eq!(
        f.marked_accounts(&uid).len(),
        1,
        "exactly one live account carries the object's marker"
    );
}

#[tokio::test]
async fn missing_and_rejected_credentials_are_reported_without_hammering() {
    let f = Fixture::new("gsa-creds").await;
    f.secrets()
        .delete("gebeta-user", &DeleteParams::default())
        .await
        .unwrap();
    f.create("acct", web_account("creds")).await;
    let status = f.wait_reason("acct", "MissingCredentials").await;
    assert!(status.account_id.is_none());
    assert_eq!(
        f.sim.stats().calls.values().map(|c| c.total).sum::<u64>(),
        0,
        "no API call without credentials"
    );

    f.put_user_token("wrong-token").await;
    f.wait_reason("acct", "InvalidCredentials").await;
    let message = f
        .gsas()
        .get("acct")
        .await
        .unwrap()
        .status
        .unwrap()
        .conditions[0]
        .message
        .clone();
    assert!(
        !message.contains("wrong-token"),
        "the user token never appears in status: {message}"
    );
    // Backoff: a handful of attempts in a few seconds, not a loop.
    let before = f.sim.calls("create_account");
    support::eventually(
        Duration::from_secs(20),
        "another attempt after backoff",
        || {
            let sim = f.sim.clone();
            async move { (sim.calls("create_account") > before).then_some(()) }
        },
    )
    .await;
    assert!(
        f.sim.calls("create_account") <= before + 3,
        "backoff keeps attempts few"
    );
    assert_eq!(f.sim.live_accounts().len(), 0);

    f.put_user_token(USER_TOKEN).await;
    // Nudge the object so the fix is noticed without waiting for the backoff.
    f.annotate("acct", "test/nudge", "1").await;
    f.wait_ready("acct").await;
    assert_eq!(f.sim.live_accounts().len(), 1);
}

#[tokio::test]
async fn api_failures_recover_with_one_account() {
    let f = Fixture::new("gsa-faults").await;
    f.sim.inject("create_account", Fault::Status(503, None), 2);
    f.sim
        .inject("list_accounts", Fault::Status(429, Some(1)), 1);
    f.create("acct", web_account("faults")).await;
    f.wait_ready("acct").await;
    let uid = f.gsas().get("acct").await.unwrap().uid().unwrap();
    assert_eq!(
        f.marked_accounts(&uid).len(),
        1,
        "exactly one account after 5xx and 429"
    );

    f.sim
        .inject("get_account", Fault::Latency(Duration::from_secs(5)), 3);
    f.sim.inject("patch_account", Fault::Status(500, None), 2);
    f.patch_spec("acct", json!({"description": "after faults"}))
        .await;
    let sim = f.sim.clone();
    support::eventually(DEADLINE, "update applied after timeouts and 500s", || {
        let sim = sim.clone();
        let uid = uid.clone();
        async move {
            sim.live_accounts()
                .into_iter()
                .find(|a| a.description == format!("after faults [gebeta-operator:{uid}]"))
        }
    })
    .await;
    f.wait_ready("acct").await;
}

#[tokio::test]
async fn crash_between_create_and_secret_write_leaves_exactly_one_account() {
    let mut f = Fixture::new("gsa-crash").await;
    // The account is created upstream but the answer (with its token) never arrives.
    f.sim.inject("create_account", Fault::DropAfterCreate, 1);
    // Keep the first operator from recovering by itself before it "dies".
    f.sim
        .inject("list_accounts", Fault::Latency(Duration::from_secs(30)), 1);
    f.create("acct", web_account("crash")).await;
    let sim = f.sim.clone();
    support::eventually(DEADLINE, "the lost create reached the API", || {
        let sim = sim.clone();
        async move { (sim.live_accounts().len() == 1).then_some(()) }
    })
    .await;
    let lost = f.sim.live_accounts()[0].id.clone();
    // The operator dies right there, and comes back.
    f.kill();
    f.sim.clear_faults();
    f.start();
    let status = f.wait_ready("acct").await;
    let uid = f.gsas().get("acct").await.unwrap().uid().unwrap();
    let live = f.marked_accounts(&uid);
    assert_eq!(live.len(), 1, "exactly one live account: {live:?}");
    assert_ne!(
        live[0].id, lost,
        "the account whose token was lost is deleted"
    );
    assert_eq!(status.account_id.as_deref(), Some(live[0].id.as_str()));
    assert_eq!(f.token_of("acct").await.0, live[0].id);
    f.wait_event("OrphanDeleted").await;
}

#[tokio::test]
async fn crash_between_secret_write_and_status_keeps_the_stored_account() {
    let mut f = Fixture::new("gsa-crash2").await;
    f.kill();
    // Reproduce the state a crash leaves after the token was stored but before the id was
    // recorded: an account with the marker upstream, its token in the Secret, and the intent.
    f.create("acct", web_account("stored")).await;
    let gsa = f.gsas().get("acct").await.unwrap();
    let uid = gsa.uid().unwrap();
    let (id, token) = f
        .sim
        .create_dashboard_account(Platform::Web, vec![Scope::Tile, Scope::Direction]);
    f.sim
        .edit_account(&id, Some(format!("stored [gebeta-operator:{uid}]")), None);
    let secret = service_account::token_secret(&gsa, "acct-token", &id, &Token::new(token.clone()));
    f.secrets()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    f.gsas()
        .patch_status(
            "acct",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"pendingCreation": {"startedAt": "2026-01-01T00:00:00Z"}}}),
            ),
        )
        .await
        .unwrap();

    f.start();
    let status = f.wait_ready("acct").await;
    assert_eq!(
        status.account_id.as_deref(),
        Some(id.as_str()),
        "the account whose token was stored is kept"
    );
    assert_eq!(f.sim.calls("create_account"), 0, "no second account");
    assert_eq!(f.marked_accounts(&uid).len(), 1);
    assert_eq!(f.token_of("acct").await.1, token);
}

#[tokio::test]
async fn a_no_op_resync_writes_nothing_anywhere() {
    let f = Fixture::with_resync("gsa-noop", Duration::from_secs(1)).await;
    f.create("acct", web_account("steady")).await;
    f.wait_ready("acct").await;
    // Let the post-creation reconciles settle, then take a snapshot.
    let gets = f.sim.calls("get_account");
    let sim = f.sim.clone();
    support::eventually(DEADLINE, "a resync compared with upstream", || {
        let sim = sim.clone();
        async move { (sim.calls("get_account") > gets).then_some(()) }
    })
    .await;
    let object_rv = f.gsas().get("acct").await.unwrap().resource_version();
    let secret_rv = f
        .secrets()
        .get("acct-token")
        .await
        .unwrap()
        .resource_version();
    let writes = |sim: &SimHandle| {
        sim.calls("create_account") + sim.calls("patch_account") + sim.calls("delete_account")
    };
    let writes_before = writes(&f.sim);
    let gets = f.sim.calls("get_account");
    let offset = support::audit_offset();

    // Several more resyncs happen...
    support::eventually(DEADLINE, "three more resyncs", || {
        let sim = sim.clone();
        async move { (sim.calls("get_account") >= gets + 3).then_some(()) }
    })
    .await;
    // ...and none of them wrote anything, upstream or in Kubernetes.
    assert_eq!(
        writes(&f.sim),
        writes_before,
        "no Gebeta writes on a no-op resync"
    );
    assert_eq!(
        f.gsas().get("acct").await.unwrap().resource_version(),
        object_rv,
        "no status write"
    );
    assert_eq!(
        f.secrets()
            .get("acct-token")
            .await
            .unwrap()
            .resource_version(),
        secret_rv,
        "no Secret write"
    );
    // ...nor read the token Secret again: its watch has seen no change since it was last
    // found in place (the management credentials are still read for each comparison).
    let reads = f.secrets_read_since(offset);
    assert!(
        !reads.iter().any(|r| r.ends_with(" acct-token")),
        "the unchanged token Secret was read again: {reads:?}"
    );
    assert!(
        reads.iter().any(|r| r == "get gebeta-user"),
        "the resyncs read the management credentials: {reads:?}"
    );
}

/// The token Secret is no longer read at each resync: its watch must still bring every change
/// that matters. Resyncs are an hour apart here, so only the watch can.
#[tokio::test]
async fn a_deleted_or_taken_over_token_secret_is_reported() {
    let f = Fixture::new("gsa-token-secret").await;
    f.create("gone", web_account("gone")).await;
    f.create("taken", web_account("taken")).await;
    f.wait_ready("gone").await;
    f.wait_ready("taken").await;

    f.secrets()
        .delete("gone-token", &DeleteParams::default())
        .await
        .unwrap();
    let status = f.wait_reason("gone", "TokenSecretMissing").await;
    assert!(status.account_id.is_some(), "the account is kept");

    // Another manager takes the Secret over (the label the operator's ownership check reads).
    f.secrets()
        .patch(
            "taken-token",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": "someone-else"}}}),
            ),
        )
        .await
        .unwrap();
    f.wait_reason("taken", "SecretConflict").await;
}

#[tokio::test]
async fn a_stuck_finalizer_is_reported_and_can_be_released() {
    let f = Fixture::new("gsa-stuck").await;
    f.create("acct", web_account("stuck")).await;
    let id = f.wait_ready("acct").await.account_id.unwrap();
    // Management credentials that stopped working (a deleted user-token Secret no longer does
    // this: it stays, protected by a finalizer, until cleanup is done).
    f.put_user_token("revoked-user-token").await;
    f.gsas()
        .delete("acct", &DeleteParams::default())
        .await
        .unwrap();
    let status = f.wait_reason("acct", "CleanupFailed").await;
    let message = &status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .message;
    assert!(
        message.contains(SKIP_CLEANUP_ANNOTATION),
        "the condition says how to get out: {message}"
    );

    f.annotate("acct", SKIP_CLEANUP_ANNOTATION, "true").await;
    f.wait_gone("acct").await;
    assert_eq!(
        f.sim.account(&id).unwrap().status,
        AccountState::Active,
        "skipping cleanup leaves the account upstream"
    );
}

#[tokio::test]
async fn a_hundred_objects_converge() {
    let f = Fixture::new("gsa-many").await;
    let names: Vec<String> = (0..100).map(|i| format!("acct-{i:03}")).collect();
    futures::future::join_all(names.iter().map(|n| f.create(n, web_account(n)))).await;
    let api = f.gsas();
    support::eventually(Duration::from_secs(120), "100 accounts Ready", || {
        let api = api.clone();
        async move {
            let list = api.list(&ListParams::default()).await.ok()?;
            let ready = list
                .items
                .iter()
                .filter(|g| {
                    g.status.as_ref().is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                    })
                })
                .count();
            (ready == 100).then_some(())
        }
    })
    .await;
    assert_eq!(f.sim.calls("create_account"), 100);
    assert_eq!(f.sim.live_accounts().len(), 100);
    // A reconcile handed a copy from between the operator's own status writes would read the
    // new account back (or list accounts) for nothing.
    assert_eq!(
        (f.sim.calls("get_account"), f.sim.calls("list_accounts")),
        (0, 0),
        "upstream reads while creating"
    );
}

#[tokio::test]
async fn a_whole_lifecycle_costs_three_gebeta_calls() {
    let f = Fixture::new("gsa-calls").await;
    f.create("acct", web_account("lifecycle")).await;
    let id = f.wait_ready("acct").await.account_id.unwrap();
    f.gsas()
        .delete("acct", &DeleteParams::default())
        .await
        .unwrap();
    f.wait_gone("acct").await;
    assert!(f.sim.account(&id).is_none());
    let calls: BTreeMap<String, u64> = f
        .sim
        .stats()
        .calls
        .into_iter()
        .map(|(k, v)| (k, v.total))
        .filter(|(_, n)| *n > 0)
        .collect();
    eprintln!("Gebeta calls for create -> Ready -> delete: {calls:?}");
    // One create; on deletion one PATCH (revoke) and one DELETE; no read, no list.
    let expected: BTreeMap<String, u64> = [
        ("create_account", 1),
        ("patch_account", 1),
        ("delete_account", 1),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n))
    .collect();
    assert_eq!(calls, expected);
}

/// A rotation whose retire step keeps failing, across operator restarts: the replaced
/// account is recorded before the new one is made, retired once the API lets us, and the
/// rotation is never started again (one new account, not one per attempt).
#[tokio::test]
async fn a_rotation_finishes_retiring_across_failures_and_restarts() {
    let mut f = Fixture::new("gsa-retire").await;
    f.create("acct", web_account("retire")).await;
    let first = f.wait_ready("acct").await.account_id.unwrap();
    let uid = f.gsas().get("acct").await.unwrap().uid().unwrap();
    f.sim
        .inject("delete_account", Fault::Status(503, None), 100_000);
    f.annotate("acct", ROTATE_ANNOTATION, "1").await;
    let status = f.wait_reason("acct", "RetireFailed").await;
    let second = status.account_id.clone().unwrap();
    assert_ne!(second, first);
    assert_eq!(status.retiring, std::slice::from_ref(&first));
    assert_eq!(status.observed_rotation, None, "not finished yet");
    // Two restarts, each followed by another failed attempt.
    for _ in 0..2 {
        let attempts = f.sim.calls("delete_account");
        f.kill();
        f.start();
        let sim = f.sim.clone();
        support::eventually(DEADLINE, "another retire attempt", || {
            std::future::ready((sim.calls("delete_account") > attempts).then_some(()))
        })
        .await;
    }
    assert_eq!(
        f.sim.calls("create_account"),
        2,
        "one replacement, however often the retire failed"
    );
    assert_eq!(f.token_of("acct").await.0, second);
    f.sim.clear_faults();
    let status = f.wait_rotation_observed("acct", "1").await;
    assert!(status.retiring.is_empty());
    assert_eq!(status.account_id.as_deref(), Some(second.as_str()));
    assert!(
        f.sim.account(&first).is_none(),
        "deletionPolicy Delete: the replaced account is gone"
    );
    let live = f.marked_accounts(&uid);
    assert_eq!(live.len(), 1, "exactly one live account: {live:?}");
    assert_eq!(live[0].status, AccountState::Active);
    f.wait_event("RetireFailed").await;
}

/// A rotation whose create reached Gebeta but whose answer was lost: recovery deletes the
/// account whose token was never stored, and the rotation creates again. It used to count the
/// still-current account as retired and report the rotation done with the old account (and
/// its perhaps leaked token) still in use.
#[tokio::test]
async fn a_rotation_whose_create_was_lost_creates_again() {
    let f = Fixture::new("gsa-rotate-lost").await;
    f.create("acct", web_account("rotate-lost")).await;
    let first = f.wait_ready("acct").await.account_id.unwrap();
    let uid = f.gsas().get("acct").await.unwrap().uid().unwrap();
    f.sim.inject("create_account", Fault::DropAfterCreate, 1);
    f.annotate("acct", ROTATE_ANNOTATION, "1").await;
    let status = f.wait_rotation_observed("acct", "1").await;
    let current = status.account_id.clone().unwrap();
    assert_ne!(current, first, "the rotation replaced the account");
    assert!(status.retiring.is_empty());
    assert!(
        f.sim.account(&first).is_none(),
        "no grace period, deletionPolicy Delete: the replaced account is gone"
    );
    assert_eq!(f.token_of("acct").await.0, current);
    let live = f.marked_accounts(&uid);
    assert_eq!(live.len(), 1, "exactly one live account: {live:?}");
    assert_eq!(live[0].id, current);
    assert_eq!(
        f.sim.calls("create_account"),
        3,
        "the first account, the lost one, its replacement"
    );
    f.wait_event("OrphanDeleted").await;
}

/// The operator's default user token serves only the namespaces the admin allows: the same
/// object elsewhere is refused with a clear reason, and the operator makes no Gebeta call
/// for it.
#[tokio::test]
async fn default_credentials_serve_only_allowed_namespaces() {
    let mut f = Fixture::new("gsa-creds-ns").await;
    f.kill();
    let other = support::namespace(&f.client, "gsa-creds-other").await;
    f.more_namespaces = vec![other.clone()];
    f.allowed = Some(vec![f.ns.clone()]);
    f.start();
    f.create("acct", web_account("allowed")).await;
    f.wait_ready("acct").await;
    let calls = |stats: gebeta_operator::sim::SimStats| -> u64 {
        stats.calls.values().map(|c| c.total).sum()
    };
    let before = calls(f.sim.stats());
    let gsas: Api<GebetaServiceAccount> = Api::namespaced(f.client.clone(), &other);
    let gsa: GebetaServiceAccount = serde_json::from_value(json!({
        "apiVersion": "gebeta.app/v1alpha1",
        "kind": "GebetaServiceAccount",
        "metadata": {"name": "acct"},
        "spec": web_account("not allowed"),
    }))
    .unwrap();
    gsas.create(&PostParams::default(), &gsa).await.unwrap();
    let status = support::eventually(DEADLINE, "CredentialsNotAllowed", || {
        let gsas = gsas.clone();
        async move {
            let status = gsas.get("acct").await.ok()?.status?;
            let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
            (ready.reason == "CredentialsNotAllowed").then_some(ready.clone())
        }
    })
    .await;
    assert_eq!(status.status, "False");
    assert!(status.message.contains(&other), "{}", status.message);
    assert!(
        status.message.contains("userTokenSecretRef"),
        "{}",
        status.message
    );
    assert_eq!(
        calls(f.sim.stats()),
        before,
        "no Gebeta call for the refused object"
    );
    assert_eq!(
        f.sim.live_accounts().len(),
        1,
        "only the allowed object's account"
    );
}

/// `spec.accountId` naming an account another object created is refused: no patch of its
/// description (no ping-pong between the two objects), and deleting the refused object leaves
/// the account alone.
/// Adopted accounts carry no marker: two objects naming the same account would patch it in
/// turn. The second is refused before it patches anything.
#[tokio::test]
async fn a_second_adopter_of_one_account_is_refused_without_patching() {
    let f = Fixture::new("gsa-adopt-twice").await;
    let (id, _token) = f
        .sim
        .create_dashboard_account(Platform::Web, vec![Scope::Tile]);
    let mut first = web_account("first adopter");
    first["accountId"] = json!(id);
    f.create("first", first).await;
    f.wait_ready("first").await;
    let patches = f.sim.calls("patch_account");
    let mut second = web_account("second adopter");
    second["accountId"] = json!(id);
    f.create("second", second).await;
    let status = f.wait_reason("second", "AccountManagedElsewhere").await;
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(ready.message.contains("/first"), "{}", ready.message);
    assert_eq!(
        status.account_id, None,
        "nothing recorded for the refused object"
    );
    assert_eq!(
        f.sim.calls("patch_account"),
        patches,
        "the second object patched nothing"
    );
    assert_eq!(f.sim.account(&id).unwrap().description, "first adopter");
    // Deleting the refused object leaves the account alone.
    f.gsas()
        .delete("second", &DeleteParams::default())
        .await
        .unwrap();
    f.wait_gone("second").await;
    assert_eq!(f.sim.account(&id).unwrap().status, AccountState::Active);
    f.wait_ready("first").await;
}

#[tokio::test]
async fn an_account_managed_by_another_object_is_not_adopted() {
    let f = Fixture::new("gsa-steal").await;
    f.create("owner", web_account("created here")).await;
    let id = f.wait_ready("owner").await.account_id.unwrap();
    let owner_uid = f.gsas().get("owner").await.unwrap().uid().unwrap();
    let before = f.sim.account(&id).unwrap();
    assert!(before.description.contains(&owner_uid));
    let patches = f.sim.calls("patch_account");

    let mut spec = web_account("taken over");
    spec["accountId"] = json!(id);
    f.create("thief", spec).await;
    let status = f.wait_reason("thief", "AccountManagedElsewhere").await;
    assert_eq!(
        status.account_id, None,
        "nothing recorded for the refused account"
    );
    assert!(!status.adopted);
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(ready.message.contains(&owner_uid), "{}", ready.message);
    f.wait_event("AccountManagedElsewhere").await;
    // The owner's next comparison with upstream changes nothing either.
    f.annotate("owner", "nudge", "1").await;
    f.annotate("thief", "nudge", "1").await;
    f.wait_reason("thief", "AccountManagedElsewhere").await;
    assert_eq!(
        f.sim.calls("patch_account"),
        patches,
        "no description ping-pong"
    );
    assert_eq!(f.sim.account(&id).unwrap().description, before.description);
    // Deleting the refused object does not touch the account it asked for.
    f.gsas()
        .delete("thief", &DeleteParams::default())
        .await
        .unwrap();
    f.wait_gone("thief").await;
    let after = f
        .sim
        .account(&id)
        .expect("the owner's account still exists");
    assert_eq!(after.status, AccountState::Active);
    assert_eq!(
        f.wait_ready("owner").await.account_id.as_deref(),
        Some(id.as_str())
    );
}

/// A copy of the object whose status does not name its account yet (as a watch can deliver
/// when the Secret event comes before the status event) does not lead to a second account:
/// the token Secret names the account, and the operator recovers it.
#[tokio::test]
async fn a_stale_status_without_the_account_id_recovers_instead_of_creating() {
    let mut f = Fixture::new("gsa-stale").await;
    f.create("acct", web_account("stale")).await;
    let id = f.wait_ready("acct").await.account_id.unwrap();
    let uid = f.gsas().get("acct").await.unwrap().uid().unwrap();
    f.kill();
    // What a stale copy shows: a token Secret naming the account, a status that does not.
    f.gsas()
        .patch_status(
            "acct",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"accountId": null, "conditions": null}})),
        )
        .await
        .unwrap();
    let creates = f.sim.calls("create_account");
    f.start();
    let status = f.wait_ready("acct").await;
    assert_eq!(status.account_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        f.sim.calls("create_account"),
        creates,
        "no second account from a stale copy"
    );
    assert_eq!(f.marked_accounts(&uid).len(), 1);
    assert_eq!(f.token_of("acct").await.0, id);
}

/// Deleting a namespace that holds a GebetaServiceAccount and the user-token Secret it uses
/// does not hang: the Secret stays readable (finalizer) until the account is cleaned up
/// upstream, then is released, and the namespace goes away (kube-controller-manager's
/// namespace controller does the deleting).
#[tokio::test]
async fn deleting_the_namespace_cleans_up_and_does_not_hang() {
    use k8s_openapi::api::core::v1::Namespace;
    let f = Fixture::new("gsa-nsdel").await;
    let mut spec = web_account("in a namespace that goes away");
    spec["userTokenSecretRef"] = json!({"name": "gebeta-user", "key": "token"});
    f.create("acct", spec).await;
    let id = f.wait_ready("acct").await.account_id.unwrap();
    let user_secret = f.secrets().get("gebeta-user").await.unwrap();
    assert!(
        user_secret
            .finalizers()
            .iter()
            .any(|x| x == "gebeta.app/user-token-in-use"),
        "the user-token Secret in use is protected: {:?}",
        user_secret.finalizers()
    );
    // The first cleanup attempt fails upstream, so the retry comes after the namespace
    // controller has deleted (or tried to delete) the Secret.
    f.sim.inject("patch_account", Fault::Status(503, None), 3);
    let namespaces: Api<Namespace> = Api::all(f.client.clone());
    namespaces
        .delete(&f.ns, &DeleteParams::default())
        .await
        .unwrap();
    support::eventually(
        Duration::from_secs(120),
        "the namespace is gone",
        || async {
            namespaces
                .get_opt(&f.ns)
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert!(
        f.sim.account(&id).is_none(),
        "the upstream account was deleted (deletionPolicy Delete) before the namespace went"
    );
}

/// A 200-character description in Ge'ez script (600 bytes) is accepted, created upstream with
/// the marker, and not reported as drift: lengths are counted in characters, as the contract's
/// `maxLength` does.
#[tokio::test]
async fn a_200_character_geez_description_is_accepted() {
    let f = Fixture::new("gsa-geez").await;
    let description = "ሰላም".repeat(66) + "ሰላ";
    assert_eq!(description.chars().count(), 200);
    f.create("acct", web_account(&description)).await;
    let id = f.wait_ready("acct").await.account_id.unwrap();
    let uid = f.gsas().get("acct").await.unwrap().uid().unwrap();
    let upstream = f.sim.account(&id).unwrap();
    assert!(upstream.description.starts_with(&description));
    assert_eq!(f.marked_accounts(&uid).len(), 1, "the marker is found");
    let patches = f.sim.calls("patch_account");
    f.annotate("acct", "nudge", "1").await;
    f.wait_ready("acct").await;
    assert_eq!(f.sim.calls("patch_account"), patches, "no drift to correct");
}

#[tokio::test]
async fn unknown_upstream_values_affect_only_their_object() {
    let f = Fixture::with_resync("gsa-odd", Duration::from_secs(2)).await;
    f.create("odd", web_account("odd")).await;
    f.create("plain", web_account("plain")).await;
    let odd = f.wait_ready("odd").await.account_id.unwrap();
    let plain = f.wait_ready("plain").await.account_id.unwrap();

    // A newer API: a state and a scope this operator has never seen.
    let patches = f.sim.calls("patch_account");
    assert!(f.sim.set_odd_value(&odd, "status", "LOCKED"));
    assert!(f.sim.set_odd_value(&odd, "scope", "TRAFFIC"));
    let status = f.wait_reason("odd", "UnknownUpstreamValue").await;
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        ready.message.contains("LOCKED") && ready.message.contains("TRAFFIC"),
        "{}",
        ready.message
    );
    assert_eq!(ready.status, "False");
    f.wait_event("UnknownUpstreamValue").await;
    assert_eq!(
        f.sim.calls("patch_account"),
        patches,
        "an account with unknown values is not patched back"
    );
    assert_eq!(f.sim.account(&odd).unwrap().status, AccountState::Active);

    // The other object is unaffected: still Ready, its drift still corrected.
    f.sim.edit_account(&plain, Some("hijacked".into()), None);
    let sim = f.sim.clone();
    support::eventually(DEADLINE, "plain's drift corrected", || {
        let sim = sim.clone();
        let id = plain.clone();
        async move {
            sim.account(&id)
                .filter(|a| a.description.starts_with("plain ["))
        }
    })
    .await;
    f.wait_ready("plain").await;

    // Recovery lists the organization with the odd account in it: a lost create answer is
    // still resolved to exactly one account.
    f.sim.inject("create_account", Fault::DropAfterCreate, 1);
    f.create("third", web_account("third")).await;
    let third = f.wait_ready("third").await;
    let uid = f.gsas().get("third").await.unwrap().uid().unwrap();
    let live = f.marked_accounts(&uid);
    assert_eq!(live.len(), 1, "exactly one account for third: {live:?}");
    assert_eq!(third.account_id.as_deref(), Some(live[0].id.as_str()));
    f.wait_event("OrphanDeleted").await;

    // Cleanup of the odd object still works (deletionPolicy Delete).
    f.gsas()
        .delete("odd", &DeleteParams::default())
        .await
        .unwrap();
    f.wait_gone("odd").await;
    assert!(f.sim.account(&odd).is_none(), "deleted upstream");
}

/// Scheduled rotation with a grace period, watched by a pod-like reader that calls the API
/// with whatever token the access-token Secret holds: across two rotations no call fails,
/// although the simulator refuses tokens of accounts that are no longer ACTIVE. Each
/// replaced account is retired (deletionPolicy Delete) only once the access token using it
/// holds a token from the new account.
#[tokio::test]
async fn scheduled_rotations_retire_accounts_only_after_their_consumers_switched() {
    let mut f = Fixture::new("gsa-rotation").await;
    f.kill();
    f.tokens = true;
    f.start();
    f.sim.set_access_tokens_follow_accounts(true);
    // Consumers take longer to switch than the grace period: the retire must wait for them.
    f.sim
        .inject("auth", Fault::Latency(Duration::from_millis(1500)), 1000);
    let mut client = web_account("rotating client");
    client["rotation"] = json!({"interval": "15s", "gracePeriod": "1s"});
    f.create("client", client).await;
    f.create("server", web_account("server")).await;
    let first = f.wait_ready("client").await.account_id.unwrap();
    f.wait_ready("server").await;
    let status = f.gsas().get("client").await.unwrap().status.unwrap();
    assert!(status.next_rotation_time.is_some(), "{status:?}");

    let tokens: Api<GebetaAccessToken> = Api::namespaced(f.client.clone(), &f.ns);
    let gat: GebetaAccessToken = serde_json::from_value(json!({
        "apiVersion": "gebeta.app/v1alpha1", "kind": "GebetaAccessToken",
        "metadata": {"name": "maps"},
        "spec": {
            "secretName": "maps-token",
            "clientToken": {"serviceAccountRef": {"name": "client"}},
            "serverToken": {"serviceAccountRef": {"name": "server"}},
        },
    }))
    .unwrap();
    tokens.create(&PostParams::default(), &gat).await.unwrap();

    // The pod: reads the Secret and calls the API with its token, again and again.
    let secrets = f.secrets();
    let url = format!(
        "{}/route?origin=9.0222,38.7469&destination=9.05,38.75",
        f.sim.base_url()
    );
    let stop = CancellationToken::new();
    let reader = tokio::spawn({
        let stop = stop.clone();
        async move {
            let (mut calls, mut failures) = (0u32, Vec::new());
            let http = reqwest::Client::new();
            while !stop.is_cancelled() {
                if let Ok(Some(secret)) = secrets.get_opt("maps-token").await
                    && let Some(token) = secret.data.as_ref().and_then(|d| d.get("token"))
                {
                    let token = String::from_utf8_lossy(&token.0).to_string();
                    let status = http.get(&url).bearer_auth(&token).send().await;
                    calls += 1;
                    match status.map(|r| r.status().as_u16()) {
                        Ok(200) => {}
                        other => failures.push(format!("{other:?}")),
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            (calls, failures)
        }
    });

    // Two scheduled rotations, each finished (the replaced account retired).
    let api = f.gsas();
    let mut accounts = vec![first];
    for round in 1..=2 {
        let previous = accounts.last().unwrap().clone();
        let next = support::eventually(DEADLINE, &format!("rotation {round} finished"), || {
            let api = api.clone();
            let previous = previous.clone();
            async move {
                let status = api.get("client").await.ok()?.status?;
                let id = status.account_id.filter(|id| *id != previous)?;
                (status.retiring.is_empty() && status.rotation_in_progress.is_none()).then_some(id)
            }
        })
        .await;
        assert!(
            f.sim.account(&previous).is_none(),
            "rotation {round}: the replaced account is deleted"
        );
        // Retired only after the consumer switched: it already holds the new account's token.
        let gat = tokens.get("maps").await.unwrap();
        assert!(
            gat.status.unwrap().source_account_ids.contains(&next),
            "rotation {round}: the access token uses {next}"
        );
        accounts.push(next);
    }
    stop.cancel();
    let (calls, failures) = reader.await.unwrap();
    assert!(calls >= 20, "the reader kept calling ({calls} calls)");
    assert!(failures.is_empty(), "failed calls: {failures:?}");
    let status = api.get("client").await.unwrap().status.unwrap();
    assert!(status.last_rotation_time.is_some() && status.next_rotation_time.is_some());
    let uid = api.get("client").await.unwrap().uid().unwrap();
    assert_eq!(
        f.marked_accounts(&uid).len(),
        1,
        "one live account per object"
    );
    f.wait_event("Rotated").await;
}
