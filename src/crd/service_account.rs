//! `GebetaServiceAccount`: one Gebeta service account, owned declaratively.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{Condition, SecretKeySelector};
use crate::gebeta::model::{AccountState, Platform, Scope};

/// Longest `spec.description` accepted: the upstream limit (256) less the ownership marker
/// the operator appends (see `controllers::service_account::marker`).
pub const MAX_DESCRIPTION_LEN: usize = 200;

/// CEL, on the spec: `accountId` is neither added nor removed. On the spec because a rule on an
/// optional field does not run when the field is added or removed, and whether it is set
/// decides the default deletion policy: removing it would turn an adopted account's `Orphan`
/// into `Delete`.
const ACCOUNT_ID_FIXED: &str = "has(self.accountId) == has(oldSelf.accountId)";
const ACCOUNT_ID_FIXED_MESSAGE: &str = "accountId cannot be added or removed: delete and recreate the GebetaServiceAccount to adopt an account or to stop adopting one";
/// CEL, on the spec: `tokenSecretName` once set stays set (removing it would move the token to
/// the default name and leave the old Secret behind).
const TOKEN_SECRET_NAME_KEPT: &str = "has(self.tokenSecretName) || !has(oldSelf.tokenSecretName)";
const TOKEN_SECRET_NAME_KEPT_MESSAGE: &str = "tokenSecretName cannot be removed once set";

/// Desired state of a Gebeta service account.
// Each printcolumn(...) repeats name/type_/json_path keys, which clippy mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gebeta.app",
    version = "v1alpha1",
    kind = "GebetaServiceAccount",
    namespaced,
    status = "GebetaServiceAccountStatus",
    shortname = "gsa",
    category = "gebeta",
    doc = "A Gebeta Maps service account, created, updated, suspended and deleted upstream to match this object.",
    printcolumn(name = "Platform", type_ = "string", json_path = ".spec.platform"),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Account",
        type_ = "string",
        json_path = ".status.accountId",
        priority = 1
    ),
    printcolumn(
        name = "Next-Rotation",
        type_ = "date",
        json_path = ".status.nextRotationTime",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(ACCOUNT_ID_FIXED).message(ACCOUNT_ID_FIXED_MESSAGE).field_path(".accountId"))]
#[x_kube(validation = Rule::new(TOKEN_SECRET_NAME_KEPT).message(TOKEN_SECRET_NAME_KEPT_MESSAGE).field_path(".tokenSecretName"))]
pub struct GebetaServiceAccountSpec {
    /// Platform the account is issued for. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("platform is immutable"))]
    pub platform: Platform,

    /// Whether the account has admin privileges. Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("isAdmin is immutable"))]
    pub is_admin: bool,

    /// Human-readable description (at most 200 characters; the operator appends a marker that
    /// ties the upstream account to this object).
    #[serde(default)]
    #[schemars(length(max = 200))]
    pub description: String,

    /// Scopes granted to the account: at least one, no duplicates.
    #[schemars(length(min = 1, max = 7))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub scopes: Vec<Scope>,

    /// Suspend the account upstream (SUSPENDED) while true; reactivate it (ACTIVE) when false.
    #[serde(default)]
    pub suspended: bool,

    /// What happens upstream when this object is deleted (and to accounts a rotation
    /// replaced): `Delete` (revoke, then delete), `Revoke` (leave a revoked record) or
    /// `Orphan` (leave the account untouched). Default: `Delete` for accounts the operator
    /// creates, `Orphan` for adopted ones (`accountId`), which the operator did not make.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "nullable_enum::<DeletionPolicy>")]
    pub deletion_policy: Option<DeletionPolicy>,

    /// Secret that receives the account's token (key `token`). Default: `<name>-token`.
    /// Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("tokenSecretName is immutable"))]
    pub token_secret_name: Option<String>,

    /// Adopt an account that already exists upstream instead of creating one. Its token cannot
    /// be read from the API, so the token Secret is left to the user. Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("accountId is immutable"))]
    pub account_id: Option<String>,

    /// Management credentials (a Gebeta user token) for this account. Default: the operator's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_token_secret_ref: Option<SecretKeySelector>,

    /// Scheduled rotation: a new account, with a new token, every `interval`. Not for adopted
    /// accounts (their token is not the operator's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationSchedule>,
}

/// When to replace the account, and how long the replaced one stays usable.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RotationSchedule {
    /// How often to rotate (e.g. `720h`; at least `10s`), counted from the last rotation or
    /// the account's creation. Each object rotates up to 10% early, by an amount fixed by its
    /// UID, so accounts created together do not rotate together.
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub interval: String,

    /// How long a replaced account stays ACTIVE once its successor's token is stored, so that
    /// its consumers can switch (default `10m`). It is retired (per `deletionPolicy`) only after
    /// this and once every GebetaAccessToken using this account holds a token from the new
    /// one. Also used by rotations the `gebeta.app/rotate` annotation asks for; `0s` retires
    /// at once (the answer to a leaked token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub grace_period: Option<String>,
}

