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

use std::{collections::BTreeSet, time::Duration};

use jiff::{SignedDuration, Timestamp};

use super::ROTATE_ANNOTATION;
use crate::{
    controllers::{EventNote, conditions::format_time, reason},
    crd::{GebetaAccessToken, GebetaServiceAccountSpec, common::parse_duration},
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

/// What to do about an account read upstream, once it is known to be this object's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Change these fields upstream (their names go in the event).
    Patch {
        patch: AccountPatch,
        changed: Vec<&'static str>,
    },
    /// Upstream matches the spec.
    InSync,
}

/// The decision after reading the account: `Err((reason, message))` to report and touch
/// nothing, else a patch or nothing. `owner_uid` is `None` for adopted accounts (no marker).
pub fn assess(
    spec: &GebetaServiceAccountSpec,
    account: &Account,
    owner_uid: Option<&str>,
) -> Result<Verdict, (&'static str, String)> {
    let id = &account.id;
    if !account.unknown.is_empty() {
        // A newer API than this operator: acting on values it cannot read (patching a state
        // back, dropping a scope) could undo what someone meant.
        return Err((
            reason::UNKNOWN_UPSTREAM_VALUE,
            format!(
                "account {id} has values this operator does not know ({}); it is left as it \
                 is: upgrade the operator, or set {ROTATE_ANNOTATION} to replace the account",
                account.unknown.join(", ")
            ),
        ));
    }
    if account.status == AccountState::Revoked {
        // Often a security response: not undone, not replaced without being asked.
        return Err((
            reason::REVOKED_UPSTREAM,
            format!(
                "account {id} was revoked upstream; it is not recreated automatically. Set the \
                 annotation {ROTATE_ANNOTATION} to a new value to get a new account"
            ),
        ));
    }
    let immutable = immutable_mismatch(spec, account);
    if !immutable.is_empty() {
        return Err((
            reason::IMMUTABLE_FIELD_MISMATCH,
            format!(
                "upstream {} differs from the spec and cannot be changed; set \
                 {ROTATE_ANNOTATION} to replace the account",
                immutable.join(", ")
            ),
        ));
    }
    let (patch, changed) = drift(spec, account, owner_uid);
    Ok(if patch.is_empty() {
        Verdict::InSync
    } else {
        Verdict::Patch { patch, changed }
    })
}

/// The event for a patch made upstream: a correction of someone else's change when the spec
/// did not change since the last reconcile, else what the spec asked for.
pub fn patch_event(
    id: &str,
    patch: &AccountPatch,
    changed: &[&str],
    spec_unchanged: bool,
) -> EventNote {
    let (reason, note) = match patch.status {
        _ if spec_unchanged => (
            reason::DRIFT_CORRECTED,
            format!(
                "account {id} was changed outside Kubernetes; restored {}",
                changed.join(", ")
            ),
        ),
        Some(AccountState::Suspended) => (reason::SUSPENDED, format!("account {id} suspended")),
        Some(AccountState::Active) => (reason::REACTIVATED, format!("account {id} reactivated")),
        _ => (
            reason::UPDATED,
            format!("account {id}: updated {}", changed.join(", ")),
        ),
    };
    EventNote::normal(reason, "Update", &note)
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

/// Shortest rotation interval accepted.
pub const MIN_ROTATION_INTERVAL: Duration = Duration::from_secs(10);
/// Grace period of a rotation when `spec.rotation` sets none.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(600);

/// A rotation schedule read from the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub interval: Duration,
    pub grace: Duration,
}

/// The spec's rotation schedule: `Ok(None)` without one, `Err` with a message when it
/// cannot be used.
pub fn schedule(spec: &GebetaServiceAccountSpec) -> Result<Option<Schedule>, String> {
    let Some(rotation) = &spec.rotation else {
        return Ok(None);
    };
    if spec.account_id.is_some() {
        return Err(
            "spec.rotation cannot be used with spec.accountId: an adopted account's \
                    token is not the operator's"
                .into(),
        );
    }
    let interval = parse_duration(&rotation.interval)
        .filter(|i| *i >= MIN_ROTATION_INTERVAL)
        .ok_or_else(|| {
            format!(
                "spec.rotation.interval {:?} is not a duration of at least 10s",
                rotation.interval
            )
        })?;
    let grace = match &rotation.grace_period {
        None => DEFAULT_GRACE_PERIOD,
        Some(g) => parse_duration(g)
            .ok_or_else(|| format!("spec.rotation.gracePeriod {g:?} is not a duration"))?,
    };
    Ok(Some(Schedule { interval, grace }))
}

