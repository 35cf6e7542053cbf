//! `GebetaAccessToken`: a Secret that always holds a valid Gebeta access token.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{
    common::{Condition, LocalObjectReference, SecretKeySelector},
    metadata::{
        self, KUBERNETES_DOMAINS, MANAGED_BY_KEY, MAX_ANNOTATIONS_SIZE, OPERATOR_DOMAIN, in_domain,
        label_value_problem, qualified_name_problem, quoted, reserved_key_domain,
    },
};

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
#[x_kube(validation = Rule::new(TYPE_IMMUTABLE).message(TYPE_IMMUTABLE_MESSAGE).field_path(".secretTemplate.type"))]
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

/// The Secret type written when `secretTemplate.type` is not set.
pub const DEFAULT_SECRET_TYPE: &str = "Opaque";
/// Most labels, and most annotations, a `secretTemplate` may set (also bounds the admission cost
/// of the CEL rules on them).
pub const MAX_TEMPLATE_ENTRIES: usize = 64;

/// RE2: a custom Secret type, `<DNS subdomain>/<name>` as a qualified name (the length of the
/// domain, at most 253, is checked apart). Shared with `GebetaPolicy.spec.allowedSecretTypes`.
macro_rules! custom_secret_type_pattern {
    () => {
        "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
    };
}
/// RE2: a Secret type of a domain Kubernetes reserves (`kubernetes.io`, `k8s.io` and their
/// subdomains). Shared with `GebetaPolicy.spec.allowedSecretTypes`.
macro_rules! reserved_secret_type_pattern {
    () => {
        "^([^/]*[.])?(kubernetes[.]io|k8s[.]io)/"
    };
}
pub(crate) use {custom_secret_type_pattern, reserved_secret_type_pattern};

/// CEL: `Opaque`, or `<DNS subdomain>/<name>` as a qualified name.
const TYPE_SHAPE: &str = concat!(
    "self == 'Opaque' || (self.matches('",
    custom_secret_type_pattern!(),
    "') && self.indexOf('/') <= 253)"
);
const TYPE_SHAPE_MESSAGE: &str =
    "type must be Opaque or a custom type <DNS subdomain>/<name>, such as example.com/gebeta-token";
/// CEL: not a type of a domain Kubernetes reserves.
const TYPE_NOT_RESERVED: &str = concat!("!self.matches('", reserved_secret_type_pattern!(), "')");
const TYPE_NOT_RESERVED_MESSAGE: &str = "'type ' + self + ' is reserved: Secret types under kubernetes.io/ and k8s.io/ (such as kubernetes.io/service-account-token) belong to Kubernetes; use Opaque or a type of your own domain, such as example.com/gebeta-token'";
/// CEL, on the spec: the Secret type (unset meaning `Opaque`) never changes. On the spec because
/// a rule on an optional field does not run when the field is added or removed.
const TYPE_IMMUTABLE: &str = "(has(self.secretTemplate) && has(self.secretTemplate.type) ? self.secretTemplate.type : 'Opaque') == (has(oldSelf.secretTemplate) && has(oldSelf.secretTemplate.type) ? oldSelf.secretTemplate.type : 'Opaque')";
const TYPE_IMMUTABLE_MESSAGE: &str = "secretTemplate.type is immutable, as a Secret's type is: delete and recreate the GebetaAccessToken to change it";
/// CEL: a Secret data key may not be `.` or start with `..`.
const SECRET_KEY_NO_DOTS: &str = "self != '.' && !self.startsWith('..')";
const SECRET_KEY_NO_DOTS_MESSAGE: &str = "a Secret key must not be '.' or start with '..'";
/// CEL, on the template: the two keys differ (defaults included).
const KEYS_DIFFER: &str = "(has(self.tokenKey) ? self.tokenKey : 'token') != (has(self.expiresAtKey) ? self.expiresAtKey : 'expiresAt')";

