//! The real `gebeta-operator` binary as a child process against the test control plane and an
//! in-process Gebeta simulator: admin endpoints, leader election, lease loss, SIGTERM, bad
//! flags. Every child is killed when its guard drops (also on a panic) and by a small reaper
//! if this test binary itself dies. Also the operator's event publisher, in-process, against
//! the same API server.

mod support;

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use gebeta_operator::{
    crd::GebetaAccessToken,
    gebeta::{Platform, Scope},
    sim::{Fault, Sim, SimConfig, SimHandle},
    testbed::free_port,
};
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Secret};
use kube::{
    Api,
    api::{PostParams, Resource as _},
};

const OPERATOR: &str = env!("CARGO_BIN_EXE_gebeta-operator");

/// A running operator process; killed (SIGKILL) on drop.
struct Operator {
    name: String,
    child: Child,
    reaper: Option<Child>,
    admin: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Operator {
    /// Starts the operator with the test kubeconfig, a free admin port, the sim and `args`.
    fn start(name: &str, sim: &SimHandle, args: &[String]) -> Operator {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join(format!("{name}.log"));
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port().expect("free port"))
            .parse()
            .unwrap();
        let cp = support::control_plane();
        let out = std::fs::File::create(&log).expect("log file");
        // GEBETA_OPERATOR_BIN runs these tests against another build (e.g. the release binary).
        let binary = std::env::var("GEBETA_OPERATOR_BIN").unwrap_or_else(|_| OPERATOR.to_string());
        let child = Command::new(binary)
            .env_clear()
            .env("KUBECONFIG", cp.kubeconfig_path())
            .arg(format!("--admin-addr={admin}"))
            .arg(format!("--gebeta-api-url={}", sim.base_url()))
            .arg(format!("--instance={name}"))
            .arg("--log-level=info,gebeta_operator=debug")
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start gebeta-operator");
        // Kills the operator if this test binary dies without running destructors.
        let reaper = Command::new("sh")
            .arg("-c")
            .arg(r#"while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 0.5; done; kill -9 "$2" 2>/dev/null"#)
            .arg("reaper")
            .arg(std::process::id().to_string())
            .arg(child.id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        Operator {
            name: name.to_string(),
            child,
            reaper,
            admin,
            log,
            _dir: dir,
            http,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the operator's log if it has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited early ({status}); log:\n{}",
                self.name,
                self.log()
            );
        }
    }

    async fn get(&self, path: &str) -> Option<(u16, String, String)> {
        let response = self
            .http
            .get(format!("http://{}{path}", self.admin))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Some((status, content_type, response.text().await.ok()?))
    }

    /// The `gebeta_operator_leader` gauge, once the admin server answers.
    async fn leader_gauge(&self) -> Option<i64> {
        let (status, _, body) = self.get("/metrics").await?;
        if status != 200 {
            return None;
        }
        body.lines()
            .find_map(|l| l.strip_prefix("gebeta_operator_leader "))
            .and_then(|v| v.trim().parse().ok())
    }

    async fn ready(&self) -> bool {
        matches!(self.get("/readyz").await, Some((200, _, _)))
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {} failed", self.pid());
    }

    /// Waits for the process to exit, polling; panics with the log after `deadline`.
    async fn wait_exit(&mut self, deadline: Duration) -> (ExitStatus, Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return (status, start.elapsed());
            }
            if start.elapsed() > deadline {
                panic!(
                    "{} did not exit within {deadline:?}; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The resident set size in KiB (Linux).
    fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.kill();
            let _ = reaper.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- log of {} ---\n{}", self.name, self.log());
        }
    }
}

async fn sim() -> SimHandle {
    Sim::start(SimConfig::default())
        .await
        .expect("start the simulator")
}

fn election_args(ns: &str, lease: &str, duration: u64, renew: u64) -> Vec<String> {
    vec![
        format!("--namespaces={ns}"),
        format!("--lease-namespace={ns}"),
        format!("--lease-name={lease}"),
        format!("--lease-duration={duration}"),
        format!("--lease-renew={renew}"),
        "--leader-elect".into(),
    ]
}

/// Another identity takes Lease `name` (as after a partition its holder did not notice) and
/// returns when. The holder renews every second: retried when its renewal wins the race (409).
async fn steal_lease(leases: &Api<Lease>, name: &str) -> Instant {
    support::eventually(
        Duration::from_secs(10),
        "the intruder takes the Lease",
        || async move {
            let mut lease = leases.get(name).await.ok()?;
            let spec = lease.spec.as_mut()?;
            spec.holder_identity = Some("intruder".into());
            spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                k8s_openapi::jiff::Timestamp::now(),
            ));
            lease.meta_mut().managed_fields = None;
            leases
                .replace(name, &PostParams::default(), &lease)
                .await
                .ok()
                .map(|_| Instant::now())
        },
    )
    .await
}

