//! `kubectl gebeta` (the `kubectl-gebeta` binary) against the test API server and gebeta-sim,
//! with the controllers running in-process (or stopped, to see the CLI give up).

mod support;

use std::{collections::BTreeMap, process::Output, time::Duration};

use gebeta_operator::{
    controllers::{
        Context, Readiness, SecretLocation, Settings, WatchScope, access_token,
        access_token::REFRESH_ANNOTATION,
        service_account::{self, ROTATE_ANNOTATION},
    },
    crd::{GebetaAccessToken, GebetaServiceAccount},
    gebeta::{
        AccountConfig, AccountState, ClientConfig, GebetaClient, Platform, RetryPolicy, Scope,
        Token,
    },
    metrics::Metrics,
    sim::{Sim, SimConfig, SimHandle},
};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const CLI: &str = env!("CARGO_BIN_EXE_kubectl-gebeta");
const DEADLINE: Duration = Duration::from_secs(60);
const USER_TOKEN: &str = "sim-user-token";

/// One test's world: a namespace, a simulator, both controllers in-process.
struct Fixture {
    client: Client,
    ns: String,
    sim: SimHandle,
    operator: Option<(CancellationToken, JoinHandle<()>)>,
}

impl Fixture {
    async fn new(prefix: &str) -> Fixture {
        let client = support::client();
        let ns = support::namespace(&client, prefix).await;
        let sim = Sim::start(SimConfig::default())
            .await
            .expect("start the simulator");
        let mut f = Fixture {
            client,
            ns,
            sim,
            operator: None,
        };
        f.put_secret("gebeta-user", &[("token", USER_TOKEN)]).await;
        f.start();
        f
    }

    fn start(&mut self) {
        let gebeta = GebetaClient::new(ClientConfig {
            base_url: self.sim.base_url(),
            request_timeout: Duration::from_secs(2),
            retry: RetryPolicy::no_retries(),
            ..ClientConfig::default()
        })
        .expect("a Gebeta client");
        let settings = Settings {
            default_user_token: Some(SecretLocation {
                namespace: self.ns.clone(),
                name: "gebeta-user".into(),
                key: "token".into(),
            }),
            resync_interval: Duration::from_secs(3600),
            ..Settings::default()
        };
        let ctx = Context::new(self.client.clone(), gebeta, Metrics::new(), settings);
        let scope = WatchScope {
            namespaces: vec![self.ns.clone()],
            label_selector: None,
        };
        let shutdown = CancellationToken::new();
        let tokens = access_token::run(
            ctx.clone(),
            scope.clone(),
            shutdown.clone(),
            Readiness::default(),
        );
        let accounts = service_account::run(ctx, scope, shutdown.clone(), Readiness::default());
        let task = tokio::spawn(async move {
            tokio::join!(accounts, tokens);
        });
        self.operator = Some((shutdown, task));
    }

    /// Stops the controllers at once (as a crash or a missing operator would).
    fn kill(&mut self) {
        if let Some((shutdown, task)) = self.operator.take() {
            shutdown.cancel();
            task.abort();
        }
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
        Api::<Secret>::namespaced(self.client.clone(), &self.ns)
            .patch(
                name,
                &PatchParams::apply("test").force(),
                &Patch::Apply(&secret),
            )
            .await
            .unwrap();
    }