/// When the next scheduled rotation is due: `interval` after `since`, up to 10% early by an
/// amount fixed by `seed` (the object's UID), so accounts created together spread out.
pub fn next_rotation(since: Timestamp, interval: Duration, seed: u64) -> Timestamp {
    let early = interval.mul_f64((seed % 1000) as f64 / 1000.0 * 0.1);
    let after = interval.saturating_sub(early);
    since
        .checked_add(SignedDuration::try_from(after).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

/// The rotation to work on: one the annotation asks for, else one already in progress
/// (interrupted), else a scheduled one that is due (`scheduled:<due time>`).
pub fn rotation_to_run(
    requested: Option<&str>,
    in_progress: Option<&str>,
    due: Option<Timestamp>,
    now: Timestamp,
) -> Option<String> {
    requested.or(in_progress).map(str::to_string).or_else(|| {
        due.filter(|d| *d <= now)
            .map(|d| format!("{SCHEDULED_PREFIX}{}", format_time(d)))
    })
}

/// Prefix of the rotation key of scheduled rotations (annotation values are the user's).
pub const SCHEDULED_PREFIX: &str = "scheduled:";

/// The access tokens of the namespace that use the account named `gsa` (client or server
/// token) and do not hold a token from `current` yet. Suspended tokens and tokens being
/// deleted do not refresh, so they are not waited for.
pub fn consumers_behind(tokens: &[GebetaAccessToken], gsa: &str, current: &str) -> Vec<String> {
    let uses = |t: &GebetaAccessToken| {
        [&t.spec.client_token, &t.spec.server_token]
            .iter()
            .any(|src| {
                src.service_account_ref
                    .as_ref()
                    .is_some_and(|r| r.name == gsa)
            })
    };
    let mut behind: Vec<String> = tokens
        .iter()
        .filter(|t| uses(t) && !t.spec.suspended && t.metadata.deletion_timestamp.is_none())
        .filter(|t| {
            !t.status
                .as_ref()
                .is_some_and(|s| s.source_account_ids.iter().any(|id| id == current))
        })
        .filter_map(|t| t.metadata.name.clone())
        .collect();
    behind.sort();
    behind
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
            rotation: None,
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
    fn scheduled_rotations_are_spread_and_never_late() {
        let since: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let interval = Duration::from_secs(720 * 3600);
        let times: BTreeSet<Timestamp> = (0..50u64)
            .map(|seed| next_rotation(since, interval, seed * 7919))
            .collect();
        assert!(
            times.len() > 40,
            "spread: {} distinct times of 50",
            times.len()
        );
        let latest = since
            .checked_add(SignedDuration::try_from(interval).unwrap())
            .unwrap();
        let earliest = since
            .checked_add(SignedDuration::try_from(interval.mul_f64(0.9)).unwrap())
            .unwrap();
        assert!(times.iter().all(|t| *t <= latest && *t >= earliest));
    }

    #[test]
    fn the_annotation_then_an_interrupted_rotation_then_the_schedule() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let past = now.checked_sub(SignedDuration::from_secs(1)).unwrap();
        let future = now.checked_add(SignedDuration::from_secs(1)).unwrap();
        assert_eq!(
            rotation_to_run(Some("2"), Some("1"), Some(past), now).as_deref(),
            Some("2")
        );
        assert_eq!(
            rotation_to_run(None, Some("scheduled:x"), Some(future), now).as_deref(),
            Some("scheduled:x"),
            "an interrupted rotation is finished, not forgotten"
        );
        assert_eq!(
            rotation_to_run(None, None, Some(past), now).as_deref(),
            Some("scheduled:2025-12-31T23:59:59Z")
        );
        assert_eq!(rotation_to_run(None, None, Some(future), now), None);
        assert_eq!(rotation_to_run(None, None, None, now), None);
    }

    #[test]
    fn assess_reports_before_it_patches() {
        let s = spec();
        let mut acct = account(&s, "u");
        assert_eq!(assess(&s, &acct, Some("u")), Ok(Verdict::InSync));
        acct.scopes = vec![Scope::Tile];
        let Ok(Verdict::Patch { patch, changed }) = assess(&s, &acct, Some("u")) else {
            panic!("drift is patched");
        };
        assert_eq!(changed, ["scopes"]);
        assert_eq!(patch.scopes, Some(vec![Scope::Tile, Scope::Direction]));
        // Platform differs too: reported, nothing patched.
        acct.platform = Platform::Ios;
        let (reason, message) = assess(&s, &acct, Some("u")).unwrap_err();
        assert_eq!(reason, crate::controllers::reason::IMMUTABLE_FIELD_MISMATCH);
        assert!(message.contains("platform"), "{message}");
        // Revoked wins over a mismatch; a value this operator does not know wins over all.
        acct.status = AccountState::Revoked;
        assert_eq!(
            assess(&s, &acct, Some("u")).unwrap_err().0,
            crate::controllers::reason::REVOKED_UPSTREAM
        );
        acct.unknown = vec!["scope \"TRAFFIC\"".into()];
        let (reason, message) = assess(&s, &acct, Some("u")).unwrap_err();
        assert_eq!(reason, crate::controllers::reason::UNKNOWN_UPSTREAM_VALUE);
        assert!(message.contains("TRAFFIC"), "{message}");
    }

    #[test]
    fn patch_events_tell_drift_from_spec_changes() {
        let suspend = AccountPatch {
            status: Some(AccountState::Suspended),
            ..Default::default()
        };
        let e = patch_event("a1", &suspend, &["status"], false);
        assert_eq!(
            (e.reason, e.note.as_str()),
            ("Suspended", "account a1 suspended")
        );
        let e = patch_event("a1", &suspend, &["status"], true);
        assert_eq!(e.reason, "DriftCorrected");
        assert!(e.note.contains("restored status"), "{}", e.note);
        let scopes = AccountPatch {
            scopes: Some(vec![Scope::Tile]),
            ..Default::default()
        };
        assert_eq!(
            patch_event("a1", &scopes, &["scopes"], false).reason,
            "Updated"
        );
    }

    #[test]
    fn a_rotation_waits_for_the_tokens_that_use_the_account() {
        let token = |name: &str, client: &str, server: &str, ids: &[&str], suspended: bool| {
            let mut t: GebetaAccessToken = serde_json::from_value(serde_json::json!({
                "apiVersion": "gebeta.app/v1alpha1",
                "kind": "GebetaAccessToken",
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {
                    "secretName": format!("{name}-token"),
                    "suspended": suspended,
                    "clientToken": {"serviceAccountRef": {"name": client}},
                    "serverToken": {"serviceAccountRef": {"name": server}},
                },
            }))
            .unwrap();
            t.status = Some(crate::crd::GebetaAccessTokenStatus {
                source_account_ids: ids.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            });
            t
        };
        let tokens = [
            token("switched", "web", "srv", &["new", "srv-1"], false),
            token("old", "web", "srv", &["old", "srv-1"], false),
            token("as-server", "other", "web", &[], false),
            token("paused", "web", "srv", &["old"], true),
            token("unrelated", "a", "b", &[], false),
        ];
        assert_eq!(
            consumers_behind(&tokens, "web", "new"),
            ["as-server", "old"]
        );
        assert!(consumers_behind(&tokens, "srv", "srv-1").is_empty());
    }

    #[test]
    fn rotation_schedules_are_checked() {
        let mut s = spec();
        assert_eq!(schedule(&s), Ok(None));
        s.rotation = Some(crate::crd::RotationSchedule {
            interval: "720h".into(),
            grace_period: None,
        });
        assert_eq!(
            schedule(&s),
            Ok(Some(Schedule {
                interval: Duration::from_secs(720 * 3600),
                grace: DEFAULT_GRACE_PERIOD
            }))
        );
        s.rotation.as_mut().unwrap().interval = "5s".into();
        assert!(schedule(&s).unwrap_err().contains("at least 10s"));
        s.rotation.as_mut().unwrap().interval = "1h".into();
        s.rotation.as_mut().unwrap().grace_period = Some("0s".into());
        assert_eq!(schedule(&s).unwrap().unwrap().grace, Duration::ZERO);
        s.account_id = Some("acc".into());
        assert!(schedule(&s).unwrap_err().contains("adopted"));
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