async fn lease_holder(api: &Api<Lease>, name: &str) -> Option<String> {
    api.get_opt(name)
        .await
        .ok()??
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

/// Waits until exactly one of `ops` reports leader=1, the others 0, and the Lease names it.
async fn sole_leader(
    ops: &mut [&mut Operator],
    api: &Api<Lease>,
    lease: &str,
    deadline: Duration,
) -> usize {
    let start = Instant::now();
    loop {
        for op in ops.iter_mut() {
            op.assert_running();
        }
        let mut gauges = Vec::new();
        for op in ops.iter() {
            gauges.push(op.leader_gauge().await);
        }
        let holder = lease_holder(api, lease).await;
        let leaders: Vec<usize> = gauges
            .iter()
            .enumerate()
            .filter(|(_, g)| **g == Some(1))
            .map(|(i, _)| i)
            .collect();
        let all_known = gauges.iter().all(|g| matches!(g, Some(0) | Some(1)));
        if all_known
            && leaders.len() == 1
            && holder.as_deref() == Some(ops[leaders[0]].name.as_str())
        {
            return leaders[0];
        }
        assert!(leaders.len() <= 1, "two leaders at once: gauges {gauges:?}");
        if start.elapsed() > deadline {
            panic!(
                "no sole leader within {deadline:?}: gauges {gauges:?}, lease holder {holder:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn admin_server_answers_health_readiness_and_metrics() {
    let client = support::client();
    let ns = support::namespace(&client, "rt-admin").await;
    let sim = sim().await;
    let mut op = Operator::start(
        "op-admin",
        &sim,
        &[format!("--namespaces={ns}"), "--leader-elect=false".into()],
    );

    let healthz = support::eventually(Duration::from_secs(30), "/healthz answers", || {
        let op = &op;
        async move { op.get("/healthz").await }
    })
    .await;
    assert_eq!(healthz.0, 200, "/healthz: {healthz:?}");
    op.assert_running();

    let start = Instant::now();
    loop {
        let answer = op.get("/readyz").await;
        if matches!(answer, Some((200, _, _))) {
            break;
        }
        op.assert_running();
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "/readyz never answered 200; last answer {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Give the operator real work, so that every per-object series exists.
    give_work(&client, &ns, &sim).await;
    let expiry_series = format!(
        "gebeta_operator_access_token_expiry_timestamp_seconds{{namespace=\"{ns}\",name=\"maps\"}}"
    );
    let body = support::eventually(
        Duration::from_secs(30),
        "the token's expiry in /metrics",
        || {
            let op = &op;
            let expiry_series = &expiry_series;
            async move {
                op.get("/metrics")
                    .await
                    .map(|(_, _, body)| body)
                    .filter(|b| b.contains(expiry_series.as_str()))
            }
        },
    )
    .await;
    assert!(
        body.contains("gebeta_operator_gebeta_requests_total{endpoint=\"auth\",outcome=\"2xx\"} 1"),
        "{body}"
    );

    let (status, content_type, body) = op.get("/metrics").await.expect("/metrics answers");
    assert_eq!(status, 200);
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(
        body.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF:\n{body}"
    );
    for (series, kind) in [
        ("gebeta_operator_reconciles", "counter"),
        ("gebeta_operator_reconcile_duration_seconds", "histogram"),
        ("gebeta_operator_gebeta_requests", "counter"),
        (
            "gebeta_operator_gebeta_request_duration_seconds",
            "histogram",
        ),
        (
            "gebeta_operator_access_token_expiry_timestamp_seconds",
            "gauge",
        ),
        ("gebeta_operator_refresh_failures", "counter"),
        ("gebeta_operator_objects", "gauge"),
        ("gebeta_operator_leader", "gauge"),
    ] {
        assert!(
            body.contains(&format!("# TYPE {series} {kind}\n")),
            "missing {series} ({kind}) in:\n{body}"
        );
    }
    assert!(
        body.contains("\ngebeta_operator_leader 1\n"),
        "without election this replica leads:\n{body}"
    );

    let (status, _, _) = op.get("/nope").await.expect("admin server answers");
    assert_eq!(status, 404);

    let rss = op.rss_kib().expect("VmRSS of the operator");
    eprintln!("idle RSS of gebeta-operator: {rss} KiB");
    assert!(
        rss < 256 * 1024,
        "idle RSS {rss} KiB is far above expectations"
    );

    // SIGTERM without leader election: exit 0 promptly.
    op.signal("-TERM");
    let (status, took) = op.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "exit status {status}; log:\n{}", op.log());
    assert!(took < Duration::from_secs(10), "took {took:?} to stop");
}

#[tokio::test]
async fn one_leader_and_the_standby_takes_over_after_a_kill() {
    let client = support::client();
    let ns = support::namespace(&client, "rt-elect").await;
    let sim = sim().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let (duration, renew) = (4, 1);
    let args = election_args(&ns, "gebeta-operator", duration, renew);
    let mut a = Operator::start("op-a", &sim, &args);
    let mut b = Operator::start("op-b", &sim, &args);

    let first = sole_leader(
        &mut [&mut a, &mut b],
        &leases,
        "gebeta-operator",
        Duration::from_secs(60),
    )
    .await;
    // It stays that way: sample for two lease durations.
    let until = Instant::now() + Duration::from_secs(2 * duration);
    while Instant::now() < until {
        let gauges = (a.leader_gauge().await, b.leader_gauge().await);
        let expected = if first == 0 {
            (Some(1), Some(0))
        } else {
            (Some(0), Some(1))
        };
        assert_eq!(gauges, expected, "leadership changed without a failure");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (mut leader, mut standby) = if first == 0 { (a, b) } else { (b, a) };
    assert!(
        standby.ready().await,
        "a standby whose lease API answers is ready"
    );
    let transitions = leases
        .get("gebeta-operator")
        .await
        .unwrap()
        .spec
        .unwrap()
        .lease_transitions
        .unwrap_or(0);

    // kill -9 the leader: no release, the standby must wait for the lease to expire.
    leader.child.kill().unwrap();
    let killed = Instant::now();
    leader.wait_exit(Duration::from_secs(5)).await;
    support::eventually(
        Duration::from_secs(30),
        "the standby leads and holds the Lease",
        || {
            let standby = &standby;
            let leases = &leases;
            async move {
                let holder = lease_holder(leases, "gebeta-operator").await;
                (standby.leader_gauge().await == Some(1)
                    && holder.as_deref() == Some(standby.name.as_str()))
                .then_some(())
            }
        },
    )
    .await;
    let took = killed.elapsed();
    standby.assert_running();
    assert!(
        took >= Duration::from_secs(duration / 2),
        "took over after {took:?}: before the old leader's lease could have expired"
    );
    assert!(
        took <= Duration::from_secs(duration + 2 * renew + 3),
        "took over after {took:?}, lease is {duration}s"
    );
    let after = leases.get("gebeta-operator").await.unwrap().spec.unwrap();
    assert_eq!(
        after.lease_transitions.unwrap_or(0),
        transitions + 1,
        "a change of holder counts one transition"
    );
    assert_eq!(after.lease_duration_seconds, Some(duration as i32));
    eprintln!("standby took over {took:?} after kill -9 (lease {duration}s, renew {renew}s)");
}

#[tokio::test]
async fn sigterm_exits_zero_and_releases_the_lease_for_an_immediate_takeover() {
    let client = support::client();
    let ns = support::namespace(&client, "rt-term").await;
    let sim = sim().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    // A long lease: a takeover well before it could expire proves the lease was released.
    let args = election_args(&ns, "ops-lease", 30, 1);
    let mut a = Operator::start("op-a", &sim, &args);
    let mut b = Operator::start("op-b", &sim, &args);
    let first = sole_leader(
        &mut [&mut a, &mut b],
        &leases,
        "ops-lease",
        Duration::from_secs(60),
    )
    .await;
    let (mut leader, standby) = if first == 0 { (a, b) } else { (b, a) };

    leader.signal("-TERM");
    let (status, took) = leader.wait_exit(Duration::from_secs(20)).await;
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}; log:\n{}",
        leader.log()
    );
    assert!(took < Duration::from_secs(10), "took {took:?} to stop");
    assert!(
        leader.log().contains("released the leader lease"),
        "log:\n{}",
        leader.log()
    );
    let stopped = Instant::now();

    support::eventually(Duration::from_secs(20), "the standby leads at once", || {
        let standby = &standby;
        let leases = &leases;
        async move {
            let holder = lease_holder(leases, "ops-lease").await;
            (standby.leader_gauge().await == Some(1)
                && holder.as_deref() == Some(standby.name.as_str()))
            .then_some(())
        }
    })
    .await;
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "standby needed {took:?} with a 30 s lease: was the lease released?"
    );
}

#[tokio::test]
async fn a_leader_that_loses_its_lease_stops_at_once_and_exits_non_zero() {
    let client = support::client();
    let ns = support::namespace(&client, "rt-lost").await;
    let sim = sim().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let mut op = Operator::start("op-solo", &sim, &election_args(&ns, "solo", 10, 1));
    sole_leader(&mut [&mut op], &leases, "solo", Duration::from_secs(60)).await;

    // Another identity takes the Lease (as after a partition the leader did not notice).
    // The leader renews every second: retry when its renewal wins the race (409 Conflict).
    let stolen = steal_lease(&leases, "solo").await;

    let (status, _) = op.wait_exit(Duration::from_secs(10)).await;
    let took = stolen.elapsed();
    assert_eq!(
        status.code(),
        Some(1),
        "exit status after losing the lease; log:\n{}",
        op.log()
    );
    assert!(
        took < Duration::from_secs(5),
        "stopped {took:?} after the lease was taken (renew is 1 s)"
    );
    assert!(
        op.log().contains("lost the leader lease"),
        "log:\n{}",
        op.log()
    );
    assert_eq!(
        lease_holder(&leases, "solo").await.as_deref(),
        Some("intruder"),
        "a loser must not release or rewrite"
    );
}

/// A GebetaAccessToken `maps` in `ns` reading both tokens from Secret `dashboard` (accounts
/// made in `sim`): work that makes the operator call the API.
async fn give_work(client: &kube::Client, ns: &str, sim: &SimHandle) {
    let (_, client_token) = sim.create_dashboard_account(Platform::Web, vec![Scope::Tile]);
    let (_, server_token) = sim.create_dashboard_account(Platform::Web, vec![Scope::Tile]);
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "dashboard"},
        "stringData": {"client": client_token, "server": server_token},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let gat: GebetaAccessToken = serde_json::from_value(serde_json::json!({
        "apiVersion": "gebeta.app/v1alpha1",
        "kind": "GebetaAccessToken",
        "metadata": {"name": "maps"},
        "spec": {
            "clientToken": {"secretKeyRef": {"name": "dashboard", "key": "client"}},
            "serverToken": {"secretKeyRef": {"name": "dashboard", "key": "server"}},
            "secretName": "maps-token",
        },
    }))
    .unwrap();
    Api::<GebetaAccessToken>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &gat)
        .await
        .unwrap();
}

