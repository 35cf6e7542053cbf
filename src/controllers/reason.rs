//! Every condition and event reason of both controllers, in one place: the `Ready`
//! condition's reasons, event reasons, and the label values of
//! `refresh_failures_total{reason}`. README's troubleshooting table lists the condition
//! reasons (a test checks it).

pub const READY: &str = "Ready";
pub const SUSPENDED: &str = "Suspended";
pub const SECRET_CONFLICT: &str = "SecretConflict";
pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
pub const SECRET_KEY_NOT_FOUND: &str = "SecretKeyNotFound";
pub const INVALID_SECRET: &str = "InvalidSecret";
pub const SOURCE_NOT_READY: &str = "SourceNotReady";
pub const INVALID_CREDENTIALS: &str = "InvalidCredentials";
pub const UPSTREAM_UNAVAILABLE: &str = "UpstreamUnavailable";
pub const TOKEN_EXPIRED: &str = "TokenExpired";
pub const INVALID_TOKEN_FROM_UPSTREAM: &str = "InvalidTokenFromUpstream";
/// The spec cannot be acted on (e.g. `tokenKey` equal to `expiresAtKey`).
pub const INVALID_SPEC: &str = "InvalidSpec";
/// No token yet and nothing has failed (only seen between two reconciles).
pub const PENDING: &str = "Pending";
/// The API answered but a Kubernetes write of the answer failed (kept in memory and
/// written at the next attempt, without a new call).
pub const SECRET_WRITE_FAILED: &str = "SecretWriteFailed";
/// A rollout-restart target does not exist (event only).
pub const ROLLOUT_TARGET_NOT_FOUND: &str = "RolloutTargetNotFound";
/// A rollout-restart target did not opt in to restarts by this object (event only).
pub const ROLLOUT_TARGET_NOT_OPTED_IN: &str = "RolloutTargetNotOptedIn";
/// A rollout-restart patch failed; retried with backoff (event only).
pub const ROLLOUT_RESTART_FAILED: &str = "RolloutRestartFailed";
/// The template asks for another Secret type than the live Secret's (event only).
pub const SECRET_TYPE_IMMUTABLE: &str = "SecretTypeImmutable";

/// Reasons of failed Gebeta calls: remembered in `status.lastFailureReason` until a call
/// succeeds. Every other failure is recomputed on each reconcile.
pub const CALL_FAILURES: [&str; 3] = [
    INVALID_CREDENTIALS,
    UPSTREAM_UNAVAILABLE,
    INVALID_TOKEN_FROM_UPSTREAM,
];

/// Call failures that leave a still-valid token usable (Ready stays True).
pub fn is_transient(reason: &str) -> bool {
    reason == UPSTREAM_UNAVAILABLE || reason == INVALID_TOKEN_FROM_UPSTREAM
}

// Service accounts: conditions.
pub const MISSING_CREDENTIALS: &str = "MissingCredentials";
pub const CREDENTIALS_NOT_ALLOWED: &str = "CredentialsNotAllowed";
pub const UPSTREAM_REJECTED: &str = "UpstreamRejected";
pub const CONFIGURATION_ERROR: &str = "ConfigurationError";
pub const KUBERNETES_ERROR: &str = "KubernetesError";
pub const ROTATION_UNSUPPORTED: &str = "RotationUnsupported";
pub const ADOPTED_ACCOUNT_NOT_FOUND: &str = "AdoptedAccountNotFound";
pub const ACCOUNT_MANAGED_ELSEWHERE: &str = "AccountManagedElsewhere";
pub const UNKNOWN_UPSTREAM_VALUE: &str = "UnknownUpstreamValue";
pub const REVOKED_UPSTREAM: &str = "RevokedUpstream";
pub const IMMUTABLE_FIELD_MISMATCH: &str = "ImmutableFieldMismatch";
pub const TOKEN_SECRET_MISSING: &str = "TokenSecretMissing";
pub const RETIRE_FAILED: &str = "RetireFailed";
pub const ROTATING: &str = "Rotating";
pub const CLEANUP_FAILED: &str = "CleanupFailed";
pub const SYNCED: &str = "Synced";

// Events of both controllers (transitions, not conditions).
pub const ROTATED: &str = "Rotated";
pub const ACCOUNT_DELETED_UPSTREAM: &str = "AccountDeletedUpstream";
pub const ADOPTED: &str = "Adopted";
pub const DRIFT_CORRECTED: &str = "DriftCorrected";
pub const REACTIVATED: &str = "Reactivated";
pub const UPDATED: &str = "Updated";
pub const ORPHAN_DELETED: &str = "OrphanDeleted";
pub const RECOVERED: &str = "Recovered";
pub const CREATED: &str = "Created";
pub const RETIRED: &str = "Retired";
pub const UPSTREAM_CLEANUP_SKIPPED: &str = "UpstreamCleanupSkipped";
pub const ORPHANED: &str = "Orphaned";
pub const DELETED: &str = "Deleted";
pub const REVOKED: &str = "Revoked";
pub const ISSUED: &str = "Issued";

/// The reasons the `Ready` condition of either kind can have (README documents each).
pub const CONDITIONS: &[&str] = &[
    ACCOUNT_MANAGED_ELSEWHERE,
    ADOPTED_ACCOUNT_NOT_FOUND,
    CLEANUP_FAILED,
    CONFIGURATION_ERROR,
    CREDENTIALS_NOT_ALLOWED,
    IMMUTABLE_FIELD_MISMATCH,
    INVALID_CREDENTIALS,
    INVALID_SECRET,
    INVALID_SPEC,
    INVALID_TOKEN_FROM_UPSTREAM,
    KUBERNETES_ERROR,
    MISSING_CREDENTIALS,
    PENDING,
    READY,
    RETIRE_FAILED,
    REVOKED_UPSTREAM,
    ROTATING,
    ROTATION_UNSUPPORTED,
    SECRET_CONFLICT,
    SECRET_KEY_NOT_FOUND,
    SECRET_NOT_FOUND,
    SECRET_WRITE_FAILED,
    SOURCE_NOT_READY,
    SUSPENDED,
    TOKEN_EXPIRED,
    TOKEN_SECRET_MISSING,
    UNKNOWN_UPSTREAM_VALUE,
    UPSTREAM_REJECTED,
    UPSTREAM_UNAVAILABLE,
];

#[cfg(test)]
mod tests {
    #[test]
    fn readme_explains_every_condition_reason() {
        let readme = include_str!("../../README.md");
        let missing: Vec<&str> = super::CONDITIONS
            .iter()
            .copied()
            .filter(|r| !readme.contains(&format!("`{r}`")))
            .collect();
        assert!(missing.is_empty(), "not in README: {missing:?}");
    }
}
