//! A real local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager) for
//! the integration tests, the demo and the benchmarks.
//!
//! The binaries are built from the official Go modules by `hack/control-plane.sh` into a cache
//! outside the clone; this module only starts them. Every process runs under a small shell
//! watchdog that kills it when the process that started it dies (also on a panic or a kill -9
//! of a test binary), so no server outlives its test run.

pub mod audit;
mod keys;
pub mod operator;
mod process;

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client, Config,
    api::{Patch, PatchParams},
};

pub use audit::{AuditEvent, AuditLog};
pub use operator::{OperatorProcess, operator_binary};
use process::Supervised;

/// Environment variable naming a directory that already holds the control-plane binaries.
pub const BIN_DIR_ENV: &str = "GEBETA_CONTROL_PLANE_BIN";
/// Field manager of everything the testbed applies.
const FIELD_MANAGER: &str = "gebeta-testbed";

#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error(
        "the control-plane binaries are not available: {0}. Run `hack/control-plane.sh` (needs Go and the Go module proxy) or set {BIN_DIR_ENV}"
    )]
    Binaries(String),
    #[error("cannot prepare the control plane: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "{component} did not become ready within {waited:?}; last lines of its log:\n{log_tail}"
    )]
    NotReady {
        component: &'static str,
        waited: Duration,
        log_tail: String,
    },
    #[error("{component} exited during start-up; last lines of its log:\n{log_tail}")]
    Exited {
        component: &'static str,
        log_tail: String,
    },
    #[error("kubernetes client error: {0}")]
    Kube(#[from] kube::Error),
    #[error("invalid CRD file {path}: {message}")]
    Crd { path: String, message: String },
}

/// Where the control-plane binaries are: `$GEBETA_CONTROL_PLANE_BIN`, or the cache filled by
/// `hack/control-plane.sh` (which builds them first when they are missing).
pub fn bin_dir() -> Result<PathBuf, TestbedError> {
    if let Ok(dir) = std::env::var(BIN_DIR_ENV) {
        return Ok(PathBuf::from(dir));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/control-plane.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| TestbedError::Binaries(format!("cannot run {}: {e}", script.display())))?;
    if !out.status.success() {
        return Err(TestbedError::Binaries(format!(
            "{} failed ({})",
            script.display(),
            out.status
        )));
    }
    let dir = PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim(),
    );
    for bin in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kubectl",
    ] {
        if !dir.join(bin).is_file() {
            return Err(TestbedError::Binaries(format!(
                "{} is missing",
                dir.join(bin).display()
            )));
        }
    }
    Ok(dir)
}

/// Picks a free loopback port. The port is released before use, so a race with another
/// process is possible but harmless here: start-up fails loudly and the caller retries.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Optional features of a [`ControlPlane`]; `Default` is what [`ControlPlane::start`] runs.
#[derive(Clone, Debug, Default)]
pub struct ControlPlaneOptions {
    /// Start kube-apiserver with an audit log of every write request (see [`audit`]); read it
    /// through [`ControlPlane::audit_log`].
    pub audit_log: bool,
}

