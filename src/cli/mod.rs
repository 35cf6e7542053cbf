//! `kubectl gebeta`: the operator's companion CLI (binary `kubectl-gebeta`, a kubectl plugin).
//!
//! One file per command ([`status`], [`refresh`], [`rotate`], [`audit`], [`timeline`],
//! [`completion`]); what they share: the kubeconfig handling ([`Kube`]), rows built from the
//! objects ([`view`]), what to do per condition reason ([`advice`]), times ([`time`]) and
//! output ([`output`]). Decisions and rendering are pure functions with unit tests; the I/O
//! around them is thin.
//!
//! Exit codes: 0 success; 1 failure (an error, a `refresh`/`rotate` the operator did not
//! complete in time, an `audit --fail-on` class present); 2 bad usage (clap's own errors, and
//! `audit` without a user token).

pub mod advice;
pub mod audit;
pub mod completion;
pub mod output;
pub mod refresh;
pub mod request;
pub mod rotate;
pub mod status;
pub mod time;
pub mod timeline;
pub mod view;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use kube::{
    Api, Client, Config,
    api::ListParams,
    config::{KubeConfigOptions, Kubeconfig},
};

use crate::crd::{GebetaAccessToken, GebetaServiceAccount};

/// `User-Agent` of the CLI's Kubernetes and Gebeta requests.
pub const USER_AGENT: &str = concat!("kubectl-gebeta/", env!("CARGO_PKG_VERSION"));
/// Field manager of the CLI's writes (the request annotations).
pub const FIELD_MANAGER: &str = "kubectl-gebeta";

const EXAMPLES: &str = "\
Examples:
  # Accounts and tokens of every namespace, most urgent first
  kubectl gebeta status -A

  # The same as JSON, for scripts
  kubectl gebeta status -n team-a -o json

  # Refresh an access token now and wait until the operator has done it
  kubectl gebeta refresh maps-access-token -n team-a

  # Replace a (leaked) service account by a new one and wait for the old one to be retired
  kubectl gebeta rotate maps-client -n team-a --timeout 5m

  # Audit the organization's upstream accounts; fail CI on orphans or unmanaged admins
  GEBETA_USER_TOKEN=... kubectl gebeta audit -o json --fail-on orphan,unmanaged-admin
  kubectl gebeta audit --user-token-secret gebeta-system/gebeta-user-token

  # When tokens expire and refresh over the next 6 hours
  kubectl gebeta timeline -A --hours 6

  # Shell completion
  kubectl gebeta completion bash > /etc/bash_completion.d/kubectl-gebeta

The kubeconfig is found as kubectl finds it: --kubeconfig, else $KUBECONFIG, else
~/.kube/config (in a pod: the pod's service account).";

/// `kubectl gebeta`: see and act on Gebeta service accounts and access tokens managed by
/// gebeta-operator.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "kubectl-gebeta",
    bin_name = "kubectl gebeta",
    version,
    after_help = EXAMPLES,
    max_term_width = 100,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Which cluster and namespace, as kubectl's own flags.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Kubernetes")]
pub struct KubeArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true, value_name = "NS", value_parser = parse_namespace)]
    pub namespace: Option<String>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Accounts (gsa) and tokens (gat) in one view, most urgent first, with what to do about
    /// each one that is not Ready.
    #[command(
        after_help = "Examples:\n  kubectl gebeta status\n  kubectl gebeta status -A -o json | jq '.items[] | select(.ready != \"True\")'"
    )]
    Status(status::StatusArgs),
    /// Ask the operator for a new access token now (annotation gebeta.app/refresh) and wait
    /// until it is in the Secret.
    #[command(
        after_help = "Examples:\n  kubectl gebeta refresh maps-access-token -n team-a\n  kubectl gebeta refresh maps-access-token --timeout 2m"
    )]
    Refresh(refresh::RefreshArgs),
    /// Replace a service account by a new one (annotation gebeta.app/rotate) and wait until
    /// the old one is retired.
    #[command(
        after_help = "Examples:\n  kubectl gebeta rotate maps-client -n team-a\n  kubectl gebeta rotate maps-client --timeout 15m   # with a rotation grace period"
    )]
    Rotate(rotate::RotateArgs),
    /// Classify the organization's upstream accounts: managed, orphan, unmanaged; flag
    /// revoked, suspended, admin and excess scopes.
    #[command(after_help = audit::AFTER_HELP)]
    Audit(audit::AuditArgs),
    /// When each token expires (X) and is refreshed (R) over the next hours.
    #[command(
        after_help = "Examples:\n  kubectl gebeta timeline -A\n  kubectl gebeta timeline -n team-a --hours 24"
    )]
    Timeline(timeline::TimelineArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  kubectl gebeta completion bash > ~/.local/share/bash-completion/completions/kubectl-gebeta\n  kubectl gebeta completion zsh > \"${fpath[1]}/_kubectl-gebeta\""
    )]
    Completion(completion::CompletionArgs),
}