/// Shape of the Secret the operator writes. The operator may write Secrets of any type with any
/// labels, so what a template may ask for is limited, at admission (CEL) and again by the
/// operator ([`SecretTemplate::problems`]).
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(KEYS_DIFFER).message("tokenKey and expiresAtKey must differ"))]
pub struct SecretTemplate {
    /// Secret type. Default: `Opaque`. Either `Opaque` or a custom type of the form
    /// `<DNS subdomain>/<name>` (such as `example.com/gebeta-token`). Types under `kubernetes.io/`
    /// and `k8s.io/` (and their subdomains) are refused: the API server acts on them (a
    /// `kubernetes.io/service-account-token` Secret gets a ServiceAccount token, a
    /// `bootstrap.kubernetes.io/token` one joins nodes) or requires keys this Secret does not
    /// have. Immutable: delete and recreate the GebetaAccessToken to change it.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 317))]
    #[x_kube(
        validation = Rule::new(TYPE_SHAPE).message(TYPE_SHAPE_MESSAGE),
        validation = Rule::new(TYPE_NOT_RESERVED).message(Message::Expression(TYPE_NOT_RESERVED_MESSAGE.into()))
    )]
    pub type_: Option<String>,
    /// Extra labels on the Secret (at most 64). Keys and values follow the Kubernetes rules for
    /// labels. Reserved keys are refused: those under `kubernetes.io/`, `k8s.io/` and their
    /// subdomains (except the recommended `app.kubernetes.io/` labels such as
    /// `app.kubernetes.io/part-of`), `app.kubernetes.io/managed-by` (it marks the operator's
    /// Secrets), and those under `gebeta.app/` (the operator's own).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = MAX_TEMPLATE_ENTRIES,
        "additionalProperties" = {"type": "string", "maxLength": metadata::MAX_NAME_LEN, "pattern": metadata::LABEL_VALUE_PATTERN}
    ))]
    #[x_kube(
        validation = Rule::new(metadata::KEYS_ARE_QUALIFIED_NAMES).message(metadata::KEYS_ARE_QUALIFIED_NAMES_MESSAGE),
        validation = Rule::new(metadata::NO_RESERVED_KEYS).message(Message::Expression(metadata::NO_RESERVED_KEYS_MESSAGE.into()))
    )]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on the Secret (at most 64, 256 KiB in all). Keys follow the Kubernetes
    /// rules; reserved keys are refused, as for `labels`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_TEMPLATE_ENTRIES))]
    #[x_kube(
        validation = Rule::new(metadata::KEYS_ARE_QUALIFIED_NAMES).message(metadata::KEYS_ARE_QUALIFIED_NAMES_MESSAGE),
        validation = Rule::new(metadata::NO_RESERVED_KEYS).message(Message::Expression(metadata::NO_RESERVED_KEYS_MESSAGE.into())),
        validation = Rule::new(metadata::ANNOTATIONS_FIT).message(metadata::ANNOTATIONS_FIT_MESSAGE)
    )]
    pub annotations: BTreeMap<String, String>,
    /// Key of the access token. Default: `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    #[x_kube(validation = Rule::new(SECRET_KEY_NO_DOTS).message(SECRET_KEY_NO_DOTS_MESSAGE))]
    pub token_key: Option<String>,
    /// Key of the expiry time (RFC 3339). Default: `expiresAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    #[x_kube(validation = Rule::new(SECRET_KEY_NO_DOTS).message(SECRET_KEY_NO_DOTS_MESSAGE))]
    pub expires_at_key: Option<String>,
}

impl SecretTemplate {
    /// What is wrong with this template, one message per problem (empty when it is valid): the
    /// checks of the CRD's schema and CEL rules, for objects admitted before they existed.
    /// Messages name the field and the offending key or type, never a label or annotation value.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(ty) = &self.type_
            && let Some(problem) = secret_type_problem(ty)
        {
            problems.push(format!("secretTemplate.type {}: {problem}", quoted(ty)));
        }
        map_problems("labels", &self.labels, &mut problems);
        for (key, value) in &self.labels {
            if let Some(problem) = label_value_problem(value) {
                problems.push(format!(
                    "secretTemplate.labels[{}]: the value is {problem}",
                    quoted(key)
                ));
            }
        }
        map_problems("annotations", &self.annotations, &mut problems);
        let size: usize = self
            .annotations
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        if size > MAX_ANNOTATIONS_SIZE {
            problems.push(format!(
                "secretTemplate.annotations: {size} bytes of keys and values, more than the {MAX_ANNOTATIONS_SIZE} the API server accepts"
            ));
        }
        for (field, key) in [
            ("tokenKey", &self.token_key),
            ("expiresAtKey", &self.expires_at_key),
        ] {
            if let Some(key) = key
                && let Some(problem) = secret_key_problem(key)
            {
                problems.push(format!("secretTemplate.{field} {}: {problem}", quoted(key)));
            }
        }
        let token_key = self.token_key.as_deref().unwrap_or(DEFAULT_TOKEN_KEY);
        let expires_at_key = self
            .expires_at_key
            .as_deref()
            .unwrap_or(DEFAULT_EXPIRES_AT_KEY);
        if token_key == expires_at_key {
            problems.push(format!(
                "secretTemplate.tokenKey and expiresAtKey are both {}",
                quoted(token_key)
            ));
        }
        problems
    }
}

