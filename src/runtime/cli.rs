//! Command-line flags of `gebeta-operator`, each with an environment variable, in groups
//! flattened into [`Args`] (the kubert way). Values are checked while parsing, so a bad flag
//! is a clap error (exit code 2) before anything starts.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{ArgAction, Args as ClapArgs, Parser, ValueEnum};

use crate::controllers::SecretLocation;

/// `gebeta-operator`: manages Gebeta Maps service accounts and keeps their short-lived access
/// tokens fresh in Kubernetes Secrets.
#[derive(Parser, Debug, Clone)]
// A repeated flag overrides the earlier one (so the chart's `extraArgs` can override).
#[command(
    name = "gebeta-operator",
    version,
    about,
    max_term_width = 100,
    args_override_self = true
)]
pub struct Args {
    #[command(flatten)]
    pub gebeta: GebetaArgs,
    #[command(flatten)]
    pub watch: WatchArgs,
    #[command(flatten)]
    pub controllers: ControllerArgs,
    #[command(flatten)]
    pub leader: LeaderArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// The Gebeta Maps API.
#[derive(ClapArgs, Debug, Clone)]
#[command(next_help_heading = "Gebeta API")]
pub struct GebetaArgs {
    /// Base URL of the Gebeta Maps API.
    #[arg(long = "gebeta-api-url", env = "GEBETA_API_URL", default_value = crate::gebeta::wire::DEFAULT_BASE_URL, value_name = "URL")]
    pub api_url: String,
    /// Secret holding the operator's default Gebeta user (management) token, as
    /// `namespace/name`; used by GebetaServiceAccounts that name no `userTokenSecretRef`.
    #[arg(long = "user-token-secret", env = "GEBETA_USER_TOKEN_SECRET", value_name = "NAMESPACE/NAME", value_parser = parse_secret_ref)]
    pub user_token_secret: Option<(String, String)>,
    /// Namespaces whose GebetaServiceAccounts may use `--user-token-secret` (comma-separated;
    /// `*` for every namespace). Default: only the namespace of that Secret. Elsewhere an
    /// object must name its own `userTokenSecretRef` (else `CredentialsNotAllowed`, and no
    /// Gebeta call).
    #[arg(
        long = "default-credentials-namespaces",
        env = "GEBETA_DEFAULT_CREDENTIALS_NAMESPACES",
        value_name = "NS,...|*",
        value_delimiter = ','
    )]
    pub default_credentials_namespaces: Vec<String>,
    /// Key of the user token in `--user-token-secret`.
    #[arg(long = "user-token-key", env = "GEBETA_USER_TOKEN_KEY", default_value = "token", value_name = "KEY", value_parser = parse_secret_key)]
    pub user_token_key: String,
    /// Gebeta requests in flight at once (all objects together).
    #[arg(long = "gebeta-max-in-flight", env = "GEBETA_MAX_IN_FLIGHT", default_value_t = 32, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_in_flight: u32,
    /// Gebeta requests per second (all objects together); unlimited when unset.
    #[arg(long = "gebeta-rate-limit", env = "GEBETA_RATE_LIMIT", value_name = "PER_SECOND", value_parser = parse_rate)]
    pub rate_limit: Option<f64>,
    /// Time limit of one Gebeta request attempt (seconds, or a duration such as `10s`).
    #[arg(long = "gebeta-timeout", env = "GEBETA_TIMEOUT", default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Duration,
    /// PEM file of extra CA certificates trusted for the Gebeta API (added to the built-in roots).
    #[arg(long = "gebeta-ca-file", env = "GEBETA_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// Audit the organization's upstream accounts this often (e.g. `1h`) and export the counts
    /// as metrics (`upstream_accounts{class}`): one organization list per interval, on the
    /// leader, with `--user-token-secret`. Off when unset.
    #[arg(long = "audit-interval", env = "GEBETA_AUDIT_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub audit_interval: Option<Duration>,
}

