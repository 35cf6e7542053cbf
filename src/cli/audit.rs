//! `kubectl gebeta audit`: every upstream account of the organization (the management API's
//! organization list), classified against the cluster's GebetaServiceAccounts as
//! [`crate::controllers::upstream_audit`] does it (`managed`, `orphan`, `unmanaged`; flags
//! `revoked`, `suspended`, `admin`, `excess-scopes`, `stale`, `unknown-values`), with
//! `--fail-on` for CI. The user token comes from a Secret or from `$GEBETA_USER_TOKEN`, never
//! from a flag: a token on a command line leaks into shell history and `ps`.

use std::{fmt, process::ExitCode};

use clap::ValueEnum;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, api::ListParams};
use serde::Serialize;

use super::{
    CliError, Kube, USER_AGENT,
    output::{self, Cell, Colors, Format, Line, Style},
    view::short_id,
};
pub use crate::controllers::upstream_audit::{
    Class, Finding, Flag, ManagedBy, Owner, Summary, classify, summary,
};
use crate::{
    crd::GebetaServiceAccount,
    gebeta::{self, ClientConfig, GebetaClient, Token},
};

/// Environment variable holding a user token when no `--user-token-secret` is given.
pub const USER_TOKEN_ENV: &str = "GEBETA_USER_TOKEN";

pub const AFTER_HELP: &str = "\
Classes: managed, orphan, unmanaged. Flags: revoked, suspended, admin, excess-scopes, stale,
unknown-values. --fail-on takes classes, flags, or CLASS-FLAG (e.g. unmanaged-admin).

The user token is read from --user-token-secret or from $GEBETA_USER_TOKEN, never from a flag
value (it would leak into shell history and ps).

Examples:
  kubectl gebeta audit --user-token-secret gebeta-system/gebeta-user-token
  GEBETA_USER_TOKEN=$(cat token) kubectl gebeta audit -o json --fail-on orphan,unmanaged-admin";

/// `audit` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct AuditArgs {
    /// Secret holding a Gebeta user (management) token, as NAMESPACE/NAME[:KEY] (key default
    /// `token`). Without it the token is read from $GEBETA_USER_TOKEN.
    #[arg(long, env = "GEBETA_USER_TOKEN_SECRET", value_name = "NS/NAME[:KEY]", value_parser = parse_secret_ref)]
    pub user_token_secret: Option<SecretRef>,
    /// Base URL of the Gebeta Maps API.
    #[arg(long, env = "GEBETA_API_URL", default_value = gebeta::wire::DEFAULT_BASE_URL, value_name = "URL")]
    pub api_url: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = AuditFormat::Table)]
    pub output: AuditFormat,
    /// Exit with code 1 when any of these is present (comma-separated classes, flags or
    /// CLASS-FLAG, e.g. `orphan,unmanaged-admin,excess-scopes`).
    #[arg(long, value_delimiter = ',', value_name = "WHAT,...", value_parser = parse_selector)]
    pub fail_on: Vec<Selector>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditFormat {
    Table,
    Json,
}

/// `NAMESPACE/NAME[:KEY]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
    pub key: String,
}

fn parse_secret_ref(s: &str) -> Result<SecretRef, String> {
    let shape = || format!("{s:?} must be written as NAMESPACE/NAME or NAMESPACE/NAME:KEY");
    let (namespace, rest) = s.split_once('/').ok_or_else(shape)?;
    let (name, key) = rest.split_once(':').unwrap_or((rest, "token"));
    let namespace = super::parse_namespace(namespace)?;
    let name = super::parse_object_name(name)?;
    let key_ok = !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if !key_ok {
        return Err(format!("{key:?} is not a valid Secret key"));
    }
    Ok(SecretRef {
        namespace,
        name,
        key: key.to_string(),
    })
}