/// A leader stopping on SIGTERM keeps watching its Lease while in-flight work drains: when
/// it loses the Lease it abandons that work at once, as it does when not stopping, instead of
/// acting beside the new leader until the shutdown timeout (longer than the lease here).
#[tokio::test]
async fn a_leader_that_loses_its_lease_while_draining_stops_at_once() {
    let client = support::client();
    let ns = support::namespace(&client, "rt-drain").await;
    let sim = sim().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let mut args = election_args(&ns, "drain", 10, 1);
    args.push("--shutdown-timeout=120s".into());
    let mut op = Operator::start("op-drain", &sim, &args);
    sole_leader(&mut [&mut op], &leases, "drain", Duration::from_secs(60)).await;
    // Its only work hangs in a Gebeta call.
    sim.inject("auth", Fault::Latency(Duration::from_secs(600)), 1000);
    give_work(&client, &ns, &sim).await;
    let busy = sim.clone();
    support::eventually(Duration::from_secs(30), "a call in flight", || {
        std::future::ready((busy.peak_in_flight() >= 1).then_some(()))
    })
    .await;
    op.signal("-TERM");
    // Still the leader, draining.
    support::eventually(Duration::from_secs(10), "the drain begins", || {
        std::future::ready(op.log().contains("shutting down").then_some(()))
    })
    .await;
    let stolen = steal_lease(&leases, "drain").await;
    let (_, _) = op.wait_exit(Duration::from_secs(60)).await;
    let took = stolen.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "stopped {took:?} after the lease was taken while draining; log:\n{}",
        op.log()
    );
    assert_eq!(
        lease_holder(&leases, "drain").await.as_deref(),
        Some("intruder"),
        "a loser must not release or rewrite"
    );
}