/// Why `ty` may not be the type of the Secret, or `None` if it may.
fn secret_type_problem(ty: &str) -> Option<String> {
    if ty == DEFAULT_SECRET_TYPE {
        return None;
    }
    let shape = || {
        Some(format!(
            "must be {DEFAULT_SECRET_TYPE} or a custom type <DNS subdomain>/<name>, such as example.com/gebeta-token"
        ))
    };
    let Some((domain, _)) = ty.split_once('/') else {
        return shape();
    };
    if qualified_name_problem(ty).is_some() {
        return shape();
    }
    if let Some(reserved) = KUBERNETES_DOMAINS
        .into_iter()
        .find(|d| in_domain(domain, d))
    {
        return Some(format!(
            "types under {reserved}/ are reserved for Kubernetes (such as kubernetes.io/service-account-token); use {DEFAULT_SECRET_TYPE} or a type of your own domain, such as example.com/gebeta-token"
        ));
    }
    None
}

/// Why `key` may not be a key of the Secret's data, or `None` if it may (`IsConfigMapKey`).
fn secret_key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() || key.len() > 253 {
        return Some("must be 1 to 253 characters");
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Some("must consist of letters, digits, '-', '_' or '.'");
    }
    if key == "." || key.starts_with("..") {
        return Some("must not be '.' or start with '..'");
    }
    None
}