    fn gsas(&self) -> Api<GebetaServiceAccount> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn gats(&self) -> Api<GebetaAccessToken> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn create_gsa(&self, name: &str, spec: Value) {
        let obj: GebetaServiceAccount = serde_json::from_value(json!({
            "apiVersion": "gebeta.app/v1alpha1", "kind": "GebetaServiceAccount",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        self.gsas()
            .create(&PostParams::default(), &obj)
            .await
            .unwrap();
    }

    async fn create_gat(&self, name: &str, spec: Value) {
        let obj: GebetaAccessToken = serde_json::from_value(json!({
            "apiVersion": "gebeta.app/v1alpha1", "kind": "GebetaAccessToken",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap();
        self.gats()
            .create(&PostParams::default(), &obj)
            .await
            .unwrap();
    }

    /// Waits until the Ready reason of `kind/name` is `reason`; returns the object as JSON.
    async fn wait_reason(&self, kind: &str, name: &str, reason: &str) -> Value {
        let what = format!("{kind} {name} Ready reason {reason}");
        support::eventually(DEADLINE, &what, || async {
            let obj = match kind {
                "gsa" => serde_json::to_value(self.gsas().get(name).await.ok()?).ok()?,
                _ => serde_json::to_value(self.gats().get(name).await.ok()?).ok()?,
            };
            let ready = obj["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?
                .clone();
            (ready["reason"] == reason).then_some(obj)
        })
        .await
    }

    async fn gsa_ready(&self, name: &str, spec: Value) -> String {
        self.create_gsa(name, spec).await;
        let obj = self.wait_reason("gsa", name, "Ready").await;
        obj["status"]["accountId"].as_str().unwrap().to_string()
    }

    /// Runs the CLI with the test kubeconfig and nothing else from this process's environment.
    async fn cli(&self, args: &[&str]) -> Output {
        self.cli_env(args, &[]).await
    }

    async fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        run_cli(args, env).await
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn run_cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = tokio::process::Command::new(CLI)
        .env_clear()
        .env("KUBECONFIG", support::control_plane().kubeconfig_path())
        .envs(env.iter().copied())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run kubectl-gebeta");
    eprintln!(
        "$ kubectl gebeta {}\n[exit {:?}]\n{}{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn web(description: &str, scopes: &[&str]) -> Value {
    json!({"platform": "WEB", "description": description, "scopes": scopes})
}

/// A token made from the two accounts `client` and `server` of the namespace.
fn from_accounts(secret_name: &str) -> Value {
    json!({
        "clientToken": {"serviceAccountRef": {"name": "client"}},
        "serverToken": {"serviceAccountRef": {"name": "server"}},
        "secretName": secret_name,
    })
}

/// The table with what changes from run to run replaced: the namespace by `NS`, countdowns
/// by `<time>`, account ids by `<id>`; one line per row, cells joined by ` | `.
fn normalize_table(text: &str, ns: &str) -> Vec<String> {
    let is_time = |c: &str| {
        c.starts_with("in ")
            || c.ends_with(" ago")
            || c.starts_with("expired ")
            || c.starts_with("overdue ")
    };
    let is_ids = |c: &str| {
        c.split(',')
            .all(|id| id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    text.lines()
        .map(|line| {
            if line.starts_with(' ') {
                return line.trim().replace(ns, "NS");
            }
            line.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(|c| {
                    if is_time(c) {
                        "<time>".to_string()
                    } else if is_ids(c) {
                        c.split(',').map(|_| "<id>").collect::<Vec<_>>().join(",")
                    } else {
                        c.replace(ns, "NS")
                    }
                })
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect()
}

#[tokio::test]
async fn status_shows_tokens_by_urgency_and_what_to_do() {
    let f = Fixture::new("cli-status").await;
    f.gsa_ready("client", web("maps client", &["TILE"])).await;
    f.gsa_ready("server", web("maps server", &["TILE", "DIRECTION"]))
        .await;
    // `long` lives an hour; `short`, made after it, ten minutes: short is more urgent.
    f.create_gat("long", from_accounts("long-token")).await;
    f.wait_reason("gat", "long", "Ready").await;
    f.sim.set_token_ttl(Duration::from_secs(600));
    f.create_gat("short", from_accounts("short-token")).await;
    f.wait_reason("gat", "short", "Ready").await;
    f.create_gat(
        "broken",
        json!({
            "clientToken": {"secretKeyRef": {"name": "absent", "key": "client"}},
            "serverToken": {"secretKeyRef": {"name": "absent", "key": "server"}},
            "secretName": "broken-token",
        }),
    )
    .await;
    f.wait_reason("gat", "broken", "SecretNotFound").await;

    let out = f.cli(&["status", "-n", &f.ns]).await;
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(!text.contains('\x1b'), "no colours in a pipe: {text}");
    assert_eq!(
        normalize_table(&text, &f.ns),
        [
            "KIND | NAME | STATE | READY | REASON | ACCOUNT | EXPIRES | NEXT REFRESH | LAST REFRESH",
            "gat | NS/short | VALID | True | Ready | <id>,<id> | <time> | <time> | <time>",
            "gat | NS/long | VALID | True | Ready | <id>,<id> | <time> | <time> | <time>",
            "gat | NS/broken | NO TOKEN | False | SecretNotFound | - | - | - | -",
            "-> create the input Secret that spec.clientToken or spec.serverToken names",
            "gsa | NS/client | ACTIVE | True | Ready | <id> | - | - | -",
            "gsa | NS/server | ACTIVE | True | Ready | <id> | - | - | -",
        ],
        "{text}"
    );

    let out = f.cli(&["status", "-n", &f.ns, "-o", "json"]).await;
    assert_eq!(out.status.code(), Some(0));
    let doc: Value = serde_json::from_str(&stdout(&out)).expect("status -o json parses");
    let items = doc["items"].as_array().unwrap();
    let names: Vec<&str> = items.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["short", "long", "broken", "client", "server"]);
    let short = &items[0];
    assert_eq!(short["kind"], "GebetaAccessToken");
    assert_eq!(short["namespace"], f.ns.as_str());
    assert_eq!(
        (&short["state"], &short["ready"]),
        (&json!("VALID"), &json!("True"))
    );
    let left = short["expiresInSeconds"].as_i64().unwrap();
    assert!((1..=600).contains(&left), "{left}");
    let long_left = items[1]["expiresInSeconds"].as_i64().unwrap();
    assert!((600..=3600).contains(&long_left), "{long_left}");
    for field in ["expiresAt", "nextRefreshTime", "lastRefreshTime"] {
        let t = short[field].as_str().unwrap();
        assert!(t.parse::<jiff::Timestamp>().is_ok(), "{field}: {t}");
    }
    let client_id = f
        .gsas()
        .get("client")
        .await
        .unwrap()
        .status
        .unwrap()
        .account_id;
    assert!(
        short["accountIds"]
            .as_array()
            .unwrap()
            .contains(&json!(client_id))
    );
    assert_eq!(short["whatToDo"], Value::Null);
    assert_eq!(items[2]["reason"], "SecretNotFound");
    assert!(items[2]["message"].as_str().unwrap().contains("absent"));
    assert!(
        items[2]["whatToDo"]
            .as_str()
            .unwrap()
            .contains("input Secret")
    );
    assert_eq!(items[3]["kind"], "GebetaServiceAccount");
    assert_eq!(items[3]["accountIds"], json!([client_id]));

    let out = f.cli(&["status", "-n", &f.ns, "-o", "yaml"]).await;
    let yaml: Value = serde_yaml::from_str(&stdout(&out)).expect("status -o yaml parses");
    assert_eq!(yaml["items"].as_array().unwrap().len(), 5);

    // -A sees this namespace too (among the other tests').
    let out = f.cli(&["status", "-A", "-o", "json"]).await;
    let all: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["namespace"] == f.ns.as_str() && i["name"] == "short")
    );

    // The timeline: both tokens refresh (R) before they expire (X); the broken one has none.
    let out = f
        .cli(&["timeline", "-n", &f.ns, "--hours", "2", "--width", "48"])
        .await;
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let row = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{}/{name} ", f.ns)))
            .unwrap_or_else(|| panic!("no row for {name}: {text}"))
            .to_string()
    };
    for name in ["short", "long"] {
        let line = row(name);
        let (r, x) = (line.find('R').unwrap(), line.find('X').unwrap());
        assert!(r < x, "{line}");
        assert!(!line.contains('!'), "{line}");
    }
    assert!(row("short").find('X') < row("long").find('X'));
    assert!(row("broken").ends_with("no token (SecretNotFound)"));
    assert!(text.lines().last().unwrap().starts_with("refreshes"));
}

#[tokio::test]
async fn refresh_waits_until_the_operator_has_written_a_new_token() {
    let f = Fixture::new("cli-refresh").await;
    let (_, client_token) = f
        .sim
        .create_dashboard_account(Platform::Web, vec![Scope::Tile]);
    let (_, server_token) = f
        .sim
        .create_dashboard_account(Platform::Web, vec![Scope::Tile]);
    f.put_secret(
        "inputs",
        &[("client", &client_token), ("server", &server_token)],
    )
    .await;
    f.create_gat(
        "tok",
        json!({
            "clientToken": {"secretKeyRef": {"name": "inputs", "key": "client"}},
            "serverToken": {"secretKeyRef": {"name": "inputs", "key": "server"}},
            "secretName": "tok-token",
        }),
    )
    .await;
    f.wait_reason("gat", "tok", "Ready").await;
    let calls = || f.sim.calls("auth") + f.sim.calls("refresh");
    let before = calls();

    let out = f
        .cli(&["refresh", "tok", "-n", &f.ns, "--timeout", "60s"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("refreshed; the new token expires in"));
    assert!(stderr(&out).contains("gebeta.app/refresh="));
    let gat = f.gats().get("tok").await.unwrap();
    let asked = gat.annotations()[REFRESH_ANNOTATION].clone();
    let status = gat.status.unwrap();
    assert_eq!(
        status.observed_refresh_request.as_deref(),
        Some(asked.as_str())
    );
    assert_eq!(calls(), before + 1, "exactly one new token");

    // A token the operator cannot refresh: the CLI reports its reason and what to do.
    f.create_gat(
        "broken",
        json!({
            "clientToken": {"secretKeyRef": {"name": "absent", "key": "c"}},
            "serverToken": {"secretKeyRef": {"name": "absent", "key": "s"}},
            "secretName": "broken-token",
        }),
    )
    .await;
    f.wait_reason("gat", "broken", "SecretNotFound").await;
    let out = f
        .cli(&["refresh", "broken", "-n", &f.ns, "--timeout", "3s"])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("is not Ready after 3s: SecretNotFound"),
        "{err}"
    );
    assert!(err.contains("-> create the input Secret"), "{err}");

    let out = f.cli(&["refresh", "nope", "-n", &f.ns]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("GebetaAccessToken nope not found"));
}

#[tokio::test]
async fn rotate_waits_until_the_old_account_is_retired() {
    let f = Fixture::new("cli-rotate").await;
    let old = f.gsa_ready("acct", web("rotated", &["TILE"])).await;

    let out = f
        .cli(&["rotate", "acct", "-n", &f.ns, "--timeout", "120s"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let gsa = f.gsas().get("acct").await.unwrap();
    let asked = gsa.annotations()[ROTATE_ANNOTATION].clone();
    let status = gsa.status.unwrap();
    let new = status.account_id.unwrap();
    assert_ne!(new, old);
    assert_eq!(status.observed_rotation.as_deref(), Some(asked.as_str()));
    assert!(status.retiring.is_empty());
    assert!(
        f.sim.account(&old).is_none(),
        "the old account is deleted (deletionPolicy Delete)"
    );
    assert_eq!(
        stdout(&out).trim(),
        format!(
            "gsa {}/acct: rotated: account {} replaced {}, which is retired",
            f.ns,
            &new[..8],
            &old[..8]
        )
    );
}

#[tokio::test]
async fn refresh_and_rotate_fail_when_no_operator_acts() {
    let mut f = Fixture::new("cli-noop").await;
    f.gsa_ready("client", web("c", &["TILE"])).await;
    f.gsa_ready("server", web("s", &["TILE"])).await;
    f.create_gat("tok", from_accounts("tok-token")).await;
    f.wait_reason("gat", "tok", "Ready").await;
    f.kill();

    let out = f
        .cli(&["refresh", "tok", "-n", &f.ns, "--timeout", "2s"])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).lines().last().unwrap(),
        "error: the operator did not act within 2s: is it running?"
    );
    let out = f
        .cli(&["rotate", "client", "-n", &f.ns, "--timeout", "2s"])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).lines().last().unwrap(),
        "error: the operator did not act within 2s: is it running?"
    );
    // The requests stay: an operator that starts later carries them out.
    let gat = f.gats().get("tok").await.unwrap();
    assert!(gat.annotations().contains_key(REFRESH_ANNOTATION));
}

#[tokio::test]
async fn audit_classifies_the_organizations_accounts() {
    let mut f = Fixture::new("cli-audit").await;
    let gebeta = GebetaClient::new(ClientConfig {
        base_url: f.sim.base_url(),
        ..ClientConfig::default()
    })
    .unwrap();
    let user = Token::new(USER_TOKEN);
    let maps = f.gsa_ready("maps", web("maps", &["TILE"])).await;
    let narrow = f.gsa_ready("narrow", web("narrow", &["TILE"])).await;
    let (dashboard, _) = f
        .sim
        .create_dashboard_account(Platform::Web, vec![Scope::Tile]);
    f.create_gsa(
        "adopted",
        json!({"platform": "WEB", "scopes": ["TILE"], "accountId": dashboard}),
    )
    .await;
    f.wait_reason("gsa", "adopted", "Ready").await;
    // Seeded behind the operator's back, with it stopped so that nothing is corrected.
    f.kill();
    let create = |description: String, admin: bool| {
        let gebeta = gebeta.clone();
        let user = user.clone();
        async move {
            gebeta
                .create_account(
                    &user,
                    &AccountConfig {
                        platform: Platform::Web,
                        is_admin: admin,
                        description,
                        scopes: vec![Scope::Tile],
                    },
                )
                .await
                .unwrap()
                .account
                .id
        }
    };
    let gone_uid = uuid::Uuid::new_v4().to_string();
    let orphan = create(format!("left behind [gebeta-operator:{gone_uid}]"), false).await;
    let admin = create("ops console".into(), true).await;
    let revoked = create("old integration".into(), false).await;
    assert!(f.sim.set_account_state(&revoked, AccountState::Revoked));
    let suspended = create("paused".into(), false).await;
    assert!(f.sim.set_account_state(&suspended, AccountState::Suspended));
    assert!(
        f.sim
            .edit_account(&narrow, None, Some(vec![Scope::Tile, Scope::Matrix]))
    );

    let secret = format!("{}/gebeta-user", f.ns);
    let api_url = f.sim.base_url();
    let base = [
        "audit",
        "--user-token-secret",
        &secret,
        "--api-url",
        &api_url,
    ];
    let with = |more: &[&'static str]| -> Vec<String> {
        base.iter()
            .map(|s| s.to_string())
            .chain(more.iter().map(|s| s.to_string()))
            .collect()
    };
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cli(&args, &[]).await
    };

    let out = run(with(&["-o", "json"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).expect("audit -o json parses");
    let by_id: BTreeMap<String, Value> = report["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["id"].as_str().unwrap().to_string(), a.clone()))
        .collect();
    assert_eq!(by_id.len(), 7, "{report:#}");
    let check = |id: &str, class: &str, flags: Value| {
        let a = &by_id[id];
        assert_eq!((&a["class"], &a["flags"]), (&json!(class), &flags), "{a:#}");
    };
    check(&maps, "managed", json!([]));
    check(&narrow, "managed", json!(["excess-scopes"]));
    check(&dashboard, "managed", json!([]));
    check(&orphan, "orphan", json!([]));
    check(&admin, "unmanaged", json!(["admin"]));
    check(&revoked, "unmanaged", json!(["revoked"]));
    check(&suspended, "unmanaged", json!(["suspended"]));
    let managed_by = |id: &str| by_id[id]["managedBy"].clone();
    assert_eq!(
        managed_by(&maps),
        json!({"namespace": f.ns, "name": "maps", "adopted": false})
    );
    assert_eq!(
        managed_by(&dashboard),
        json!({"namespace": f.ns, "name": "adopted", "adopted": true})
    );
    assert_eq!(by_id[&orphan]["markerUid"], gone_uid.as_str());
    assert_eq!(by_id[&narrow]["excessScopes"], json!(["MATRIX"]));
    assert_eq!(report["summary"]["classes"]["unmanaged"], 3);
    assert_eq!(report["failed"], json!([]));

    let out = run(base.iter().map(|s| s.to_string()).collect()).await;
    assert_eq!(out.status.code(), Some(0));
    let table = stdout(&out);
    assert_eq!(
        table.lines().last().unwrap(),
        "7 accounts: 3 managed, 1 orphan, 3 unmanaged; flagged: 1 revoked, 1 suspended, 1 admin, 1 excess-scopes"
    );
    let orphan_line = table.lines().find(|l| l.starts_with(&orphan)).unwrap();
    assert!(orphan_line.contains("orphan"), "{orphan_line}");
    assert!(orphan_line.contains(&format!("uid {} (gone)", &gone_uid[..8])));

    // --fail-on decides the exit code.
    for (fail_on, code, matched) in [
        ("orphan", 1, "orphan (1)"),
        ("unmanaged-admin", 1, "unmanaged-admin (1)"),
        ("excess-scopes,managed-admin", 1, "excess-scopes (1)"),
        ("managed-admin,stale,orphan-revoked", 0, ""),
    ] {
        let out = run(with(&["--fail-on", fail_on])).await;
        assert_eq!(out.status.code(), Some(code), "--fail-on {fail_on}");
        if code == 1 {
            assert!(
                stderr(&out).contains(&format!("--fail-on matched: {matched}")),
                "{}",
                stderr(&out)
            );
        }
    }
    let out = run(with(&["-o", "json", "--fail-on", "orphan,unmanaged-admin"])).await;
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["failed"], json!(["orphan", "unmanaged-admin"]));

    // The token from the environment works as well; none at all is a usage error; a wrong one
    // is the API's refusal.
    let out = f
        .cli_env(
            &["audit", "--api-url", &api_url, "-o", "json"],
            &[("GEBETA_USER_TOKEN", USER_TOKEN)],
        )
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = f.cli(&["audit", "--api-url", &api_url]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no user token: give --user-token-secret"));
    let out = f
        .cli_env(
            &["audit", "--api-url", &api_url],
            &[("GEBETA_USER_TOKEN", "wrong")],
        )
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("the Gebeta API refused the user token"));

    // An adopted account cannot be rotated: said at once.
    let out = f.cli(&["rotate", "adopted", "-n", &f.ns]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("adopts an existing account"));
}

#[tokio::test]
async fn bad_flags_exit_with_2_and_say_why() {
    for (args, says) in [
        (
            &["status", "-o", "xml"][..],
            "invalid value 'xml' for '--output",
        ),
        (&["refresh"], "required arguments were not provided"),
        (
            &["refresh", "tok", "--timeout", "soon"],
            "is not a duration",
        ),
        (
            &["rotate", "acct", "--timeout", "0s"],
            "must be greater than zero",
        ),
        (
            &["audit", "--fail-on", "bogus"],
            "\"bogus\" is neither a class",
        ),
        (
            &["audit", "--user-token", "secret-value"],
            "unexpected argument '--user-token'",
        ),
        (
            &["audit", "--user-token-secret", "only-a-name"],
            "NAMESPACE/NAME",
        ),
        (
            &["timeline", "--hours", "0"],
            "invalid value '0' for '--hours",
        ),
        (&["status", "-n", "Bad_NS"], "is not a valid namespace name"),
        (&["completion", "tcsh"], "invalid value 'tcsh'"),
        (&["frobnicate"], "unrecognized subcommand 'frobnicate'"),
    ] {
        let out = run_cli(args, &[]).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains("error:"), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?} should say {says:?}: {err}");
    }
}

#[tokio::test]
async fn help_has_examples_and_completion_prints_a_script() {
    let out = run_cli(&["--help"], &[]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("Examples:\n  # Accounts and tokens of every namespace"));
    let out = run_cli(&["completion", "bash"], &[]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("complete -F _kubectl__gebeta"));
    assert!(stdout(&out).contains("kubectl-gebeta"));
}

/// The krew manifest is valid YAML naming the binary, and its unfilled values are marked.
#[test]
fn krew_manifest_names_the_binary_and_marks_its_placeholders() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/plugins/krew/gebeta.yaml");
    let manifest: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(manifest["kind"], "Plugin");
    assert_eq!(manifest["metadata"]["name"], "gebeta");
    let platforms = manifest["spec"]["platforms"].as_array().unwrap();
    assert!(!platforms.is_empty());
    for p in platforms {
        assert_eq!(p["bin"], "kubectl-gebeta");
        for field in ["uri", "sha256"] {
            assert!(p[field].as_str().unwrap().contains("REPLACE-"), "{p:#}");
        }
    }
}
