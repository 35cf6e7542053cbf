//! `GebetaPolicy`: what the GebetaServiceAccounts and GebetaAccessTokens of a namespace may ask
//! for: admin accounts, scopes, platforms, adoption of existing accounts, Secret types.
//!
//! The operator never reads it. The API server does: a GebetaPolicy is the parameter of the
//! chart's ValidatingAdmissionPolicy (`charts/gebeta-operator/templates/admission-policy.yaml`),
//! whose bindings pick a namespace's policy by the namespace's `gebeta.app/policy` label. It is
//! cluster-scoped so that a tenant, who may write in their own namespace, cannot edit the policy
//! that limits them.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::access_token::{
    DEFAULT_SECRET_TYPE, custom_secret_type_pattern, reserved_secret_type_pattern,
};
use crate::gebeta::model::{Platform, Scope};

/// The namespace label that names the GebetaPolicy (by its key in the chart's
/// `admissionPolicy.policies`) that applies in the namespace. Set by cluster admins only.
pub const POLICY_LABEL: &str = "gebeta.app/policy";

/// Most entries of `allowedSecretTypes` (bounds the admission cost of the CEL rules on them).
pub const MAX_SECRET_TYPES: usize = 32;

/// CEL, on `allowedSecretTypes`: each is `Opaque` or `<DNS subdomain>/<name>`, as
/// `GebetaAccessToken.spec.secretTemplate.type` must be.
const TYPES_SHAPE: &str = concat!(
    "self.all(t, t == 'Opaque' || (t.matches('",
    custom_secret_type_pattern!(),
    "') && t.indexOf('/') <= 253))"
);
const TYPES_SHAPE_MESSAGE: &str = "each secret type must be Opaque or a custom type <DNS subdomain>/<name>, such as example.com/gebeta-token";
/// CEL, on `allowedSecretTypes`: no type of a domain Kubernetes reserves (a GebetaAccessToken
/// can never have one, so allowing it would only mislead).
const TYPES_NOT_RESERVED: &str = concat!(
    "self.all(t, !t.matches('",
    reserved_secret_type_pattern!(),
    "'))"
);
const TYPES_NOT_RESERVED_MESSAGE: &str = concat!(
    "'type ' + self.filter(t, t.matches('",
    reserved_secret_type_pattern!(),
    "'))[0] + ' is reserved: GebetaAccessTokens never get Secret types under kubernetes.io/ or k8s.io/; allow Opaque or a type of your own domain, such as example.com/gebeta-token'"
);

/// What the GebetaServiceAccounts and GebetaAccessTokens of the namespaces that use this policy
/// may ask for. Every field has a default, so `spec: {}` is the default policy: no admin
/// accounts, no adoption, every scope and platform, `Opaque` Secrets only. An empty list allows
/// nothing; a list left out (or null) takes its default.
// Each printcolumn(...) repeats name/type_/json_path keys, which clippy mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "gebeta.app",
    version = "v1alpha1",
    kind = "GebetaPolicy",
    plural = "gebetapolicies",
    shortname = "gpol",
    doc = "Limits what GebetaServiceAccounts and GebetaAccessTokens may ask for in the namespaces that use this policy (namespace label gebeta.app/policy). Cluster-scoped, so tenants cannot change it; enforced by the API server through the chart's ValidatingAdmissionPolicy.",
    printcolumn(name = "Admin", type_ = "boolean", json_path = ".spec.allowAdmin"),
    printcolumn(
        name = "Adoption",
        type_ = "boolean",
        json_path = ".spec.allowAdoption"
    ),
    printcolumn(name = "Scopes", type_ = "string", json_path = ".spec.allowedScopes"),
    printcolumn(
        name = "Platforms",
        type_ = "string",
        json_path = ".spec.allowedPlatforms",
        priority = 1
    ),
    printcolumn(
        name = "Secret types",
        type_ = "string",
        json_path = ".spec.allowedSecretTypes",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct GebetaPolicySpec {
    /// Whether a GebetaServiceAccount may set `isAdmin: true` (an account with admin privileges
    /// upstream). Default: false.
    #[serde(default)]
    pub allow_admin: bool,

    /// Scopes a GebetaServiceAccount may ask for. Default: every scope (a scope is a part of the
    /// Gebeta API, none grants more than its part). An empty list allows none, so no
    /// GebetaServiceAccount can be created (each needs a scope).
    #[serde(default = "all_scopes")]
    #[schemars(length(max = 7))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub allowed_scopes: Vec<Scope>,

    /// Platforms a GebetaServiceAccount may be issued for. Default: all four (WEB, ANDROID, IOS,
    /// DESKTOP). An empty list allows none.
    #[serde(default = "all_platforms")]
    #[schemars(length(max = 4))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub allowed_platforms: Vec<Platform>,

    /// Whether a GebetaServiceAccount may set `accountId`, adopting an account that already
    /// exists upstream: whoever may create the object could then suspend, re-scope or delete
    /// that account with the credentials the object uses. Default: false.
    #[serde(default)]
    pub allow_adoption: bool,

    /// Secret types a GebetaAccessToken may ask for in `secretTemplate.type` (unset means
    /// `Opaque`, which is then allowed only if listed). Each is `Opaque` or a custom type
    /// `<DNS subdomain>/<name>`, such as `example.com/gebeta-token`; types under
    /// `kubernetes.io/` and `k8s.io/` are refused here as GebetaAccessTokens never get them.
    /// Default: `[Opaque]`. An empty list allows none.
    #[serde(default = "opaque_only")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 317)))]
    #[x_kube(
        merge_strategy = ListMerge::Set,
        validation = Rule::new(TYPES_SHAPE).message(TYPES_SHAPE_MESSAGE),
        validation = Rule::new(TYPES_NOT_RESERVED).message(Message::Expression(TYPES_NOT_RESERVED_MESSAGE.into()))
    )]
    pub allowed_secret_types: Vec<String>,
}