/// What the controllers watch.
#[derive(ClapArgs, Debug, Clone)]
#[command(next_help_heading = "Watch scope")]
pub struct WatchArgs {
    /// Namespaces to watch, comma-separated; all namespaces when empty.
    #[arg(long = "namespaces", env = "GEBETA_NAMESPACES", value_delimiter = ',', value_name = "NS,...", value_parser = parse_namespace_item)]
    pub namespaces: Vec<String>,
    /// Only reconcile GebetaServiceAccounts and GebetaAccessTokens matching this label selector
    /// (e.g. `shard=a` or `tier in (a,b)`), to shard work between operator deployments.
    #[arg(long = "label-selector", env = "GEBETA_LABEL_SELECTOR", value_name = "SELECTOR", value_parser = parse_selector)]
    pub label_selector: Option<String>,
}

/// Controller behaviour.
#[derive(ClapArgs, Debug, Clone)]
#[command(next_help_heading = "Controllers")]
pub struct ControllerArgs {
    /// How often an unchanged GebetaServiceAccount is compared with its upstream account
    /// (seconds, or a duration such as `10m`).
    #[arg(long = "resync-interval", env = "GEBETA_RESYNC_INTERVAL", default_value = "10m", value_name = "DURATION", value_parser = parse_duration)]
    pub resync_interval: Duration,
    /// Lifetime assumed for an access token whose JWT carries no `exp` (seconds, or a duration
    /// such as `1h`).
    #[arg(long = "default-token-lifetime", env = "GEBETA_DEFAULT_TOKEN_LIFETIME", default_value = "1h", value_name = "DURATION", value_parser = parse_duration)]
    pub default_token_lifetime: Duration,
    /// Longest access-token lifetime believed: a JWT whose `exp` lies further ahead is planned
    /// with `--default-token-lifetime` instead (a token valid for years is a mistake upstream,
    /// and trusting it would mean never refreshing).
    #[arg(long = "max-token-lifetime", env = "GEBETA_MAX_TOKEN_LIFETIME", default_value = "720h", value_name = "DURATION", value_parser = parse_duration)]
    pub max_token_lifetime: Duration,
    /// Work done at once per controller: service-account reconciles; access-token Gebeta calls
    /// and writes, served earliest token expiry first. Gebeta calls are bounded separately
    /// by `--gebeta-max-in-flight`.
    #[arg(long = "max-concurrent-reconciles", env = "GEBETA_MAX_CONCURRENT_RECONCILES", default_value_t = 16, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub max_concurrent_reconciles: u16,
    /// How long after an access token's last Gebeta call a call that only a refresh request
    /// (`gebeta.app/refresh`) or changed input tokens ask for waits: both are in the tenant's
    /// hands, and a loop of new values would otherwise make a call each (`0s`: no wait).
    #[arg(long = "refresh-request-interval", env = "GEBETA_REFRESH_REQUEST_INTERVAL", default_value = "10s", value_name = "DURATION", value_parser = parse_duration_or_zero)]
    pub refresh_request_interval: Duration,
    /// Identity of this replica in events and in the leader Lease (the pod name); a
    /// host-derived unique name when unset.
    #[arg(long = "instance", env = "POD_NAME", value_name = "NAME")]
    pub instance: Option<String>,
    /// Time allowed, after SIGTERM, for in-flight reconciles to finish before the lease is
    /// released and the process exits (keep it below the pod's termination grace period).
    #[arg(long = "shutdown-timeout", env = "GEBETA_SHUTDOWN_TIMEOUT", default_value = "15s", value_name = "DURATION", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

/// Leader election on a `coordination.k8s.io` Lease.
#[derive(ClapArgs, Debug, Clone)]
#[command(next_help_heading = "Leader election")]
pub struct LeaderArgs {
    /// Elect one leader among the replicas through a Lease; only the leader reconciles.
    /// `--leader-elect=false` reconciles at once (run a single replica then).
    #[arg(long = "leader-elect", env = "GEBETA_LEADER_ELECT", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub leader_elect: bool,
    /// Name of the Lease.
    #[arg(long = "lease-name", env = "GEBETA_LEASE_NAME", default_value = "gebeta-operator", value_name = "NAME", value_parser = parse_object_name)]
    pub lease_name: String,
    /// Namespace of the Lease (the operator's own namespace).
    #[arg(long = "lease-namespace", env = "POD_NAMESPACE", default_value = "default", value_name = "NS", value_parser = parse_namespace)]
    pub lease_namespace: String,
    /// Lease duration in seconds: a standby takes over this long after the leader's last
    /// renewal.
    #[arg(long = "lease-duration", env = "GEBETA_LEASE_DURATION", default_value_t = 15, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub lease_duration: u64,
    /// Seconds between renewals by the leader (and checks by a standby). Must be below
    /// `--lease-duration`; a leader that has not renewed for `duration - renew` seconds stops
    /// reconciling.
    #[arg(long = "lease-renew", env = "GEBETA_LEASE_RENEW", default_value_t = 5, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3599))]
    pub lease_renew: u64,
}

/// The admin HTTP server.
#[derive(ClapArgs, Debug, Clone)]
#[command(next_help_heading = "Admin server")]
pub struct AdminArgs {
    /// Address of the admin server (`/healthz`, `/readyz`, `/metrics`).
    #[arg(
        long = "admin-addr",
        env = "GEBETA_ADMIN_ADDR",
        default_value = "0.0.0.0:8080",
        value_name = "ADDR"
    )]
    pub admin_addr: SocketAddr,
}