/// The problems of the keys of `secretTemplate.<field>`, and of their number.
fn map_problems(field: &str, map: &BTreeMap<String, String>, problems: &mut Vec<String>) {
    if map.len() > MAX_TEMPLATE_ENTRIES {
        problems.push(format!(
            "secretTemplate.{field}: {} entries, more than {MAX_TEMPLATE_ENTRIES}",
            map.len()
        ));
    }
    for key in map.keys() {
        if let Some(problem) = qualified_name_problem(key) {
            problems.push(format!(
                "secretTemplate.{field}: key {} is not a qualified name: {problem}",
                quoted(key)
            ));
        } else if let Some(domain) = reserved_key_domain(key) {
            let why = if key == MANAGED_BY_KEY {
                "it marks the Secrets the operator owns".to_string()
            } else if domain == OPERATOR_DOMAIN {
                format!("keys under {domain}/ (or a subdomain) belong to the operator")
            } else {
                format!("keys under {domain}/ (or a subdomain) belong to Kubernetes")
            };
            problems.push(format!(
                "secretTemplate.{field}: key {} is reserved: {why}",
                quoted(key)
            ));
        }
    }
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
    /// Upstream accounts (ids) of the GebetaServiceAccounts whose tokens opened the current
    /// session, as their token Secrets name them: a rotation retires a replaced account only
    /// once every token using it lists the new one here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_account_ids: Vec<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn template(
        ty: Option<&str>,
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) -> SecretTemplate {
        let map = |entries: &[(&str, &str)]| {
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        SecretTemplate {
            type_: ty.map(Into::into),
            labels: map(labels),
            annotations: map(annotations),
            ..Default::default()
        }
    }

    /// The one problem of `t`, which must name `needle`.
    fn one_problem(t: &SecretTemplate, needle: &str) -> String {
        let problems = t.problems();
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].contains(needle),
            "{:?} should name {needle:?}",
            problems[0]
        );
        problems[0].clone()
    }

    #[test]
    fn allowed_templates_have_no_problems() {
        assert!(SecretTemplate::default().problems().is_empty());
        for ty in [
            "Opaque",
            "example.com/gebeta-token",
            "gebeta.app/access-token",
            "a/B_c.d",
        ] {
            assert!(template(Some(ty), &[], &[]).problems().is_empty(), "{ty}");
        }
        let t = template(
            Some("example.com/token"),
            &[
                ("team", "maps"),
                ("example.com/tier", ""),
                ("x.y/z", "A-1_b.2"),
                ("app.kubernetes.io/part-of", "routing"),
            ],
            &[
                ("example.com/owner", "anything at all: spaces, / and \n"),
                ("note", ""),
            ],
        );
        assert_eq!(t.problems(), Vec::<String>::new());
        let keys = SecretTemplate {
            token_key: Some("ACCESS_TOKEN".into()),
            expires_at_key: Some(".expiry".into()),
            ..Default::default()
        };
        assert!(keys.problems().is_empty());
    }

    #[test]
    fn kubernetes_secret_types_are_refused() {
        for ty in [
            "kubernetes.io/service-account-token",
            "bootstrap.kubernetes.io/token",
            "kubernetes.io/dockercfg",
            "kubernetes.io/dockerconfigjson",
            "kubernetes.io/basic-auth",
            "kubernetes.io/tls",
            "k8s.io/anything",
            "x.k8s.io/anything",
        ] {
            let message = one_problem(&template(Some(ty), &[], &[]), ty);
            assert!(message.contains("reserved"), "{message}");
        }
    }

    #[test]
    fn other_types_must_be_opaque_or_qualified() {
        for ty in [
            "",
            "opaque",
            "token",
            "/token",
            "Example.com/x",
            "a/b/c",
            "example.com/-x",
        ] {
            let message = one_problem(&template(Some(ty), &[], &[]), "secretTemplate.type");
            assert!(
                message.contains("must be Opaque or a custom type"),
                "{message}"
            );
        }
    }

    #[test]
    fn reserved_label_and_annotation_keys_are_refused() {
        for key in [
            "kubernetes.io/service-account.name",
            "kubernetes.io/service-account.uid",
            "app.kubernetes.io/managed-by",
            "node.kubernetes.io/x",
            "k8s.io/x",
            "gebeta.app/access-token",
            "gebeta.app/account-id",
            "gebeta.app/refresh-for",
        ] {
            for t in [
                template(None, &[(key, "v")], &[]),
                template(None, &[], &[(key, "v")]),
            ] {
                let message = one_problem(&t, key);
                assert!(message.contains("is reserved"), "{message}");
            }
        }
    }

    #[test]
    fn keys_and_label_values_follow_kubernetes() {
        one_problem(
            &template(None, &[("bad key", "v")], &[]),
            "secretTemplate.labels: key \"bad key\"",
        );
        one_problem(
            &template(None, &[], &[("-x", "v")]),
            "secretTemplate.annotations: key \"-x\"",
        );
        one_problem(
            &template(None, &[(&"k".repeat(64), "v")], &[]),
            "longer than 63",
        );
        let message = one_problem(
            &template(None, &[("team", "not a label value")], &[]),
            "labels[\"team\"]",
        );
        assert!(
            !message.contains("not a label value"),
            "values are never echoed: {message}"
        );
        one_problem(
            &template(None, &[("team", &"v".repeat(64))], &[]),
            "longer than 63",
        );
    }

    #[test]
    fn sizes_are_bounded() {
        let many: Vec<(String, String)> = (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        one_problem(&template(None, &many, &[]), "65 entries, more than 64");
        one_problem(&template(None, &[], &many), "65 entries, more than 64");
        let big = "x".repeat(200 * 1024);
        let message = one_problem(
            &template(None, &[], &[("a", &big), ("b", &big)]),
            "secretTemplate.annotations",
        );
        assert!(message.len() < 200, "values are never echoed: {message}");
    }

    #[test]
    fn secret_keys_follow_kubernetes() {
        for (key, needle) in [
            ("..data", "start with '..'"),
            (".", "must not be '.'"),
            ("a b", "letters, digits"),
        ] {
            let t = SecretTemplate {
                token_key: Some(key.into()),
                ..Default::default()
            };
            one_problem(&t, needle);
        }
        let same = SecretTemplate {
            token_key: Some("expiresAt".into()),
            ..Default::default()
        };
        one_problem(&same, "tokenKey and expiresAtKey are both \"expiresAt\"");
    }

    #[test]
    fn long_keys_are_cut_in_messages() {
        let key = format!("{}/x", "a".repeat(10_000));
        let message = one_problem(
            &template(None, &[(&key, "v")], &[]),
            "secretTemplate.labels",
        );
        assert!(message.len() < 400, "{message}");
    }
}
