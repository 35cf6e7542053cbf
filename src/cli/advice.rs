//! What to do about a condition reason: one line per reason, shown by `kubectl gebeta status`
//! (and by `refresh`/`rotate` when they fail) next to every object that is not Ready.
//!
//! This is the CLI's copy of README's "Troubleshooting by condition reason" table, written as
//! instructions. A unit test reads README and fails when a reason listed there has no line
//! here (or one for the wrong kind), so the two cannot drift apart. `{name}` and `{namespace}`
//! are replaced by the object's.

use super::view::Kind;
use crate::controllers::reason;

/// Which kind of object a line is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applies {
    ServiceAccount,
    AccessToken,
    Both,
}

impl Applies {
    fn includes(self, kind: Kind) -> bool {
        matches!(
            (self, kind),
            (Applies::Both, _)
                | (Applies::ServiceAccount, Kind::ServiceAccount)
                | (Applies::AccessToken, Kind::AccessToken)
        )
    }
}

/// One line of the table.
#[derive(Clone, Copy, Debug)]
pub struct Advice {
    pub applies: Applies,
    pub reason: &'static str,
    pub what_to_do: &'static str,
}

const fn line(applies: Applies, reason: &'static str, what_to_do: &'static str) -> Advice {
    Advice {
        applies,
        reason,
        what_to_do,
    }
}

use Applies::{AccessToken as Gat, Both, ServiceAccount as Gsa};

