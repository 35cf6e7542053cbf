//! The audit of the organization's upstream accounts against the cluster's
//! GebetaServiceAccounts: the classification (pure, shared by `kubectl gebeta audit`) and, when
//! `--audit-interval` asks for it, the operator's periodic run that exports the counts as
//! metrics (`upstream_accounts{class}`, `upstream_accounts_flagged{flag}`).
//!
//! An account is
//! - `managed`: its description carries the marker of an existing object (matched by
//!   `metadata.uid`), or an object adopted it (`status.accountId` is its id);
//! - `orphan`: it carries the marker of an object that no longer exists;
//! - `unmanaged`: no object knows it (made in the dashboard, or by another tool);
//!
//! and flagged `revoked`, `suspended`, `admin`, `excess-scopes` (more scopes upstream than its
//! object's spec asks), `stale` (an object's marker, but neither its current account nor one
//! being retired: a leftover) and `unknown-values` (values this version does not know).
//!
//! The periodic run makes one organization list and one GebetaServiceAccount list (per
//! watched namespace) per interval, whatever the number of objects, and only on the leader.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt, api::ListParams};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{Context, SecretLocation, WatchScope, service_account::plan::marker_uid};
use crate::{
    crd::GebetaServiceAccount,
    gebeta::{Account, AccountState, Scope, Token},
};

/// How an upstream account relates to the cluster.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    // Declared in display order: the ones to look at first.
    Orphan,
    Unmanaged,
    Managed,
}

/// Something worth a look about an account, whatever its class.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Flag {
    Revoked,
    Suspended,
    Admin,
    ExcessScopes,
    Stale,
    UnknownValues,
}

impl Class {
    pub const ALL: [Class; 3] = [Class::Managed, Class::Orphan, Class::Unmanaged];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Managed => "managed",
            Class::Orphan => "orphan",
            Class::Unmanaged => "unmanaged",
        }
    }
}

impl Flag {
    pub const ALL: [Flag; 6] = [
        Flag::Revoked,
        Flag::Suspended,
        Flag::Admin,
        Flag::ExcessScopes,
        Flag::Stale,
        Flag::UnknownValues,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Flag::Revoked => "revoked",
            Flag::Suspended => "suspended",
            Flag::Admin => "admin",
            Flag::ExcessScopes => "excess-scopes",
            Flag::Stale => "stale",
            Flag::UnknownValues => "unknown-values",
        }
    }
}

/// What the audit needs of a GebetaServiceAccount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub account_id: Option<String>,
    pub retiring: Vec<String>,
    pub adopted: bool,
    pub scopes: Vec<Scope>,
}

impl Owner {
    pub fn of(gsa: &GebetaServiceAccount) -> Owner {
        let status = gsa.status.clone().unwrap_or_default();
        Owner {
            namespace: gsa.namespace().unwrap_or_default(),
            name: gsa.name_any(),
            uid: gsa.uid().unwrap_or_default(),
            account_id: status.account_id,
            retiring: status.retiring,
            adopted: status.adopted || gsa.spec.account_id.is_some(),
            scopes: gsa.spec.scopes.clone(),
        }
    }
}

/// The object that manages an account.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ManagedBy {
    pub namespace: String,
    pub name: String,
    /// Adopted through `spec.accountId` rather than created by the operator.
    pub adopted: bool,
}

/// One upstream account, classified.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub id: String,
    pub class: Class,
    pub flags: Vec<Flag>,
    pub managed_by: Option<ManagedBy>,
    /// The object UID in the description's marker, if any.
    pub marker_uid: Option<String>,
    pub status: String,
    pub platform: String,
    pub is_admin: bool,
    pub scopes: Vec<String>,
    /// The scopes its object's spec asks for (managed accounts).
    pub spec_scopes: Option<Vec<String>>,
    /// Upstream scopes the spec does not ask for.
    pub excess_scopes: Vec<String>,
    pub description: String,
}

fn scope_name(scope: Scope) -> String {
    serde_json::to_value(scope)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "UNKNOWN".into())
}