/// One `--fail-on` item: a class, a flag, or a class with a flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selector {
    Class(Class),
    Flag(Flag),
    Both(Class, Flag),
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Class(c) => f.write_str(c.as_str()),
            Selector::Flag(g) => f.write_str(g.as_str()),
            Selector::Both(c, g) => write!(f, "{}-{}", c.as_str(), g.as_str()),
        }
    }
}

impl Selector {
    pub fn matches(&self, finding: &Finding) -> bool {
        match self {
            Selector::Class(c) => finding.class == *c,
            Selector::Flag(g) => finding.flags.contains(g),
            Selector::Both(c, g) => finding.class == *c && finding.flags.contains(g),
        }
    }
}

fn parse_selector(s: &str) -> Result<Selector, String> {
    let s = s.trim();
    let class = |t: &str| Class::ALL.into_iter().find(|c| c.as_str() == t);
    let flag = |t: &str| Flag::ALL.into_iter().find(|g| g.as_str() == t);
    if let Some(c) = class(s) {
        return Ok(Selector::Class(c));
    }
    if let Some(g) = flag(s) {
        return Ok(Selector::Flag(g));
    }
    if let Some((c, g)) = s.split_once('-')
        && let (Some(c), Some(g)) = (class(c), flag(g))
    {
        return Ok(Selector::Both(c, g));
    }
    Err(format!(
        "{s:?} is neither a class ({}) nor a flag ({}) nor CLASS-FLAG such as unmanaged-admin",
        Class::ALL.map(Class::as_str).join(", "),
        Flag::ALL.map(Flag::as_str).join(", ")
    ))
}

