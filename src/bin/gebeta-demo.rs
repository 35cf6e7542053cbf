//! `make demo`: the operator's main job on an embedded default. Starts a local control plane
//! and gebeta-sim, runs the operator, applies `examples/`, and narrates what happens: the
//! accounts become Ready, access tokens land in Secrets, work against the API, and are
//! refreshed before they expire. Ctrl-C stops and removes everything; the demo ends by drawing
//! the refresh margins it saw (seconds left on the old token at each refresh) as an SVG plot.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use clap::Parser;
use gebeta_operator::{
    bench::{
        plot::{self, MarginSeries},
        timeline::PhaseMark,
    },
    crd::{GebetaAccessToken, GebetaServiceAccount},
    gebeta::{Platform, Scope},
    sim::{Sim, SimConfig},
    testbed::{ControlPlane, OperatorProcess, operator_binary},
};
use k8s_openapi::{
    ByteString,
    api::core::v1::{Namespace, Secret},
};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
};

#[derive(Parser)]
#[command(about = "Runs the gebeta-operator demo on a local control plane and gebeta-sim")]
struct Args {
    /// Lifetime of the access tokens gebeta-sim issues, in seconds.
    #[arg(long, default_value_t = 30)]
    token_ttl: u64,
    /// Stop after every access token has been refreshed this many times (0: run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    refreshes: u32,
    /// Give up (exit 1) after this many seconds (0: never).
    #[arg(long, default_value_t = 0)]
    timeout: u64,
    /// Namespace the examples are applied to.
    #[arg(long, default_value = "gebeta-demo")]
    namespace: String,
    /// Directory of the example manifests.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/examples"))]
    examples: PathBuf,
    /// Where the plot of the refresh margins goes (SVG), written when the demo ends.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/target/demo/margins.svg"))]
    plot: PathBuf,
}

const USER_TOKEN: &str = "demo-user-token";

#[tokio::main]
async fn main() {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => {}
        Err(err) => {
            eprintln!("demo: {err}");
            std::process::exit(1);
        }
    }
}

fn step(n: u32, text: impl AsRef<str>) {
    println!("[{n}/6] {}", text.as_ref());
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    println!(
        "gebeta-operator demo: a local Kubernetes control plane, gebeta-sim, and the operator\n"
    );

    step(
        1,
        "starting etcd, kube-apiserver and kube-controller-manager (built from Go modules on first use)...",
    );
    let cp = ControlPlane::start().await?;
    let client = cp.client()?;
    println!(
        "      API server at {} (kubeconfig: {})",
        cp.server_url(),
        cp.kubeconfig_path().display()
    );
    cp.install_crds(&client, &Path::new(env!("CARGO_MANIFEST_DIR")).join("crds"))
        .await?;

    let sim = Sim::start(SimConfig {
        token_ttl: Duration::from_secs(args.token_ttl),
        user_tokens: vec![USER_TOKEN.into()],
        ..SimConfig::default()
    })
    .await?;
    step(
        2,
        format!(
            "gebeta-sim serving the Gebeta API at {} (access tokens live {}s)",
            sim.base_url(),
            args.token_ttl
        ),
    );

    let ns = &args.namespace;
    prepare_namespace(&client, ns, &sim).await?;
    step(
        3,
        format!(
            "CRDs installed; namespace {ns} with the operator's user token and two dashboard-made tokens"
        ),
    );

    let log = std::env::temp_dir().join(format!("gebeta-demo-operator-{}.log", std::process::id()));
    let operator = OperatorProcess::spawn(
        &operator_binary()?,
        &cp.kubeconfig_path(),
        &log,
        &[
            format!("--gebeta-api-url={}", sim.base_url()),
            format!("--user-token-secret={ns}/gebeta-user-token"),
            "--leader-elect=false".into(),
        ],
    )?;
    step(
        4,
        format!(
            "operator running: metrics at {}/metrics, log in {}",
            operator.admin_url(),
            log.display()
        ),
    );

    let applied = apply_examples(&client, ns, &args.examples).await?;
    step(
        5,
        format!(
            "applied {}: {}",
            args.examples.display(),
            applied.join(", ")
        ),
    );
    step(6, "watching; Ctrl-C to stop\n");

    let deadline = (args.timeout > 0).then(|| started + Duration::from_secs(args.timeout));
    let mut watch = Watch::new(client.clone(), ns.clone(), sim.base_url());
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => { println!("\nstopping: removing the control plane, gebeta-sim and the operator"); break; }
            _ = tick.tick() => {}
        }
        watch.poll(&sim).await;
        if args.refreshes > 0 && watch.min_refreshes() >= args.refreshes {
            println!(
                "\nevery access token was refreshed {} time(s) before it expired: done",
                args.refreshes
            );
            break;
        }
        if !operator.is_running() {
            return Err(format!("the operator exited; see {}", log.display()).into());
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            return Err(format!(
                "timed out after {}s; operator log: {}",
                args.timeout,
                log.display()
            )
            .into());
        }
    }
    drop(operator);
    watch.plot_margins(&args.plot, args.token_ttl)?;
    Ok(())
}