impl GebetaServiceAccount {
    /// The deletion policy in force: the spec's, else `Orphan` for an adopted account and
    /// `Delete` for one the operator creates. Adopted is what the spec asks for or what the
    /// status recorded, so an account adopted once is never deleted by default.
    pub fn effective_deletion_policy(&self) -> DeletionPolicy {
        let adopted =
            self.spec.account_id.is_some() || self.status.as_ref().is_some_and(|s| s.adopted);
        self.spec.deletion_policy.unwrap_or(if adopted {
            DeletionPolicy::Orphan
        } else {
            DeletionPolicy::Delete
        })
    }
}

/// What the operator does upstream when a `GebetaServiceAccount` is deleted.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Revoke the account, then delete it.
    Delete,
    /// Revoke the account and keep the revoked record upstream.
    Revoke,
    /// Leave the account as it is.
    Orphan,
}

/// Observed state of a Gebeta service account.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GebetaServiceAccountStatus {
    /// Id of the upstream account this object owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,

    /// State of the account as last seen upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "nullable_enum::<AccountState>")]
    pub state: Option<AccountState>,

    /// True when the account was adopted through `spec.accountId` (its token is not managed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,

    /// Secret holding the account's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_name: Option<String>,

    /// Set before an account is created and cleared once its id is recorded: a reconcile that
    /// finds it set without an id looks upstream for an account created but never recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_creation: Option<PendingCreation>,

    /// Upstream creation time of the account (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,

    /// The last value of the `gebeta.app/rotate` annotation acted on: set once the
    /// replacement exists and every replaced account is retired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_rotation: Option<String>,

    /// The `gebeta.app/rotate` value being acted on: recorded, with the account to replace in
    /// `retiring`, before the replacement is created, so a rotation interrupted at any point
    /// is finished rather than started again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_in_progress: Option<String>,

    /// Replaced accounts still to be retired (per `deletionPolicy`): each stays listed, and the
    /// object not Ready (reason `RetireFailed`), until retiring it succeeds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retiring: Vec<String>,

    /// The accounts in `retiring` stay usable until this time (RFC 3339), the rotation's grace
    /// period, and until every GebetaAccessToken using this account holds a token from the
    /// new one (reason `Rotating` meanwhile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retire_after: Option<String>,

    /// When the current account replaced the previous one (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<String>,

    /// When the next scheduled rotation starts (RFC 3339); only with `spec.rotation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_time: Option<String>,

    /// The `.metadata.generation` last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready` and `Synced` conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// The record of a creation in progress.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PendingCreation {
    /// When the creation was started (RFC 3339).
    pub started_at: String,
}

/// `Option<T>` of a string enum `T` as Kubernetes wants it: the field's own description
/// (schemars would put `T`'s in its place), `nullable`, and `null` among the values.
fn nullable_enum<T: schemars::JsonSchema>(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut values = super::common::enum_values(&T::json_schema(g));
    assert!(!values.is_empty(), "a string enum");
    values.push(serde_json::Value::Null);
    schemars::json_schema!({
        "type": "string",
        "nullable": true,
        "enum": values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(account_id: Option<&str>, adopted: bool) -> GebetaServiceAccount {
        let mut gsa = GebetaServiceAccount::new(
            "a",
            GebetaServiceAccountSpec {
                platform: Platform::Web,
                is_admin: false,
                description: String::new(),
                scopes: vec![],
                suspended: false,
                deletion_policy: None,
                token_secret_name: None,
                account_id: account_id.map(Into::into),
                user_token_secret_ref: None,
                rotation: None,
            },
        );
        gsa.status = Some(GebetaServiceAccountStatus {
            adopted,
            ..Default::default()
        });
        gsa
    }

    #[test]
    fn an_account_adopted_once_is_orphaned_by_default_whatever_the_spec_says_now() {
        assert_eq!(
            account(None, false).effective_deletion_policy(),
            DeletionPolicy::Delete
        );
        assert_eq!(
            account(Some("x"), false).effective_deletion_policy(),
            DeletionPolicy::Orphan
        );
        assert_eq!(
            account(None, true).effective_deletion_policy(),
            DeletionPolicy::Orphan,
            "the status remembers the adoption"
        );
        let mut explicit = account(None, true);
        explicit.spec.deletion_policy = Some(DeletionPolicy::Delete);
        assert_eq!(explicit.effective_deletion_policy(), DeletionPolicy::Delete);
    }
}