#[test]
fn bad_flags_and_settings_fail_with_a_clear_message() {
    let run = |args: &[&str]| {
        let out = Command::new(OPERATOR)
            .env_clear()
            .args(args)
            .output()
            .expect("run gebeta-operator");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (args, needle) in [
        (&["--no-such-flag"][..], "--no-such-flag"),
        (&["--lease-duration=4", "--lease-renew=4"], "--lease-renew"),
        (&["--namespaces=Bad_Name"], "not a valid namespace"),
        (&["--log-format=xml"], "xml"),
        (&["--resync-interval=soon"], "not a duration"),
        (&["--user-token-secret=just-a-name"], "NAMESPACE/NAME"),
        (
            &["--gebeta-ca-file=/nonexistent/ca.pem"],
            "--gebeta-ca-file /nonexistent/ca.pem",
        ),
        (&["--gebeta-api-url=ftp://example.com"], "--gebeta-api-url"),
        (
            &["--audit-interval=1h"],
            "--audit-interval needs --user-token-secret",
        ),
    ] {
        let (code, stderr) = run(args);
        assert_eq!(code, Some(2), "{args:?} should exit 2; stderr:\n{stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: stderr should mention {needle:?}:\n{stderr}"
        );
    }
    // A settings error is one line.
    let (_, stderr) = run(&["--gebeta-ca-file=/nonexistent/ca.pem"]);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let out = Command::new(OPERATOR).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--gebeta-api-url",
        "GEBETA_API_URL",
        "--user-token-secret",
        "--user-token-key",
        "--namespaces",
        "--label-selector",
        "--admin-addr",
        "--leader-elect",
        "--lease-name",
        "--lease-namespace",
        "POD_NAMESPACE",
        "--lease-duration",
        "--lease-renew",
        "--resync-interval",
        "--default-token-lifetime",
        "--gebeta-max-in-flight",
        "--gebeta-rate-limit",
        "--gebeta-timeout",
        "--gebeta-ca-file",
        "--audit-interval",
        "--log-level",
        "--log-format",
        "--instance",
        "POD_NAME",
    ] {
        assert!(help.contains(flag), "--help does not document {flag}");
    }
}

