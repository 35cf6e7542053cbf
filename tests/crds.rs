//! The CRDs are generated from the Rust types, committed, and enforced by the real API server.

mod support;

use gebeta_operator::crd::{
    self, GebetaAccessToken, GebetaPolicy, GebetaPolicySpec, GebetaServiceAccount,
    access_token::SecretTemplate,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

#[test]
fn committed_crds_match_the_rust_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    for (file, generated) in crd::all() {
        let committed = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        assert!(
            committed == crd::to_yaml(&generated),
            "crds/{file} differs from the Rust types: run `cargo run --bin crdgen` and commit"
        );
    }
}

#[test]
fn chart_ships_the_same_crds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, _) in crd::all() {
        let crds = std::fs::read_to_string(root.join("crds").join(file)).expect("crds/ file");
        let chart = std::fs::read_to_string(root.join("charts/gebeta-operator/crds").join(file))
            .unwrap_or_else(|_| panic!("charts/gebeta-operator/crds/{file} is missing"));
        assert!(
            crds == chart,
            "charts/gebeta-operator/crds/{file} differs from crds/{file}"
        );
    }
}

fn gsa_api(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::erase::<GebetaServiceAccount>(&()),
    )
}

fn gat_api(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::erase::<GebetaAccessToken>(&()),
    )
}

fn object(kind: &str, name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "gebeta.app/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

fn valid_account() -> Value {
    json!({"platform": "WEB", "description": "maps backend", "scopes": ["TILE", "DIRECTION"]})
}

fn valid_token() -> Value {
    json!({
        "clientToken": {"serviceAccountRef": {"name": "client"}},
        "serverToken": {"secretKeyRef": {"name": "dashboard", "key": "server-token"}},
        "secretName": "maps-token",
        "refreshBefore": "1m30s",
    })
}

/// Asserts the API server refused the request as invalid, with a message naming `field`.
fn assert_rejected(result: Result<DynamicObject, kube::Error>, field: &str) {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(
                status.code, 422,
                "expected 422 Invalid, got {}: {}",
                status.code, status.message
            );
            assert!(
                status.message.contains(field),
                "message should name {field:?}: {}",
                status.message
            );
        }
        Err(other) => panic!("expected a validation error naming {field:?}, got {other}"),
        Ok(_) => panic!("the API server accepted an object that is invalid in {field:?}"),
    }
}

#[tokio::test]
async fn crds_are_established_with_names_and_columns() {
    let client = support::client();
    let api: Api<CustomResourceDefinition> = Api::all(client);
    for (name, short, columns) in [
        (
            "gebetaserviceaccounts.gebeta.app",
            "gsa",
            vec!["Platform", "State", "Ready", "Age"],
        ),
        (
            "gebetaaccesstokens.gebeta.app",
            "gat",
            vec!["Secret", "Expires", "Ready", "Age"],
        ),
    ] {
        let crd = api.get(name).await.expect("CRD installed");
        let established = crd
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        assert!(established, "{name} is not Established");
        assert_eq!(crd.spec.names.short_names, Some(vec![short.to_string()]));
        assert_eq!(crd.spec.names.categories, Some(vec!["gebeta".to_string()]));
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{name}: status subresource"
        );
        let printed: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .filter(|c| c.priority.unwrap_or(0) == 0)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(printed, columns, "{name}: printer columns");
    }
}

#[tokio::test]
async fn valid_objects_are_accepted_and_read_back_with_defaults() {
    let client = support::client();
    let ns = support::namespace(&client, "crd-valid").await;
    let pp = PostParams::default();

    let created = gsa_api(&client, &ns)
        .create(
            &pp,
            &object("GebetaServiceAccount", "client", valid_account()),
        )
        .await
        .unwrap();
    let spec = &created.data["spec"];
    assert_eq!(spec["isAdmin"], false, "isAdmin defaults to false");
    assert_eq!(spec["suspended"], false);
    assert!(
        spec.get("deletionPolicy").is_none(),
        "no stored default: it depends on accountId"
    );
    let typed: GebetaServiceAccount = Api::namespaced(client.clone(), &ns)
        .get("client")
        .await
        .unwrap();
    assert_eq!(typed.spec.scopes.len(), 2);
    assert_eq!(
        typed.effective_deletion_policy(),
        gebeta_operator::crd::DeletionPolicy::Delete,
        "accounts the operator creates are deleted with their object by default"
    );

    gat_api(&client, &ns)
        .create(&pp, &object("GebetaAccessToken", "maps", valid_token()))
        .await
        .unwrap();
    let typed: GebetaAccessToken = Api::namespaced(client, &ns).get("maps").await.unwrap();
    assert_eq!(typed.spec.secret_name, "maps-token");
    assert_eq!(typed.spec.refresh_before.as_deref(), Some("1m30s"));
}