/// Classifies every account against the objects, in display order (orphans first, then
/// unmanaged, then managed by object; ties by id).
pub fn classify(accounts: &[Account], owners: &[Owner]) -> Vec<Finding> {
    let mut findings: Vec<Finding> = accounts
        .iter()
        .map(|account| {
            let marker = marker_uid(&account.description).map(str::to_string);
            let by_marker = marker
                .as_deref()
                .and_then(|uid| owners.iter().find(|o| o.uid == uid));
            let by_id = owners
                .iter()
                .find(|o| o.account_id.as_deref() == Some(account.id.as_str()));
            let owner = by_marker.or(by_id);
            let class = match (owner, &marker) {
                (Some(_), _) => Class::Managed,
                (None, Some(_)) => Class::Orphan,
                (None, None) => Class::Unmanaged,
            };
            let excess: Vec<Scope> = owner
                .map(|o| {
                    account
                        .scopes
                        .iter()
                        .copied()
                        .filter(|s| !o.scopes.contains(s))
                        .collect()
                })
                .unwrap_or_default();
            let mut flags = Vec::new();
            match account.status {
                AccountState::Revoked => flags.push(Flag::Revoked),
                AccountState::Suspended => flags.push(Flag::Suspended),
                _ => {}
            }
            if account.is_admin {
                flags.push(Flag::Admin);
            }
            if !excess.is_empty() {
                flags.push(Flag::ExcessScopes);
            }
            if let Some(o) = owner
                && o.account_id.as_deref() != Some(account.id.as_str())
                && !o.retiring.contains(&account.id)
            {
                flags.push(Flag::Stale);
            }
            if !account.unknown.is_empty() {
                flags.push(Flag::UnknownValues);
            }
            Finding {
                id: account.id.clone(),
                class,
                flags,
                managed_by: owner.map(|o| ManagedBy {
                    namespace: o.namespace.clone(),
                    name: o.name.clone(),
                    adopted: o.adopted,
                }),
                marker_uid: marker,
                status: status_name(account),
                platform: account.platform.as_str().to_string(),
                is_admin: account.is_admin,
                scopes: account.scopes.iter().copied().map(scope_name).collect(),
                spec_scopes: owner.map(|o| o.scopes.iter().copied().map(scope_name).collect()),
                excess_scopes: excess.into_iter().map(scope_name).collect(),
                description: account.description.clone(),
            }
        })
        .collect();
    findings.sort_by_key(|f| {
        (
            f.class,
            f.managed_by
                .as_ref()
                .map(|m| (m.namespace.clone(), m.name.clone())),
            f.id.clone(),
        )
    });
    findings
}

/// The status, with the raw value for one this version does not know.
fn status_name(account: &Account) -> String {
    match account.status {
        AccountState::Unknown => account
            .unknown
            .iter()
            .find_map(|u| u.strip_prefix("status "))
            .map(|raw| raw.trim_matches('"').to_string())
            .unwrap_or_else(|| "UNKNOWN".into()),
        known => known.as_str().to_string(),
    }
}

/// Counts by class and by flag (every class and flag present, zero included).
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub total: usize,
    pub classes: BTreeMap<&'static str, usize>,
    pub flags: BTreeMap<&'static str, usize>,
}

pub fn summary(findings: &[Finding]) -> Summary {
    Summary {
        total: findings.len(),
        classes: Class::ALL
            .into_iter()
            .map(|c| (c.as_str(), findings.iter().filter(|f| f.class == c).count()))
            .collect(),
        flags: Flag::ALL
            .into_iter()
            .map(|g| {
                (
                    g.as_str(),
                    findings.iter().filter(|f| f.flags.contains(&g)).count(),
                )
            })
            .collect(),
    }
}

/// Audits every `interval` (the first time at once) until `shutdown`; does nothing unless
/// `settings.audit_interval` is set. A failed run is logged and leaves the last counts.
pub async fn run(ctx: Arc<Context>, scope: WatchScope, shutdown: CancellationToken) {
    let Some(interval) = ctx.settings.audit_interval else {
        return;
    };
    let Some(location) = ctx.settings.default_user_token.clone() else {
        tracing::warn!("--audit-interval is set but no --user-token-secret: no upstream audit");
        return;
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => match audit(&ctx, &scope, &location).await {
                Ok(findings) => {
                    let counts = summary(&findings);
                    tracing::info!(total = counts.total, classes = ?counts.classes, flags = ?counts.flags, "upstream audit");
                    ctx.metrics.set_upstream_audit(&counts.classes, &counts.flags, jiff::Timestamp::now().as_second());
                }
                Err(err) => tracing::warn!(error = %err, "upstream audit failed; next try in {interval:?}"),
            },
        }
    }
}