/// A running control plane. Dropping it stops every process and removes its data.
pub struct ControlPlane {
    dir: PathBuf,
    audit_log: bool,
    bin: PathBuf,
    etcd_port: u16,
    etcd_peer_port: u16,
    apiserver_port: u16,
    admin_token: String,
    etcd: Option<Supervised>,
    apiserver: Option<Supervised>,
    controller_manager: Option<Supervised>,
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager (garbage collector and
    /// namespace controllers only) on free loopback ports and waits until the API is ready.
    pub async fn start() -> Result<Self, TestbedError> {
        Self::start_with(ControlPlaneOptions::default()).await
    }

    /// Like [`ControlPlane::start`], with optional features.
    pub async fn start_with(options: ControlPlaneOptions) -> Result<Self, TestbedError> {
        let bin = bin_dir()?;
        let dir = std::env::temp_dir().join(format!(
            "gebeta-cp-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(dir.join("etcd"))?;
        process::remove_when_gone(&dir)?;
        let admin_token = uuid::Uuid::new_v4().simple().to_string();
        std::fs::write(
            dir.join("tokens.csv"),
            format!("{admin_token},gebeta-admin,gebeta-admin,\"system:masters\"\n"),
        )?;
        let (private_pem, public_pem) = keys::service_account_key_pair();
        std::fs::write(dir.join("sa.key"), private_pem)?;
        std::fs::write(dir.join("sa.pub"), public_pem)?;
        if options.audit_log {
            std::fs::write(dir.join("audit-policy.yaml"), audit::POLICY)?;
        }
        let mut cp = ControlPlane {
            dir,
            audit_log: options.audit_log,
            bin,
            etcd_port: free_port()?,
            etcd_peer_port: free_port()?,
            apiserver_port: free_port()?,
            admin_token,
            etcd: None,
            apiserver: None,
            controller_manager: None,
        };
        cp.write_kubeconfig()?;
        cp.start_etcd().await?;
        cp.start_apiserver().await?;
        cp.start_controller_manager()?;
        Ok(cp)
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.apiserver_port)
    }

    /// A kubeconfig with cluster-admin rights, for kubectl, helm and child processes.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// A kubeconfig (written on first use) whose requests act as `user` in `groups` through
    /// impersonation, so that the audit log attributes them to `user`. With the group
    /// `system:masters` the user has every right.
    pub fn kubeconfig_as(&self, user: &str, groups: &[&str]) -> std::io::Result<PathBuf> {
        let safe: String = user
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let path = self.dir.join(format!("kubeconfig-as-{safe}"));
        let groups: Vec<String> = groups.iter().map(|g| format!("\"{g}\"")).collect();
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: gebeta-local\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\nusers:\n- name: {safe}\n  user:\n    token: {token}\n    as: \"{user}\"\n    as-groups: [{groups}]\ncontexts:\n- name: gebeta-local\n  context:\n    cluster: gebeta-local\n    user: {safe}\n    namespace: default\ncurrent-context: gebeta-local\n",
            server = self.server_url(),
            token = self.admin_token,
            groups = groups.join(", "),
        );
        std::fs::write(&path, kubeconfig)?;
        Ok(path)
    }

    /// The audit log, when started with [`ControlPlaneOptions::audit_log`].
    pub fn audit_log(&self) -> Option<AuditLog> {
        self.audit_log
            .then(|| AuditLog::new(&self.dir.join("audit.log")))
    }

    /// Directory of the control-plane binaries (kubectl, helm).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// A client with cluster-admin rights. Build one per tokio runtime: a client is bound to
    /// the runtime it was created on.
    pub fn client(&self) -> Result<Client, TestbedError> {
        Ok(Client::try_from(self.config())?)
    }

    /// A client acting as `user` (with `groups`) through impersonation, to test RBAC.
    pub fn client_as(&self, user: &str, groups: &[&str]) -> Result<Client, TestbedError> {
        let mut config = self.config();
        config.auth_info.impersonate = Some(user.to_string());
        config.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
        Ok(Client::try_from(config)?)
    }

    /// The client configuration with cluster-admin rights.
    pub fn config(&self) -> Config {
        let mut config = Config::new(self.server_url().parse().expect("a valid URL"));
        config.accept_invalid_certs = true;
        config.auth_info.token = Some(self.admin_token.clone().into());
        config.default_namespace = "default".into();
        config
    }

    /// Applies every CRD in `dir` (server-side apply) and waits until each is Established.
    pub async fn install_crds(&self, client: &Client, dir: &Path) -> Result<(), TestbedError> {
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        let mut names = Vec::new();
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.path());
        for entry in entries {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path)?;
            let crd: CustomResourceDefinition =
                serde_yaml::from_str(&text).map_err(|e| TestbedError::Crd {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
            let name = crd.metadata.name.clone().unwrap_or_default();
            api.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&crd),
            )
            .await?;
            names.push(name);
        }
        for name in names {
            wait_until(Duration::from_secs(60), "CRD Established", || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    let crd = api.get(&name).await.ok()?;
                    let established = crd
                        .status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    established.then_some(())
                }
            })
            .await
            .map_err(|waited| TestbedError::NotReady {
                component: "CRD",
                waited,
                log_tail: name.clone(),
            })?;
        }
        Ok(())
    }

    /// Stops and restarts kube-apiserver on the same port (watches must recover).
    pub async fn restart_apiserver(&mut self) -> Result<(), TestbedError> {
        drop(self.apiserver.take());
        self.start_apiserver().await
    }

    /// Stops and restarts etcd with the same data (the API server must recover).
    pub async fn restart_etcd(&mut self) -> Result<(), TestbedError> {
        drop(self.etcd.take());
        self.start_etcd().await?;
        self.wait_apiserver_ready().await
    }

    fn write_kubeconfig(&self) -> std::io::Result<()> {
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: gebeta-local\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\nusers:\n- name: gebeta-admin\n  user:\n    token: {token}\ncontexts:\n- name: gebeta-local\n  context:\n    cluster: gebeta-local\n    user: gebeta-admin\n    namespace: default\ncurrent-context: gebeta-local\n",
            server = self.server_url(),
            token = self.admin_token,
        );
        std::fs::write(self.kubeconfig_path(), kubeconfig)
    }

    async fn start_etcd(&mut self) -> Result<(), TestbedError> {
        let client_url = format!("http://127.0.0.1:{}", self.etcd_port);
        let peer_url = format!("http://127.0.0.1:{}", self.etcd_peer_port);
        let etcd = Supervised::spawn(
            "etcd",
            &self.bin.join("etcd"),
            &[
                "--name=default".into(),
                format!("--data-dir={}", self.dir.join("etcd").display()),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
                "--quota-backend-bytes=8589934592".into(),
            ],
            &self.dir.join("etcd.log"),
        )?;
        let http = reqwest::Client::new();
        let health = format!("{client_url}/health");
        let waited = wait_for_process(&etcd, Duration::from_secs(60), || {
            let http = http.clone();
            let health = health.clone();
            async move {
                http.get(&health)
                    .send()
                    .await
                    .ok()?
                    .status()
                    .is_success()
                    .then_some(())
            }
        })
        .await;
        self.etcd = Some(etcd);
        waited.map_err(|e| e.with_log(self.etcd.as_ref().expect("just set")))
    }

    async fn start_apiserver(&mut self) -> Result<(), TestbedError> {
        let dir = &self.dir;
        let mut args: Vec<String> = vec![
            format!("--etcd-servers=http://127.0.0.1:{}", self.etcd_port),
            format!("--secure-port={}", self.apiserver_port),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--cert-dir={}", dir.join("certs").display()),
            format!("--token-auth-file={}", dir.join("tokens.csv").display()),
            "--authorization-mode=RBAC".into(),
            // On top of the default plugins, as on clusters that enforce it (e.g. OpenShift):
            // an owner reference with blockOwnerDeletion needs `update` on the owner's
            // `finalizers` subresource, which the chart's RBAC must then grant.
            "--enable-admission-plugins=OwnerReferencesPermissionEnforcement".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!(
                "--service-account-key-file={}",
                dir.join("sa.pub").display()
            ),
            format!(
                "--service-account-signing-key-file={}",
                dir.join("sa.key").display()
            ),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            "--enable-priority-and-fairness=false".into(),
            "--endpoint-reconciler-type=none".into(),
            "--v=0".into(),
        ];
        if self.audit_log {
            args.extend([
                format!(
                    "--audit-policy-file={}",
                    dir.join("audit-policy.yaml").display()
                ),
                format!("--audit-log-path={}", dir.join("audit.log").display()),
                "--audit-log-format=json".into(),
                "--audit-log-mode=blocking".into(),
                "--audit-log-maxsize=0".into(),
                "--audit-log-maxbackup=0".into(),
            ]);
        }
        let apiserver = Supervised::spawn(
            "kube-apiserver",
            &self.bin.join("kube-apiserver"),
            &args,
            &dir.join("kube-apiserver.log"),
        )?;
        self.apiserver = Some(apiserver);
        self.wait_apiserver_ready().await
    }

    async fn wait_apiserver_ready(&self) -> Result<(), TestbedError> {
        let apiserver = self.apiserver.as_ref().expect("started");
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| TestbedError::Binaries(e.to_string()))?;
        let readyz = format!("{}/readyz", self.server_url());
        let token = self.admin_token.clone();
        wait_for_process(apiserver, Duration::from_secs(180), || {
            let http = http.clone();
            let readyz = readyz.clone();
            let token = token.clone();
            async move {
                http.get(&readyz)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .ok()?
                    .status()
                    .is_success()
                    .then_some(())
            }
        })
        .await
        .map_err(|e| e.with_log(apiserver))
    }

    fn start_controller_manager(&mut self) -> Result<(), TestbedError> {
        let kcm = Supervised::spawn(
            "kube-controller-manager",
            &self.bin.join("kube-controller-manager"),
            &[
                format!("--kubeconfig={}", self.kubeconfig_path().display()),
                "--controllers=garbagecollector,namespace".into(),
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
                "--concurrent-gc-syncs=5".into(),
                "--v=0".into(),
            ],
            &self.dir.join("kube-controller-manager.log"),
        )?;
        self.controller_manager = Some(kcm);
        Ok(())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        drop(self.controller_manager.take());
        drop(self.apiserver.take());
        drop(self.etcd.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Why a wait ended without success.
enum WaitError {
    Timeout(&'static str, Duration),
    Exited(&'static str),
}

impl WaitError {
    fn with_log(self, process: &Supervised) -> TestbedError {
        let log_tail = process.log_tail(30);
        match self {
            WaitError::Timeout(component, waited) => TestbedError::NotReady {
                component,
                waited,
                log_tail,
            },
            WaitError::Exited(component) => TestbedError::Exited {
                component,
                log_tail,
            },
        }
    }
}

/// Polls `probe` every 200 ms until it yields, the process exits, or `deadline` passes.
async fn wait_for_process<F, Fut>(
    process: &Supervised,
    deadline: Duration,
    mut probe: F,
) -> Result<(), WaitError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<()>>,
{
    let start = Instant::now();
    loop {
        if probe().await.is_some() {
            return Ok(());
        }
        if !process.is_running() {
            return Err(WaitError::Exited(process.name()));
        }
        if start.elapsed() > deadline {
            return Err(WaitError::Timeout(process.name(), deadline));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `probe` every 100 ms until it yields a value or `deadline` passes (returning how long
/// it waited). The one polling primitive of tests, demo and benchmarks.
pub async fn wait_until<T, F, Fut>(
    deadline: Duration,
    _what: &str,
    mut probe: F,
) -> Result<T, Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if start.elapsed() > deadline {
            return Err(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