async fn prepare_namespace(
    client: &Client,
    ns: &str,
    sim: &gebeta_operator::sim::SimHandle,
) -> Result<(), kube::Error> {
    let pp = PatchParams::apply("gebeta-demo").force();
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).expect("valid");
    Api::<Namespace>::all(client.clone())
        .patch(ns, &pp, &Patch::Apply(&namespace))
        .await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let (_, client_token) =
        sim.create_dashboard_account(Platform::Web, vec![Scope::Tile, Scope::Direction]);
    let (_, server_token) =
        sim.create_dashboard_account(Platform::Web, vec![Scope::Tile, Scope::Direction]);
    for (name, data) in [
        ("gebeta-user-token", vec![("token", USER_TOKEN.to_string())]),
        (
            "gebeta-dashboard-tokens",
            vec![
                ("client-token", client_token),
                ("server-token", server_token),
            ],
        ),
    ] {
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(
                data.into_iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
                    .collect(),
            ),
            ..Default::default()
        };
        secrets.patch(name, &pp, &Patch::Apply(&secret)).await?;
    }
    Ok(())
}

/// Server-side applies every document of every YAML file in `dir`.
async fn apply_examples(
    client: &Client,
    ns: &str,
    dir: &Path,
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut applied = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: serde_json::Value = serde::Deserialize::deserialize(doc)?;
            if value.is_null() {
                continue;
            }
            let obj: DynamicObject = serde_json::from_value(value)?;
            let kind = obj
                .types
                .as_ref()
                .map(|t| t.kind.clone())
                .unwrap_or_default();
            let resource = match kind.as_str() {
                "GebetaServiceAccount" => ApiResource::erase::<GebetaServiceAccount>(&()),
                "GebetaAccessToken" => ApiResource::erase::<GebetaAccessToken>(&()),
                other => {
                    return Err(format!(
                        "{}: the demo applies Gebeta resources only, not {other}",
                        file.display()
                    )
                    .into());
                }
            };
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
            let name = obj.name_any();
            api.patch(
                &name,
                &PatchParams::apply("gebeta-demo").force(),
                &Patch::Apply(&obj),
            )
            .await?;
            applied.push(format!("{kind}/{name}"));
        }
    }
    Ok(applied)
}

/// What the demo has seen so far, to print only changes.
struct Watch {
    client: Client,
    ns: String,
    route_url: String,
    http: reqwest::Client,
    started: Instant,
    ready: BTreeMap<String, String>,
    tokens: BTreeMap<String, (String, u32)>,
    /// Per access token, each refresh as `[seconds since the watch began, seconds left on
    /// the old token]`.
    margins: BTreeMap<String, Vec<[f64; 2]>>,
}

impl Watch {
    fn new(client: Client, ns: String, base_url: String) -> Self {
        Watch {
            client,
            ns,
            route_url: format!("{base_url}/route?origin=9.0222,38.7469&destination=9.0500,38.7500"),
            http: reqwest::Client::new(),
            started: Instant::now(),
            ready: BTreeMap::new(),
            tokens: BTreeMap::new(),
            margins: BTreeMap::new(),
        }
    }

