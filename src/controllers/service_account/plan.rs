//! Pure decisions of the service-account controller: the ownership marker, what the upstream
//! account should look like, and what differs. No I/O here.
//!
//! # The ownership marker
//! The API has no idempotency key and no labels, so the operator ties an account to its
//! object by appending ` [gebeta-operator:<object UID>]` to the upstream description. After a
//! crash between the create call and recording the account id, the organization list finds
//! every account carrying this object's marker. The spec's description is limited to 200
//! characters so that description + marker fit the upstream limit of 256 (counted in
//! characters, as JSON Schema's `maxLength` does: a description in Ge'ez script is 3 bytes a
//! character in UTF-8 and must fit just as well — an assumption about the live API, which
//! the contract states only as `maxLength: 256`).
//!
//! The API may trim surrounding whitespace: the marker is found without the space before it,
//! an empty description gets no space at all, and descriptions are compared trimmed, so a
//! trimmed copy is neither a lost marker nor drift to patch for ever.

use std::collections::BTreeSet;

use crate::{
    crd::GebetaServiceAccountSpec,
    gebeta::{Account, AccountConfig, AccountPatch, AccountState},
};

const MARKER_PREFIX: &str = "[gebeta-operator:";

/// The marker appended to the description of every account the operator creates.
pub fn marker(uid: &str) -> String {
    format!("{MARKER_PREFIX}{uid}]")
}

/// The object UID in an upstream description's marker, if it carries one.
pub fn marker_uid(description: &str) -> Option<&str> {
    let start = description.rfind(MARKER_PREFIX)? + MARKER_PREFIX.len();
    description[start..].trim_end().strip_suffix(']')
}

/// The description the upstream account should have: the spec's description, plus the
/// ownership marker for accounts the operator created (not for adopted ones).
pub fn upstream_description(spec: &GebetaServiceAccountSpec, owner_uid: Option<&str>) -> String {
    let description = spec.description.trim();
    match owner_uid {
        Some(uid) if description.is_empty() => marker(uid),
        Some(uid) => format!("{description} {}", marker(uid)),
        None => description.to_string(),
    }
}

/// The upstream state the spec asks for.
pub fn desired_state(spec: &GebetaServiceAccountSpec) -> AccountState {
    if spec.suspended {
        AccountState::Suspended
    } else {
        AccountState::Active
    }
}

/// The create request for a new account owned by the object with `uid`.
pub fn account_config(spec: &GebetaServiceAccountSpec, uid: &str) -> AccountConfig {
    AccountConfig {
        platform: spec.platform,
        is_admin: spec.is_admin,
        description: upstream_description(spec, Some(uid)),
        scopes: sorted_scopes(&spec.scopes),
    }
}