/// The `--fail-on` items present, with how many accounts each matched.
pub fn failures(selectors: &[Selector], findings: &[Finding]) -> Vec<(String, usize)> {
    selectors
        .iter()
        .map(|s| {
            (
                s.to_string(),
                findings.iter().filter(|f| s.matches(f)).count(),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// `-o json`.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub accounts: Vec<Finding>,
    pub summary: Summary,
    pub fail_on: Vec<String>,
    /// The `--fail-on` items present (the exit code is 1 when this is not empty).
    pub failed: Vec<String>,
}

/// The description without the operator's marker, at most `max` characters.
fn short_description(description: &str, max: usize) -> String {
    let text = match description.rfind("[gebeta-operator:") {
        Some(i) => description[..i].trim_end(),
        None => description.trim(),
    };
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// The table and its summary line.
pub fn table(findings: &[Finding], colors: Colors) -> String {
    let lines: Vec<Line> = findings
        .iter()
        .map(|f| {
            let class_style = match f.class {
                Class::Orphan => Style::Red,
                Class::Unmanaged => Style::Yellow,
                Class::Managed => Style::Green,
            };
            let managed_by = match (&f.managed_by, &f.marker_uid) {
                (Some(m), _) if m.adopted => format!("{}/{} (adopted)", m.namespace, m.name),
                (Some(m), _) => format!("{}/{}", m.namespace, m.name),
                (None, Some(uid)) => format!("uid {} (gone)", short_id(uid)),
                (None, None) => "-".into(),
            };
            let flags = if f.flags.is_empty() {
                "-".to_string()
            } else {
                f.flags
                    .iter()
                    .map(|g| match g {
                        Flag::ExcessScopes => {
                            format!("excess-scopes({})", f.excess_scopes.join(","))
                        }
                        other => other.as_str().to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let flag_style = if f.flags.is_empty() {
                Style::Plain
            } else {
                Style::Red
            };
            Line::Cells(vec![
                Cell::plain(f.id.clone()),
                Cell::styled(f.class.as_str(), class_style),
                Cell::plain(managed_by),
                Cell::plain(f.status.clone()),
                Cell::plain(f.scopes.join(",")),
                Cell::styled(flags, flag_style),
                Cell::plain(short_description(&f.description, 40)),
            ])
        })
        .collect();
    let mut out = output::table(
        &[
            "ACCOUNT",
            "CLASS",
            "MANAGED BY",
            "STATE",
            "SCOPES",
            "FLAGS",
            "DESCRIPTION",
        ],
        &lines,
        colors,
    );
    out.push_str(&summary_line(&summary(findings)));
    out.push('\n');
    out
}

/// `7 accounts: 3 managed, 1 orphan, 3 unmanaged; flagged: 1 revoked, 1 admin`.
pub fn summary_line(s: &Summary) -> String {
    let classes = Class::ALL
        .iter()
        .map(|c| format!("{} {}", s.classes[c.as_str()], c.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let flagged: Vec<String> = Flag::ALL
        .iter()
        .filter(|g| s.flags[g.as_str()] > 0)
        .map(|g| format!("{} {}", s.flags[g.as_str()], g.as_str()))
        .collect();
    let noun = if s.total == 1 { "account" } else { "accounts" };
    if flagged.is_empty() {
        format!("{} {noun}: {classes}; nothing flagged", s.total)
    } else {
        format!(
            "{} {noun}: {classes}; flagged: {}",
            s.total,
            flagged.join(", ")
        )
    }
}

pub async fn run(kube: &Kube, args: &AuditArgs) -> Result<ExitCode, CliError> {
    let token = user_token(kube, args).await?;
    let gebeta = GebetaClient::new(ClientConfig {
        base_url: args.api_url.clone(),
        user_agent: USER_AGENT.to_string(),
        ..ClientConfig::default()
    })
    .map_err(|e| CliError::Usage(format!("invalid --api-url {:?}: {e}", args.api_url)))?;
    let gsas = Api::<GebetaServiceAccount>::all(kube.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| {
            CliError::kube(
                "cannot list GebetaServiceAccounts of every namespace (the audit matches accounts cluster-wide)",
                e,
            )
        })?;
    let owners: Vec<Owner> = gsas.items.iter().map(Owner::of).collect();
    let accounts = gebeta.list_accounts(&token).await.map_err(|e| match e {
        gebeta::Error::Unauthorized { .. } => CliError::Failed(format!(
            "the Gebeta API refused the user token: {e}; check the token's Secret or {USER_TOKEN_ENV}"
        )),
        e => CliError::Failed(format!("cannot list the organization's accounts: {e}")),
    })?;
    let findings = classify(&accounts, &owners);
    let failed = failures(&args.fail_on, &findings);
    match args.output {
        AuditFormat::Table => print!("{}", table(&findings, Colors::for_stdout(Format::Table))),
        AuditFormat::Json => {
            let report = Report {
                summary: summary(&findings),
                accounts: findings,
                fail_on: args.fail_on.iter().map(|s| s.to_string()).collect(),
                failed: failed.iter().map(|(s, _)| s.clone()).collect(),
            };
            println!("{}", super::to_json(&report)?);
        }
    }
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let matched = failed
        .iter()
        .map(|(s, n)| format!("{s} ({n})"))
        .collect::<Vec<_>>()
        .join(", ");
    eprintln!("audit: --fail-on matched: {matched}");
    Ok(ExitCode::from(1))
}

/// The user token: from `--user-token-secret`, else `$GEBETA_USER_TOKEN`.
async fn user_token(kube: &Kube, args: &AuditArgs) -> Result<Token, CliError> {
    let Some(r) = &args.user_token_secret else {
        return match std::env::var(USER_TOKEN_ENV) {
            Ok(v) if !v.trim().is_empty() => Ok(Token::new(v.trim())),
            _ => Err(CliError::Usage(format!(
                "no user token: give --user-token-secret NAMESPACE/NAME[:KEY], or set {USER_TOKEN_ENV} \
                 (a token is never taken from a flag: it would leak into shell history and ps)"
            ))),
        };
    };
    let where_ = format!("Secret {}/{}", r.namespace, r.name);
    let secret = Api::<Secret>::namespaced(kube.client.clone(), &r.namespace)
        .get_opt(&r.name)
        .await
        .map_err(|e| CliError::kube(format!("cannot read {where_}"), e))?
        .ok_or_else(|| CliError::Failed(format!("{where_} not found")))?;
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .ok_or_else(|| CliError::Failed(format!("{where_} has no key {:?}", r.key)))?;
    let text = std::str::from_utf8(&value.0)
        .map_err(|_| CliError::Failed(format!("{where_} key {:?} is not UTF-8 text", r.key)))?
        .trim();
    if text.is_empty() {
        return Err(CliError::Failed(format!(
            "{where_} key {:?} is empty",
            r.key
        )));
    }
    Ok(Token::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::upstream_audit::tests::seeded;

    #[test]
    fn fail_on_selectors_parse_and_match() {
        assert_eq!(parse_selector("orphan"), Ok(Selector::Class(Class::Orphan)));
        assert_eq!(
            parse_selector("excess-scopes"),
            Ok(Selector::Flag(Flag::ExcessScopes))
        );
        assert_eq!(
            parse_selector("unmanaged-admin"),
            Ok(Selector::Both(Class::Unmanaged, Flag::Admin))
        );
        assert_eq!(
            parse_selector("managed-excess-scopes"),
            Ok(Selector::Both(Class::Managed, Flag::ExcessScopes))
        );
        assert!(
            parse_selector("bogus")
                .unwrap_err()
                .contains("unmanaged-admin")
        );
        assert!(parse_selector("admin-unmanaged").is_err());
        let f = seeded();
        let sel = |s: &str| parse_selector(s).unwrap();
        assert_eq!(
            failures(
                &[
                    sel("orphan"),
                    sel("unmanaged-admin"),
                    sel("managed-admin"),
                    sel("revoked")
                ],
                &f
            ),
            [
                ("orphan".to_string(), 1),
                ("unmanaged-admin".to_string(), 1),
                ("revoked".to_string(), 2)
            ]
        );
    }

    #[test]
    fn secret_refs_take_an_optional_key() {
        assert_eq!(
            parse_secret_ref("ops/gebeta-user"),
            Ok(SecretRef {
                namespace: "ops".into(),
                name: "gebeta-user".into(),
                key: "token".into()
            })
        );
        assert_eq!(
            parse_secret_ref("ops/gebeta-user:user-token").unwrap().key,
            "user-token"
        );
        for bad in ["gebeta-user", "ops/", "Ops/x", "ops/x:", "ops/x:a b"] {
            assert!(parse_secret_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_table_names_owners_and_flags_and_ends_with_a_summary() {
        let text = table(&seeded(), Colors(false));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..3],
            [
                "ACCOUNT       CLASS       MANAGED BY               STATE       SCOPES                  FLAGS                             DESCRIPTION",
                "c-orphan      orphan      uid uid-gone (gone)      ACTIVE      TILE                    -                                 left behind",
                "d-admin       unmanaged   -                        ACTIVE      TILE                    admin                             ops console",
            ],
            "{text}"
        );
        assert!(lines[3].ends_with("revoked"), "no trailing blanks: {text}");
        assert!(text.contains("team/adopter (adopted)"), "{text}");
        assert!(text.contains("excess-scopes(GEOCODING,MATRIX)"), "{text}");
        assert!(
            !text.contains("gebeta-operator:"),
            "the marker is not shown: {text}"
        );
        assert_eq!(
            lines.last().unwrap(),
            &"8 accounts: 4 managed, 1 orphan, 3 unmanaged; flagged: 2 revoked, 1 suspended, 1 admin, 1 excess-scopes, 1 stale"
        );
    }

    #[test]
    fn long_descriptions_are_cut() {
        assert_eq!(short_description("abcdef [gebeta-operator:u]", 4), "abc…");
        assert_eq!(short_description("  abc ", 4), "abc");
    }
}
