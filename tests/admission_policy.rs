//! The chart's admission policy against the real API server: one ValidatingAdmissionPolicy
//! whose parameter, a GebetaPolicy, is picked per namespace by the namespace's
//! `gebeta.app/policy` label. The API server itself refuses what a policy does not allow.
//!
//! Each test installs its own release with `helm install`, watching only the test's namespaces:
//! the chart binds its policies to the watched namespaces, so tests running in parallel on this
//! binary's API server never meet each other's policies. The API server learns of a new policy,
//! binding, parameter or label from its informers a moment after the write, so a test polls
//! (with a deadline) until a policy is seen at work before it relies on it.

mod support;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use gebeta_operator::{
    controllers::{Context, Readiness, SecretLocation, Settings, WatchScope, service_account},
    crd::{
        GebetaAccessToken, GebetaPolicySpec, GebetaServiceAccount, policy::POLICY_LABEL,
        service_account::GebetaServiceAccountStatus,
    },
    gebeta::{ClientConfig, GebetaClient, Platform, Scope},
    metrics::Metrics,
    sim::{Sim, SimConfig},
};
use k8s_openapi::{
    ByteString,
    api::core::v1::{Namespace, Secret},
};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::cli::{CHART, documents, of_kind, ok, release_name, run};
use tokio_util::sync::CancellationToken;

/// How long the API server may take to apply a new policy, binding, parameter or label.
const DEADLINE: Duration = Duration::from_secs(30);

/// A release of the chart, in a namespace of its own, uninstalled when dropped.
struct Release {
    name: String,
    ns: String,
    /// Prefix of the names of the chart's objects (`<release>-gebeta-operator`).
    fullname: String,
    values: tempfile::TempDir,
}

impl Release {
    /// `helm install` with `values` (the chart's defaults for what they leave out).
    async fn install(client: &Client, prefix: &str, values: Value) -> Release {
        let ns = support::namespace(client, &format!("{prefix}-rel")).await;
        let name = release_name(prefix);
        let release = Release {
            fullname: format!("{name}-gebeta-operator"),
            name,
            ns,
            values: tempfile::tempdir().unwrap(),
        };
        let file = release.write_values(&values);
        ok(
            "helm",
            &[
                "install",
                &release.name,
                CHART,
                "-n",
                &release.ns,
                "-f",
                &file,
            ],
            None,
        );
        release
    }

    /// `helm upgrade` to `values` (not merged with the previous ones).
    fn upgrade(&self, values: Value) {
        let file = self.write_values(&values);
        ok(
            "helm",
            &["upgrade", &self.name, CHART, "-n", &self.ns, "-f", &file],
            None,
        );
    }

    fn write_values(&self, values: &Value) -> String {
        // JSON is YAML.
        let path = self.values.path().join("values.yaml");
        std::fs::write(&path, values.to_string()).unwrap();
        path.display().to_string()
    }

    /// Name of the GebetaPolicy of `admissionPolicy.policies.<key>` (or `default`).
    fn policy(&self, key: &str) -> String {
        format!("{}-{key}", self.fullname)
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = run("helm", &["uninstall", &self.name, "-n", &self.ns], None);
    }
}

/// A new namespace, labelled `gebeta.app/policy=<policy>` when given.
async fn namespace(client: &Client, prefix: &str, policy: Option<&str>) -> String {
    let ns = support::namespace(client, prefix).await;
    if let Some(policy) = policy {
        Api::<Namespace>::all(client.clone())
            .patch(
                &ns,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {POLICY_LABEL: policy}}})),
            )
            .await
            .unwrap();
    }
    ns
}

fn gsas(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::erase::<GebetaServiceAccount>(&()),
    )
}

fn gats(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::erase::<GebetaAccessToken>(&()),
    )
}

