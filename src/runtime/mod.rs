//! The operator process around the controllers: flags ([`cli`]), logging ([`logging`]), the
//! admin server ([`admin`]), leader election ([`lease`]) and signal handling ([`shutdown`]).
//!
//! Life of the process:
//! 1. [`Operator::from_args`] checks the configuration (CA file, API URL): a mistake is one
//!    error line and exit code 2.
//! 2. [`Operator::run`] starts the admin server, then either runs the controllers at once
//!    (`--leader-elect=false`) or joins the election and runs them only while leading.
//! 3. A leader that loses its Lease (another replica holds it, or renewals failed until the
//!    renew deadline) aborts its controllers at once, without waiting for in-flight work, and
//!    the process exits with code 1 so Kubernetes restarts it as a fresh candidate
//!    ([`RunError::LostLease`]).
//! 4. On SIGTERM/SIGINT the controllers are cancelled and awaited (up to
//!    `--shutdown-timeout`, or until the Lease is lost meanwhile: then in-flight work is
//!    abandoned at once, as in 3), the Lease is released so a standby takes over at once, and
//!    the process exits 0.
//!
//! Nothing here reads or caches Secrets: the controllers own every Secret access.

pub mod admin;
pub mod cli;
pub mod kube_http;
pub mod lease;
pub mod logging;
pub mod shutdown;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

pub use cli::Args;

use crate::{
    controllers::{self, Context, Readiness, Settings, WatchScope},
    gebeta::{ClientConfig, GebetaClient},
    metrics::Metrics,
};
use lease::{Elector, LeaseConfig};

/// Exit code of a configuration mistake (as clap uses for bad flags).
pub const EXIT_CONFIG: u8 = 2;
/// Exit code of a runtime failure, including the loss of the leader Lease.
pub const EXIT_FAILURE: u8 = 1;

/// A configuration that cannot work; printed as one line, exit code [`EXIT_CONFIG`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read --gebeta-ca-file {path}: {source}")]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--gebeta-ca-file {path}: {message}")]
    CaPem { path: PathBuf, message: String },
    #[error("invalid --gebeta-api-url {url:?}: {message}")]
    ApiUrl { url: String, message: String },
    #[error("invalid Gebeta client settings: {0}")]
    Gebeta(#[source] crate::gebeta::Error),
}

/// Why the operator stopped other than by a signal; exit code [`EXIT_FAILURE`].
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot configure the Kubernetes client: {0}")]
    Kube(#[source] kube::Error),
    #[error("cannot configure the Kubernetes client: no in-cluster or kubeconfig settings: {0}")]
    KubeConfig(#[source] kube::config::InferConfigError),
    #[error("cannot listen on --admin-addr {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error(
        "lost the leader lease: stopped reconciling; exiting so that the pod restarts as a candidate"
    )]
    LostLease,
    #[error("the leader election task ended unexpectedly")]
    ElectionEnded,
    #[error("the controllers stopped unexpectedly")]
    ControllersEnded,
}

/// `User-Agent` of every Kubernetes request, so that audit logs and API priority-and-fairness
/// rules can tell the operator's requests apart.
pub const USER_AGENT: &str = concat!("gebeta-operator/", env!("CARGO_PKG_VERSION"));

/// A Kubernetes client from the in-cluster or kubeconfig settings, naming itself, with a
/// connection pool sized for `max_concurrent_reconciles`.
async fn kube_client(max_concurrent_reconciles: u16) -> Result<kube::Client, RunError> {
    let mut config = kube::Config::infer().await.map_err(RunError::KubeConfig)?;
    config.headers.push((
        axum::http::header::USER_AGENT,
        axum::http::HeaderValue::from_static(USER_AGENT),
    ));
    let limits = kube_http::PoolLimits::for_reconciles(max_concurrent_reconciles);
    kube_http::client(config, limits).map_err(RunError::Kube)
}

/// A checked configuration, ready to run.
pub struct Operator {
    pub admin_addr: SocketAddr,
    pub gebeta: GebetaClient,
    pub settings: Settings,
    pub scope: WatchScope,
    /// `None` with `--leader-elect=false`.
    pub lease: Option<LeaseConfig>,
    pub shutdown_timeout: Duration,
}