/// Logging.
#[derive(ClapArgs, Debug, Clone)]
#[command(next_help_heading = "Logging")]
pub struct LogArgs {
    /// Log filter: a level (`info`, `debug`, ...) or `tracing` directives such as
    /// `info,gebeta_operator=debug,kube=warn`. Falls back to `RUST_LOG`.
    #[arg(long = "log-level", env = "RUST_LOG", default_value = "info", value_name = "FILTER", value_parser = parse_log_filter)]
    pub log_level: String,
    /// Log format.
    #[arg(
        long = "log-format",
        env = "GEBETA_LOG_FORMAT",
        default_value = "text",
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,
}

/// How log lines are written (to stderr).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Args {
    /// Checks that need several flags at once; the error prints like any clap error.
    pub fn validate(&self) -> Result<(), clap::Error> {
        use clap::CommandFactory as _;
        if self.gebeta.audit_interval.is_some() && self.gebeta.user_token_secret.is_none() {
            return Err(Args::command().error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--audit-interval needs --user-token-secret: the audit lists the organization's \
                 accounts with the operator's default user token",
            ));
        }
        if self.leader.lease_renew >= self.leader.lease_duration {
            return Err(Args::command().error(
                clap::error::ErrorKind::ArgumentConflict,
                format!(
                    "--lease-renew ({}s) must be less than --lease-duration ({}s)",
                    self.leader.lease_renew, self.leader.lease_duration
                ),
            ));
        }
        Ok(())
    }

    /// The default user token Secret, if one was given.
    pub fn user_token_location(&self) -> Option<SecretLocation> {
        self.gebeta
            .user_token_secret
            .as_ref()
            .map(|(namespace, name)| SecretLocation {
                namespace: namespace.clone(),
                name: name.clone(),
                key: self.gebeta.user_token_key.clone(),
            })
    }

    /// Namespaces allowed to use the default user token (`None`: all).
    pub fn default_credentials_namespaces(&self) -> Option<Vec<String>> {
        let listed: Vec<String> = self
            .gebeta
            .default_credentials_namespaces
            .iter()
            .map(|ns| ns.trim().to_string())
            .filter(|ns| !ns.is_empty())
            .collect();
        if listed.iter().any(|ns| ns == "*") {
            return None;
        }
        if listed.is_empty() {
            return Some(
                self.gebeta
                    .user_token_secret
                    .iter()
                    .map(|(ns, _)| ns.clone())
                    .collect(),
            );
        }
        Some(listed)
    }

    /// Watched namespaces, without duplicates (empty = all).
    pub fn namespaces(&self) -> Vec<String> {
        let mut namespaces: Vec<String> = Vec::new();
        for ns in self.watch.namespaces.iter().filter(|ns| !ns.is_empty()) {
            if !namespaces.contains(ns) {
                namespaces.push(ns.clone());
            }
        }
        namespaces
    }
}

