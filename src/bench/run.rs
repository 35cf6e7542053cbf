//! The benchmark run: phases, measurements and the report.
//!
//! 1. **setup**: a control plane with an audit log, gebeta-sim (in process), namespaces, the
//!    operator's user token, one Secret of dashboard-made tokens per dashboard access token;
//!    the release operator as a child process acting as user `gebeta-operator`
//!    (impersonation), leader election off.
//! 2. **apply**: N `GebetaServiceAccount`s and M `GebetaAccessToken`s are created with bounded
//!    concurrency; a watch records when each turns Ready.
//! 3. **steady**: a window with no change: operator writes (audit log) and Gebeta calls.
//! 4. **unrelated Secrets**: K Secrets of S KiB that nothing refers to; RSS before and after.
//! 5. **restart**: SIGTERM, a new operator process; Gebeta calls and writes in the window
//!    after, time to `/readyz` and until every object is Ready in a fresh list.
//! 6. **refresh**: the sim's token lifetime drops to `--token-ttl`, every access token is
//!    refreshed once on request (annotation), then the operator runs `--lifetimes` lifetimes
//!    on its own; a Secret watch records each new token and the old one's expiry.
//!
//! Phases 2-5 run with `--initial-token-ttl` (default 1 h) so that no refresh is due; phase 6
//! is where refreshes happen. The benchmark asserts nothing about time.
//!
//! Throughout, a [`Sampler`] records the operator's RSS and the simulator's call counter once a
//! second, and each phase's start is marked; at the end the audit log gives the operator's
//! writes per second. With every object's time to Ready and every refresh's margin, that is what
//! the plots ([`super::plot`]) draw (`Report::timeline`).

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Parser;
use futures::{StreamExt, stream};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde::{Deserialize, Serialize};

use super::ceiling::{self, CeilingReport};
use super::overload::{self, OverloadReport};
use super::{
    objects::{self, BENCH_LABEL},
    observe::{Kind, ReadyTracker, TokenObserver, TokenWrite},
    stats::Summary,
    timeline::{self, PhaseMark, Sampler, Timeline},
};
use crate::{
    crd::{GebetaAccessToken, GebetaServiceAccount},
    gebeta::{Platform, Scope},
    sim::{Sim, SimConfig, SimHandle},
    testbed::{
        AuditEvent, AuditLog, ControlPlane, OperatorProcess, audit::count_by_kind_and_verb,
        operator_binary,
    },
};

/// The identity the operator acts as (impersonation), so the audit log can tell its writes.
pub const OPERATOR_USER: &str = "gebeta-operator";
const USER_TOKEN: &str = "bench-user-token";
const SYSTEM_NS: &str = "gebeta-system";
/// The management credentials' Secret, in [`SYSTEM_NS`].
const USER_TOKEN_SECRET: &str = "gebeta-user-token";
const REFRESH_ANNOTATION: &str = "gebeta.app/refresh";

/// `gebeta-bench`: measures the operator at scale (see README, "Benchmarks").
#[derive(Parser, Debug, Clone, Serialize, Deserialize)]
#[command(
    name = "gebeta-bench",
    about = "Benchmarks gebeta-operator on a local control plane and gebeta-sim",
    max_term_width = 100
)]
#[serde(rename_all = "camelCase")]
pub struct BenchArgs {
    /// GebetaServiceAccounts to create (N).
    #[arg(long, default_value_t = 20)]
    pub accounts: usize,
    /// GebetaAccessTokens to create (M): the first N/2 from pairs of the service accounts,
    /// the rest from dashboard-made tokens in Secrets.
    #[arg(long, default_value_t = 20)]
    pub tokens: usize,
    /// Access-token lifetime (seconds) during the refresh phase.
    #[arg(long, default_value_t = 30)]
    pub token_ttl: u64,
    /// Access-token lifetime (seconds) before the refresh phase (long: no refresh is due while
    /// apply, steady-state and restart are measured).
    #[arg(long, default_value_t = 3600)]
    pub initial_token_ttl: u64,
    /// Lifetimes to observe in the refresh phase, after the requested refresh.
    #[arg(long, default_value_t = 3)]
    pub lifetimes: u32,
    /// Latency the simulator adds to every Gebeta call (milliseconds).
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Length of the steady-state window with no change (seconds).
    #[arg(long, default_value_t = 30)]
    pub steady_seconds: u64,
    /// Length of the window after the operator restart (seconds).
    #[arg(long, default_value_t = 60)]
    pub restart_window: u64,
    /// Unrelated Secrets to add after the steady state (K).
    #[arg(long, default_value_t = 0)]
    pub unrelated_secrets: usize,
    /// Size of each unrelated Secret (KiB).
    #[arg(long, default_value_t = 100)]
    pub unrelated_secret_kb: usize,
    /// Time the operator gets to take in the unrelated Secrets before RSS is read (seconds).
    #[arg(long, default_value_t = 15)]
    pub settle_seconds: u64,
    /// Namespaces the objects are spread over.
    #[arg(long, default_value_t = 4)]
    pub namespaces: usize,
    /// Create requests in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Passed to the operator as `--gebeta-max-in-flight` (operator default when unset).
    #[arg(long)]
    pub gebeta_max_in_flight: Option<u32>,
    /// Passed to the operator as `--log-level`.
    #[arg(long, default_value = "info")]
    pub operator_log_level: String,
    /// Length of the overload phase (seconds; 0: none): after the refresh phase a new
    /// operator process with `--overload-permits` serves tokens of `--token-ttl` while every
    /// Gebeta call takes `--overload-latency-ms`, so more refreshes come due than it can serve.
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub overload_seconds: u64,
    /// Simulator latency during the overload phase (milliseconds).
    #[arg(long, default_value_t = 1500)]
    #[serde(default = "default_overload_latency")]
    pub overload_latency_ms: u64,
    /// `--max-concurrent-reconciles` of the operator during the overload phase.
    #[arg(long, default_value_t = 1)]
    #[serde(default = "one_permit")]
    pub overload_permits: u16,
    /// Give up waiting for any one phase after this many seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
    /// Where to write the JSON report (default: `target/bench/bench-<N>x<M>-<time>.json`).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Print the table of a JSON report written earlier, and run nothing (with `--plot`, also
    /// draw its plots).
    #[arg(long, value_name = "JSON", conflicts_with = "json")]
    #[serde(skip)]
    pub show: Option<PathBuf>,
    /// Where to write the SVG plots, `<JSON file stem>-{ready,margins,rates,rss}.svg`
    /// (default for a run: beside the JSON report; `--show` draws them only when given).
    #[arg(long, value_name = "DIR")]
    #[serde(skip)]
    pub plot: Option<PathBuf>,
}

fn default_overload_latency() -> u64 {
    1500
}

fn one_permit() -> u16 {
    1
}

/// The machine the run was measured on.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
}

impl Machine {
    fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_string())
            .unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory_gib: (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        }
    }
}

/// (1) Time from apply to Ready.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct ApplyReport {
    /// From the first create request to the last object seen Ready (seconds).
    pub total_seconds: f64,
    /// Per object, from its create request to the watch seeing it Ready (seconds).
    pub service_accounts: Option<Summary>,
    pub access_tokens: Option<Summary>,
    pub all: Option<Summary>,
    /// Time to send every create request (seconds).
    pub create_seconds: f64,
    /// Operator requests from the first create to all Ready, by `kind verb` (reads and
    /// writes; absent from reports made before reads were audited).
    #[serde(default)]
    pub kube_requests: BTreeMap<String, u64>,
    /// Per object, the seconds from its create request to Ready, sorted, by kind
    /// (`GebetaServiceAccount`, `GebetaAccessToken`; absent from reports made before plots).
    #[serde(default)]
    pub ready_seconds: BTreeMap<String, Vec<f64>>,
}

/// (2) One row of Gebeta calls.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct CallRow {
    pub phase: String,
    pub endpoint: String,
    pub calls: u64,
    pub ideal: Option<u64>,
    pub ratio: Option<f64>,
}

/// (3) The steady-state window.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct SteadyReport {
    pub seconds: f64,
    /// Operator writes by `kind verb` (goal: none).
    pub kube_writes: BTreeMap<String, u64>,
    /// Gebeta calls by endpoint (goal: none).
    pub gebeta_calls: BTreeMap<String, u64>,
    /// Operator writes while the unrelated Secrets were added (goal: none).
    pub kube_writes_during_unrelated: BTreeMap<String, u64>,
}