/// A restart must pick up the objects that already exist (no event arrives for them after the
/// initial list): the watches' readiness must not keep the controllers from starting.
#[tokio::test]
async fn objects_that_exist_before_the_start_are_reconciled() {
    use gebeta_operator::crd::GebetaServiceAccount;
    let client = support::client();
    let ns = support::namespace(&client, "rt-restart").await;
    let sim = sim().await;
    let user: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "gebeta-user"},
        "stringData": {"token": "sim-user-token"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &user)
        .await
        .unwrap();
    let gsas: Api<GebetaServiceAccount> = Api::namespaced(client.clone(), &ns);
    let gsa: GebetaServiceAccount = serde_json::from_value(serde_json::json!({
        "apiVersion": "gebeta.app/v1alpha1",
        "kind": "GebetaServiceAccount",
        "metadata": {"name": "maps"},
        "spec": {"platform": "WEB", "scopes": ["TILE"]},
    }))
    .unwrap();
    gsas.create(&PostParams::default(), &gsa).await.unwrap();

    let op = Operator::start(
        "op-restart",
        &sim,
        &[
            format!("--namespaces={ns}"),
            format!("--user-token-secret={ns}/gebeta-user"),
            "--leader-elect=false".into(),
        ],
    );
    let started = Instant::now();
    support::eventually(
        Duration::from_secs(30),
        "the existing GebetaServiceAccount becomes Ready",
        || {
            let gsas = &gsas;
            async move {
                let status = gsas.get("maps").await.ok()?.status?;
                status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
                    .then_some(())
            }
        },
    )
    .await;
    eprintln!(
        "existing object Ready {:?} after the start",
        started.elapsed()
    );
    support::eventually(
        Duration::from_secs(10),
        "/readyz 200 once the watches synced",
        || {
            let op = &op;
            async move { op.ready().await.then_some(()) }
        },
    )
    .await;
}