    /// Draws the refresh margins seen so far into `path` and prints where it is.
    fn plot_margins(&self, path: &Path, token_ttl: u64) -> Result<(), Box<dyn std::error::Error>> {
        let series: Vec<MarginSeries> = self
            .margins
            .iter()
            .map(|(name, points)| MarginSeries {
                name: name.clone(),
                points: points.clone(),
            })
            .collect();
        let svg = plot::margins_svg(
            &format!("Refresh margin: gebeta-demo, {token_ttl} s tokens"),
            "seconds since the demo began watching (new token seen in its Secret)",
            &series,
            &[PhaseMark {
                name: "examples applied".into(),
                at: 0.0,
            }],
        )?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, svg)?;
        let refreshes: usize = series.iter().map(|s| s.points.len()).sum();
        println!(
            "refresh margins ({refreshes} refreshes; seconds left on the old token): {}",
            path.display()
        );
        Ok(())
    }

    fn say(&self, what: &str, text: String) {
        println!(
            "  +{:>6.1}s  {what:<42} {text}",
            self.started.elapsed().as_secs_f64()
        );
    }

    fn min_refreshes(&self) -> u32 {
        if self.tokens.len() < 2 {
            return 0;
        }
        self.tokens
            .values()
            .map(|(_, n)| n.saturating_sub(1))
            .min()
            .unwrap_or(0)
    }

    async fn poll(&mut self, sim: &gebeta_operator::sim::SimHandle) {
        let gsas: Api<GebetaServiceAccount> = Api::namespaced(self.client.clone(), &self.ns);
        for gsa in gsas
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let key = format!("GebetaServiceAccount/{}", gsa.name_any());
            let status = gsa.status.clone().unwrap_or_default();
            if let Some(ready) = status.conditions.iter().find(|c| c.type_ == "Ready") {
                let summary = format!(
                    "Ready={} ({}) {}",
                    ready.status,
                    ready.reason,
                    status
                        .account_id
                        .as_deref()
                        .map(|id| format!("account {id}"))
                        .unwrap_or_default()
                );
                if self.ready.get(&key) != Some(&summary) {
                    self.say(&key, summary.clone());
                    self.ready.insert(key, summary);
                }
            }
        }
        let gats: Api<GebetaAccessToken> = Api::namespaced(self.client.clone(), &self.ns);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        for gat in gats
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let key = format!("GebetaAccessToken/{}", gat.name_any());
            let status = gat.status.clone().unwrap_or_default();
            if let Some(ready) = status.conditions.iter().find(|c| c.type_ == "Ready")
                && ready.status != "True"
            {
                let summary = format!(
                    "Ready={} ({}): {}",
                    ready.status, ready.reason, ready.message
                );
                if self.ready.get(&key) != Some(&summary) {
                    self.say(&key, summary.clone());
                    self.ready.insert(key.clone(), summary);
                }
            }
            let Ok(Some(secret)) = secrets.get_opt(&gat.spec.secret_name).await else {
                continue;
            };
            let data = secret.data.unwrap_or_default();
            let expires = data
                .get("expiresAt")
                .map(|b| String::from_utf8_lossy(&b.0).to_string())
                .unwrap_or_default();
            let Some(token) = data
                .get("token")
                .map(|b| String::from_utf8_lossy(&b.0).to_string())
            else {
                continue;
            };
            let previous = self.tokens.get(&key).cloned();
            if previous.as_ref().map(|(e, _)| e) == Some(&expires) {
                continue;
            }
            let route = self
                .http
                .get(&self.route_url)
                .bearer_auth(&token)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            let left = expires
                .parse::<jiff::Timestamp>()
                .map(|t| (t - jiff::Timestamp::now()).get_seconds())
                .unwrap_or(0);
            let count = previous.as_ref().map_or(1, |(_, n)| n + 1);
            let (verb, margin) = match &previous {
                None => ("issued", String::new()),
                Some((old, _)) => {
                    let left = old.parse::<jiff::Timestamp>().map(|t| {
                        (t.as_millisecond() - jiff::Timestamp::now().as_millisecond()) as f64
                            / 1000.0
                    });
                    if let Ok(left) = left {
                        self.margins.entry(key.clone()).or_default().push([
                            (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
                            left,
                        ]);
                    }
                    let margin = left.map_or(0, |l| l.trunc() as i64);
                    (
                        "refreshed",
                        format!(", {margin}s before the previous one expired"),
                    )
                }
            };
            self.say(
                &key,
                format!(
                    "token {verb} into Secret {} (expires in {left}s{margin}); GET /route with it -> {route}; sim calls: auth {}, refresh {}",
                    gat.spec.secret_name,
                    sim.calls("auth"),
                    sim.calls("refresh")
                ),
            );
            self.tokens.insert(key, (expires, count));
        }
    }
}