/// Every reason the controllers report, and what to do about it. Kind-specific lines come
/// before `Both` lines of the same reason, so the first match is the most specific one.
pub const TABLE: &[Advice] = &[
    line(Both, reason::READY, "nothing: all good"),
    line(
        Gsa,
        reason::SUSPENDED,
        "nothing: suspended as spec.suspended asks; set it to false to reactivate the account",
    ),
    line(
        Gsa,
        reason::CREDENTIALS_NOT_ALLOWED,
        "name a user-token Secret of this namespace in spec.userTokenSecretRef, or have the admin add {namespace} to the operator's --default-credentials-namespaces",
    ),
    line(
        Gsa,
        reason::MISSING_CREDENTIALS,
        "create the user-token Secret that spec.userTokenSecretRef (or the operator's --user-token-secret) names",
    ),
    line(
        Gsa,
        reason::INVALID_CREDENTIALS,
        "the API refused the user token (401): put a valid one in its Secret; the operator backs off meanwhile",
    ),
    line(
        Gsa,
        reason::UPSTREAM_UNAVAILABLE,
        "the Gebeta API failed (5xx, 429, timeout) and the operator retries with backoff: check the API if it lasts",
    ),
    line(
        Gsa,
        reason::UPSTREAM_REJECTED,
        "the API refused the request (400): read the message (kubectl describe gsa {name} -n {namespace}) and fix the spec",
    ),
    line(
        Gsa,
        reason::SECRET_CONFLICT,
        "the token Secret exists and is not the operator's: change spec.tokenSecretName or delete that Secret",
    ),
    line(
        Gsa,
        reason::TOKEN_SECRET_MISSING,
        "the token Secret was deleted and the API cannot return the token again: kubectl gebeta rotate {name} -n {namespace}",
    ),
    line(
        Gsa,
        reason::REVOKED_UPSTREAM,
        "revoked outside Kubernetes: kubectl gebeta rotate {name} -n {namespace} for a new account",
    ),
    line(
        Gsa,
        reason::ADOPTED_ACCOUNT_NOT_FOUND,
        "spec.accountId does not exist upstream: check the id (it is immutable: recreate the object to change it)",
    ),
    line(
        Gsa,
        reason::ACCOUNT_MANAGED_ELSEWHERE,
        "another GebetaServiceAccount created this account: delete this object (it leaves the account alone), or delete the other object first",
    ),
    line(
        Gsa,
        reason::UNKNOWN_UPSTREAM_VALUE,
        "the API sent a value this operator version does not know: upgrade the operator, or kubectl gebeta rotate {name} -n {namespace}",
    ),
    line(
        Gsa,
        reason::IMMUTABLE_FIELD_MISMATCH,
        "platform or isAdmin differ upstream: kubectl gebeta rotate {name} -n {namespace} to replace the account",
    ),
    line(
        Gsa,
        reason::ROTATING,
        "the replaced account waits out its grace period or for the named access tokens; a token stuck there keeps the old account ACTIVE: fix or suspend it",
    ),
    line(
        Gsa,
        reason::INVALID_SPEC,
        "fix spec.rotation: an interval of at least 10s, readable durations, and no rotation of an adopted account",
    ),
    line(
        Gsa,
        reason::RETIRE_FAILED,
        "the replaced account (status.retiring) is not retired yet and the operator retries: check the user token's rights and the API",
    ),
    line(
        Gsa,
        reason::CLEANUP_FAILED,
        "fix the credentials, or release the object without cleanup: kubectl annotate gsa {name} -n {namespace} gebeta.app/skip-upstream-cleanup=true",
    ),
    line(
        Gsa,
        reason::ROTATION_UNSUPPORTED,
        "an adopted account cannot be rotated (its token is not the operator's): remove the gebeta.app/rotate annotation",
    ),
    line(
        Gsa,
        reason::CONFIGURATION_ERROR,
        "the operator's Gebeta client is misconfigured: check its --gebeta-api-url and --gebeta-ca-file",
    ),
    line(
        Gat,
        reason::SECRET_CONFLICT,
        "the target Secret exists and is not the operator's (nothing was overwritten): change spec.secretName or delete that Secret",
    ),
    line(
        Gat,
        reason::SECRET_NOT_FOUND,
        "create the input Secret that spec.clientToken or spec.serverToken names",
    ),
    line(
        Gat,
        reason::SECRET_KEY_NOT_FOUND,
        "add the missing key to the input Secret, or fix the key name in the spec",
    ),
    line(
        Gat,
        reason::INVALID_SECRET,
        "put a non-empty token into the input Secret's key",
    ),
    line(
        Gat,
        reason::SOURCE_NOT_READY,
        "a referenced GebetaServiceAccount is missing or not Ready: kubectl gebeta status -n {namespace} shows why",
    ),
    line(
        Gat,
        reason::INVALID_CREDENTIALS,
        "the API refused the client/server tokens (401 at auth): replace them, or rotate the GebetaServiceAccounts they come from",
    ),
    line(
        Gat,
        reason::UPSTREAM_UNAVAILABLE,
        "a refresh failed; the current token is kept while valid and the operator retries with backoff: check the Gebeta API if it lasts",
    ),
    line(
        Gat,
        reason::TOKEN_EXPIRED,
        "the token expired and no new one could be obtained: fix the cause in the message, then kubectl gebeta refresh {name} -n {namespace}",
    ),
    line(
        Gat,
        reason::INVALID_TOKEN_FROM_UPSTREAM,
        "the API answered something that is not a JWT (nothing was written); retried: check the operator's --gebeta-api-url",
    ),
    line(
        Gat,
        reason::SUSPENDED,
        "spec.suspended is true: set it to false to resume refreshes",
    ),
    line(
        Gat,
        reason::INVALID_SPEC,
        "fix the spec: tokenKey must differ from expiresAtKey, and secretName from the operator's refresh Secret",
    ),
    line(
        Gat,
        reason::PENDING,
        "the first token has not been issued yet: wait a moment; if it lasts, check that the operator runs",
    ),
    line(
        Gat,
        reason::SECRET_WRITE_FAILED,
        "a Kubernetes write failed; the answer is written at the next attempt: check the operator's RBAC and the API server",
    ),
    line(
        Gat,
        reason::SECRET_TYPE_IMMUTABLE,
        "secretTemplate.type differs from the live Secret's: delete the Secret to have it recreated",
    ),
    line(
        Both,
        reason::KUBERNETES_ERROR,
        "a Kubernetes call of the operator failed: check its RBAC and the API server (kubectl describe)",
    ),
];

/// What to do about `reason` on an object of `kind` named `namespace/name`, if the table
/// knows the reason.
pub fn what_to_do(kind: Kind, reason: &str, namespace: &str, name: &str) -> Option<String> {
    TABLE
        .iter()
        .find(|a| a.reason == reason && a.applies.includes(kind))
        .map(|a| {
            a.what_to_do
                .replace("{namespace}", namespace)
                .replace("{name}", name)
        })
}