impl Default for GebetaPolicySpec {
    /// The defaults of every field: what `spec: {}` means.
    fn default() -> Self {
        GebetaPolicySpec {
            allow_admin: false,
            allowed_scopes: all_scopes(),
            allowed_platforms: all_platforms(),
            allow_adoption: false,
            allowed_secret_types: opaque_only(),
        }
    }
}

fn all_scopes() -> Vec<Scope> {
    Scope::ALL.to_vec()
}

fn all_platforms() -> Vec<Platform> {
    Platform::ALL.to_vec()
}

fn opaque_only() -> Vec<String> {
    vec![DEFAULT_SECRET_TYPE.to_string()]
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;
    use serde_json::json;

    use super::*;

    #[test]
    fn an_empty_spec_is_the_default_policy() {
        let spec: GebetaPolicySpec = serde_json::from_value(json!({})).unwrap();
        assert_eq!(spec, GebetaPolicySpec::default());
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            json!({
                "allowAdmin": false,
                "allowedScopes": ["TILE", "MATRIX", "ONM", "DIRECTION", "TSS", "GEOCODING", "REVERSEGEOCODING"],
                "allowedPlatforms": ["WEB", "ANDROID", "IOS", "DESKTOP"],
                "allowAdoption": false,
                "allowedSecretTypes": ["Opaque"],
            })
        );
    }

    #[test]
    fn empty_lists_allow_nothing() {
        let spec: GebetaPolicySpec = serde_json::from_value(json!({
            "allowedScopes": [], "allowedPlatforms": [], "allowedSecretTypes": []
        }))
        .unwrap();
        assert!(spec.allowed_scopes.is_empty());
        assert!(spec.allowed_platforms.is_empty());
        assert!(spec.allowed_secret_types.is_empty());
    }

    #[test]
    fn the_crd_is_cluster_scoped_and_the_schema_carries_the_defaults() {
        let crd = GebetaPolicy::crd();
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("gebetapolicies.gebeta.app")
        );
        let schema = serde_json::to_value(
            crd.spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap();
        let spec = &schema["properties"]["spec"]["properties"];
        // The API server fills in what the API server's admission policy then reads.
        let defaults: serde_json::Map<String, serde_json::Value> = spec
            .as_object()
            .unwrap()
            .iter()
            .map(|(field, s)| (field.clone(), s["default"].clone()))
            .collect();
        assert_eq!(
            serde_json::Value::Object(defaults),
            serde_json::to_value(GebetaPolicySpec::default()).unwrap()
        );
        for list in ["allowedScopes", "allowedPlatforms", "allowedSecretTypes"] {
            assert_eq!(spec[list]["x-kubernetes-list-type"], "set", "{list}");
        }
    }
}