/// Parses `600` (seconds) or a duration such as `10m`, `1h30m`, `90s` or `PT10M`; must be > 0.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let duration = parse_duration_or_zero(s)?;
    if duration.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(duration)
}

/// A duration as [`parse_duration`] reads it, zero allowed (for a wait that `0s` turns off).
fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let duration = if let Ok(seconds) = s.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        let signed: jiff::SignedDuration = s
            .parse()
            .map_err(|_| format!("{s:?} is not a duration (e.g. `90`, `90s`, `10m`, `1h30m`)"))?;
        if signed.is_negative() {
            return Err("must not be negative".into());
        }
        signed.unsigned_abs()
    };
    Ok(duration)
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    // The limiter spaces calls 1/rate apart: below this the spacing is no longer a duration.
    const SLOWEST: f64 = 0.001;
    if rate.is_finite() && rate >= SLOWEST {
        Ok(rate)
    } else {
        Err(format!(
            "must be a number of calls per second of at least {SLOWEST}"
        ))
    }
}

/// A DNS-1123 label (namespace names).
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain (most object names).
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn parse_namespace(s: &str) -> Result<String, String> {
    let s = s.trim();
    if is_dns_label(s) {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a valid namespace name"))
    }
}

/// One item of `--namespaces`; an empty item (e.g. an empty env value) means "none given".
fn parse_namespace_item(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Ok(String::new())
    } else {
        parse_namespace(s)
    }
}

fn parse_object_name(s: &str) -> Result<String, String> {
    let s = s.trim();
    if is_dns_subdomain(s) {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a valid object name"))
    }
}

fn parse_secret_ref(s: &str) -> Result<(String, String), String> {
    let (namespace, name) = s
        .trim()
        .split_once('/')
        .ok_or_else(|| format!("{s:?} must be written as NAMESPACE/NAME"))?;
    Ok((parse_namespace(namespace)?, parse_object_name(name)?))
}

fn parse_secret_key(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a valid Secret key"))
    }
}

/// Light syntax check of a label selector; the API server has the last word.
fn parse_selector(s: &str) -> Result<String, String> {
    let s = s.trim();
    let balanced = s.matches('(').count() == s.matches(')').count();
    if s.is_empty() || !balanced || s.contains(",,") || s.starts_with(',') || s.ends_with(',') {
        return Err(format!("{s:?} is not a valid label selector"));
    }
    Ok(s.to_string())
}