/// (4) Memory and CPU of the operator process.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResourceReport {
    /// Before any object exists.
    pub idle_rss_mib: f64,
    /// Seconds from the first start to `/readyz` answering 200 (`None`: not within 30 s).
    pub first_start_seconds_to_readyz: Option<f64>,
    /// Peak RSS (VmHWM) of the first process, up to its stop.
    pub peak_rss_mib: f64,
    /// RSS at the end of the steady-state window.
    pub steady_rss_mib: f64,
    /// RSS after the unrelated Secrets were added and `--settle-seconds` passed.
    pub after_unrelated_rss_mib: Option<f64>,
    pub unrelated_secrets: usize,
    pub unrelated_secret_kib: usize,
    /// KiB the operator received on its open TCP connections (`ss`) while the unrelated
    /// Secrets were added, per Secret added (goal: far below the Secret's size).
    pub received_kib_per_unrelated_secret: Option<f64>,
    /// CPU seconds of the first process: during apply, during the steady window, in total.
    pub cpu_seconds_apply: f64,
    pub cpu_seconds_steady: f64,
    pub cpu_seconds_first_process: f64,
    /// The restarted process: RSS once every object was Ready again, its peak and CPU.
    pub restarted_rss_mib: f64,
    pub restarted_peak_rss_mib: f64,
    pub restarted_cpu_seconds: f64,
    /// CPU seconds of the restarted process during the refresh phase.
    pub cpu_seconds_refresh_phase: f64,
}

/// (5) Refreshes.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct RefreshReport {
    pub lifetime_seconds: u64,
    pub lifetimes_observed: u32,
    pub phase_seconds: f64,
    /// New tokens seen in target Secrets during the phase (requested + scheduled).
    pub replacements: u64,
    /// Replacements of a token of `--token-ttl` lifetime (the scheduled ones).
    pub scheduled_replacements: u64,
    /// Seconds before the old token's expiry that the Secret held the new one.
    pub margin_seconds: Option<Summary>,
    /// The same, as a fraction of the lifetime.
    pub margin_fraction: Option<Summary>,
    /// Time between two new tokens of one Secret, as a fraction of the lifetime.
    pub interval_fraction: Option<Summary>,
    /// Secrets that held an expired token (goal: none).
    pub expired_holdings: Vec<String>,
    /// Gebeta calls during the phase.
    pub refresh_calls: u64,
    pub auth_calls: u64,
    /// Operator writes during the phase, by `kind verb`, and per replacement.
    pub kube_writes: BTreeMap<String, u64>,
    pub kube_writes_per_replacement: Option<f64>,
    /// Operator reads (get, list) during the phase, by `kind verb`, and per replacement (goal:
    /// none; absent from reports made before reads were audited).
    /// Reads of the management credentials (the user-token Secret) are not among these: see
    /// `credential_reads` (reports made before it counted them here).
    #[serde(default)]
    pub kube_reads: BTreeMap<String, u64>,
    #[serde(default)]
    pub kube_reads_per_replacement: Option<f64>,
    /// Reads of the user-token Secret during the phase: the service-account controller reads
    /// the management credentials for each comparison with upstream, whatever the tokens do
    /// (absent from earlier reports).
    #[serde(default)]
    pub credential_reads: u64,
    /// Seconds from the refresh request to every token refreshed, and the new tokens per
    /// second that makes.
    #[serde(default)]
    pub requested_seconds: Option<f64>,
    #[serde(default)]
    pub requested_tokens_per_second: Option<f64>,
    /// Those tokens/s × writes per token ÷ the measured write ceiling, over the whole window
    /// (the bench's own annotation patches included; until the `sustained` figures existed,
    /// the only ratio reported).
    #[serde(default)]
    pub ceiling_ratio: Option<f64>,
    /// Seconds the bench took to annotate every token. While it does, a third write per
    /// token (the bench's, with `--concurrency` requests in flight against the operator's
    /// `--max-concurrent-reconciles`) takes most of the API server.
    #[serde(default)]
    pub annotate_seconds: Option<f64>,
    /// New tokens per second from the bench's last annotation to the last new token: the
    /// operator alone writing (absent when fewer than half the tokens came after it).
    #[serde(default)]
    pub sustained_tokens_per_second: Option<f64>,
    /// `sustained_tokens_per_second` × writes per token ÷ the write ceiling (goal: ≥ 0.8):
    /// how much of what the API server can take the operator turns into tokens.
    #[serde(default)]
    pub sustained_ceiling_ratio: Option<f64>,
    /// Tokens/s (whole window, then once annotated) ÷ the tokens/s whose own writes the API
    /// server takes (`CeilingReport::token_writes_per_second`), scaled by writes per token ÷ 2
    /// (the probe makes two): the same figures against a ceiling a perfect operator could
    /// reach (absent from earlier reports).
    #[serde(default)]
    pub token_writes_ratio: Option<f64>,
    #[serde(default)]
    pub sustained_token_writes_ratio: Option<f64>,
    /// Each scheduled replacement (those `margin_seconds` summarises) as `[seen at, margin]`:
    /// seconds from the run's start, seconds left on the old token (absent from reports made
    /// before plots).
    #[serde(default)]
    pub margins: Vec<[f64; 2]>,
}

/// (6) Restart.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
#[serde(rename_all = "camelCase")]
pub struct RestartReport {
    pub window_seconds: f64,
    /// Graceful stop of the first process (seconds).
    pub stop_seconds: f64,
    /// From the new process's start to `/readyz` answering 200.
    /// `None`: `/readyz` did not answer 200 within 30 s.
    pub seconds_to_readyz: Option<f64>,
    /// From the new process's start until a fresh list shows every object Ready.
    pub seconds_to_all_ready: f64,
    /// From the new process's start until it has run at least as many reconciles as there
    /// are objects (`gebeta_operator_reconciles_total`).
    pub seconds_to_all_reconciled: f64,
    /// Objects that stopped being Ready during the window (goal: none).
    pub lost_ready: Vec<String>,
    /// Gebeta calls in the window (goal: none), by endpoint.
    pub gebeta_calls: BTreeMap<String, u64>,
    /// Operator writes in the window, by `kind verb` (goal: none).
    pub kube_writes: BTreeMap<String, u64>,
    /// MiB the new process received on its TCP connections still open at the end of the
    /// window (`ss`): at least its initial lists and watches.
    pub received_mib: Option<f64>,
}

/// Everything measured.
#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub started_at: String,
    pub args: BenchArgs,
    pub machine: Machine,
    pub apply: ApplyReport,
    pub gebeta_calls: Vec<CallRow>,
    pub steady: SteadyReport,
    pub resources: ResourceReport,
    pub refresh: RefreshReport,
    pub restart: RestartReport,
    /// Absent from reports made before the probe existed.
    #[serde(default)]
    pub ceiling: Option<CeilingReport>,
    /// With `--overload-seconds`.
    #[serde(default)]
    pub overload: Option<OverloadReport>,
    /// Time series for the plots (empty in reports made before plots).
    #[serde(default)]
    pub timeline: Timeline,
}

/// A failure that stops the run.
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;

fn mib(kib: Option<u64>) -> f64 {
    kib.map_or(f64::NAN, |k| (k as f64 / 1024.0 * 10.0).round() / 10.0)
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn since(t: Timestamp, start: Timestamp) -> f64 {
    (t.as_millisecond() - start.as_millisecond()) as f64 / 1000.0
}

/// New tokens per second of the requested refresh once the bench's own annotations were all
/// written (`annotated`): each Secret's first new token after that, over the time to the last
/// one. `None` when fewer than half of the `tokens` came after it (a run too small to tell).
fn sustained_rate(writes: &[TokenWrite], annotated: Timestamp, tokens: usize) -> Option<f64> {
    let mut first: BTreeMap<(&str, &str), Timestamp> = BTreeMap::new();
    for w in writes {
        let at = first.entry((&w.namespace, &w.name)).or_insert(w.at);
        *at = (*at).min(w.at);
    }
    let after: Vec<Timestamp> = first.into_values().filter(|at| *at >= annotated).collect();
    let last = after.iter().max()?;
    let seconds = since(*last, annotated);
    (after.len() * 2 >= tokens && seconds > 0.0).then(|| after.len() as f64 / seconds)
}

/// The apply's writes measured against the write ceiling probed right before it.
#[derive(Debug, PartialEq)]
struct ApplyAgainstCeiling {
    operator_writes: u64,
    /// The bench's own create requests, in the same window.
    creates: u64,
    ceiling: f64,
    /// What those writes take at the ceiling.
    seconds_at_ceiling: f64,
    /// `seconds_at_ceiling` ÷ the apply's seconds: 1.00 is an API server taking writes at
    /// the probe's rate from the first create to the last Ready. Reads are left out: the
    /// probe measures writes, and a GET is served from the watch cache.
    ratio: f64,
}

fn apply_against_ceiling(report: &Report) -> Option<ApplyAgainstCeiling> {
    let ceiling = report.ceiling.as_ref()?.secret_patches_per_second;
    let operator_writes: u64 = report
        .apply
        .kube_requests
        .iter()
        .filter(|(kind_verb, _)| !kind_verb.ends_with(" get") && !kind_verb.ends_with(" list"))
        .map(|(_, n)| n)
        .sum();
    let creates = (report.args.accounts + report.args.tokens) as u64;
    if operator_writes == 0 || ceiling <= 0.0 || report.apply.total_seconds <= 0.0 {
        return None;
    }
    let seconds_at_ceiling = (operator_writes + creates) as f64 / ceiling;
    Some(ApplyAgainstCeiling {
        operator_writes,
        creates,
        ceiling,
        seconds_at_ceiling,
        ratio: seconds_at_ceiling / report.apply.total_seconds,
    })
}

/// A phase that begins now.
fn phase(name: &str, origin: Timestamp) -> PhaseMark {
    PhaseMark {
        name: name.into(),
        at: timeline::offset(Timestamp::now(), origin),
    }
}

fn say(text: impl AsRef<str>) {
    eprintln!(
        "[{}] {}",
        Timestamp::now().strftime("%H:%M:%S"),
        text.as_ref()
    );
}

/// The operator's writes among `events`, counted by `kind verb`.
fn operator_writes(events: &[AuditEvent]) -> BTreeMap<String, u64> {
    operator_requests(events, true)
}

/// The operator's writes (or reads: gets and lists, not watches) among `events`, counted by
/// `kind verb`.
fn operator_requests<'a>(
    events: impl IntoIterator<Item = &'a AuditEvent>,
    writes: bool,
) -> BTreeMap<String, u64> {
    count_by_kind_and_verb(
        events
            .into_iter()
            .filter(|e| e.user == OPERATOR_USER && if writes { e.is_write() } else { e.is_read() }),
    )
    .into_iter()
    .map(|((kind, verb), n)| (format!("{kind} {verb}"), n))
    .collect()
}

