//! One row per object, the same for both kinds, as `status` and `timeline` show them: built
//! from the objects by pure functions, sorted by urgency.

use std::cmp::Ordering;

use jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;

use super::{advice, time};
use crate::{
    controllers::conditions,
    crd::{Condition, GebetaAccessToken, GebetaServiceAccount},
};

/// The two kinds the operator serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    // Declared in display order: tokens before accounts at equal urgency.
    #[serde(rename = "GebetaAccessToken")]
    AccessToken,
    #[serde(rename = "GebetaServiceAccount")]
    ServiceAccount,
}

impl Kind {
    /// The short name (`kubectl get gat`).
    pub fn short(self) -> &'static str {
        match self {
            Kind::AccessToken => "gat",
            Kind::ServiceAccount => "gsa",
        }
    }
}

/// What `status` and `timeline` know about one object.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    /// gsa: the upstream state (`ACTIVE`, `SUSPENDED`, `REVOKED`), `PENDING` before the first
    /// one; gat: `VALID`, `EXPIRED`, `NO TOKEN` or `SUSPENDED`.
    pub state: String,
    /// The Ready condition, if the operator wrote one.
    pub ready: Option<Condition>,
    /// gsa: its account; gat: the accounts its session was opened with.
    pub account_ids: Vec<String>,
    pub expires_at: Option<Timestamp>,
    pub next_refresh: Option<Timestamp>,
    pub last_refresh: Option<Timestamp>,
}

impl Row {
    pub fn from_service_account(gsa: &GebetaServiceAccount) -> Row {
        let status = gsa.status.clone().unwrap_or_default();
        Row {
            kind: Kind::ServiceAccount,
            namespace: gsa.namespace().unwrap_or_default(),
            name: gsa.name_any(),
            state: status.state.map_or("PENDING", |s| s.as_str()).to_string(),
            ready: conditions::get(&status.conditions, conditions::READY).cloned(),
            account_ids: status.account_id.into_iter().collect(),
            expires_at: None,
            next_refresh: None,
            last_refresh: None,
        }
    }

    pub fn from_access_token(gat: &GebetaAccessToken, now: Timestamp) -> Row {
        let status = gat.status.clone().unwrap_or_default();
        let expires_at = time::parse(status.expires_at.as_deref());
        let state = if gat.spec.suspended {
            "SUSPENDED"
        } else {
            match expires_at {
                None => "NO TOKEN",
                Some(t) if t <= now => "EXPIRED",
                Some(_) => "VALID",
            }
        };
        Row {
            kind: Kind::AccessToken,
            namespace: gat.namespace().unwrap_or_default(),
            name: gat.name_any(),
            state: state.to_string(),
            ready: conditions::get(&status.conditions, conditions::READY).cloned(),
            account_ids: status.source_account_ids,
            expires_at,
            next_refresh: time::parse(status.next_refresh_time.as_deref()),
            last_refresh: time::parse(status.last_refresh_time.as_deref()),
        }
    }

    /// `True`, `False` or `Unknown` (no Ready condition yet).
    pub fn ready_status(&self) -> &str {
        self.ready.as_ref().map_or("Unknown", |c| c.status.as_str())
    }

    pub fn is_ready(&self) -> bool {
        self.ready_status() == "True"
    }

    pub fn reason(&self) -> Option<&str> {
        self.ready
            .as_ref()
            .map(|c| c.reason.as_str())
            .filter(|r| !r.is_empty())
    }

    /// What to do next, for an object that is not Ready.
    pub fn what_to_do(&self) -> Option<String> {
        (!self.is_ready())
            .then(|| advice::for_not_ready(self.kind, self.reason(), &self.namespace, &self.name))
    }