/// Why a command failed (exit code 1, or 2 for [`CliError::Usage`]).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A mistake in how the command was called (exit code 2).
    #[error("{0}")]
    Usage(String),
    #[error("cannot load the kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_) => ExitCode::from(2),
            _ => ExitCode::from(1),
        }
    }

    fn kube(what: impl Into<String>, source: kube::Error) -> CliError {
        let what = what.into();
        // The API server's own words say more than the HTTP plumbing around them.
        match &source {
            kube::Error::Api(status) if status.code == 403 => CliError::Failed(format!(
                "{what}: forbidden: {} (check your RBAC rights)",
                status.message
            )),
            _ => CliError::Kube { what, source },
        }
    }
}

/// A Kubernetes client and the namespace commands default to.
pub struct Kube {
    pub client: Client,
    pub namespace: String,
}

impl Kube {
    /// Connects as kubectl would: `--kubeconfig`, else `$KUBECONFIG` / `~/.kube/config`, else
    /// the in-cluster service account; `--context` picks a context. Nothing is contacted yet.
    pub async fn connect(args: &KubeArgs) -> Result<Kube, CliError> {
        let options = KubeConfigOptions {
            context: args.context.clone(),
            ..KubeConfigOptions::default()
        };
        let mut config = match (&args.kubeconfig, &args.context) {
            (Some(path), _) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .map_err(|e| CliError::Kubeconfig(format!("{}: {e}", path.display())))?;
                Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|e| CliError::Kubeconfig(e.to_string()))?
            }
            (None, Some(_)) => Config::from_kubeconfig(&options)
                .await
                .map_err(|e| CliError::Kubeconfig(e.to_string()))?,
            (None, None) => Config::infer()
                .await
                .map_err(|e| CliError::Kubeconfig(e.to_string()))?,
        };
        config.headers.push((
            axum::http::header::USER_AGENT,
            axum::http::HeaderValue::from_static(USER_AGENT),
        ));
        let namespace = args
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config)
            .map_err(|e| CliError::Kubeconfig(format!("cannot build a client: {e}")))?;
        Ok(Kube { client, namespace })
    }

    /// Every GebetaServiceAccount and GebetaAccessToken of `namespace` (all when `None`).
    pub async fn list_objects(
        &self,
        namespace: Option<&str>,
    ) -> Result<(Vec<GebetaServiceAccount>, Vec<GebetaAccessToken>), CliError> {
        let where_ = namespace.map_or("in any namespace".to_string(), |ns| {
            format!("in namespace {ns}")
        });
        let accounts = self
            .api::<GebetaServiceAccount>(namespace)
            .list(&ListParams::default())
            .await
            .map_err(|e| {
                CliError::kube(format!("cannot list GebetaServiceAccounts {where_}"), e)
            })?;
        let tokens = self
            .api::<GebetaAccessToken>(namespace)
            .list(&ListParams::default())
            .await
            .map_err(|e| CliError::kube(format!("cannot list GebetaAccessTokens {where_}"), e))?;
        Ok((accounts.items, tokens.items))
    }

    /// An `Api` in `namespace`, or across all namespaces.
    pub fn api<K>(&self, namespace: Option<&str>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }
}