#[tokio::test]
async fn invalid_service_accounts_are_refused_with_the_field_named() {
    let client = support::client();
    let ns = support::namespace(&client, "crd-gsa-bad").await;
    let api = gsa_api(&client, &ns);
    let pp = PostParams::default();
    let cases = [
        ("platform", json!({"platform": "LINUX", "scopes": ["TILE"]})),
        ("scopes", json!({"platform": "WEB", "scopes": ["TELEPORT"]})),
        ("scopes", json!({"platform": "WEB", "scopes": []})),
        (
            "scopes",
            json!({"platform": "WEB", "scopes": ["TILE", "TILE"]}),
        ),
        (
            "description",
            json!({"platform": "WEB", "scopes": ["TILE"], "description": "x".repeat(201)}),
        ),
        (
            "deletionPolicy",
            json!({"platform": "WEB", "scopes": ["TILE"], "deletionPolicy": "Shred"}),
        ),
        ("scopes", json!({"platform": "WEB"})),
    ];
    for (i, (field, spec)) in cases.into_iter().enumerate() {
        assert_rejected(
            api.create(
                &pp,
                &object("GebetaServiceAccount", &format!("bad-{i}"), spec),
            )
            .await,
            field,
        );
    }
}

#[tokio::test]
async fn platform_and_is_admin_are_immutable() {
    let client = support::client();
    let ns = support::namespace(&client, "crd-immutable").await;
    let api = gsa_api(&client, &ns);
    api.create(
        &PostParams::default(),
        &object("GebetaServiceAccount", "acct", valid_account()),
    )
    .await
    .unwrap();
    let merge = |spec: Value| Patch::Merge(json!({"spec": spec}));
    let pp = PatchParams::default();

    assert_rejected(
        api.patch("acct", &pp, &merge(json!({"platform": "IOS"})))
            .await,
        "platform is immutable",
    );
    assert_rejected(
        api.patch("acct", &pp, &merge(json!({"isAdmin": true})))
            .await,
        "isAdmin is immutable",
    );
    // Mutable fields still change.
    let patched = api
        .patch(
            "acct",
            &pp,
            &merge(json!({"description": "renamed", "suspended": true})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["spec"]["description"], "renamed");
}

/// Whether `accountId` is set decides the default deletion policy (Orphan for an adopted
/// account): a rule on the optional field itself does not run when it is removed or added, so
/// the spec carries one that does.
#[tokio::test]
async fn account_id_and_token_secret_name_are_not_added_or_removed() {
    let client = support::client();
    let ns = support::namespace(&client, "crd-adopted").await;
    let api = gsa_api(&client, &ns);
    let pp = PostParams::default();
    let mut adopted = valid_account();
    adopted["accountId"] = json!("acct-of-another-team");
    adopted["tokenSecretName"] = json!("kept");
    api.create(&pp, &object("GebetaServiceAccount", "adopted", adopted))
        .await
        .unwrap();
    api.create(
        &pp,
        &object("GebetaServiceAccount", "created", valid_account()),
    )
    .await
    .unwrap();
    let patch = PatchParams::default();
    let remove = |path: &str| {
        Patch::Json::<()>(serde_json::from_value(json!([{"op": "remove", "path": path}])).unwrap())
    };
    assert_rejected(
        api.patch("adopted", &patch, &remove("/spec/accountId"))
            .await,
        "accountId cannot be added or removed",
    );
    assert_rejected(
        api.patch("adopted", &patch, &remove("/spec/tokenSecretName"))
            .await,
        "tokenSecretName cannot be removed once set",
    );
    assert_rejected(
        api.patch(
            "created",
            &patch,
            &Patch::Merge(json!({"spec": {"accountId": "acct-of-another-team"}})),
        )
        .await,
        "accountId cannot be added or removed",
    );
    assert_rejected(
        api.patch(
            "adopted",
            &patch,
            &Patch::Merge(json!({"spec": {"accountId": "another"}})),
        )
        .await,
        "accountId is immutable",
    );
    let kept: GebetaServiceAccount = Api::namespaced(client.clone(), &ns)
        .get("adopted")
        .await
        .unwrap();
    assert_eq!(
        kept.spec.account_id.as_deref(),
        Some("acct-of-another-team")
    );
    assert_eq!(
        kept.effective_deletion_policy(),
        gebeta_operator::crd::DeletionPolicy::Orphan
    );
    // Setting a tokenSecretName later stays allowed.
    api.patch(
        "created",
        &patch,
        &Patch::Merge(json!({"spec": {"tokenSecretName": "named-later"}})),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn invalid_access_tokens_are_refused_with_the_field_named() {
    let client = support::client();
    let ns = support::namespace(&client, "crd-gat-bad").await;
    let api = gat_api(&client, &ns);
    let pp = PostParams::default();
    let with = |path: &str, value: Value| {
        let mut spec = valid_token();
        spec[path] = value;
        spec
    };
    let both =
        json!({"serviceAccountRef": {"name": "a"}, "secretKeyRef": {"name": "s", "key": "k"}});
    let cases = [
        (
            "exactly one of serviceAccountRef or secretKeyRef",
            with("clientToken", both),
        ),
        (
            "exactly one of serviceAccountRef or secretKeyRef",
            with("serverToken", json!({})),
        ),
        ("refreshBefore", with("refreshBefore", json!("ten minutes"))),
        ("refreshBefore", with("refreshBefore", json!("1d"))),
        ("secretName", with("secretName", json!("Not_A_Name"))),
        (
            "kind",
            with(
                "rolloutRestartTargets",
                json!([{"kind": "Pod", "name": "x"}]),
            ),
        ),
    ];
    for (i, (field, spec)) in cases.into_iter().enumerate() {
        assert_rejected(
            api.create(&pp, &object("GebetaAccessToken", &format!("bad-{i}"), spec))
                .await,
            field,
        );
    }

    api.create(&pp, &object("GebetaAccessToken", "ok", valid_token()))
        .await
        .unwrap();
    let rename = Patch::Merge(json!({"spec": {"secretName": "elsewhere"}}));
    assert_rejected(
        api.patch("ok", &PatchParams::default(), &rename).await,
        "secretName is immutable",
    );
}

fn with_template(template: Value) -> Value {
    let mut spec = valid_token();
    spec["secretTemplate"] = template;
    spec
}

/// 64 entries with keys of the longest kind (a 253-character prefix and a 63-character name).
fn longest_keys(tag: &str) -> serde_json::Map<String, Value> {
    (0..64)
        .map(|i| {
            let prefix = format!("{tag}{i:02}{}", ".a".repeat(125));
            let name = format!("{}{i:02}", "n".repeat(61));
            assert_eq!((prefix.len(), name.len()), (253, 63));
            (format!("{prefix}/{name}"), json!("v".repeat(63)))
        })
        .collect()
}

#[tokio::test]
async fn secret_templates_are_limited_at_admission() {
    let client = support::client();
    let ns = support::namespace(&client, "crd-template").await;
    let api = gat_api(&client, &ns);
    let pp = PostParams::default();
    let many: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("k{i}"), json!("v"))).collect();
    let cases = [
        // Types the API server acts on, or that belong to Kubernetes.
        (
            "type kubernetes.io/service-account-token is reserved",
            json!({"type": "kubernetes.io/service-account-token"}),
        ),
        (
            "type bootstrap.kubernetes.io/token is reserved",
            json!({"type": "bootstrap.kubernetes.io/token"}),
        ),
        (
            "type kubernetes.io/dockerconfigjson is reserved",
            json!({"type": "kubernetes.io/dockerconfigjson"}),
        ),
        ("type k8s.io/x is reserved", json!({"type": "k8s.io/x"})),
        (
            "type must be Opaque or a custom type",
            json!({"type": "token"}),
        ),
        ("secretTemplate.type", json!({"type": ""})),
        // Reserved label and annotation keys, named in the message.
        (
            "key kubernetes.io/service-account.name is reserved",
            json!({"labels": {"kubernetes.io/service-account.name": "default"}}),
        ),
        (
            "key app.kubernetes.io/managed-by is reserved",
            json!({"labels": {"team": "maps", "app.kubernetes.io/managed-by": "gebeta-operator"}}),
        ),
        (
            "key gebeta.app/access-token is reserved",
            json!({"labels": {"gebeta.app/access-token": "other"}}),
        ),
        (
            "key kubernetes.io/service-account.uid is reserved",
            json!({"annotations": {"kubernetes.io/service-account.uid": "x"}}),
        ),
        (
            "key gebeta.app/refresh-for is reserved",
            json!({"annotations": {"gebeta.app/refresh-for": "other"}}),
        ),
        (
            "key node.kubernetes.io/x is reserved",
            json!({"labels": {"app.kubernetes.io/name": "maps", "node.kubernetes.io/x": "v"}}),
        ),
        (
            "key x.k8s.io/y is reserved",
            json!({"annotations": {"x.k8s.io/y": "z"}}),
        ),
        // Keys and values as Kubernetes checks them.
        (
            "keys must be qualified names",
            json!({"labels": {"bad key": "v"}}),
        ),
        (
            "keys must be qualified names",
            json!({"annotations": {"example.com/": "v"}}),
        ),
        (
            "keys must be qualified names",
            json!({"labels": {"n".repeat(64): "v"}}),
        ),
        (
            "keys must be qualified names",
            json!({"labels": {format!("{}/n", "a".repeat(254)): "v"}}),
        ),
        (
            "secretTemplate.labels.team",
            json!({"labels": {"team": "not a label value"}}),
        ),
        (
            "secretTemplate.labels.team",
            json!({"labels": {"team": "v".repeat(64)}}),
        ),
        ("secretTemplate.labels", json!({"labels": many})),
        ("secretTemplate.annotations", json!({"annotations": many})),
        (
            "must not exceed 256 KiB",
            json!({"annotations": {"a": "x".repeat(200 * 1024), "b": "x".repeat(60 * 1024)}}),
        ),
        // Secret keys.
        (
            "must not be '.' or start with '..'",
            json!({"tokenKey": "..data"}),
        ),
        (
            "tokenKey and expiresAtKey must differ",
            json!({"tokenKey": "expiresAt"}),
        ),
    ];
    for (i, (expected, template)) in cases.into_iter().enumerate() {
        // The operator's own check refuses the same templates.
        let typed: SecretTemplate = serde_json::from_value(template.clone()).unwrap();
        assert!(
            !typed.problems().is_empty(),
            "problems() accepts a template the API server refuses: {template}"
        );
        assert_rejected(
            api.create(
                &pp,
                &object(
                    "GebetaAccessToken",
                    &format!("bad-{i}"),
                    with_template(template),
                ),
            )
            .await,
            expected,
        );
    }

    let allowed = [
        json!({}),
        json!({"type": "Opaque"}),
        json!({"type": null, "labels": {}}),
        json!({
            "type": "example.com/gebeta-token",
            "labels": {"team": "maps", "example.com/tier": "", "x.y/z": "A-1_b.2",
                "app.kubernetes.io/part-of": "routing"},
            "annotations": {"example.com/owner": "the platform team: maps@example.com", "note": ""},
            "tokenKey": "ACCESS_TOKEN",
            "expiresAtKey": ".expiry",
        }),
        json!({"labels": (0..64).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}),
        // The largest template: the admission cost of its rules stays within the budget.
        json!({"labels": longest_keys("l"), "annotations": longest_keys("a")}),
    ];
    for (i, template) in allowed.into_iter().enumerate() {
        let typed: SecretTemplate = serde_json::from_value(template.clone()).unwrap();
        assert_eq!(typed.problems(), Vec::<String>::new(), "{template}");
        api.create(
            &pp,
            &object(
                "GebetaAccessToken",
                &format!("ok-{i}"),
                with_template(template.clone()),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("refused {template}: {e}"));
    }
}

#[tokio::test]
async fn secret_template_type_is_immutable() {
    let client = support::client();
    let ns = support::namespace(&client, "crd-template-type").await;
    let api = gat_api(&client, &ns);
    let pp = PostParams::default();
    let merge = |spec: Value| Patch::Merge(json!({"spec": spec}));
    let patch = PatchParams::default();
    let immutable = "secretTemplate.type is immutable";

    // A custom type: it cannot change, be removed (Opaque), or go with the whole template.
    let typed = with_template(json!({"type": "example.com/a", "labels": {"team": "maps"}}));
    api.create(&pp, &object("GebetaAccessToken", "typed", typed))
        .await
        .unwrap();
    for change in [
        json!({"secretTemplate": {"type": "example.com/b"}}),
        json!({"secretTemplate": {"type": "Opaque"}}),
        json!({"secretTemplate": {"type": null}}),
        json!({"secretTemplate": null}),
    ] {
        let result = api.patch("typed", &patch, &merge(change.clone())).await;
        if let Err(kube::Error::Api(status)) = &result {
            assert!(
                status
                    .message
                    .contains("delete and recreate the GebetaAccessToken"),
                "{change}: {}",
                status.message
            );
        }
        assert_rejected(result, immutable);
    }
    // Everything else in the template still changes.
    let patched = api
        .patch(
            "typed",
            &patch,
            &merge(json!({"secretTemplate": {"labels": {"team": "tiles"}, "tokenKey": "t"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.data["spec"]["secretTemplate"]["type"],
        "example.com/a"
    );
    assert_eq!(
        patched.data["spec"]["secretTemplate"]["labels"]["team"],
        "tiles"
    );

    // No template means Opaque: a custom type cannot be added later, Opaque and labels can.
    api.create(&pp, &object("GebetaAccessToken", "plain", valid_token()))
        .await
        .unwrap();
    assert_rejected(
        api.patch(
            "plain",
            &patch,
            &merge(json!({"secretTemplate": {"type": "example.com/a"}})),
        )
        .await,
        immutable,
    );
    api.patch(
        "plain",
        &patch,
        &merge(json!({"secretTemplate": {"type": "Opaque", "labels": {"team": "maps"}}})),
    )
    .await
    .unwrap();
    api.patch("plain", &patch, &merge(json!({"secretTemplate": null})))
        .await
        .unwrap();

    // An explicit null type (nullable) is Opaque too, and does not block updates.
    let nulled = with_template(json!({"type": null}));
    api.create(&pp, &object("GebetaAccessToken", "nulled", nulled))
        .await
        .unwrap();
    api.patch("nulled", &patch, &merge(json!({"suspended": true})))
        .await
        .unwrap();
}

fn policy_api(client: &Client) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &ApiResource::erase::<GebetaPolicy>(&()))
}

/// A GebetaPolicy named `<prefix>-<random>` (cluster-scoped: tests share the names).
fn policy(prefix: &str, spec: Value) -> DynamicObject {
    let name = format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    object("GebetaPolicy", &name, spec)
}

#[tokio::test]
async fn gebeta_policies_are_cluster_scoped_and_defaulted() {
    let client = support::client();
    let crd = Api::<CustomResourceDefinition>::all(client.clone())
        .get("gebetapolicies.gebeta.app")
        .await
        .expect("CRD installed");
    assert_eq!(crd.spec.scope, "Cluster", "tenants cannot write it");
    assert_eq!(crd.spec.names.short_names, Some(vec!["gpol".to_string()]));
    let version = &crd.spec.versions[0];
    assert!(version.subresources.is_none(), "no status: nothing reports");

    let api = policy_api(&client);
    let pp = PostParams::default();
    // `spec: {}` is the default policy, filled in by the API server.
    let created = api
        .create(&pp, &policy("crd-empty", json!({})))
        .await
        .unwrap();
    let typed: GebetaPolicy = Api::all(client.clone())
        .get(&created.metadata.name.clone().unwrap())
        .await
        .unwrap();
    assert_eq!(typed.spec, GebetaPolicySpec::default());
    assert!(!typed.spec.allow_admin && !typed.spec.allow_adoption);
    assert_eq!(typed.spec.allowed_secret_types, vec!["Opaque".to_string()]);

    // An empty list stays empty (allows nothing); a null one takes the default.
    let created = api
        .create(
            &pp,
            &policy(
                "crd-lists",
                json!({"allowedScopes": [], "allowedPlatforms": null, "allowedSecretTypes": []}),
            ),
        )
        .await
        .unwrap();
    let spec = &created.data["spec"];
    assert_eq!(spec["allowedScopes"], json!([]));
    assert_eq!(spec["allowedSecretTypes"], json!([]));
    assert_eq!(
        spec["allowedPlatforms"],
        json!(["WEB", "ANDROID", "IOS", "DESKTOP"])
    );

    let cp = support::control_plane();
    let out = std::process::Command::new(cp.bin_dir().join("kubectl"))
        .arg(format!("--kubeconfig={}", cp.kubeconfig_path().display()))
        .args(["get", "gpol", &created.metadata.name.clone().unwrap()])
        .output()
        .expect("run kubectl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for header in ["ADMIN", "ADOPTION", "SCOPES", "AGE"] {
        assert!(
            stdout.contains(header),
            "kubectl output lacks {header}:\n{stdout}"
        );
    }
}

#[tokio::test]
async fn gebeta_policies_refuse_what_no_object_could_use() {
    let client = support::client();
    let api = policy_api(&client);
    let pp = PostParams::default();
    let too_many: Vec<String> = (0..33).map(|i| format!("example.com/t{i}")).collect();
    let cases = [
        ("allowedScopes", json!({"allowedScopes": ["TELEPORT"]})),
        ("allowedScopes", json!({"allowedScopes": ["TILE", "TILE"]})),
        ("allowedPlatforms", json!({"allowedPlatforms": ["LINUX"]})),
        ("allowAdmin", json!({"allowAdmin": "yes"})),
        (
            "type kubernetes.io/basic-auth is reserved",
            json!({"allowedSecretTypes": ["Opaque", "kubernetes.io/basic-auth"]}),
        ),
        (
            "type bootstrap.kubernetes.io/token is reserved",
            json!({"allowedSecretTypes": ["bootstrap.kubernetes.io/token"]}),
        ),
        (
            "type k8s.io/x is reserved",
            json!({"allowedSecretTypes": ["k8s.io/x"]}),
        ),
        (
            "each secret type must be Opaque or a custom type",
            json!({"allowedSecretTypes": ["token"]}),
        ),
        (
            "each secret type must be Opaque or a custom type",
            json!({"allowedSecretTypes": ["opaque"]}),
        ),
        ("allowedSecretTypes", json!({"allowedSecretTypes": [""]})),
        (
            "allowedSecretTypes",
            json!({"allowedSecretTypes": ["Opaque", "Opaque"]}),
        ),
        (
            "allowedSecretTypes",
            json!({"allowedSecretTypes": too_many}),
        ),
    ];
    for (field, spec) in cases {
        assert_rejected(api.create(&pp, &policy("crd-bad", spec)).await, field);
    }

    // A policy allows a Secret type exactly when a GebetaAccessToken may have it: the two CRDs
    // share their patterns.
    let ns = support::namespace(&client, "crd-policy-types").await;
    let gats = gat_api(&client, &ns);
    for (i, ty) in [
        "Opaque",
        "example.com/gebeta-token",
        "a/B_c.d",
        "kubernetes.io/basic-auth",
        "kubernetes.io/tls",
        "x.k8s.io/y",
        "Example.com/x",
        "a/b/c",
        "example.com/-x",
    ]
    .into_iter()
    .enumerate()
    {
        let in_policy = api
            .create(
                &pp,
                &policy("crd-type", json!({"allowedSecretTypes": [ty]})),
            )
            .await
            .is_ok();
        let in_token = gats
            .create(
                &pp,
                &object(
                    "GebetaAccessToken",
                    &format!("t-{i}"),
                    with_template(json!({"type": ty})),
                ),
            )
            .await
            .is_ok();
        assert_eq!(
            in_policy,
            in_token,
            "{ty}: a GebetaPolicy {} it, a GebetaAccessToken {} it",
            if in_policy { "allows" } else { "refuses" },
            if in_token { "accepts" } else { "refuses" }
        );
    }
}

#[tokio::test]
async fn kubectl_shows_the_printer_columns() {
    let client = support::client();
    let ns = support::namespace(&client, "crd-kubectl").await;
    gsa_api(&client, &ns)
        .create(
            &PostParams::default(),
            &object("GebetaServiceAccount", "acct", valid_account()),
        )
        .await
        .unwrap();
    gat_api(&client, &ns)
        .create(
            &PostParams::default(),
            &object("GebetaAccessToken", "tok", valid_token()),
        )
        .await
        .unwrap();

    let cp = support::control_plane();
    let out = std::process::Command::new(cp.bin_dir().join("kubectl"))
        .arg(format!("--kubeconfig={}", cp.kubeconfig_path().display()))
        .args(["get", "gsa,gat", "-n", &ns])
        .output()
        .expect("run kubectl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for header in ["PLATFORM", "STATE", "READY", "AGE", "SECRET", "EXPIRES"] {
        assert!(
            stdout.contains(header),
            "kubectl output lacks {header}:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("gebetaserviceaccount.gebeta.app/acct") && stdout.contains("WEB"),
        "{stdout}"
    );
    assert!(
        stdout.contains("gebetaaccesstoken.gebeta.app/tok") && stdout.contains("maps-token"),
        "{stdout}"
    );
}