fn parse_log_filter(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("{s:?} is not a valid log filter: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        let args =
            Args::try_parse_from(std::iter::once("gebeta-operator").chain(args.iter().copied()))?;
        args.validate()?;
        Ok(args)
    }

    #[test]
    fn debug_assert_command() {
        use clap::CommandFactory as _;
        Args::command().debug_assert();
    }

    #[test]
    fn default_credentials_stay_in_their_namespace_unless_allowed() {
        let args = parse(&["--user-token-secret=ops/gebeta"]).unwrap();
        assert_eq!(
            args.default_credentials_namespaces(),
            Some(vec!["ops".to_string()]),
            "by default only the Secret's own namespace"
        );
        let args = parse(&[
            "--user-token-secret=ops/gebeta",
            "--default-credentials-namespaces=team-a, team-b",
        ])
        .unwrap();
        assert_eq!(
            args.default_credentials_namespaces(),
            Some(vec!["team-a".to_string(), "team-b".to_string()])
        );
        let args = parse(&[
            "--user-token-secret=ops/gebeta",
            "--default-credentials-namespaces=*",
        ])
        .unwrap();
        assert_eq!(
            args.default_credentials_namespaces(),
            None,
            "every namespace"
        );
    }

    #[test]
    fn durations_accept_seconds_and_units() {
        assert_eq!(parse_duration("600"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("PT2M"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn secret_refs_need_namespace_and_name() {
        assert_eq!(
            parse_secret_ref("gebeta/user-token"),
            Ok(("gebeta".into(), "user-token".into()))
        );
        assert!(parse_secret_ref("user-token").is_err());
        assert!(parse_secret_ref("Gebeta/x").is_err());
        assert!(parse_secret_ref("ns/").is_err());
    }

    #[test]
    fn flags_fill_the_groups() {
        let args = parse(&[
            "--gebeta-api-url=http://127.0.0.1:9/api/v1",
            "--user-token-secret=ops/gebeta",
            "--namespaces=a,b,a",
            "--label-selector=shard=a",
            "--leader-elect=false",
            "--lease-duration=4",
            "--lease-renew=1",
            "--resync-interval=30",
            "--max-concurrent-reconciles=4",
            "--gebeta-rate-limit=2.5",
            "--refresh-request-interval=0s",
            "--log-format=json",
        ])
        .unwrap();
        assert_eq!(args.controllers.refresh_request_interval, Duration::ZERO);
        assert_eq!(args.namespaces(), vec!["a".to_string(), "b".to_string()]);
        assert!(!args.leader.leader_elect);
        assert_eq!(args.controllers.resync_interval, Duration::from_secs(30));
        assert_eq!(args.controllers.max_concurrent_reconciles, 4);
        assert_eq!(args.gebeta.rate_limit, Some(2.5));
        assert_eq!(args.log.log_format, LogFormat::Json);
        let loc = args.user_token_location().unwrap();
        assert_eq!(
            (loc.namespace.as_str(), loc.name.as_str(), loc.key.as_str()),
            ("ops", "gebeta", "token")
        );
    }

    #[test]
    fn defaults() {
        let args = parse(&[]).unwrap();
        assert!(args.leader.leader_elect);
        assert_eq!(args.leader.lease_name, "gebeta-operator");
        assert_eq!(args.gebeta.api_url, "https://mapapi.gebeta.app/api/v1");
        assert_eq!(args.admin.admin_addr.to_string(), "0.0.0.0:8080");
        assert!(args.namespaces().is_empty());
        assert!(args.user_token_location().is_none());
        assert_eq!(
            args.controllers.refresh_request_interval,
            Duration::from_secs(10)
        );
        assert_eq!(
            args.gebeta.audit_interval, None,
            "the upstream audit is off"
        );
        let audit = parse(&["--user-token-secret=ops/gebeta", "--audit-interval=1h"]).unwrap();
        assert_eq!(audit.gebeta.audit_interval, Some(Duration::from_secs(3600)));
        assert!(parse(&["--leader-elect"]).unwrap().leader.leader_elect);
        let twice = parse(&["--gebeta-timeout=1s", "--gebeta-timeout=2s"]).unwrap();
        assert_eq!(
            twice.gebeta.timeout,
            Duration::from_secs(2),
            "a later flag overrides"
        );
    }

    #[test]
    fn bad_flags_are_refused() {
        for bad in [
            &["--lease-renew=15"][..],
            &["--lease-duration=0"],
            &["--namespaces=Not_OK"],
            &["--gebeta-rate-limit=0"],
            &["--gebeta-rate-limit=1e-20"],
            &["--gebeta-max-in-flight=0"],
            &["--admin-addr=nowhere"],
            &["--log-format=xml"],
            &["--log-level=info,kube=loud"],
            &["--user-token-secret=only-a-name"],
            &["--audit-interval=1h"],
            &["--user-token-secret=ops/gebeta", "--audit-interval=0s"],
            &["--no-such-flag"],
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