/// One audit: the user token, the objects, the organization list.
async fn audit(
    ctx: &Context,
    scope: &WatchScope,
    location: &SecretLocation,
) -> Result<Vec<Finding>, String> {
    let secret = Api::<Secret>::namespaced(ctx.kube.clone(), &location.namespace)
        .get_opt(&location.name)
        .await
        .map_err(|e| format!("cannot read the user token Secret: {e}"))?
        .ok_or_else(|| {
            format!(
                "user token Secret {}/{} not found",
                location.namespace, location.name
            )
        })?;
    let token = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&location.key))
        .map(|b| String::from_utf8_lossy(&b.0).trim().to_string())
        .filter(|t| !t.is_empty())
        .map(Token::new)
        .ok_or_else(|| {
            format!(
                "Secret {}/{} has no user token under key {:?}",
                location.namespace, location.name, location.key
            )
        })?;
    // Every object of the watched namespaces, whatever --label-selector: an account made by an
    // object of another shard is not an orphan.
    let mut owners = Vec::new();
    for api in scope.apis::<GebetaServiceAccount>(&ctx.kube) {
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("cannot list GebetaServiceAccounts: {e}"))?;
        owners.extend(list.items.iter().map(Owner::of));
    }
    let accounts = ctx
        .gebeta
        .list_accounts(&token)
        .await
        .map_err(|e| format!("cannot list the organization's accounts: {e}"))?;
    Ok(classify(&accounts, &owners))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gebeta::Platform;

    fn account(
        id: &str,
        description: &str,
        scopes: &[Scope],
        status: AccountState,
        admin: bool,
    ) -> Account {
        Account {
            id: id.into(),
            platform: Platform::Web,
            is_admin: admin,
            description: description.into(),
            scopes: scopes.to_vec(),
            status,
            created_at: None,
            updated_at: None,
            unknown: Vec::new(),
        }
    }

    fn owner(
        name: &str,
        uid: &str,
        account_id: Option<&str>,
        adopted: bool,
        scopes: &[Scope],
    ) -> Owner {
        Owner {
            namespace: "team".into(),
            name: name.into(),
            uid: uid.into(),
            account_id: account_id.map(str::to_string),
            retiring: Vec::new(),
            adopted,
            scopes: scopes.to_vec(),
        }
    }

    pub(crate) fn seeded() -> Vec<Finding> {
        use AccountState::*;
        use Scope::*;
        let accounts = [
            account(
                "a-created",
                "maps [gebeta-operator:uid-1]",
                &[Tile],
                Active,
                false,
            ),
            account(
                "b-adopted",
                "from the dashboard",
                &[Tile, Matrix],
                Active,
                false,
            ),
            account(
                "c-orphan",
                "left behind [gebeta-operator:uid-gone]",
                &[Tile],
                Active,
                false,
            ),
            account("d-admin", "ops console", &[Tile], Active, true),
            account("e-revoked", "", &[Tile], Revoked, false),
            account("f-suspended", "", &[Tile], Suspended, false),
            account(
                "g-wide",
                "narrow [gebeta-operator:uid-3]",
                &[Tile, Geocoding, Matrix],
                Active,
                false,
            ),
            account(
                "h-leftover",
                "maps [gebeta-operator:uid-1]",
                &[Tile],
                Revoked,
                false,
            ),
        ];
        let owners = [
            owner("maps", "uid-1", Some("a-created"), false, &[Tile]),
            owner("adopter", "uid-2", Some("b-adopted"), true, &[Tile, Matrix]),
            owner("narrow", "uid-3", Some("g-wide"), false, &[Tile]),
        ];
        classify(&accounts, &owners)
    }

    fn find<'a>(findings: &'a [Finding], id: &str) -> &'a Finding {
        findings.iter().find(|f| f.id == id).unwrap()
    }

    #[test]
    fn accounts_are_classified_and_flagged() {
        let f = seeded();
        let created = find(&f, "a-created");
        assert_eq!(
            (created.class, created.flags.as_slice()),
            (Class::Managed, &[][..])
        );
        assert_eq!(created.managed_by.as_ref().unwrap().name, "maps");
        let adopted = find(&f, "b-adopted");
        assert_eq!(adopted.class, Class::Managed);
        assert!(adopted.managed_by.as_ref().unwrap().adopted);
        let orphan = find(&f, "c-orphan");
        assert_eq!(
            (orphan.class, orphan.marker_uid.as_deref()),
            (Class::Orphan, Some("uid-gone"))
        );
        assert_eq!(find(&f, "d-admin").class, Class::Unmanaged);
        assert_eq!(find(&f, "d-admin").flags, [Flag::Admin]);
        assert_eq!(find(&f, "e-revoked").flags, [Flag::Revoked]);
        assert_eq!(find(&f, "f-suspended").flags, [Flag::Suspended]);
        let wide = find(&f, "g-wide");
        assert_eq!(wide.flags, [Flag::ExcessScopes]);
        assert_eq!(wide.excess_scopes, ["GEOCODING", "MATRIX"]);
        assert_eq!(wide.spec_scopes.as_deref(), Some(&["TILE".to_string()][..]));
        let leftover = find(&f, "h-leftover");
        assert_eq!(leftover.class, Class::Managed);
        assert_eq!(leftover.flags, [Flag::Revoked, Flag::Stale]);
        let order: Vec<&str> = f.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(
            order,
            [
                "c-orphan",
                "d-admin",
                "e-revoked",
                "f-suspended",
                "b-adopted",
                "a-created",
                "h-leftover",
                "g-wide"
            ]
        );
    }

    #[test]
    fn a_marker_wins_over_an_adopter_and_a_gone_marker_can_be_adopted() {
        use Scope::*;
        let accounts = [account(
            "x",
            "old [gebeta-operator:uid-gone]",
            &[Tile],
            AccountState::Active,
            false,
        )];
        let owners = [owner("adopter", "uid-9", Some("x"), true, &[Tile])];
        let f = classify(&accounts, &owners);
        assert_eq!(
            f[0].class,
            Class::Managed,
            "adopted after its marked object was deleted"
        );
        assert_eq!(f[0].flags, []);
    }
}