/// `--audit-interval`: the leader lists the organization's accounts once per interval and
/// exports the counts by class (objects of the watched namespaces make accounts `managed`).
#[tokio::test]
async fn upstream_audit_exports_counts_by_class_once_per_interval() {
    use gebeta_operator::{
        crd::GebetaServiceAccount,
        gebeta::{AccountConfig, ClientConfig, GebetaClient, Token},
    };
    let client = support::client();
    let ns = support::namespace(&client, "rt-audit").await;
    let sim = sim().await;
    let user: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "gebeta-user"},
        "stringData": {"token": "sim-user-token"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &user)
        .await
        .unwrap();
    // Two accounts made in the dashboard, one left behind by an object that is gone, and one
    // the operator creates for `maps`.
    sim.create_dashboard_account(Platform::Web, vec![Scope::Tile]);
    sim.create_dashboard_account(Platform::Desktop, vec![Scope::Tile]);
    let gebeta = GebetaClient::new(ClientConfig {
        base_url: sim.base_url(),
        ..ClientConfig::default()
    })
    .unwrap();
    gebeta
        .create_account(
            &Token::new("sim-user-token"),
            &AccountConfig {
                platform: Platform::Web,
                is_admin: true,
                description: format!("old [gebeta-operator:{}]", uuid::Uuid::new_v4()),
                scopes: vec![Scope::Tile],
            },
        )
        .await
        .unwrap();
    let gsa: GebetaServiceAccount = serde_json::from_value(serde_json::json!({
        "apiVersion": "gebeta.app/v1alpha1", "kind": "GebetaServiceAccount",
        "metadata": {"name": "maps"}, "spec": {"platform": "WEB", "scopes": ["TILE"]},
    }))
    .unwrap();
    Api::<GebetaServiceAccount>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &gsa)
        .await
        .unwrap();

    let op = Operator::start(
        "op-audit",
        &sim,
        &[
            format!("--namespaces={ns}"),
            format!("--user-token-secret={ns}/gebeta-user"),
            "--leader-elect=false".into(),
            "--audit-interval=1s".into(),
        ],
    );
    let gauge = |body: &str, series: &str| -> Option<i64> {
        body.lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
    };
    support::eventually(
        Duration::from_secs(30),
        "the audit counts: 1 managed, 1 orphan, 2 unmanaged",
        || {
            let op = &op;
            async move {
                let (_, _, body) = op.get("/metrics").await?;
                let counts = [
                    r#"gebeta_operator_upstream_accounts{class="managed"} "#,
                    r#"gebeta_operator_upstream_accounts{class="orphan"} "#,
                    r#"gebeta_operator_upstream_accounts{class="unmanaged"} "#,
                    r#"gebeta_operator_upstream_accounts_flagged{flag="admin"} "#,
                ]
                .map(|s| gauge(&body, s));
                (counts == [Some(1), Some(1), Some(2), Some(1)]).then_some(())
            }
        },
    )
    .await;

    // One organization list per interval, not one per object or per reconcile.
    let (before, since) = (sim.calls("list_accounts"), Instant::now());
    let after = support::eventually(Duration::from_secs(30), "three more audits", || {
        let sim = &sim;
        async move {
            let now = sim.calls("list_accounts");
            (now >= before + 3).then_some(now)
        }
    })
    .await;
    let elapsed = since.elapsed().as_secs_f64();
    assert!(
        (after - before) as f64 <= elapsed + 1.0,
        "{} lists in {elapsed:.1}s with --audit-interval=1s",
        after - before
    );
    assert!(op.log().contains("upstream audit"), "{}", op.log());
}