    /// `namespace/name`.
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The account ids, 8 characters each (enough to tell them apart in a listing).
    pub fn short_account_ids(&self) -> String {
        if self.account_ids.is_empty() {
            return "-".into();
        }
        self.account_ids
            .iter()
            .map(|id| short_id(id))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The first 8 characters of an account id.
pub fn short_id(id: &str) -> &str {
    id.char_indices().nth(8).map_or(id, |(i, _)| &id[..i])
}

/// Most urgent first: tokens by expiry (expired ones first, then the soonest to expire), then
/// objects without a token, those not Ready first; ties by kind, namespace and name.
pub fn by_urgency(a: &Row, b: &Row) -> Ordering {
    let key = |r: &Row| {
        (
            r.expires_at.is_none(),
            r.expires_at,
            r.is_ready(),
            r.kind,
            r.namespace.clone(),
            r.name.clone(),
        )
    };
    key(a).cmp(&key(b))
}

/// The rows of every object, most urgent first.
pub fn rows(
    accounts: &[GebetaServiceAccount],
    tokens: &[GebetaAccessToken],
    now: Timestamp,
) -> Vec<Row> {
    let mut rows: Vec<Row> = tokens
        .iter()
        .map(|t| Row::from_access_token(t, now))
        .chain(accounts.iter().map(Row::from_service_account))
        .collect();
    rows.sort_by(by_urgency);
    rows
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    pub fn gat(name: &str, status: serde_json::Value) -> GebetaAccessToken {
        serde_json::from_value(json!({
            "apiVersion": "gebeta.app/v1alpha1", "kind": "GebetaAccessToken",
            "metadata": {"name": name, "namespace": "team"},
            "spec": {"clientToken": {"secretKeyRef": {"name": "s", "key": "c"}},
                     "serverToken": {"secretKeyRef": {"name": "s", "key": "s"}},
                     "secretName": format!("{name}-secret")},
            "status": status,
        }))
        .unwrap()
    }

    pub fn gsa(name: &str, status: serde_json::Value) -> GebetaServiceAccount {
        serde_json::from_value(json!({
            "apiVersion": "gebeta.app/v1alpha1", "kind": "GebetaServiceAccount",
            "metadata": {"name": name, "namespace": "team"},
            "spec": {"platform": "WEB", "scopes": ["TILE"]},
            "status": status,
        }))
        .unwrap()
    }

    pub fn ready(status: bool, reason: &str) -> serde_json::Value {
        json!([{"type": "Ready", "status": if status {"True"} else {"False"}, "reason": reason,
                "message": format!("{reason} message"), "lastTransitionTime": "2026-11-28T04:00:00Z"}])
    }

    #[test]
    fn access_token_rows_read_the_status_times() {
        let now = at("2026-11-28T05:00:00Z");
        let t = gat(
            "maps",
            json!({"expiresAt": "2026-11-28T05:41:00Z", "nextRefreshTime": "2026-11-28T05:27:00Z",
                   "lastRefreshTime": "2026-11-28T04:41:00Z",
                   "sourceAccountIds": ["1309405e-aaaa-bbbb", "77f0c2d1-cccc"],
                   "conditions": ready(true, "Ready")}),
        );
        let row = Row::from_access_token(&t, now);
        assert_eq!(row.state, "VALID");
        assert_eq!(row.qualified_name(), "team/maps");
        assert_eq!(row.short_account_ids(), "1309405e,77f0c2d1");
        assert_eq!(row.next_refresh, Some(at("2026-11-28T05:27:00Z")));
        assert!(row.is_ready());
        assert_eq!(row.what_to_do(), None);

        let expired = gat(
            "old",
            json!({"expiresAt": "2026-11-28T04:57:00Z", "conditions": ready(false, "TokenExpired")}),
        );
        let row = Row::from_access_token(&expired, now);
        assert_eq!(row.state, "EXPIRED");
        assert!(
            row.what_to_do()
                .unwrap()
                .contains("kubectl gebeta refresh old -n team")
        );
        assert_eq!(
            Row::from_access_token(&gat("new", json!({})), now).state,
            "NO TOKEN"
        );
        assert_eq!(
            Row::from_access_token(&gat("new", json!({})), now).ready_status(),
            "Unknown"
        );
    }

    #[test]
    fn service_account_rows_show_the_upstream_state() {
        let a = gsa(
            "acct",
            json!({"accountId": "6f1c2d3e-0000", "state": "REVOKED", "conditions": ready(false, "RevokedUpstream")}),
        );
        let row = Row::from_service_account(&a);
        assert_eq!(
            (row.state.as_str(), row.short_account_ids().as_str()),
            ("REVOKED", "6f1c2d3e")
        );
        assert_eq!(row.reason(), Some("RevokedUpstream"));
        assert_eq!(
            Row::from_service_account(&gsa("new", json!({}))).state,
            "PENDING"
        );
        assert_eq!(short_id("abc"), "abc");
    }

    #[test]
    fn urgency_puts_expired_first_then_soonest_expiry_then_tokenless() {
        let now = at("2026-11-28T05:00:00Z");
        let tokens = [
            gat(
                "later",
                json!({"expiresAt": "2026-11-28T06:00:00Z", "conditions": ready(true, "Ready")}),
            ),
            gat("pending", json!({"conditions": ready(false, "Pending")})),
            gat(
                "soon",
                json!({"expiresAt": "2026-11-28T05:05:00Z", "conditions": ready(true, "Ready")}),
            ),
            gat(
                "expired",
                json!({"expiresAt": "2026-11-28T04:00:00Z", "conditions": ready(false, "TokenExpired")}),
            ),
            gat(
                "just-expired",
                json!({"expiresAt": "2026-11-28T04:59:00Z", "conditions": ready(false, "TokenExpired")}),
            ),
        ];
        let accounts = [
            gsa(
                "a-ready",
                json!({"state": "ACTIVE", "conditions": ready(true, "Ready")}),
            ),
            gsa(
                "z-broken",
                json!({"conditions": ready(false, "MissingCredentials")}),
            ),
        ];
        let order: Vec<String> = rows(&accounts, &tokens, now)
            .into_iter()
            .map(|r| format!("{} {}", r.kind.short(), r.name))
            .collect();
        assert_eq!(
            order,
            [
                "gat expired",
                "gat just-expired",
                "gat soon",
                "gat later",
                "gat pending",
                "gsa z-broken",
                "gsa a-ready",
            ]
        );
    }
}