/// Calls per endpoint between two snapshots (only endpoints with calls).
fn call_diff(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn calls_now(sim: &Sim) -> BTreeMap<String, u64> {
    sim.stats()
        .calls
        .into_iter()
        .map(|(k, v)| (k, v.total))
        .collect()
}

/// When each object's create request was sent.
type AppliedAt = HashMap<(Kind, String, String), Timestamp>;

/// The plan of objects: which namespace each lives in and what each token reads.
struct Plan {
    namespaces: Vec<String>,
    accounts: Vec<(String, GebetaServiceAccount)>,
    tokens: Vec<(String, GebetaAccessToken)>,
    /// Dashboard-token input Secrets: (namespace, Secret).
    inputs: Vec<(String, Secret)>,
}

impl Plan {
    fn new(args: &BenchArgs, run: &str, sim: &Sim) -> Plan {
        let k = args.namespaces.max(1);
        let namespaces: Vec<String> = (0..k).map(|i| format!("bench-{i}")).collect();
        let accounts = (0..args.accounts)
            .map(|i| {
                let ns = namespaces[(i / 2) % k].clone();
                let gsa = objects::service_account(
                    &format!("sa-{i}"),
                    run,
                    &format!("bench account {i}"),
                );
                (ns, gsa)
            })
            .collect();
        let from_accounts = (args.accounts / 2).min(args.tokens);
        let mut tokens = Vec::new();
        let mut inputs = Vec::new();
        for j in 0..args.tokens {
            let ns = namespaces[j % k].clone();
            let name = format!("token-{j}");
            let secret_name = format!("token-{j}-access");
            let gat = if j < from_accounts {
                objects::access_token_from_accounts(
                    &name,
                    run,
                    &format!("sa-{}", 2 * j),
                    &format!("sa-{}", 2 * j + 1),
                    &secret_name,
                )
            } else {
                let input = format!("token-{j}-inputs");
                let (_, client) = sim.create_dashboard_account(Platform::Web, vec![Scope::Tile]);
                let (_, server) = sim.create_dashboard_account(Platform::Web, vec![Scope::Tile]);
                inputs.push((
                    ns.clone(),
                    objects::dashboard_tokens(&input, run, &client, &server),
                ));
                objects::access_token_from_secret(&name, run, &input, &secret_name)
            };
            tokens.push((ns, gat));
        }
        Plan {
            namespaces,
            accounts,
            tokens,
            inputs,
        }
    }
}

/// Runs `f` over `items` with at most `concurrency` at once; the first error stops the run.
pub(super) async fn for_each_bounded<T, F, Fut>(
    items: Vec<T>,
    concurrency: usize,
    f: F,
) -> Result<(), BenchError>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<(), BenchError>>,
{
    let mut results = stream::iter(items.into_iter().map(f)).buffer_unordered(concurrency.max(1));
    while let Some(result) = results.next().await {
        result?;
    }
    Ok(())
}

/// Creates `obj` in `ns`, retrying a few times on transient errors.
async fn create<K>(client: &Client, ns: &str, obj: &K) -> Result<(), BenchError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let mut attempt = 0;
    loop {
        match api.create(&PostParams::default(), obj).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => return Ok(()),
            Err(e) if attempt < 5 => {
                attempt += 1;
                say(format!("create {} failed ({e}); retrying", obj.name_any()));
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => return Err(format!("create {}/{}: {e}", ns, obj.name_any()).into()),
        }
    }
}

pub(super) async fn wait_for<T, F, Fut>(
    what: &str,
    timeout: Duration,
    probe: F,
) -> Result<T, BenchError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    crate::testbed::wait_until(timeout, what, probe)
        .await
        .map_err(|waited| format!("gave up after {waited:?} waiting for {what}").into())
}

async fn admin_ready(http: &reqwest::Client, operator: &OperatorProcess) -> bool {
    match http
        .get(format!("{}/readyz", operator.admin_url()))
        .send()
        .await
    {
        Ok(r) => r.status().is_success(),
        Err(_) => false,
    }
}

/// Bytes received so far on each open TCP connection of process `pid`, by local address
/// (from `ss -tinp`).
fn socket_bytes(pid: u32) -> HashMap<String, u64> {
    let mut sockets = HashMap::new();
    let Ok(out) = std::process::Command::new("ss").args(["-tinpH"]).output() else {
        return sockets;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let needle = format!("pid={pid},");
    let mut current: Option<String> = None;
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            // State, Recv-Q, Send-Q, local address, peer address, process.
            current = line.contains(&needle).then(|| {
                line.split_whitespace()
                    .nth(3)
                    .unwrap_or_default()
                    .to_string()
            });
        } else if let Some(local) = current.take() {
            let bytes = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("bytes_received:"))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            sockets.insert(local, bytes);
        }
    }
    sockets
}