/// The line for an object that is not Ready: the table's, or a pointer to the object's
/// events for a reason the table does not know; for an object without a Ready condition, a
/// question about the operator.
pub fn for_not_ready(kind: Kind, reason: Option<&str>, namespace: &str, name: &str) -> String {
    match reason.filter(|r| !r.is_empty()) {
        None => format!(
            "no status yet: is the operator running, and does it watch namespace {namespace}?"
        ),
        Some(reason) => what_to_do(kind, reason, namespace, name).unwrap_or_else(|| {
            format!(
                "see the message and events: kubectl describe {} {name} -n {namespace}",
                kind.short()
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(kinds, reasons)` of each row of README's troubleshooting table.
    fn readme_rows() -> Vec<(String, Vec<String>)> {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("## Troubleshooting by condition reason")
            .nth(1)
            .expect("README has the troubleshooting section");
        let section = section.split("\n## ").next().unwrap();
        section
            .lines()
            .filter(|l| l.starts_with("| gsa") || l.starts_with("| gat") || l.starts_with("| both"))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let reasons = cells[2]
                    .split(',')
                    .map(|r| r.trim().trim_matches('`').to_string())
                    .collect();
                (cells[1].to_string(), reasons)
            })
            .collect()
    }

    #[test]
    fn every_reason_in_readme_has_a_line_for_its_kind() {
        let rows = readme_rows();
        assert!(rows.len() >= 30, "README's table was not found: {rows:?}");
        for (kinds, reasons) in rows {
            let kinds: &[Kind] = if kinds.starts_with("both") {
                &[Kind::ServiceAccount, Kind::AccessToken]
            } else if kinds.starts_with("gsa") {
                &[Kind::ServiceAccount]
            } else {
                &[Kind::AccessToken]
            };
            for reason in &reasons {
                for kind in kinds {
                    assert!(
                        what_to_do(*kind, reason, "ns", "obj").is_some(),
                        "README lists {reason} for {kind:?}, the CLI's table does not"
                    );
                }
            }
        }
    }

    #[test]
    fn every_condition_reason_of_the_controllers_has_a_line() {
        for r in reason::CONDITIONS {
            let kinds = [Kind::ServiceAccount, Kind::AccessToken];
            assert!(
                kinds
                    .iter()
                    .any(|k| what_to_do(*k, r, "ns", "obj").is_some()),
                "no line for {r}"
            );
        }
        assert!(what_to_do(Kind::AccessToken, reason::SECRET_TYPE_IMMUTABLE, "n", "o").is_some());
    }

    #[test]
    fn kind_specific_lines_win_and_names_are_filled_in() {
        let gsa = what_to_do(Kind::ServiceAccount, "SecretConflict", "team", "maps").unwrap();
        let gat = what_to_do(Kind::AccessToken, "SecretConflict", "team", "maps").unwrap();
        assert!(gsa.contains("tokenSecretName"), "{gsa}");
        assert!(
            gat.contains("secretName") && !gat.contains("tokenSecretName"),
            "{gat}"
        );
        let revoked = what_to_do(Kind::ServiceAccount, "RevokedUpstream", "team", "maps").unwrap();
        assert!(
            revoked.contains("kubectl gebeta rotate maps -n team"),
            "{revoked}"
        );
        assert_eq!(
            what_to_do(Kind::AccessToken, "RevokedUpstream", "t", "m"),
            None
        );
        assert!(
            TABLE.iter().all(|a| !a.what_to_do.contains('\n')),
            "one line each"
        );
    }

    #[test]
    fn unknown_reasons_and_missing_status_still_get_a_line() {
        let unknown = for_not_ready(Kind::AccessToken, Some("Brandnew"), "team", "tok");
        assert_eq!(
            unknown,
            "see the message and events: kubectl describe gat tok -n team"
        );
        let none = for_not_ready(Kind::ServiceAccount, None, "team", "acct");
        assert!(none.contains("is the operator running"), "{none}");
        assert_eq!(
            for_not_ready(Kind::ServiceAccount, Some(""), "team", "acct"),
            none
        );
    }
}