impl Operator {
    /// Checks everything that can be checked before connecting anywhere. Builds no tokio
    /// runtime and opens no connection.
    pub fn from_args(args: &Args) -> Result<Operator, ConfigError> {
        let extra_ca_pem = match &args.gebeta.ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|source| ConfigError::CaFile {
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        let timeout = args.gebeta.timeout;
        let gebeta = GebetaClient::new(ClientConfig {
            base_url: args.gebeta.api_url.clone(),
            request_timeout: timeout,
            connect_timeout: timeout.min(Duration::from_secs(5)),
            max_in_flight: args.gebeta.max_in_flight as usize,
            rate_limit_per_second: args.gebeta.rate_limit,
            extra_ca_pem,
            ..ClientConfig::default()
        })
        .map_err(|err| match err {
            crate::gebeta::Error::Config { message } if message.starts_with("base_url") => {
                ConfigError::ApiUrl {
                    url: args.gebeta.api_url.clone(),
                    message,
                }
            }
            crate::gebeta::Error::Config { message } if message.starts_with("extra_ca_pem") => {
                ConfigError::CaPem {
                    path: args.gebeta.ca_file.clone().unwrap_or_default(),
                    message: message.replacen("extra_ca_pem", "the file", 1),
                }
            }
            other => ConfigError::Gebeta(other),
        })?;
        let instance = args
            .controllers
            .instance
            .clone()
            .filter(|i| !i.trim().is_empty())
            .unwrap_or_else(default_instance);
        let settings = Settings {
            default_user_token: args.user_token_location(),
            default_credentials_namespaces: args.default_credentials_namespaces(),
            resync_interval: args.controllers.resync_interval,
            default_token_lifetime: args.controllers.default_token_lifetime,
            max_token_lifetime: args.controllers.max_token_lifetime,
            max_concurrent_reconciles: args.controllers.max_concurrent_reconciles,
            refresh_request_interval: args.controllers.refresh_request_interval,
            instance: instance.clone(),
            audit_interval: args.gebeta.audit_interval,
        };
        let scope = WatchScope {
            namespaces: args.namespaces(),
            label_selector: args.watch.label_selector.clone(),
        };
        let lease = args.leader.leader_elect.then(|| LeaseConfig {
            name: args.leader.lease_name.clone(),
            namespace: args.leader.lease_namespace.clone(),
            identity: instance,
            duration: Duration::from_secs(args.leader.lease_duration),
            renew_interval: Duration::from_secs(args.leader.lease_renew),
        });
        Ok(Operator {
            admin_addr: args.admin.admin_addr,
            gebeta,
            settings,
            scope,
            lease,
            shutdown_timeout: args.controllers.shutdown_timeout,
        })
    }

    /// Runs until a signal (`Ok`) or a failure (the caller logs it). Installs the signal
    /// handlers itself.
    pub async fn run(self) -> Result<(), RunError> {
        let shutdown = shutdown::on_signal().map_err(RunError::Signals)?;
        self.run_until(shutdown).await
    }

    /// Runs until `shutdown` is cancelled (`Ok`) or a failure.
    pub async fn run_until(self, shutdown: CancellationToken) -> Result<(), RunError> {
        let kube = kube_client(self.settings.max_concurrent_reconciles).await?;
        let metrics = Metrics::new();
        let readiness = Readiness::default();
        let admin_stop = CancellationToken::new();

        let election = self.lease.clone().map(|config| {
            let stop = CancellationToken::new();
            let duration = config.duration;
            let (leadership, task) = Elector::new(kube.clone(), config).spawn(stop.clone());
            (leadership, task, stop, duration)
        });
        let ready = admin::ReadyCheck {
            readiness: readiness.clone(),
            leadership: election
                .as_ref()
                .map(|(rx, _, _, duration)| (rx.clone(), *duration)),
            shutdown: shutdown.clone(),
        };
        let (admin_addr, admin_task) =
            admin::serve(self.admin_addr, metrics.clone(), ready, admin_stop.clone())
                .await
                .map_err(|source| RunError::Admin {
                    addr: self.admin_addr,
                    source,
                })?;
        tracing::info!(
            %admin_addr,
            instance = %self.settings.instance,
            namespaces = ?self.scope.namespaces,
            label_selector = ?self.scope.label_selector,
            gebeta = ?self.gebeta.config(),
            leader_election = self.lease.is_some(),
            "gebeta-operator starting"
        );

        let gebeta = self.gebeta.clone().with_observer(metrics.clone());
        let ctx = Context::new(kube, gebeta, metrics.clone(), self.settings.clone());
        let result = match election {
            None => {
                metrics.leader.set(1);
                let ended = self.lead(ctx, readiness, &shutdown, None).await;
                metrics.leader.set(0);
                ended
            }
            Some((mut leadership, mut task, stop, _)) => {
                let became_leader = tokio::select! {
                    _ = shutdown.cancelled() => false,
                    changed = leadership.wait_for(|l| l.leading) => changed.is_ok(),
                };
                let result = if shutdown.is_cancelled() {
                    Ok(())
                } else if !became_leader {
                    Err(RunError::ElectionEnded)
                } else {
                    metrics.leader.set(1);
                    let ended = self
                        .lead(ctx, readiness, &shutdown, Some(&mut leadership))
                        .await;
                    metrics.leader.set(0);
                    ended
                };
                // Releases the Lease if still held (not after a loss: it is someone else's).
                stop.cancel();
                if tokio::time::timeout(Duration::from_secs(10), &mut task)
                    .await
                    .is_err()
                {
                    task.abort();
                }
                result
            }
        };
        admin_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), admin_task).await;
        if result.is_ok() {
            tracing::info!("gebeta-operator stopped");
        }
        result
    }

    /// Runs the controllers until shutdown, the loss of leadership, or their end.
    async fn lead(
        &self,
        ctx: Arc<Context>,
        readiness: Readiness,
        shutdown: &CancellationToken,
        leadership: Option<&mut tokio::sync::watch::Receiver<lease::Leadership>>,
    ) -> Result<(), RunError> {
        let stop = CancellationToken::new();
        let synced = readiness.clone();
        let mut controllers = tokio::spawn(controllers::run_all(
            ctx,
            self.scope.clone(),
            stop.clone(),
            readiness,
        ));
        tracing::info!("starting the controllers");
        let lost = async {
            match leadership {
                Some(rx) => {
                    let _ = rx.wait_for(|l| !l.leading).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(lost);
        enum End {
            Shutdown,
            Lost,
            Ended,
        }
        let end = tokio::select! {
            biased;
            _ = &mut lost => End::Lost,
            _ = shutdown.cancelled() => End::Shutdown,
            _ = &mut controllers => End::Ended,
        };
        stop.cancel();
        match end {
            End::Lost => {
                // Stop writing now: drop in-flight reconciles instead of letting them finish.
                controllers.abort();
                let _ = controllers.await;
                Err(RunError::LostLease)
            }
            End::Shutdown if !synced.is_ready() => {
                // kube-runtime holds reconciles until the watches have synced, and a graceful
                // shutdown before that would wait for a sync that never comes: nothing can be
                // in flight yet, so stop at once.
                controllers.abort();
                let _ = controllers.await;
                tracing::info!("controllers stopped before their watches synced");
                Ok(())
            }
            End::Shutdown => {
                // The lease is still watched while in-flight work drains: a replica that loses
                // it (renewals failing) must stop writing before a standby may take over, even
                // when the drain would last longer (a shutdown timeout above the lease duration).
                let drained = tokio::select! {
                    biased;
                    _ = &mut lost => None,
                    ended = tokio::time::timeout(self.shutdown_timeout, &mut controllers) => Some(ended.is_ok()),
                };
                match drained {
                    Some(true) => tracing::info!("controllers stopped"),
                    Some(false) => {
                        tracing::warn!(timeout = ?self.shutdown_timeout, "controllers did not stop in time: abandoning in-flight work");
                        controllers.abort();
                        let _ = controllers.await;
                    }
                    None => {
                        tracing::warn!(
                            "lost the leader lease while stopping: abandoning in-flight work"
                        );
                        controllers.abort();
                        let _ = controllers.await;
                    }
                }
                Ok(())
            }
            End::Ended => Err(RunError::ControllersEnded),
        }
    }
}

/// A unique identity when no `--instance`/`POD_NAME` is given: the host name and a random
/// suffix (two processes on one host must not share a Lease identity).
fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_lowercase())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gebeta-operator".into());
    format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}