fn sorted_scopes<T: Ord + Copy>(scopes: &[T]) -> Vec<T> {
    scopes
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// What must change upstream to match the spec, and the names of the changed fields (for the
/// event). A revoked account is never patched (REVOKED is terminal upstream).
pub fn drift(
    spec: &GebetaServiceAccountSpec,
    account: &Account,
    owner_uid: Option<&str>,
) -> (AccountPatch, Vec<&'static str>) {
    let mut patch = AccountPatch::default();
    let mut changed = Vec::new();
    if account.status == AccountState::Revoked {
        return (patch, changed);
    }
    let description = upstream_description(spec, owner_uid);
    if account.description.trim() != description {
        patch.description = Some(description);
        changed.push("description");
    }
    let want = sorted_scopes(&spec.scopes);
    if sorted_scopes(&account.scopes) != want {
        patch.scopes = Some(want);
        changed.push("scopes");
    }
    let state = desired_state(spec);
    if account.status != state {
        patch.status = Some(state);
        changed.push("status");
    }
    (patch, changed)
}

/// Fields that differ but cannot be changed upstream (platform and isAdmin are fixed at
/// creation); reported, never patched.
pub fn immutable_mismatch(spec: &GebetaServiceAccountSpec, account: &Account) -> Vec<&'static str> {
    let mut fields = Vec::new();
    if account.platform != spec.platform {
        fields.push("platform");
    }
    if account.is_admin != spec.is_admin {
        fields.push("isAdmin");
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        crd::DeletionPolicy,
        gebeta::{Platform, Scope},
    };

    fn spec() -> GebetaServiceAccountSpec {
        GebetaServiceAccountSpec {
            platform: Platform::Web,
            is_admin: false,
            description: "maps backend".into(),
            scopes: vec![Scope::Tile, Scope::Direction],
            suspended: false,
            deletion_policy: Some(DeletionPolicy::Delete),
            token_secret_name: None,
            account_id: None,
            user_token_secret_ref: None,
        }
    }

    fn account(spec: &GebetaServiceAccountSpec, uid: &str) -> Account {
        Account {
            id: "acc-1".into(),
            platform: spec.platform,
            is_admin: spec.is_admin,
            description: upstream_description(spec, Some(uid)),
            scopes: vec![Scope::Direction, Scope::Tile],
            status: AccountState::Active,
            created_at: None,
            updated_at: None,
            unknown: Vec::new(),
        }
    }

    #[test]
    fn marker_round_trips_and_fits_the_upstream_limit() {
        let uid = "0b8f6a3e-1f2d-4c6b-9a57-5f0e2d9c1a77";
        let mut s = spec();
        s.description = "x".repeat(crate::crd::service_account::MAX_DESCRIPTION_LEN);
        let description = upstream_description(&s, Some(uid));
        assert!(description.len() <= 256, "{} chars", description.len());
        assert_eq!(marker_uid(&description), Some(uid));
        assert_eq!(marker_uid("plain description"), None);
        // 200 characters of Ge'ez script (600 bytes): 256 characters with the marker.
        s.description = "ሰ".repeat(crate::crd::service_account::MAX_DESCRIPTION_LEN);
        let description = upstream_description(&s, Some(uid));
        assert!(description.chars().count() <= 256);
        assert_eq!(marker_uid(&description), Some(uid));
        assert_eq!(
            marker_uid("a [gebeta-operator:u1] then [gebeta-operator:u2]"),
            Some("u2")
        );
    }

    #[test]
    fn the_marker_and_the_description_survive_trimming() {
        let mut s = spec();
        s.description = String::new();
        let alone = upstream_description(&s, Some("u"));
        assert_eq!(
            alone, "[gebeta-operator:u]",
            "no leading space to be trimmed away"
        );
        assert_eq!(marker_uid(" [gebeta-operator:u] \n"), Some("u"));
        let mut acct = account(&s, "u");
        acct.description = format!("  {alone}  ");
        assert!(
            drift(&s, &acct, Some("u")).0.is_empty(),
            "trimmed upstream: no drift"
        );
        s.description = "  padded  ".into();
        acct.description = "padded [gebeta-operator:u]".into();
        assert!(drift(&s, &acct, Some("u")).0.is_empty());
    }

    #[test]
    fn no_drift_when_upstream_matches_in_any_scope_order() {
        let s = spec();
        let (patch, changed) = drift(&s, &account(&s, "u"), Some("u"));
        assert!(patch.is_empty() && changed.is_empty(), "{changed:?}");
    }

    #[test]
    fn drift_lists_each_changed_field() {
        let mut s = spec();
        let acct = account(&s, "u");
        s.description = "renamed".into();
        s.scopes.push(Scope::Geocoding);
        s.suspended = true;
        let (patch, changed) = drift(&s, &acct, Some("u"));
        assert_eq!(changed, ["description", "scopes", "status"]);
        assert_eq!(
            patch.description.as_deref(),
            Some("renamed [gebeta-operator:u]")
        );
        assert_eq!(
            patch.scopes,
            Some(vec![Scope::Tile, Scope::Direction, Scope::Geocoding])
        );
        assert_eq!(patch.status, Some(AccountState::Suspended));
    }

    #[test]
    fn adopted_accounts_get_no_marker_and_revoked_ones_no_patch() {
        let s = spec();
        let mut acct = account(&s, "u");
        acct.description = "maps backend".into();
        assert!(drift(&s, &acct, None).0.is_empty());
        acct.status = AccountState::Revoked;
        acct.scopes.clear();
        assert!(drift(&s, &acct, None).0.is_empty());
    }

    #[test]
    fn immutable_fields_are_reported_not_patched() {
        let s = spec();
        let mut acct = account(&s, "u");
        acct.platform = Platform::Ios;
        assert_eq!(immutable_mismatch(&s, &acct), ["platform"]);
        assert!(drift(&s, &acct, Some("u")).0.is_empty());
    }
}