/// The operator's event publisher against the real API server: a repeat within the series
/// window patches the first event's `series` instead of creating another; a repeat of an event
/// that was deleted meanwhile creates a new one; another reason is another event.
#[tokio::test]
async fn repeated_events_become_one_series() {
    use gebeta_operator::controllers::events::EventPublisher;
    use k8s_openapi::api::{core::v1::ObjectReference, events::v1::Event as K8sEvent};
    use kube::runtime::events::{Event, EventType, Reporter};

    let client = support::client();
    let ns = support::namespace(&client, "events").await;
    let publisher = EventPublisher::new(
        client.clone(),
        Reporter {
            controller: "gebeta-operator".into(),
            instance: Some("test".into()),
        },
    );
    let regarding = ObjectReference {
        api_version: Some("gebeta.app/v1alpha1".into()),
        kind: Some("GebetaAccessToken".into()),
        namespace: Some(ns.clone()),
        name: Some("maps".into()),
        uid: Some("7b1e5a8e-0000-4000-8000-000000000001".into()),
        ..ObjectReference::default()
    };
    let event = |reason: &str, note: &str| Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note.into()),
        action: "Write".into(),
        secondary: None,
    };
    let events: Api<K8sEvent> = Api::namespaced(client.clone(), &ns);
    let of_reason = |all: Vec<K8sEvent>, reason: &str| -> Vec<K8sEvent> {
        all.into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect()
    };
    for note in ["first", "second", "third"] {
        publisher
            .publish(&event("SecretWriteFailed", note), &regarding)
            .await
            .unwrap();
    }
    let listed = events.list(&Default::default()).await.unwrap().items;
    let failed = of_reason(listed, "SecretWriteFailed");
    assert_eq!(failed.len(), 1, "one event for three publishes: {failed:?}");
    assert_eq!(failed[0].series.as_ref().map(|s| s.count), Some(3));
    assert_eq!(
        failed[0].note.as_deref(),
        Some("first"),
        "a series keeps its first note"
    );

    publisher
        .publish(&event("SecretConflict", "x"), &regarding)
        .await
        .unwrap();
    events
        .delete(
            failed[0].metadata.name.as_deref().unwrap(),
            &Default::default(),
        )
        .await
        .unwrap();
    publisher
        .publish(&event("SecretWriteFailed", "after the delete"), &regarding)
        .await
        .unwrap();
    let listed = events.list(&Default::default()).await.unwrap().items;
    let failed = of_reason(listed.clone(), "SecretWriteFailed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].note.as_deref(), Some("after the delete"));
    assert_eq!(failed[0].series, None);
    let conflict = of_reason(listed, "SecretConflict");
    assert_eq!(conflict.len(), 1);
    assert_eq!(conflict[0].series, None);
}