/// Runs a parsed command line; prints errors to stderr and returns the exit code.
pub async fn run(cli: Cli) -> ExitCode {
    match dispatch(&cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            err.exit_code()
        }
    }
}

async fn dispatch(cli: &Cli) -> Result<ExitCode, CliError> {
    if let Command::Completion(args) = &cli.command {
        completion::run(args);
        return Ok(ExitCode::SUCCESS);
    }
    let kube = Kube::connect(&cli.kube).await?;
    match &cli.command {
        Command::Status(args) => status::run(&kube, args).await.map(|()| ExitCode::SUCCESS),
        Command::Refresh(args) => refresh::run(&kube, args).await.map(|()| ExitCode::SUCCESS),
        Command::Rotate(args) => rotate::run(&kube, args).await.map(|()| ExitCode::SUCCESS),
        Command::Audit(args) => audit::run(&kube, args).await,
        Command::Timeline(args) => timeline::run(&kube, args).await.map(|()| ExitCode::SUCCESS),
        Command::Completion(_) => unreachable!("handled above"),
    }
}

/// Pretty JSON of a document.
pub fn to_json<T: serde::Serialize>(doc: &T) -> Result<String, CliError> {
    serde_json::to_string_pretty(doc)
        .map_err(|e| CliError::Failed(format!("cannot write JSON: {e}")))
}

/// YAML of a document.
pub fn to_yaml<T: serde::Serialize>(doc: &T) -> Result<String, CliError> {
    serde_yaml::to_string(doc).map_err(|e| CliError::Failed(format!("cannot write YAML: {e}")))
}

/// A DNS-1123 label, as namespace names are.
fn parse_namespace(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a valid namespace name"))
    }
}

/// An object name (a DNS-1123 subdomain).
pub fn parse_object_name(s: &str) -> Result<String, String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if s.len() <= 253 && s.split('.').all(label_ok) {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a valid object name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kubectl-gebeta").chain(args.iter().copied()))
    }

    #[test]
    fn debug_assert_command() {
        Cli::command().debug_assert();
    }

    #[test]
    fn kube_flags_are_global() {
        let cli = parse(&["status", "-n", "team-a", "--context", "prod", "-o", "json"]).unwrap();
        assert_eq!(cli.kube.namespace.as_deref(), Some("team-a"));
        assert_eq!(cli.kube.context.as_deref(), Some("prod"));
        let cli = parse(&["-n", "team-b", "refresh", "tok"]).unwrap();
        assert_eq!(cli.kube.namespace.as_deref(), Some("team-b"));
    }

    #[test]
    fn bad_usage_is_a_clap_error() {
        for bad in [
            &["status", "-o", "xml"][..],
            &["status", "-n", "Not_A_Namespace"],
            &["refresh"],
            &["refresh", "tok", "--timeout", "soon"],
            &["rotate", "acct", "--timeout", "0s"],
            &["audit", "--fail-on", "bogus"],
            &["audit", "--user-token-secret", "just-a-name"],
            &["audit", "--user-token", "x"],
            &["timeline", "--hours", "0"],
            &["completion", "tcsh"],
            &["no-such-command"],
        ] {
            let err = parse(bad).expect_err(&format!("accepted {bad:?}"));
            assert_eq!(err.exit_code(), 2, "{bad:?}: {err}");
        }
    }

    #[test]
    fn help_has_examples() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Examples:"), "{help}");
        assert!(help.contains("kubectl gebeta status -A"), "{help}");
    }
}