/// A GebetaServiceAccount with `spec`.
fn gsa(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "gebeta.app/v1alpha1",
        "kind": "GebetaServiceAccount",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

/// A GebetaAccessToken with `secretTemplate` (left out when `None`).
fn gat(name: &str, template: Option<Value>) -> DynamicObject {
    let mut spec = json!({
        "clientToken": {"secretKeyRef": {"name": "dashboard", "key": "client-token"}},
        "serverToken": {"secretKeyRef": {"name": "dashboard", "key": "server-token"}},
        "secretName": format!("{name}-token"),
    });
    if let Some(template) = template {
        spec["secretTemplate"] = template;
    }
    serde_json::from_value(json!({
        "apiVersion": "gebeta.app/v1alpha1",
        "kind": "GebetaAccessToken",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

fn dry_run() -> PostParams {
    PostParams {
        dry_run: true,
        ..Default::default()
    }
}

/// Asserts the admission policy refused the request (403 Forbidden), with a message containing
/// `needle`.
fn assert_refused<T: std::fmt::Debug>(result: Result<T, kube::Error>, needle: &str) -> String {
    assert_refused_as(result, needle, 403)
}

/// Asserts the admission policy refused the request with HTTP status `code`, with a message
/// containing `needle`.
fn assert_refused_as<T: std::fmt::Debug>(
    result: Result<T, kube::Error>,
    needle: &str,
    code: u16,
) -> String {
    match result {
        Err(kube::Error::Api(status)) => {
            assert!(
                status.code == code && status.message.contains("ValidatingAdmissionPolicy"),
                "expected a refusal by the admission policy, got {}: {}",
                status.code,
                status.message
            );
            assert!(
                status.message.contains(needle),
                "the message should contain {needle:?}: {}",
                status.message
            );
            status.message
        }
        other => panic!("expected a refusal containing {needle:?}, got {other:?}"),
    }
}

/// Waits until the API server refuses `object` (tried as a dry run) with a message containing
/// `needle`, then creates it for real and asserts the same refusal (403). Returns the message.
async fn refused(api: &Api<DynamicObject>, object: &DynamicObject, needle: &str) -> String {
    refused_as(api, object, needle, 403).await
}

/// [`refused`], with HTTP status `code`.
async fn refused_as(
    api: &Api<DynamicObject>,
    object: &DynamicObject,
    needle: &str,
    code: u16,
) -> String {
    let what = format!("{} refused with {needle:?}", object.name_any());
    support::eventually(DEADLINE, &what, || async {
        match api.create(&dry_run(), object).await {
            Err(kube::Error::Api(status)) if status.message.contains(needle) => Some(()),
            _ => None,
        }
    })
    .await;
    assert_refused_as(
        api.create(&PostParams::default(), object).await,
        needle,
        code,
    )
}

/// Creates `object`, retrying while the API server refuses it (until a change of policy has
/// reached it).
async fn eventually_accepted(api: &Api<DynamicObject>, object: &DynamicObject) -> DynamicObject {
    let what = format!("{} accepted", object.name_any());
    support::eventually(DEADLINE, &what, || async {
        api.create(&PostParams::default(), object).await.ok()
    })
    .await
}

async fn create(api: &Api<DynamicObject>, object: &DynamicObject) -> DynamicObject {
    api.create(&PostParams::default(), object)
        .await
        .unwrap_or_else(|e| panic!("{} refused: {e}", object.name_any()))
}

async fn merge_spec(
    api: &Api<DynamicObject>,
    name: &str,
    spec: Value,
) -> Result<DynamicObject, kube::Error> {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": spec})),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// What the chart renders.

/// `helm template` of the chart with `args`.
fn render(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["template", "x", CHART, "--kube-version", "v1.37.0"];
    all.extend(args);
    documents(&ok("helm", &all, None))
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    of_kind(docs, kind)
        .into_iter()
        .find(|d| d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn the_chart_renders_the_policy_only_when_enabled() {
    let docs = render(&[]);
    // One policy, for both kinds, on create and update, failing closed.
    let policies = of_kind(&docs, "ValidatingAdmissionPolicy");
    assert_eq!(policies.len(), 1);
    let policy = &policies[0]["spec"];
    assert_eq!(policies[0]["metadata"]["name"], "x-gebeta-operator");
    assert_eq!(policy["failurePolicy"], "Fail");
    assert_eq!(
        policy["paramKind"],
        json!({"apiVersion": "gebeta.app/v1alpha1", "kind": "GebetaPolicy"})
    );
    let rules = &policy["matchConstraints"]["resourceRules"];
    assert_eq!(
        rules,
        &json!([{"apiGroups": ["gebeta.app"], "apiVersions": ["*"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["gebetaserviceaccounts", "gebetaaccesstokens"]}]),
        "the main resources only: status writes are never checked"
    );
    for validation in policy["validations"].as_array().unwrap() {
        assert!(
            validation["messageExpression"]
                .as_str()
                .is_some_and(|m| m.contains("variables.policy")),
            "every refusal names the GebetaPolicy: {validation}"
        );
        assert_eq!(validation["reason"], "Forbidden");
    }

    // The default policy is the GebetaPolicy default, field for field, and applies everywhere.
    let params = of_kind(&docs, "GebetaPolicy");
    assert_eq!(params.len(), 1);
    let default = named(&docs, "GebetaPolicy", "x-gebeta-operator-default");
    assert_eq!(
        default["spec"],
        serde_json::to_value(GebetaPolicySpec::default()).unwrap(),
        "values.yaml's admissionPolicy.default is the GebetaPolicy default"
    );
    let bindings = of_kind(&docs, "ValidatingAdmissionPolicyBinding");
    assert_eq!(bindings.len(), 1);
    assert_eq!(
        bindings[0]["spec"],
        json!({
            "policyName": "x-gebeta-operator",
            "validationActions": ["Deny"],
            "paramRef": {"name": "x-gebeta-operator-default", "parameterNotFoundAction": "Deny"},
            "matchResources": {"namespaceSelector": {}},
        })
    );

    // More policies, each for its label; the default for every other namespace; all of them
    // limited to the watched namespaces.
    let docs = render(&[
        "--set-json",
        r#"admissionPolicy.policies={"trusted":{"allowAdmin":true},"adopters":{"allowAdoption":true,"allowedScopes":[]}}"#,
        "--set-json",
        r#"watchNamespaces=["team-a","team-b"]"#,
    ]);
    assert_eq!(of_kind(&docs, "ValidatingAdmissionPolicy").len(), 1);
    assert_eq!(of_kind(&docs, "GebetaPolicy").len(), 3);
    assert_eq!(of_kind(&docs, "ValidatingAdmissionPolicyBinding").len(), 3);
    let watched = json!({"key": "kubernetes.io/metadata.name", "operator": "In",
        "values": ["team-a", "team-b"]});
    assert_eq!(
        named(&docs, "GebetaPolicy", "x-gebeta-operator-trusted")["spec"],
        json!({"allowAdmin": true}),
        "fields left out take the GebetaPolicy defaults, not admissionPolicy.default's"
    );
    assert_eq!(
        named(&docs, "GebetaPolicy", "x-gebeta-operator-adopters")["spec"],
        json!({"allowAdoption": true, "allowedScopes": []}),
        "an empty list stays empty"
    );
    let trusted = &named(
        &docs,
        "ValidatingAdmissionPolicyBinding",
        "x-gebeta-operator-trusted",
    )["spec"];
    assert_eq!(
        trusted["paramRef"],
        json!({"name": "x-gebeta-operator-trusted", "parameterNotFoundAction": "Deny"})
    );
    assert_eq!(trusted["validationActions"], json!(["Deny"]));
    assert_eq!(
        trusted["matchResources"]["namespaceSelector"],
        json!({"matchLabels": {"gebeta.app/policy": "trusted"}, "matchExpressions": [watched]})
    );
    assert_eq!(
        named(
            &docs,
            "ValidatingAdmissionPolicyBinding",
            "x-gebeta-operator-default"
        )["spec"]["matchResources"]["namespaceSelector"],
        json!({"matchExpressions": [
            {"key": "gebeta.app/policy", "operator": "NotIn", "values": ["adopters", "trusted"]},
            watched,
        ]}),
        "unlabelled namespaces, and those labelled with a name that is no policy"
    );

    // The switch: none of it.
    for extra in [
        vec!["--set", "admissionPolicy.enabled=false"],
        vec![
            "--set",
            "admissionPolicy.enabled=false",
            "--set-json",
            r#"admissionPolicy.policies={"trusted":{"allowAdmin":true}}"#,
        ],
    ] {
        let docs = render(&extra);
        for kind in [
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "GebetaPolicy",
        ] {
            assert!(of_kind(&docs, kind).is_empty(), "{kind} with {extra:?}");
        }
        assert!(!of_kind(&docs, "Deployment").is_empty());
    }

    // The operator does not read GebetaPolicies (the API server does): no RBAC for them.
    let docs = render(&[]);
    let cluster_role = serde_json::to_string(&of_kind(&docs, "ClusterRole")).unwrap();
    assert!(!cluster_role.contains("gebetapolicies"), "{cluster_role}");
}

#[test]
fn the_values_schema_knows_the_policy_fields() {
    for (set, why) in [
        (
            "admissionPolicy.default.allowedScopes={TELEPORT}",
            "scopes are the CRD's",
        ),
        (
            "admissionPolicy.default.allowedPlatforms={LINUX}",
            "platforms are the CRD's",
        ),
        (
            "admissionPolicy.default.allowedSecretTypes={kubernetes.io/basic-auth}",
            "reserved Secret types are refused",
        ),
        (
            "admissionPolicy.default.allowedSecretTypes={token}",
            "Secret types have the CRD's shape",
        ),
        ("admissionPolicy.default.allowAdmins=true", "typos"),
        (
            "admissionPolicy.policies.default.allowAdmin=true",
            "default is admissionPolicy.default",
        ),
        (
            "admissionPolicy.policies.Team_A.allowAdmin=true",
            "policy names are label values and object names",
        ),
        ("admissionPolicy.policies.a.allowAdoption=1", "booleans"),
        ("admissionPolicy.enabled=yes", "the switch is a boolean"),
    ] {
        let out = run("helm", &["lint", CHART, "--set", set], None);
        assert!(
            !out.status.success(),
            "helm lint accepted --set {set} ({why})"
        );
    }
    ok(
        "helm",
        &[
            "lint",
            "--strict",
            CHART,
            "--set-json",
            r#"admissionPolicy.policies={"team-a":{"allowedSecretTypes":["Opaque","example.com/gebeta-token"],"allowedPlatforms":["WEB"]}}"#,
        ],
        None,
    );

    // The schema's enums are the CRD's.
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{CHART}/values.schema.json")).unwrap(),
    )
    .unwrap();
    let fields = &schema["definitions"]["gebetaPolicy"]["properties"];
    assert_eq!(
        fields["allowedScopes"]["items"]["enum"],
        serde_json::to_value(Scope::ALL).unwrap()
    );
    assert_eq!(
        fields["allowedPlatforms"]["items"]["enum"],
        serde_json::to_value(Platform::ALL).unwrap()
    );
}

// ---------------------------------------------------------------------------------------------
// What the API server refuses.

#[tokio::test]
async fn admin_scopes_and_platforms_follow_the_namespace_policy() {
    let client = support::client();
    let plain = namespace(&client, "vap-plain", None).await;
    let trusted = namespace(&client, "vap-trusted", Some("trusted")).await;
    let typo = namespace(&client, "vap-typo", Some("trustd")).await;
    let release = Release::install(
        &client,
        "vap-admin",
        json!({
            "watchNamespaces": [plain, trusted, typo],
            "admissionPolicy": {
                "default": {"allowedScopes": ["TILE", "DIRECTION"], "allowedPlatforms": ["WEB", "ANDROID"]},
                "policies": {"trusted": {"allowAdmin": true, "allowedScopes": ["TILE", "MATRIX"], "allowedPlatforms": ["WEB"]}},
            },
        }),
    )
    .await;
    let default = format!("GebetaPolicy {}", release.policy("default"));
    let trusted_policy = format!("GebetaPolicy {}", release.policy("trusted"));

    // An unlabelled namespace: the default policy. The refusal names it.
    let api = gsas(&client, &plain);
    let admin = json!({"platform": "WEB", "scopes": ["TILE"], "isAdmin": true});
    refused(
        &api,
        &gsa("admin", admin.clone()),
        &format!("isAdmin: true is not allowed by {default}"),
    )
    .await;
    create(
        &api,
        &gsa(
            "maps",
            json!({"platform": "ANDROID", "scopes": ["TILE", "DIRECTION"]}),
        ),
    )
    .await;
    assert_refused(
        api.create(
            &PostParams::default(),
            &gsa(
                "wide",
                json!({"platform": "WEB", "scopes": ["TILE", "MATRIX", "TSS"]}),
            ),
        )
        .await,
        &format!("scopes MATRIX, TSS are not allowed by {default} (allowed: TILE, DIRECTION)"),
    );
    assert_refused(
        api.create(
            &PostParams::default(),
            &gsa("ios", json!({"platform": "IOS", "scopes": ["TILE"]})),
        )
        .await,
        &format!("platform IOS is not allowed by {default} (allowed: WEB, ANDROID)"),
    );
    // An update may not add a scope the policy does not allow; dropping one is fine.
    assert_refused(
        merge_spec(
            &api,
            "maps",
            json!({"scopes": ["TILE", "DIRECTION", "ONM"]}),
        )
        .await,
        &format!("scope ONM is not allowed by {default}"),
    );
    merge_spec(&api, "maps", json!({"scopes": ["DIRECTION"]}))
        .await
        .expect("a scope removed");
    // An explicit null accountId is no adoption.
    create(
        &api,
        &gsa(
            "nulled",
            json!({"platform": "WEB", "scopes": ["TILE"], "accountId": null}),
        ),
    )
    .await;

    // A namespace labelled gebeta.app/policy=trusted: that policy, once the API server has it.
    let api = gsas(&client, &trusted);
    refused(
        &api,
        &gsa(
            "direction",
            json!({"platform": "WEB", "scopes": ["DIRECTION"]}),
        ),
        &format!("scope DIRECTION is not allowed by {trusted_policy} (allowed: TILE, MATRIX)"),
    )
    .await;
    let created = create(
        &api,
        &gsa(
            "admin",
            json!({"platform": "WEB", "scopes": ["TILE", "MATRIX"], "isAdmin": true}),
        ),
    )
    .await;
    assert_eq!(created.data["spec"]["isAdmin"], true);
    assert_refused(
        api.create(
            &PostParams::default(),
            &gsa(
                "android",
                json!({"platform": "ANDROID", "scopes": ["TILE"]}),
            ),
        )
        .await,
        &format!("platform ANDROID is not allowed by {trusted_policy} (allowed: WEB)"),
    );

    // A label naming no policy of the release falls back to the default, never to none.
    refused(
        &gsas(&client, &typo),
        &gsa("admin", admin),
        &format!("isAdmin: true is not allowed by {default}"),
    )
    .await;
}

#[tokio::test]
async fn adoption_needs_a_policy_that_allows_it() {
    let client = support::client();
    let plain = namespace(&client, "vap-adopt-plain", None).await;
    let adopters = namespace(&client, "vap-adopters", Some("adopters")).await;
    let release = Release::install(
        &client,
        "vap-adopt",
        json!({
            "watchNamespaces": [plain, adopters],
            "admissionPolicy": {"policies": {"adopters": {"allowAdoption": true}}},
        }),
    )
    .await;
    let default = format!("GebetaPolicy {}", release.policy("default"));
    let adopt = json!({"platform": "WEB", "scopes": ["TILE"], "accountId": "acc-123"});

    // By default no namespace may adopt an existing account...
    let api = gsas(&client, &plain);
    refused(
        &api,
        &gsa("adopted", adopt.clone()),
        &format!("accountId: adopting an existing account is not allowed by {default}"),
    )
    .await;
    // ...nor set accountId later: the CRD itself refuses adding (or removing) it, before the
    // admission policy is asked.
    create(
        &api,
        &gsa("later", json!({"platform": "WEB", "scopes": ["TILE"]})),
    )
    .await;
    match merge_spec(&api, "later", json!({"accountId": "acc-123"})).await {
        Err(kube::Error::Api(status)) => assert!(
            status.code == 422
                && status
                    .message
                    .contains("accountId cannot be added or removed"),
            "{}: {}",
            status.code,
            status.message
        ),
        other => panic!("setting accountId later was not refused: {other:?}"),
    }

    // A namespace whose policy allows it may.
    let api = gsas(&client, &adopters);
    refused(
        &api,
        &gsa(
            "admin",
            json!({"platform": "WEB", "scopes": ["TILE"], "isAdmin": true}),
        ),
        &format!(
            "isAdmin: true is not allowed by GebetaPolicy {}",
            release.policy("adopters")
        ),
    )
    .await;
    let created = create(&api, &gsa("adopted", adopt)).await;
    assert_eq!(created.data["spec"]["accountId"], "acc-123");
}

#[tokio::test]
async fn secret_types_follow_the_namespace_policy() {
    let client = support::client();
    let plain = namespace(&client, "vap-type-plain", None).await;
    let custom = namespace(&client, "vap-type-custom", Some("custom")).await;
    let nothing = namespace(&client, "vap-type-none", Some("nothing")).await;
    let release = Release::install(
        &client,
        "vap-type",
        json!({
            "watchNamespaces": [plain, custom, nothing],
            "admissionPolicy": {"policies": {
                "custom": {"allowedSecretTypes": ["Opaque", "example.com/gebeta-token"]},
                "nothing": {"allowedSecretTypes": []},
            }},
        }),
    )
    .await;
    let default = format!("GebetaPolicy {}", release.policy("default"));
    let custom_policy = format!("GebetaPolicy {}", release.policy("custom"));

    // The default allows Opaque only, whether set, unset or null.
    let api = gats(&client, &plain);
    refused(
        &api,
        &gat("custom", Some(json!({"type": "example.com/gebeta-token"}))),
        &format!(
            "secretTemplate.type example.com/gebeta-token is not allowed by {default} (allowed: Opaque)"
        ),
    )
    .await;
    for (i, template) in [
        None,
        Some(Value::Null),
        Some(json!({"type": "Opaque"})),
        Some(json!({"type": null, "labels": {"team": "maps"}})),
    ]
    .into_iter()
    .enumerate()
    {
        create(&api, &gat(&format!("opaque-{i}"), template)).await;
    }

    // Where a policy allows a custom type, it is accepted.
    let api = gats(&client, &custom);
    refused(
        &api,
        &gat("other", Some(json!({"type": "example.com/other"}))),
        &format!(
            "secretTemplate.type example.com/other is not allowed by {custom_policy} (allowed: Opaque, example.com/gebeta-token)"
        ),
    )
    .await;
    create(
        &api,
        &gat("custom", Some(json!({"type": "example.com/gebeta-token"}))),
    )
    .await;

    // Types the API server acts on are refused by the GebetaAccessToken CRD itself, before any
    // policy (and no GebetaPolicy may list them: tests/crds.rs).
    for ns in [&plain, &custom] {
        match gats(&client, ns)
            .create(
                &PostParams::default(),
                &gat("basic", Some(json!({"type": "kubernetes.io/basic-auth"}))),
            )
            .await
        {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{}", status.message);
                assert!(
                    status
                        .message
                        .contains("type kubernetes.io/basic-auth is reserved"),
                    "{}",
                    status.message
                );
            }
            other => panic!("kubernetes.io/basic-auth accepted in {ns}: {other:?}"),
        }
    }

    // An empty list allows no type, not even the implicit Opaque.
    refused(
        &gats(&client, &nothing),
        &gat("plain", None),
        &format!(
            "secretTemplate.type Opaque is not allowed by GebetaPolicy {} (allowed: none)",
            release.policy("nothing")
        ),
    )
    .await;
}

#[tokio::test]
async fn policy_changes_apply_to_new_objects() {
    let client = support::client();
    let ns = namespace(&client, "vap-change", None).await;
    let values =
        |default: Value| json!({"watchNamespaces": [ns], "admissionPolicy": {"default": default}});
    let release = Release::install(&client, "vap-change", values(json!({}))).await;
    let default = format!("GebetaPolicy {}", release.policy("default"));
    let api = gsas(&client, &ns);
    let admin = |name: &str| {
        gsa(
            name,
            json!({"platform": "WEB", "scopes": ["TILE", "MATRIX"], "isAdmin": true}),
        )
    };
    refused(
        &api,
        &admin("admin-1"),
        &format!("isAdmin: true is not allowed by {default}"),
    )
    .await;

    // Loosened: admin accounts are accepted once the API server has the new parameter.
    release.upgrade(values(json!({"allowAdmin": true})));
    eventually_accepted(&api, &admin("admin-1")).await;

    // Tightened again, and scopes narrowed: new objects are refused again.
    release.upgrade(values(
        json!({"allowAdmin": false, "allowedScopes": ["TILE"]}),
    ));
    refused(
        &api,
        &admin("admin-2"),
        &format!("isAdmin: true is not allowed by {default}"),
    )
    .await;
    assert_refused(
        api.create(
            &PostParams::default(),
            &gsa("matrix", json!({"platform": "WEB", "scopes": ["MATRIX"]})),
        )
        .await,
        &format!("scope MATRIX is not allowed by {default} (allowed: TILE)"),
    );
    create(
        &api,
        &gsa("tile", json!({"platform": "WEB", "scopes": ["TILE"]})),
    )
    .await;

    // A missing parameter (deleted by mistake) refuses everything rather than nothing (as 422
    // Invalid: the API server's own message).
    let params = Api::<DynamicObject>::all_with(
        client.clone(),
        &ApiResource::erase::<gebeta_operator::crd::GebetaPolicy>(&()),
    );
    params
        .delete(&release.policy("default"), &DeleteParams::default())
        .await
        .unwrap();
    refused_as(
        &api,
        &gsa("any", json!({"platform": "WEB", "scopes": ["TILE"]})),
        "no params found",
        422,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Objects admitted under an older, looser policy.

/// The service-account controller, in this process, for `ns`, with the simulator upstream.
struct Controller {
    shutdown: CancellationToken,
}

impl Controller {
    async fn start(client: &Client, ns: &str, sim_url: String) -> Controller {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some("gebeta-user".into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                "token".to_string(),
                ByteString(b"sim-user-token".to_vec()),
            )])),
            ..Default::default()
        };
        Api::<Secret>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        let gebeta = GebetaClient::new(ClientConfig {
            base_url: sim_url,
            request_timeout: Duration::from_secs(2),
            ..ClientConfig::default()
        })
        .unwrap();
        let settings = Settings {
            default_user_token: Some(SecretLocation {
                namespace: ns.to_string(),
                name: "gebeta-user".into(),
                key: "token".into(),
            }),
            ..Settings::default()
        };
        let ctx: Arc<Context> = Context::new(client.clone(), gebeta, Metrics::new(), settings);
        let scope = WatchScope {
            namespaces: vec![ns.to_string()],
            label_selector: None,
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(service_account::run(
            ctx,
            scope,
            shutdown.clone(),
            Readiness::default(),
        ));
        Controller { shutdown }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Waits until `name` is Ready for its current generation; returns its status.
async fn ready(client: &Client, ns: &str, name: &str) -> GebetaServiceAccountStatus {
    let api: Api<GebetaServiceAccount> = Api::namespaced(client.clone(), ns);
    support::eventually(DEADLINE, &format!("{name} Ready"), || {
        let api = api.clone();
        async move {
            let gsa = api.get(name).await.ok()?;
            let status = gsa.status?;
            let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
            (ready.status == "True" && status.observed_generation == gsa.metadata.generation)
                .then_some(status)
        }
    })
    .await
}

#[tokio::test]
async fn objects_admitted_under_a_looser_policy_stay_manageable() {
    let client = support::client();
    let ns = namespace(&client, "vap-older", None).await;
    let values =
        |default: Value| json!({"watchNamespaces": [ns], "admissionPolicy": {"default": default}});
    let loose = json!({
        "allowAdmin": true,
        "allowedScopes": ["TILE", "MATRIX", "DIRECTION"],
        "allowedSecretTypes": ["Opaque", "example.com/gebeta-token"],
    });
    let release = Release::install(&client, "vap-older", values(loose)).await;
    let default = format!("GebetaPolicy {}", release.policy("default"));
    let sim = Sim::start(SimConfig::default()).await.expect("simulator");
    let _controller = Controller::start(&client, &ns, sim.base_url()).await;
    let accounts = gsas(&client, &ns);
    let tokens = gats(&client, &ns);

    // Admitted under the loose policy: an admin account with two scopes, made upstream by the
    // operator (which put its finalizer on it), and an access token of a custom Secret type.
    let spec = json!({"platform": "WEB", "scopes": ["TILE", "MATRIX"], "isAdmin": true, "description": "old"});
    eventually_accepted(&accounts, &gsa("old", spec)).await;
    let status = ready(&client, &ns, "old").await;
    let account_id = status.account_id.expect("an upstream account");
    let upstream = sim.account(&account_id).expect("upstream");
    assert!(upstream.is_admin);
    let gsa_now = accounts.get("old").await.unwrap();
    assert!(!gsa_now.finalizers().is_empty(), "the operator's finalizer");
    eventually_accepted(
        &tokens,
        &gat("old", Some(json!({"type": "example.com/gebeta-token"}))),
    )
    .await;

    // The policy tightens; new objects like them are refused.
    release.upgrade(values(json!({"allowedScopes": ["TILE"]})));
    refused(
        &accounts,
        &gsa(
            "new",
            json!({"platform": "WEB", "scopes": ["TILE"], "isAdmin": true}),
        ),
        &format!("isAdmin: true is not allowed by {default}"),
    )
    .await;
    assert_refused(
        tokens
            .create(
                &dry_run(),
                &gat("new", Some(json!({"type": "example.com/gebeta-token"}))),
            )
            .await,
        &format!("secretTemplate.type example.com/gebeta-token is not allowed by {default}"),
    );

    // The old ones are still the owner's and the operator's to manage: what an update leaves as
    // it was is not checked again; what it adds is.
    merge_spec(&accounts, "old", json!({"description": "renamed"}))
        .await
        .expect("an update that adds nothing the policy forbids");
    ready(&client, &ns, "old").await;
    assert_eq!(
        sim.account(&account_id)
            .unwrap()
            .description
            .split(" [")
            .next(),
        Some("renamed")
    );
    assert_refused(
        merge_spec(
            &accounts,
            "old",
            json!({"scopes": ["TILE", "MATRIX", "DIRECTION"]}),
        )
        .await,
        &format!("scope DIRECTION is not allowed by {default}"),
    );
    merge_spec(&accounts, "old", json!({"suspended": true}))
        .await
        .expect("suspending");
    ready(&client, &ns, "old").await;
    merge_spec(&tokens, "old", json!({"suspended": true}))
        .await
        .expect("an access token of a type no longer allowed, updated");

    // Deleting works, and the operator's cleanup (upstream, then removing its finalizer: an
    // update of the object) is not refused.
    let uid = gsa_now.uid().unwrap();
    accounts
        .delete("old", &DeleteParams::default())
        .await
        .unwrap();
    tokens
        .delete("old", &DeleteParams::default())
        .await
        .unwrap();
    support::eventually(DEADLINE, "the old account's object is gone", || async {
        accounts.get_opt("old").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(
        sim.live_accounts()
            .iter()
            .all(|a| !a.description.contains(&uid)),
        "the upstream account was deleted"
    );
    assert!(tokens.get_opt("old").await.unwrap().is_none());
}
