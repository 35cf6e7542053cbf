//! `GebetaAccessToken`: a Secret that always holds a valid Gebeta access token.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{Condition, LocalObjectReference, SecretKeySelector};

/// Default key of the access token in the target Secret.
pub const DEFAULT_TOKEN_KEY: &str = "token";
/// Default key of the token's expiry time (RFC 3339) in the target Secret.
pub const DEFAULT_EXPIRES_AT_KEY: &str = "expiresAt";

/// Desired state of an access token kept fresh in a Secret.
// Each printcolumn(...) repeats name/type_/json_path keys, which clippy mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gebeta.app",
    version = "v1alpha1",
    kind = "GebetaAccessToken",
    namespaced,
    status = "GebetaAccessTokenStatus",
    shortname = "gat",
    category = "gebeta",
    doc = "Exchanges a Gebeta client token and server token for a short-lived access token, writes it into a Secret and refreshes it before it expires.",
    printcolumn(name = "Secret", type_ = "string", json_path = ".spec.secretName"),
    printcolumn(name = "Expires", type_ = "date", json_path = ".status.expiresAt"),
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
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct GebetaAccessTokenSpec {
    /// Where the client token comes from.
    pub client_token: TokenSource,

    /// Where the server token comes from.
    pub server_token: TokenSource,

    /// Name of the Secret the access token is written to. The operator creates and owns it,
    /// and refuses to touch a Secret of that name that it does not own. Immutable.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("secretName is immutable"))]
    pub secret_name: String,

    /// Shape of the target Secret: type, extra labels and annotations, key names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,

    /// Refresh when this much of the token's life is left (e.g. `5m`, `1h30m`). Default: at two
    /// thirds of the lifetime. Clamped so a refresh never happens before half the lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub refresh_before: Option<String>,

    /// Workloads to restart (by a pod-template annotation) after each new token, for
    /// workloads that read the token from an environment variable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub rollout_restart_targets: Vec<RolloutRestartTarget>,

    /// Stop refreshing while true. The token in the Secret is left as it is.
    #[serde(default)]
    pub suspended: bool,
}

/// Exactly one source of a token.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.serviceAccountRef) != has(self.secretKeyRef)").message("exactly one of serviceAccountRef or secretKeyRef must be set"))]
pub struct TokenSource {
    /// A GebetaServiceAccount in this namespace; its token Secret is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_ref: Option<LocalObjectReference>,

    /// A key of a Secret in this namespace (e.g. a token made in the Gebeta dashboard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeySelector>,
}

/// Shape of the Secret the operator writes.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    /// Secret type. Default: `Opaque`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Extra labels on the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on the Secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Key of the access token. Default: `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub token_key: Option<String>,
    /// Key of the expiry time (RFC 3339). Default: `expiresAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub expires_at_key: Option<String>,
}

/// A workload restarted after each new token.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRestartTarget {
    /// Kind of the workload.
    pub kind: WorkloadKind,
    /// Name of the workload, in this namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Kinds of workload that can be restarted.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

/// Observed state of an access token.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GebetaAccessTokenStatus {
    /// When the token in the Secret expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// When the token in the Secret was issued (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<String>,
    /// When the Secret last received a new token (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh_time: Option<String>,
    /// When the operator plans the next refresh (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_refresh_time: Option<String>,
    /// Stable reason of the last failure, cleared on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_reason: Option<String>,
    /// Human-readable message of the last failure (never a secret), cleared on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_message: Option<String>,
    /// The last value of the `gebeta.app/refresh` annotation acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_refresh_request: Option<String>,
    /// The `.metadata.generation` last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` condition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