/// Counts the bytes a process receives on its TCP connections, sampling `ss` every 500 ms
/// so that connections closed in between are counted up to their last sample.
struct SocketMeter {
    seen: Arc<std::sync::Mutex<HashMap<String, (u64, u64)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SocketMeter {
    /// Starts counting from now (bytes already received on open connections do not count).
    fn start(pid: Option<u32>) -> SocketMeter {
        let seen: Arc<std::sync::Mutex<HashMap<String, (u64, u64)>>> = Arc::default();
        let shared = seen.clone();
        let task = tokio::spawn(async move {
            let Some(pid) = pid else { return };
            let mut first = true;
            loop {
                let now = tokio::task::spawn_blocking(move || socket_bytes(pid))
                    .await
                    .unwrap_or_default();
                {
                    let mut seen = shared.lock().unwrap_or_else(|e| e.into_inner());
                    for (local, bytes) in now {
                        // (baseline, latest): what a connection open at the start had
                        // received before does not count; a later one counts from zero.
                        let baseline = if first { bytes } else { 0 };
                        let entry = seen.entry(local).or_insert((baseline, bytes));
                        entry.1 = entry.1.max(bytes);
                    }
                }
                first = false;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        SocketMeter { seen, task }
    }

    /// Bytes received since the start (up to the last sample).
    fn bytes(&self) -> u64 {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|(first, last)| last - first)
            .sum()
    }
}

impl Drop for SocketMeter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The sum of `gebeta_operator_reconciles_total` on the operator's `/metrics`.
async fn reconciles(http: &reqwest::Client, operator: &OperatorProcess) -> Option<u64> {
    let text = http
        .get(format!("{}/metrics", operator.admin_url()))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(
        text.lines()
            .filter(|l| l.starts_with("gebeta_operator_reconciles_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64,
    )
}

/// Lists every benchmark object and counts those Ready (pages of 500).
async fn count_ready(client: &Client, run: &str) -> Result<(usize, usize), kube::Error> {
    let selector = format!("{BENCH_LABEL}={run}");
    let mut ready = (0, 0);
    let gsas: Api<GebetaServiceAccount> = Api::all(client.clone());
    let mut lp = ListParams::default().labels(&selector).limit(500);
    loop {
        let page = gsas.list(&lp).await?;
        ready.0 += page
            .items
            .iter()
            .filter(|o| objects::is_ready(objects::account_conditions(o)))
            .count();
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    let gats: Api<GebetaAccessToken> = Api::all(client.clone());
    let mut lp = ListParams::default().labels(&selector).limit(500);
    loop {
        let page = gats.list(&lp).await?;
        ready.1 += page
            .items
            .iter()
            .filter(|o| objects::is_ready(objects::token_conditions(o)))
            .count();
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    Ok(ready)
}

struct Env {
    /// Kept alive for the whole run.
    _cp: ControlPlane,
    sim: SimHandle,
    audit: AuditLog,
    operator_kubeconfig: PathBuf,
    log_dir: PathBuf,
    args: BenchArgs,
    http: reqwest::Client,
}

impl Env {
    fn spawn_operator(&self, instance: &str) -> Result<OperatorProcess, BenchError> {
        self.spawn_operator_with(instance, &[])
    }

    fn spawn_operator_with(
        &self,
        instance: &str,
        extra: &[String],
    ) -> Result<OperatorProcess, BenchError> {
        let mut flags = vec![
            format!("--gebeta-api-url={}", self.sim.base_url()),
            format!("--user-token-secret={SYSTEM_NS}/{USER_TOKEN_SECRET}"),
            // The benchmark's objects live in namespaces of their own.
            "--default-credentials-namespaces=*".into(),
            "--leader-elect=false".into(),
            format!("--instance={instance}"),
            format!("--log-level={}", self.args.operator_log_level),
        ];
        if let Some(n) = self.args.gebeta_max_in_flight {
            flags.push(format!("--gebeta-max-in-flight={n}"));
        }
        flags.extend_from_slice(extra);
        let log = self.log_dir.join(format!("{instance}.log"));
        Ok(OperatorProcess::spawn(
            &operator_binary()?,
            &self.operator_kubeconfig,
            &log,
            &flags,
        )?)
    }

    /// Waits until the operator's admin server answers `/healthz`, then up to `readyz_wait`
    /// for `/readyz`; returns the seconds from `since` to `/readyz` answering 200, or `None`
    /// when it did not within the wait (the run goes on: the figures that matter are
    /// measured on the objects).
    async fn wait_started(
        &self,
        operator: &OperatorProcess,
        since: Instant,
        readyz_wait: Duration,
    ) -> Result<Option<f64>, BenchError> {
        let alive = wait_for(
            "the operator's /healthz",
            Duration::from_secs(60),
            || async {
                if !operator.is_running() {
                    return Some(false);
                }
                self.http
                    .get(format!("{}/healthz", operator.admin_url()))
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| true)
            },
        )
        .await?;
        if !alive {
            return Err(
                format!("the operator exited; see {}", operator.log_path().display()).into(),
            );
        }
        let ready = crate::testbed::wait_until(readyz_wait, "/readyz", || async {
            admin_ready(&self.http, operator)
                .await
                .then(|| since.elapsed().as_secs_f64())
        })
        .await
        .ok();
        if ready.is_none() {
            say(format!(
                "  note: /readyz did not answer 200 within {readyz_wait:?}; going on"
            ));
        }
        Ok(ready)
    }
}

/// Runs the benchmark and returns its report (also printed and written as JSON by the
/// binary).
pub async fn run(args: BenchArgs) -> Result<Report, BenchError> {
    let started_at = Timestamp::now();
    let timeout = Duration::from_secs(args.timeout);
    let operator_bin = operator_binary()?;
    say(format!(
        "operator binary: {} (build it with `cargo build --release --bin gebeta-operator`)",
        operator_bin.display()
    ));

    // ---- setup ------------------------------------------------------------------------
    say("starting the control plane (etcd, kube-apiserver with an audit log)");
    let cp =
        ControlPlane::start_with(crate::testbed::ControlPlaneOptions { audit_log: true }).await?;
    let client = cp.client()?;
    cp.install_crds(
        &client,
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds"),
    )
    .await?;
    let audit = cp.audit_log().expect("audit log enabled");
    let operator_kubeconfig = cp.kubeconfig_as(OPERATOR_USER, &["system:masters"])?;
    let sim = Sim::start(SimConfig {
        token_ttl: Duration::from_secs(args.initial_token_ttl),
        user_tokens: vec![USER_TOKEN.into()],
        latency: Duration::from_millis(args.latency_ms),
        ..SimConfig::default()
    })
    .await?;
    let run_id = format!("run-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    // One directory per run: operator logs (and the pid files next to them) of concurrent
    // runs must not mix.
    let log_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/bench/logs")
        .join(&run_id);
    std::fs::create_dir_all(&log_dir)?;
    let env = Env {
        _cp: cp,
        sim,
        audit,
        operator_kubeconfig,
        log_dir,
        args: args.clone(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?,
    };
    let sampler = Sampler::start(env.sim.sim().clone(), started_at);
    let mut phases = vec![PhaseMark {
        name: "setup".into(),
        at: 0.0,
    }];
    let plan = Plan::new(&args, &run_id, &env.sim);
    for ns in std::iter::once(SYSTEM_NS.to_string()).chain(plan.namespaces.iter().cloned()) {
        let namespace: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await?;
    }
    create(
        &client,
        SYSTEM_NS,
        &objects::secret(
            USER_TOKEN_SECRET,
            &run_id,
            &[("token", USER_TOKEN.as_bytes())],
        ),
    )
    .await?;
    say(format!(
        "creating {} input Secrets of dashboard-made tokens",
        plan.inputs.len()
    ));
    for_each_bounded(plan.inputs.clone(), args.concurrency, |(ns, s)| {
        let client = client.clone();
        async move { create(&client, &ns, &s).await }
    })
    .await?;

    say("probing the API server's write ceiling (Secret patches per second)");
    let mut ceiling = ceiling::secret_patches(&client, SYSTEM_NS, args.concurrency).await?;
    say(format!(
        "  {:.0} Secret patches/s",
        ceiling.secret_patches_per_second
    ));

    let ready = ReadyTracker::start(&client, None, Some(&format!("{BENCH_LABEL}={run_id}")));
    let tokens = TokenObserver::start(&client, None);
    let operator = env.spawn_operator("bench-operator-1")?;
    sampler.follow(operator.pid());
    let first_readyz = env
        .wait_started(&operator, Instant::now(), Duration::from_secs(30))
        .await?;
    let idle_rss = operator.rss_kib();
    say(format!(
        "operator ready (log: {}); RSS {:.1} MiB",
        operator.log_path().display(),
        mib(idle_rss)
    ));

    // ---- (1) apply ----------------------------------------------------------------------
    let cpu_before_apply = operator.cpu_seconds().unwrap_or(0.0);
    let calls_before_apply = calls_now(&env.sim);
    say(format!(
        "applying {} GebetaServiceAccounts and {} GebetaAccessTokens ({} at a time)",
        plan.accounts.len(),
        plan.tokens.len(),
        args.concurrency
    ));
    enum Obj {
        Sa(String, Box<GebetaServiceAccount>),
        At(String, Box<GebetaAccessToken>),
    }
    let mut items = Vec::new();
    let mut accounts = plan.accounts.clone().into_iter();
    let mut toks = plan.tokens.clone().into_iter();
    loop {
        let a = accounts.next();
        let t = toks.next();
        if a.is_none() && t.is_none() {
            break;
        }
        items.extend(a.map(|(ns, o)| Obj::Sa(ns, Box::new(o))));
        items.extend(t.map(|(ns, o)| Obj::At(ns, Box::new(o))));
    }
    let applied: Arc<std::sync::Mutex<AppliedAt>> = Arc::default();
    let apply_offset = env.audit.end();
    phases.push(phase("apply", started_at));
    let apply_start = Timestamp::now();
    let apply_clock = Instant::now();
    for_each_bounded(items, args.concurrency, |item| {
        let client = client.clone();
        let applied = applied.clone();
        async move {
            let sent = Timestamp::now();
            let (kind, ns, name) = match &item {
                Obj::Sa(ns, o) => {
                    create(&client, ns, o.as_ref()).await?;
                    (Kind::ServiceAccount, ns.clone(), o.name_any())
                }
                Obj::At(ns, o) => {
                    create(&client, ns, o.as_ref()).await?;
                    (Kind::AccessToken, ns.clone(), o.name_any())
                }
            };
            applied
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((kind, ns, name), sent);
            Ok(())
        }
    })
    .await?;
    let create_seconds = secs(apply_clock.elapsed());
    say(format!(
        "created every object in {create_seconds:.1}s; waiting until all are Ready"
    ));
    let (n, m) = (plan.accounts.len(), plan.tokens.len());
    let mut last_print = Instant::now();
    wait_for("every object Ready", timeout, || {
        let done =
            ready.ever_ready(Kind::ServiceAccount) >= n && ready.ever_ready(Kind::AccessToken) >= m;
        if last_print.elapsed() > Duration::from_secs(10) {
            last_print = Instant::now();
            say(format!(
                "  Ready: {}/{n} service accounts, {}/{m} access tokens",
                ready.ever_ready(Kind::ServiceAccount),
                ready.ever_ready(Kind::AccessToken)
            ));
        }
        std::future::ready(done.then_some(()))
    })
    .await?;
    let (apply_events, _) = env.audit.read_from(apply_offset)?;
    let mut kube_requests = operator_requests(&apply_events, true);
    kube_requests.extend(operator_requests(&apply_events, false));
    let snapshot = ready.snapshot();
    let applied = applied.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut per_kind: BTreeMap<Kind, Vec<f64>> = BTreeMap::new();
    let mut last_ready = apply_start;
    for ((kind, ns, name), sent) in &applied {
        let Some(first) = snapshot
            .get(&(*kind, (ns.clone(), name.clone())))
            .and_then(|s| s.first_ready)
        else {
            continue;
        };
        last_ready = last_ready.max(first);
        per_kind
            .entry(*kind)
            .or_default()
            .push(since(first, *sent).max(0.0));
    }
    let all: Vec<f64> = per_kind.values().flatten().copied().collect();
    let ready_seconds = per_kind
        .iter()
        .map(|(kind, seconds)| {
            let mut seconds: Vec<f64> = seconds
                .iter()
                .map(|s| (s * 1000.0).round() / 1000.0)
                .collect();
            seconds.sort_by(f64::total_cmp);
            let name = match kind {
                Kind::ServiceAccount => "GebetaServiceAccount",
                Kind::AccessToken => "GebetaAccessToken",
            };
            (name.to_string(), seconds)
        })
        .collect();
    let apply = ApplyReport {
        total_seconds: since(last_ready, apply_start),
        service_accounts: Summary::of(per_kind.get(&Kind::ServiceAccount).map_or(&[], |v| v)),
        access_tokens: Summary::of(per_kind.get(&Kind::AccessToken).map_or(&[], |v| v)),
        all: Summary::of(&all),
        create_seconds,
        kube_requests,
        ready_seconds,
    };
    let cpu_apply = operator.cpu_seconds().unwrap_or(0.0) - cpu_before_apply;
    let apply_calls = call_diff(&calls_before_apply, &calls_now(&env.sim));
    say(format!(
        "all Ready {:.1}s after the first create; Gebeta calls: {apply_calls:?}",
        apply.total_seconds
    ));
    let mut gebeta_calls = Vec::new();
    for endpoint in [
        "create_account",
        "auth",
        "refresh",
        "get_account",
        "list_accounts",
        "patch_account",
        "delete_account",
    ] {
        let calls = apply_calls.get(endpoint).copied().unwrap_or(0);
        let ideal = match endpoint {
            "create_account" => Some(n as u64),
            "auth" => Some(m as u64),
            _ => Some(0),
        };
        gebeta_calls.push(CallRow {
            phase: "apply".into(),
            endpoint: endpoint.into(),
            calls,
            ideal,
            ratio: ideal.filter(|i| *i > 0).map(|i| calls as f64 / i as f64),
        });
    }

    // ---- (3) steady state ---------------------------------------------------------------
    say(format!(
        "steady state: {}s with no change",
        args.steady_seconds
    ));
    phases.push(phase("steady", started_at));
    let steady_offset = env.audit.end();
    let steady_calls_before = calls_now(&env.sim);
    let cpu_before_steady = operator.cpu_seconds().unwrap_or(0.0);
    let steady_clock = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.steady_seconds)).await;
    let steady_seconds = secs(steady_clock.elapsed());
    let (steady_events, _) = env.audit.read_from(steady_offset)?;
    let mut steady = SteadyReport {
        seconds: steady_seconds,
        kube_writes: operator_writes(&steady_events),
        gebeta_calls: call_diff(&steady_calls_before, &calls_now(&env.sim)),
        kube_writes_during_unrelated: BTreeMap::new(),
    };
    let cpu_steady = operator.cpu_seconds().unwrap_or(0.0) - cpu_before_steady;
    let steady_rss = operator.rss_kib();
    say(format!(
        "steady: operator writes {:?}, Gebeta calls {:?}, RSS {:.1} MiB",
        steady.kube_writes,
        steady.gebeta_calls,
        mib(steady_rss)
    ));

    // ---- (4) unrelated Secrets ----------------------------------------------------------
    let mut after_unrelated_rss = None;
    let mut secret_watch_kib = None;
    if args.unrelated_secrets > 0 {
        say(format!(
            "adding {} unrelated Secrets of {} KiB",
            args.unrelated_secrets, args.unrelated_secret_kb
        ));
        phases.push(phase("unrelated Secrets", started_at));
        let offset = env.audit.end();
        let items: Vec<(String, Secret)> = (0..args.unrelated_secrets)
            .map(|i| {
                (
                    plan.namespaces[i % plan.namespaces.len()].clone(),
                    objects::unrelated_secret(
                        &format!("unrelated-{i}"),
                        &run_id,
                        args.unrelated_secret_kb,
                        i as u64,
                    ),
                )
            })
            .collect();
        let meter = SocketMeter::start(operator.pid());
        let clock = Instant::now();
        for_each_bounded(items, args.concurrency.min(16), |(ns, s)| {
            let client = client.clone();
            async move { create(&client, &ns, &s).await }
        })
        .await?;
        say(format!(
            "  created in {:.1}s; letting the operator settle for {}s",
            clock.elapsed().as_secs_f64(),
            args.settle_seconds
        ));
        tokio::time::sleep(Duration::from_secs(args.settle_seconds)).await;
        after_unrelated_rss = operator.rss_kib();
        secret_watch_kib = operator.pid().map(|_| {
            (meter.bytes() as f64 / 1024.0 / args.unrelated_secrets as f64 * 10.0).round() / 10.0
        });
        drop(meter);
        let (events, _) = env.audit.read_from(offset)?;
        steady.kube_writes_during_unrelated = operator_writes(&events);
        say(format!(
            "  RSS {:.1} MiB (was {:.1}); operator writes {:?}",
            mib(after_unrelated_rss),
            mib(steady_rss),
            steady.kube_writes_during_unrelated
        ));
    }

    // ---- (6) restart --------------------------------------------------------------------
    say("restarting the operator (SIGTERM, then a new process)");
    phases.push(phase("restart", started_at));
    let peak_first = operator.peak_rss_kib();
    let cpu_first = operator.cpu_seconds().unwrap_or(0.0);
    let stop_clock = Instant::now();
    if !operator.terminate(Duration::from_secs(30)) {
        operator.kill();
    }
    let stop_seconds = secs(stop_clock.elapsed());
    sampler.follow(None);
    drop(operator);
    let restart_offset = env.audit.end();
    let restart_calls_before = calls_now(&env.sim);
    let restart_start = Timestamp::now();
    let restart_clock = Instant::now();
    let operator = env.spawn_operator("bench-operator-2")?;
    sampler.follow(operator.pid());
    let restart_meter = SocketMeter::start(operator.pid());
    let objects_total = (n + m) as u64;
    let (seconds_to_readyz, seconds_to_all_ready, seconds_to_all_reconciled) = tokio::join!(
        env.wait_started(&operator, restart_clock, Duration::from_secs(30)),
        wait_for("every object Ready after the restart", timeout, || {
            let client = client.clone();
            let run_id = run_id.clone();
            async move {
                let (a, t) = count_ready(&client, &run_id).await.ok()?;
                (a >= n && t >= m).then(|| secs(restart_clock.elapsed()))
            }
        }),
        wait_for(
            "one reconcile per object after the restart",
            timeout,
            || async {
                let total = reconciles(&env.http, &operator).await?;
                (total >= objects_total).then(|| secs(restart_clock.elapsed()))
            }
        ),
    );
    let (seconds_to_readyz, seconds_to_all_ready, seconds_to_all_reconciled) = (
        seconds_to_readyz?,
        seconds_to_all_ready?,
        seconds_to_all_reconciled?,
    );
    let window = Duration::from_secs(args.restart_window);
    if let Some(left) = window.checked_sub(restart_clock.elapsed()) {
        tokio::time::sleep(left).await;
    }
    let restart_window_seconds = secs(restart_clock.elapsed());
    let (restart_events, _) = env.audit.read_from(restart_offset)?;
    let restart_watch_mib = operator
        .pid()
        .map(|_| (restart_meter.bytes() as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0);
    drop(restart_meter);
    let restart = RestartReport {
        window_seconds: restart_window_seconds,
        stop_seconds,
        seconds_to_readyz,
        seconds_to_all_ready,
        seconds_to_all_reconciled,
        lost_ready: ready
            .lost_ready_since(restart_start)
            .into_iter()
            .map(|(kind, (ns, name), at)| format!("{kind:?} {ns}/{name} at {at}"))
            .collect(),
        gebeta_calls: call_diff(&restart_calls_before, &calls_now(&env.sim)),
        kube_writes: operator_writes(&restart_events),
        received_mib: restart_watch_mib,
    };
    let restarted_rss = operator.rss_kib();
    say(format!(
        "restart: /readyz after {seconds_to_readyz:?}s, all Ready after {seconds_to_all_ready:.1}s; Gebeta calls {:?}; operator writes {:?}",
        restart.gebeta_calls, restart.kube_writes
    ));

    // ---- (5) refresh --------------------------------------------------------------------
    say("probing the write ceiling again, the operator idle with its watches open");
    let again = ceiling::secret_patches(&client, SYSTEM_NS, args.concurrency).await?;
    ceiling.before_refresh = Some(again.secret_patches_per_second);
    say(format!(
        "  {:.0} Secret patches/s",
        again.secret_patches_per_second
    ));
    // The probe's objects take the spec of a token of the run (a run without tokens has no
    // refresh to compare it with).
    if let Some((_, gat)) = plan.tokens.first() {
        say("probing the tokens per second whose own writes the API server takes");
        let spec = serde_json::to_value(&gat.spec)?;
        let rate = ceiling::token_writes(&client, SYSTEM_NS, args.concurrency, spec).await?;
        ceiling.token_writes_per_second = Some(rate);
        say(format!("  {rate:.0} tokens/s (Secret + status apply)"));
    }
    let ttl = args.token_ttl;
    say(format!(
        "refresh phase: token lifetime {ttl}s, one requested refresh of every token, then {} lifetimes",
        args.lifetimes
    ));
    env.sim.set_token_ttl(Duration::from_secs(ttl));
    phases.push(phase("refresh", started_at));
    let refresh_offset = env.audit.end();
    let refresh_calls_before = calls_now(&env.sim);
    let cpu_before_refresh = operator.cpu_seconds().unwrap_or(0.0);
    let refresh_start = Timestamp::now();
    let refresh_clock = Instant::now();
    let request = format!("bench-{}", refresh_start.as_second());
    for_each_bounded(plan.tokens.clone(), args.concurrency, |(ns, gat)| {
        let client = client.clone();
        let request = request.clone();
        async move {
            let api: Api<GebetaAccessToken> = Api::namespaced(client, &ns);
            let patch =
                serde_json::json!({"metadata": {"annotations": {REFRESH_ANNOTATION: request}}});
            api.patch(
                &gat.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map(drop)
            .map_err(|e| format!("annotate {ns}/{}: {e}", gat.name_any()).into())
        }
    })
    .await?;
    let annotated = Timestamp::now();
    let annotate_seconds = secs(refresh_clock.elapsed());
    wait_for("every token refreshed on request", timeout, || {
        let short = tokens
            .writes_since(refresh_start)
            .iter()
            .map(|w| (w.namespace.clone(), w.name.clone()))
            .collect::<std::collections::HashSet<_>>()
            .len();
        std::future::ready((short >= m).then_some(()))
    })
    .await?;
    let requested_done = refresh_clock.elapsed();
    say(format!(
        "  every token refreshed on request after {:.1}s; observing {} lifetimes",
        requested_done.as_secs_f64(),
        args.lifetimes
    ));
    tokio::time::sleep(Duration::from_secs(ttl * u64::from(args.lifetimes))).await;
    // End the phase with no refresh in flight: stop the operator (it finishes in-flight
    // reconciles), then let the watch catch up with its last writes.
    let cpu_refresh = operator.cpu_seconds().unwrap_or(0.0) - cpu_before_refresh;
    let restarted_peak = operator.peak_rss_kib();
    let restarted_cpu = operator.cpu_seconds().unwrap_or(0.0);
    if !operator.terminate(Duration::from_secs(30)) {
        operator.kill();
    }
    sampler.follow(None);
    let phase_seconds = secs(refresh_clock.elapsed());
    let refresh_calls = call_diff(&refresh_calls_before, &calls_now(&env.sim));
    let caught_up = refresh_calls.get("refresh").copied().unwrap_or(0)
        + refresh_calls.get("auth").copied().unwrap_or(0);
    let _ = crate::testbed::wait_until(Duration::from_secs(10), "watch caught up", || {
        std::future::ready(
            (tokens.writes_since(refresh_start).len() as u64 >= caught_up).then_some(()),
        )
    })
    .await;
    let writes = tokens.writes_since(refresh_start);
    let sustained_tokens_per_second = sustained_rate(&writes, annotated, m);
    let (refresh_events, _) = env.audit.read_from(refresh_offset)?;
    let kube_writes = operator_writes(&refresh_events);
    let credentials = |e: &&AuditEvent| {
        e.resource == "secrets" && e.name == USER_TOKEN_SECRET && e.namespace == SYSTEM_NS
    };
    let kube_reads = operator_requests(refresh_events.iter().filter(|e| !credentials(e)), false);
    let credential_reads = operator_requests(refresh_events.iter().filter(credentials), false)
        .values()
        .sum();
    let mut margins = Vec::new();
    let mut margin_points = Vec::new();
    let mut fractions = Vec::new();
    let mut by_secret: BTreeMap<(String, String), Vec<Timestamp>> = BTreeMap::new();
    for w in &writes {
        by_secret
            .entry((w.namespace.clone(), w.name.clone()))
            .or_default()
            .push(w.at);
        if w.old_lifetime()
            .is_some_and(|l| l.abs_diff(ttl as i64) <= 1)
            && let Some(margin) = w.margin_seconds()
        {
            margins.push(margin);
            margin_points.extend(timeline::margin_points([w], started_at));
            fractions.push(margin / ttl as f64);
        }
    }
    let mut intervals = Vec::new();
    for times in by_secret.values() {
        // Skip the requested refresh: intervals between scheduled ones only.
        for pair in times.windows(2).skip(1) {
            intervals.push(since(pair[1], pair[0]) / ttl as f64);
        }
    }
    let total_kube_writes: u64 = kube_writes.values().sum();
    let total_kube_reads: u64 = kube_reads.values().sum();
    let writes_per_token =
        (!writes.is_empty()).then(|| total_kube_writes as f64 / writes.len() as f64);
    let ratio = |tokens_per_second: f64| {
        writes_per_token
            .map(|w| (tokens_per_second * w / ceiling.for_ratio() * 100.0).round() / 100.0)
    };
    let token_writes_ratio = |tokens_per_second: f64| {
        ceiling::against_token_writes(tokens_per_second, writes_per_token?, &ceiling)
    };
    let refresh = RefreshReport {
        lifetime_seconds: ttl,
        lifetimes_observed: args.lifetimes,
        phase_seconds,
        replacements: writes.len() as u64,
        scheduled_replacements: margins.len() as u64,
        margin_seconds: Summary::of(&margins),
        margin_fraction: Summary::of(&fractions),
        interval_fraction: Summary::of(&intervals),
        expired_holdings: {
            let mut held = tokens.expired_holdings(refresh_start);
            // After the operator stopped, tokens expire as expected: only count what happened
            // while it ran.
            held.retain(|h| !h.contains("holds a token that expired"));
            held.extend(writes.iter().filter(|w| !w.new_token_valid()).map(|w| {
                format!(
                    "{}/{}: wrote an invalid or expired token",
                    w.namespace, w.name
                )
            }));
            held
        },
        refresh_calls: refresh_calls.get("refresh").copied().unwrap_or(0),
        auth_calls: refresh_calls.get("auth").copied().unwrap_or(0),
        kube_writes_per_replacement: writes_per_token,
        kube_writes,
        kube_reads_per_replacement: (!writes.is_empty())
            .then(|| total_kube_reads as f64 / writes.len() as f64),
        kube_reads,
        credential_reads,
        requested_seconds: Some(secs(requested_done)),
        requested_tokens_per_second: Some(m as f64 / requested_done.as_secs_f64()),
        ceiling_ratio: ratio(m as f64 / requested_done.as_secs_f64()),
        annotate_seconds: Some(annotate_seconds),
        sustained_tokens_per_second,
        sustained_ceiling_ratio: sustained_tokens_per_second.and_then(ratio),
        token_writes_ratio: token_writes_ratio(m as f64 / requested_done.as_secs_f64()),
        sustained_token_writes_ratio: sustained_tokens_per_second.and_then(token_writes_ratio),
        margins: margin_points,
    };
    for (endpoint, ideal) in [
        ("refresh", Some(refresh.replacements)),
        ("auth", Some(0)),
        ("create_account", Some(0)),
    ] {
        let calls = refresh_calls.get(endpoint).copied().unwrap_or(0);
        gebeta_calls.push(CallRow {
            phase: "refresh".into(),
            endpoint: endpoint.into(),
            calls,
            ideal,
            ratio: ideal.filter(|i| *i > 0).map(|i| calls as f64 / i as f64),
        });
    }
    for (endpoint, calls) in &refresh_calls {
        if !["refresh", "auth", "create_account"].contains(&endpoint.as_str()) {
            gebeta_calls.push(CallRow {
                phase: "refresh".into(),
                endpoint: endpoint.clone(),
                calls: *calls,
                ideal: None,
                ratio: None,
            });
        }
    }

    // ---- (7) overload ---------------------------------------------------------------------
    let overload = if args.overload_seconds > 0 {
        drop(operator);
        let permits = args.overload_permits.max(1);
        let latency = Duration::from_millis(args.overload_latency_ms);
        let capacity = f64::from(permits) / latency.as_secs_f64().max(0.001);
        let demand = m as f64 / (0.62 * ttl as f64);
        say(format!(
            "overload phase: {}s, {permits} permit(s), every Gebeta call {}ms: capacity ≈ {capacity:.2}/s for ≈ {demand:.2} refreshes due/s",
            args.overload_seconds, args.overload_latency_ms
        ));
        env.sim.set_latency(latency);
        phases.push(phase("overload", started_at));
        let clock = Instant::now();
        let started = Timestamp::now();
        let overloaded = env.spawn_operator_with(
            "bench-operator-overload",
            &[format!("--max-concurrent-reconciles={permits}")],
        )?;
        sampler.follow(overloaded.pid());
        env.wait_started(&overloaded, clock, Duration::from_secs(30))
            .await?;
        let (mut overdue_peak, mut oldest_peak) = (0.0f64, 0.0f64);
        while clock.elapsed() < Duration::from_secs(args.overload_seconds) {
            if let Ok(text) = env
                .http
                .get(format!("{}/metrics", overloaded.admin_url()))
                .send()
                .await
                .and_then(|r| r.error_for_status())
            {
                let text = text.text().await.unwrap_or_default();
                let gauge = |name| overload::gauge(&text, name).unwrap_or(0.0);
                overdue_peak = overdue_peak.max(gauge("gebeta_operator_refreshes_overdue"));
                oldest_peak =
                    oldest_peak.max(gauge("gebeta_operator_refresh_oldest_overdue_seconds"));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let ended = Timestamp::now();
        let expired_at_end = tokens
            .current()
            .values()
            .filter(|exp| exp.is_none_or(|e| e <= ended.as_second()))
            .count() as u64;
        if !overloaded.terminate(Duration::from_secs(30)) {
            overloaded.kill();
        }
        sampler.follow(None);
        env.sim.set_latency(Duration::ZERO);
        let window: Vec<_> = tokens
            .writes_since(started)
            .into_iter()
            .filter(|w| w.at <= ended)
            .collect();
        let seconds = since(ended, started);
        let mut report = overload::analyze(&window, latency.as_secs_f64() + 1.0);
        report.margins = timeline::margin_points(&window, started_at);
        report.seconds = (seconds * 10.0).round() / 10.0;
        report.latency_ms = args.overload_latency_ms;
        report.permits = permits;
        report.capacity_per_second = (capacity * 100.0).round() / 100.0;
        report.demand_per_second = (demand * 100.0).round() / 100.0;
        report.served_per_second =
            (report.served as f64 / seconds.max(1.0) * 100.0).round() / 100.0;
        report.overdue_peak = overdue_peak;
        report.expired_at_end = expired_at_end;
        report.oldest_overdue_peak_seconds = (oldest_peak * 10.0).round() / 10.0;
        say(format!(
            "  served {} ({:.2}/s); inversions {} of {} pairs; expired {} ({} due after the median), {} expired at the end; overdue peak {}",
            report.served,
            report.served_per_second,
            report.inversions,
            report.pairs,
            report.expired,
            report.expired_due_after_median,
            report.expired_at_end,
            report.overdue_peak
        ));
        Some(report)
    } else {
        drop(operator);
        None
    };

    let resources = ResourceReport {
        idle_rss_mib: mib(idle_rss),
        first_start_seconds_to_readyz: first_readyz,
        peak_rss_mib: mib(peak_first),
        steady_rss_mib: mib(steady_rss),
        after_unrelated_rss_mib: after_unrelated_rss.map(|k| mib(Some(k))),
        unrelated_secrets: args.unrelated_secrets,
        unrelated_secret_kib: args.unrelated_secret_kb,
        received_kib_per_unrelated_secret: secret_watch_kib,
        cpu_seconds_apply: (cpu_apply * 100.0).round() / 100.0,
        cpu_seconds_steady: (cpu_steady * 100.0).round() / 100.0,
        cpu_seconds_first_process: cpu_first,
        restarted_rss_mib: mib(restarted_rss),
        restarted_peak_rss_mib: mib(restarted_peak),
        restarted_cpu_seconds: restarted_cpu,
        cpu_seconds_refresh_phase: (cpu_refresh * 100.0).round() / 100.0,
    };
    let samples = sampler.finish();
    let writes_at = env
        .audit
        .read_all()?
        .into_iter()
        .filter(|e| e.user == OPERATOR_USER && e.is_write())
        .map(|e| e.received);
    let timeline = Timeline {
        samples,
        kube_writes_per_second: timeline::per_second(writes_at, started_at),
        phases,
    };
    drop(ready);
    drop(tokens);
    drop(env);
    Ok(Report {
        started_at: started_at.to_string(),
        args,
        machine: Machine::detect(),
        apply,
        gebeta_calls,
        steady,
        resources,
        refresh,
        restart,
        ceiling: Some(ceiling),
        overload,
        timeline,
    })
}

fn fmt_summary(s: &Option<Summary>, unit: &str) -> String {
    match s {
        Some(s) => format!(
            "p50 {:.2}{unit}  p99 {:.2}{unit}  min {:.2}{unit}  max {:.2}{unit}  (n={})",
            s.p50, s.p99, s.min, s.max, s.count
        ),
        None => "-".into(),
    }
}

fn fmt_map(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        "0".into()
    } else {
        let total: u64 = m.values().sum();
        let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        format!("{total} ({})", parts.join(", "))
    }
}

/// The printed table: `(n) heading` lines and `    label   value` rows.
#[derive(Default)]
struct Table(String);

impl Table {
    fn line(&mut self, text: impl std::fmt::Display) {
        use std::fmt::Write as _;
        let _ = writeln!(self.0, "{text}");
    }

    fn heading(&mut self, text: impl std::fmt::Display) {
        self.line(format_args!("\n{text}"));
    }

    fn row(&mut self, label: &str, value: impl std::fmt::Display) {
        self.line(format_args!("    {label:<28} {value}"));
    }
}

fn or_dash<T>(value: Option<T>, show: impl FnOnce(T) -> String) -> String {
    value.map_or_else(|| "-".into(), show)
}

/// Reads a JSON report written by an earlier run (to print it again, or compare runs).
pub fn load_report(path: &std::path::Path) -> Result<Report, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| format!("not a gebeta-bench report: {e}"))
}

/// The report as the table the binary prints.
pub fn render(report: &Report) -> String {
    let a = &report.args;
    let mut t = Table::default();
    t.heading(format_args!(
        "gebeta-bench: N={} service accounts, M={} access tokens, sim latency {} ms, {} namespaces",
        a.accounts, a.tokens, a.latency_ms, a.namespaces
    ));
    t.line(format_args!(
        "machine: {} CPUs ({}), {:.1} GiB",
        report.machine.cpus, report.machine.cpu_model, report.machine.memory_gib
    ));

    let ap = &report.apply;
    t.heading("(1) apply -> Ready");
    t.line(format_args!(
        "    total (first create -> last Ready)   {:.1}s   (creates sent in {:.1}s)",
        ap.total_seconds, ap.create_seconds
    ));
    t.row("per object, all", fmt_summary(&ap.all, "s"));
    t.row(
        "per GebetaServiceAccount",
        fmt_summary(&ap.service_accounts, "s"),
    );
    t.row("per GebetaAccessToken", fmt_summary(&ap.access_tokens, "s"));
    if !ap.kube_requests.is_empty() {
        let objects = report.args.accounts + report.args.tokens;
        let total: u64 = ap.kube_requests.values().sum();
        t.row(
            "operator requests",
            format_args!(
                "{} ({:.2} per object)",
                fmt_map(&ap.kube_requests),
                total as f64 / objects.max(1) as f64
            ),
        );
    }
    if let Some(c) = apply_against_ceiling(report) {
        t.row(
            "against the write ceiling",
            format_args!(
                "{} operator writes + {} creates at {:.0} patches/s = {:.1}s; took {:.1}s: {:.2}",
                c.operator_writes,
                c.creates,
                c.ceiling,
                c.seconds_at_ceiling,
                report.apply.total_seconds,
                c.ratio
            ),
        );
    }

    t.heading("(2) Gebeta calls (goal: ratio 1.00, 0 where the ideal is 0)");
    let call_row = |t: &mut Table, cells: [&str; 5]| {
        let [phase, endpoint, calls, ideal, ratio] = cells;
        t.line(format_args!(
            "    {phase:<8} {endpoint:<15} {calls:>8} {ideal:>8} {ratio:>7}"
        ));
    };
    call_row(&mut t, ["phase", "endpoint", "calls", "ideal", "ratio"]);
    for row in &report.gebeta_calls {
        if row.calls == 0 && row.ideal == Some(0) {
            continue;
        }
        call_row(
            &mut t,
            [
                &row.phase,
                &row.endpoint,
                &row.calls.to_string(),
                &or_dash(row.ideal, |i| i.to_string()),
                &or_dash(row.ratio, |r| format!("{r:.2}")),
            ],
        );
    }

    let st = &report.steady;
    t.heading(format_args!(
        "(3) steady state, {:.0}s with no change (goal: 0)",
        st.seconds
    ));
    t.row("operator writes", fmt_map(&st.kube_writes));
    t.row("Gebeta calls", fmt_map(&st.gebeta_calls));

    let r = &report.resources;
    t.heading("(4) operator process");
    t.row(
        "RSS idle / steady / peak",
        format_args!(
            "{:.1} / {:.1} / {:.1} MiB",
            r.idle_rss_mib, r.steady_rss_mib, r.peak_rss_mib
        ),
    );
    match r.after_unrelated_rss_mib {
        Some(after) => {
            t.line(format_args!(
                "    RSS after {} unrelated Secrets of {} KiB   {:.1} MiB ({:+.1} MiB; goal: flat); operator writes meanwhile {}",
                r.unrelated_secrets,
                r.unrelated_secret_kib,
                after,
                after - r.steady_rss_mib,
                fmt_map(&st.kube_writes_during_unrelated)
            ));
            t.line(format_args!(
                "    received by the operator per unrelated Secret: {}",
                or_dash(r.received_kib_per_unrelated_secret, |k| format!(
                    "{k:.1} KiB"
                ))
            ));
        }
        None => t.row("unrelated Secrets", "not measured (--unrelated-secrets 0)"),
    }
    t.line(format_args!(
        "    CPU seconds: apply {:.2}, steady {:.2}, first process {:.2}; restarted process {:.2} (refresh phase {:.2})",
        r.cpu_seconds_apply,
        r.cpu_seconds_steady,
        r.cpu_seconds_first_process,
        r.restarted_cpu_seconds,
        r.cpu_seconds_refresh_phase
    ));
    t.line(format_args!(
        "    restarted process: RSS {:.1} MiB once all Ready, peak {:.1} MiB",
        r.restarted_rss_mib, r.restarted_peak_rss_mib
    ));

    let rf = &report.refresh;
    t.heading(format_args!(
        "(5) refresh: lifetime {}s, {} lifetimes after one requested refresh ({:.0}s)",
        rf.lifetime_seconds, rf.lifetimes_observed, rf.phase_seconds
    ));
    t.row(
        "new tokens",
        format_args!(
            "{} ({} scheduled)",
            rf.replacements, rf.scheduled_replacements
        ),
    );
    t.row(
        "margin before old expiry",
        fmt_summary(&rf.margin_seconds, "s"),
    );
    t.row("margin / lifetime", fmt_summary(&rf.margin_fraction, ""));
    t.row(
        "interval / lifetime",
        fmt_summary(&rf.interval_fraction, ""),
    );
    t.row(
        "expired tokens held",
        format_args!("{} (goal: 0)", rf.expired_holdings.len()),
    );
    for h in rf.expired_holdings.iter().take(5) {
        t.line(format_args!("      {h}"));
    }
    t.row(
        "operator writes",
        format_args!(
            "{} ({} per new token)",
            fmt_map(&rf.kube_writes),
            or_dash(rf.kube_writes_per_replacement, |w| format!("{w:.2}"))
        ),
    );
    if let (Some(seconds), Some(rate), Some(ratio), Some(ceiling)) = (
        rf.requested_seconds,
        rf.requested_tokens_per_second,
        rf.ceiling_ratio,
        report.ceiling.as_ref(),
    ) {
        t.row(
            "requested refresh of all",
            format_args!(
                "{seconds:.1}s, {rate:.1} tokens/s = {ratio:.2} of the write ceiling \
                 ({:.0} Secret patches/s before the refresh, {:.0} at the start; goal: >= 0.8)",
                ceiling.for_ratio(),
                ceiling.secret_patches_per_second
            ),
        );
        if let (Some(annotating), Some(rate), Some(ratio)) = (
            rf.annotate_seconds,
            rf.sustained_tokens_per_second,
            rf.sustained_ceiling_ratio,
        ) {
            t.row(
                "  once annotated",
                format_args!(
                    "{rate:.1} tokens/s = {ratio:.2} of the write ceiling, after the {annotating:.1}s \
                     the bench took to annotate every token (goal: >= 0.8)"
                ),
            );
        }
        if let (Some(tokens), Some(whole), Some(sustained)) = (
            ceiling.token_writes_per_second,
            rf.token_writes_ratio,
            rf.sustained_token_writes_ratio,
        ) {
            t.row(
                "  against a token's writes",
                format_args!(
                    "{whole:.2} whole window, {sustained:.2} once annotated, of the {tokens:.0} \
                     tokens/s whose own writes (Secret + status apply) the API server takes"
                ),
            );
        }
    }
    if let Some(per_token) = rf.kube_reads_per_replacement {
        t.row(
            "operator reads",
            format_args!(
                "{} ({per_token:.2} per new token, goal: 0)",
                fmt_map(&rf.kube_reads)
            ),
        );
        t.row(
            "credential reads",
            format_args!(
                "{} of the user-token Secret (service accounts' comparisons with upstream, \
                 not per token)",
                rf.credential_reads
            ),
        );
    }

    let rs = &report.restart;
    t.heading(format_args!(
        "(6) restart (SIGTERM took {:.1}s), window {:.0}s",
        rs.stop_seconds, rs.window_seconds
    ));
    t.row(
        "to /readyz",
        rs.seconds_to_readyz
            .map_or("never (within 30 s)".into(), |s| format!("{s:.1}s")),
    );
    t.row(
        "to every object Ready",
        format_args!(
            "{:.1}s in a fresh list (objects that stopped being Ready: {})",
            rs.seconds_to_all_ready,
            rs.lost_ready.len()
        ),
    );
    t.row(
        "to one reconcile per object",
        format_args!("{:.1}s", rs.seconds_to_all_reconciled),
    );
    t.row("Gebeta calls (goal: 0)", fmt_map(&rs.gebeta_calls));
    t.row("operator writes (goal: 0)", fmt_map(&rs.kube_writes));
    t.row(
        "received by the new process",
        or_dash(rs.received_mib, |m| format!("{m:.1} MiB")),
    );
    if let Some(o) = &report.overload {
        t.heading(format_args!(
            "(7) overload, {:.0}s: {} permit(s), Gebeta calls take {}ms",
            o.seconds, o.permits, o.latency_ms
        ));
        t.row(
            "capacity / demand / served",
            format_args!(
                "≈ {:.2} / ≈ {:.2} / {:.2} refreshes per second ({} served)",
                o.capacity_per_second, o.demand_per_second, o.served_per_second, o.served
            ),
        );
        t.row(
            "order inversions",
            format_args!(
                "{} of {} pairs served more than {:.1}s out of expiry order (worst {:.1}s)",
                o.inversions, o.pairs, o.slack_seconds, o.worst_inversion_seconds
            ),
        );
        t.row(
            "tokens expired before their refresh",
            format_args!(
                "{} ({} of them due after the median: the latest-due should be the ones); {} \
                 Secrets held an expired token at the end",
                o.expired, o.expired_due_after_median, o.expired_at_end
            ),
        );
        t.row("margin left", fmt_summary(&o.margin_seconds, "s"));
        t.row(
            "overdue gauge peak",
            format_args!(
                "{} waiting, the oldest for {:.1}s",
                o.overdue_peak, o.oldest_overdue_peak_seconds
            ),
        );
    }
    t.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored report (from `make bench`) renders to exactly the table that run printed.
    #[test]
    fn a_stored_report_renders_the_table_its_run_printed() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bench/testdata");
        let report = load_report(&path.join("report.json")).expect("a valid report");
        let printed = std::fs::read_to_string(path.join("report.txt")).unwrap();
        let rendered = format!("{}\n", render(&report));
        assert_eq!(rendered.trim_start_matches('\n'), printed);
        assert!(load_report(&path.join("report.txt")).is_err());
    }

    #[test]
    fn the_apply_is_measured_against_the_ceiling_by_its_writes() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bench/testdata");
        let report = load_report(&path.join("report-plots.json")).expect("a valid report");
        let c = apply_against_ceiling(&report).expect("requests and a ceiling recorded");
        // 50 event creates, 32 + 60 status patches, 20 finalizer patches, 60 Secret patches;
        // the 263 Secret GETs are reads.
        assert_eq!((c.operator_writes, c.creates), (222, 40));
        assert!((c.seconds_at_ceiling - 262.0 / 412.6).abs() < 1e-9);
        assert!((c.ratio - 262.0 / 412.6 / 0.775).abs() < 1e-9);
        // A report from before requests were audited has nothing to measure.
        let old = load_report(&path.join("report.json")).expect("a valid report");
        assert_eq!(apply_against_ceiling(&old), None);
    }

    fn write(name: &str, at: Timestamp) -> TokenWrite {
        TokenWrite {
            namespace: "ns".into(),
            name: name.into(),
            at,
            exp: None,
            iat: None,
            old_exp: None,
            old_iat: None,
        }
    }

    #[test]
    fn the_sustained_rate_counts_first_tokens_after_the_annotations_only() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let at = |s: i64| t0 + jiff::SignedDuration::from_secs(s);
        // a: before the annotations were done; b, c, d after, over 4 s; c written twice.
        let writes = [
            write("a", at(1)),
            write("b", at(3)),
            write("c", at(4)),
            write("c", at(9)),
            write("d", at(6)),
        ];
        assert_eq!(sustained_rate(&writes, at(2), 4), Some(3.0 / 4.0));
        // Fewer than half of the tokens after the annotations: too few to tell.
        assert_eq!(sustained_rate(&writes, at(5), 4), None);
        assert_eq!(sustained_rate(&[], at(2), 4), None);
    }
}
