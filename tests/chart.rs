//! The Helm chart against the test control plane: `helm lint`, `helm template` validated by a
//! server-side dry-run, `helm install`, and the chart's RBAC checked as the chart's
//! ServiceAccount (access reviews, real calls, and the operator binary itself running with
//! exactly those rights).

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use gebeta_operator::{
    sim::{Sim, SimConfig},
    testbed::free_port,
};
use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::Deployment,
        authorization::v1::{
            ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
        },
        coordination::v1::Lease,
        core::v1::{ConfigMap, Secret, Service, ServiceAccount},
        events::v1::Event,
        policy::v1::PodDisruptionBudget,
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    },
};
use kube::{
    Api, Client,
    api::{
        ApiResource, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams,
        PostParams,
    },
};
use serde_json::{Value, json};
use support::cli::{CHART, documents, kube_version, of_kind, ok, release_name, run};

const OPERATOR: &str = env!("CARGO_BIN_EXE_gebeta-operator");

/// Tests here share one API server and run in parallel. A release watching all namespaces would
/// bind its admission policy to every namespace, those of the other tests too, and for a moment
/// after its uninstall (bindings outliving their parameters in the API server's caches) refuse
/// their writes; so such releases go without it. Releases that watch their own namespaces keep
/// it (bound there only), and tests/admission_policy.rs tests it.
const NO_CLUSTER_WIDE_POLICY: &str = "admissionPolicy.enabled=false";

/// A minimal ServiceMonitor CRD (the prometheus-operator schema of the fields the chart sets),
/// so that the dry-run validates the ServiceMonitor strictly.
const SERVICE_MONITOR_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          required: [spec]
          properties:
            apiVersion: {type: string}
            kind: {type: string}
            metadata: {type: object}
            spec:
              type: object
              required: [selector]
              properties:
                endpoints:
                  type: array
                  items:
                    type: object
                    properties:
                      port: {type: string}
                      path: {type: string}
                      interval: {type: string, pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'}
                      scrapeTimeout: {type: string, pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'}
                namespaceSelector:
                  type: object
                  properties:
                    any: {type: boolean}
                    matchNames: {type: array, items: {type: string}}
                selector:
                  type: object
                  x-kubernetes-map-type: atomic
                  properties:
                    matchLabels: {type: object, additionalProperties: {type: string}}
"#;

fn install_service_monitor_crd() {
    ok(
        "kubectl",
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(SERVICE_MONITOR_CRD),
    );
    ok(
        "kubectl",
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/servicemonitors.monitoring.coreos.com",
        ],
        None,
    );
}

#[test]
fn helm_lint_passes_and_the_schema_refuses_bad_values() {
    let full = format!("{CHART}/ci/full-values.yaml");
    ok("helm", &["lint", "--strict", CHART], None);
    ok("helm", &["lint", "--strict", CHART, "-f", &full], None);
    for (set, why) in [
        (
            "leaderElection.renewInterval=abc",
            "renewInterval must be an integer",
        ),
        (
            "watchNamespaces[0]=Not_A_Namespace",
            "namespace names are DNS labels",
        ),
        ("logging.format=xml", "log format is text or json"),
        ("resyncInterval=soon", "durations are checked"),
        (
            "maxConcurrentReconciles=0",
            "at least one reconcile at a time",
        ),
        ("gebeta.apiUrl=ftp://x", "the API URL is http(s)"),
        ("unknownValue=1", "typos are refused"),
    ] {
        let out = run("helm", &["lint", CHART, "--set", set], None);
        assert!(
            !out.status.success(),
            "helm lint accepted --set {set} ({why})"
        );
    }
    // More than one replica without leader election would reconcile twice (`helm lint` skips
    // `fail`, so render).
    let render = |sets: &[&str]| {
        let mut args = vec!["template", "x", CHART, "--kube-version", "v1.37.0"];
        for set in sets {
            args.extend(["--set", set]);
        }
        run("helm", &args, None)
    };
    let out = render(&["leaderElection.enabled=false"]);
    assert!(
        !out.status.success(),
        "2 replicas without leader election must be refused"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs leaderElection.enabled"));
    assert!(
        render(&["leaderElection.enabled=false", "replicaCount=1"])
            .status
            .success()
    );
    let out = render(&[
        "leaderElection.leaseDuration=5",
        "leaderElection.renewInterval=5",
    ]);
    assert!(
        !out.status.success(),
        "renewInterval must stay below leaseDuration"
    );
}

/// `helm template` with the default values and `args`, as JSON documents.
fn render(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["template", "x", CHART, "--kube-version", "v1.37.0"];
    all.extend(args);
    documents(&ok("helm", &all, None))
}

fn pod_affinity(docs: &[Value]) -> Value {
    of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["affinity"].clone()
}

#[test]
fn the_pdb_lets_drains_evict_unhealthy_replicas() {
    let policy = |docs: &[Value]| {
        of_kind(docs, "PodDisruptionBudget")[0]["spec"]["unhealthyPodEvictionPolicy"].clone()
    };
    // Two crash-looping replicas must not block a node drain.
    assert_eq!(policy(&render(&[])), "AlwaysAllow");
    assert_eq!(
        policy(&render(&[
            "--set",
            "podDisruptionBudget.unhealthyPodEvictionPolicy=IfHealthyBudget"
        ])),
        "IfHealthyBudget"
    );
    let out = run(
        "helm",
        &[
            "lint",
            CHART,
            "--set",
            "podDisruptionBudget.unhealthyPodEvictionPolicy=Never",
        ],
        None,
    );
    assert!(!out.status.success(), "the schema knows the two policies");
}

#[test]
fn user_affinity_keeps_the_default_anti_affinity() {
    let default_anti = pod_affinity(&render(&[]))["podAntiAffinity"].clone();
    let term = &default_anti["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(
        term["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert_eq!(
        term["podAffinityTerm"]["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"],
        "x"
    );

    let node = json!({"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}]}
    ]}});
    let pod = json!({"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10,
        "podAffinityTerm": {"topologyKey": "topology.kubernetes.io/zone",
            "labelSelector": {"matchLabels": {"app": "cache"}}}}]});
    let given = json!({"nodeAffinity": node, "podAffinity": pod}).to_string();
    let affinity = pod_affinity(&render(&["--set-json", &format!("affinity={given}")]));
    assert_eq!(affinity["nodeAffinity"], node, "nodeAffinity as given");
    assert_eq!(affinity["podAffinity"], pod, "podAffinity as given");
    assert_eq!(
        affinity["podAntiAffinity"], default_anti,
        "the default anti-affinity stays"
    );

    // The user's own anti-affinity replaces the default; an empty one drops it.
    let anti = json!({"requiredDuringSchedulingIgnoredDuringExecution": [{
        "topologyKey": "topology.kubernetes.io/zone",
        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "gebeta-operator"}}}]});
    let given = json!({"nodeAffinity": node, "podAntiAffinity": anti}).to_string();
    let affinity = pod_affinity(&render(&["--set-json", &format!("affinity={given}")]));
    assert_eq!(
        affinity,
        json!({"nodeAffinity": node, "podAntiAffinity": anti})
    );
    let affinity = pod_affinity(&render(&[
        "--set-json",
        "affinity={\"podAntiAffinity\":{}}",
    ]));
    assert_eq!(affinity, json!({"podAntiAffinity": {}}));

    // A typo is refused rather than silently dropped.
    let out = run(
        "helm",
        &["lint", CHART, "--set-json", "affinity={\"nodeAfinity\":{}}"],
        None,
    );
    assert!(!out.status.success(), "affinity keys are checked");
}

#[tokio::test]
async fn rendered_manifests_pass_a_server_side_dry_run() {
    let client = support::client();
    let version = kube_version(&client).await;
    let release_ns = support::namespace(&client, "chart-dry").await;
    let team_a = support::namespace(&client, "chart-dry-a").await;
    let team_b = support::namespace(&client, "chart-dry-b").await;
    install_service_monitor_crd();

    // Default values: cluster-wide RBAC, 2 replicas, PDB.
    let rendered = ok(
        "helm",
        &[
            "template",
            "dry",
            CHART,
            "--namespace",
            &release_ns,
            "--kube-version",
            &version,
            "--include-crds",
        ],
        None,
    );
    ok(
        "kubectl",
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&rendered),
    );
    let docs = documents(&rendered);
    assert_eq!(of_kind(&docs, "CustomResourceDefinition").len(), 3);
    // The admission policy with its default GebetaPolicy, bound in every namespace.
    assert_eq!(of_kind(&docs, "ValidatingAdmissionPolicy").len(), 1);
    assert_eq!(of_kind(&docs, "GebetaPolicy").len(), 1);
    let bindings = of_kind(&docs, "ValidatingAdmissionPolicyBinding");
    assert_eq!(bindings.len(), 1);
    assert_eq!(
        bindings[0]["spec"]["matchResources"]["namespaceSelector"],
        json!({})
    );
    assert_eq!(of_kind(&docs, "ClusterRole").len(), 1);
    assert_eq!(of_kind(&docs, "ClusterRoleBinding").len(), 1);
    let roles = of_kind(&docs, "Role");
    assert_eq!(roles.len(), 1, "only the leader-election Role");
    assert_eq!(roles[0]["metadata"]["namespace"], release_ns.as_str());
    assert_eq!(roles[0]["rules"][0]["resources"], json!(["leases"]));
    assert_eq!(
        of_kind(&docs, "PodDisruptionBudget")[0]["spec"]["minAvailable"],
        1
    );
    assert!(
        of_kind(&docs, "ServiceMonitor").is_empty() && of_kind(&docs, "NetworkPolicy").is_empty()
    );
    let deployment = of_kind(&docs, "Deployment")[0];
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(
        container["resources"]["requests"]["memory"].is_string()
            && container["resources"]["limits"]["memory"].is_string()
            && container["resources"]["requests"]["ephemeral-storage"].is_string()
            && container["resources"]["limits"]["ephemeral-storage"].is_string()
    );
    let env: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(
        env.contains(&"POD_NAME") && env.contains(&"POD_NAMESPACE"),
        "{env:?}"
    );
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert!(
        args.iter().all(|a| !a.starts_with("--namespaces")),
        "all namespaces by default: {args:?}"
    );
    // The chart's flags are the binary's: it accepts them all.
    check_flags_parse(&args);

    // Every optional value set, with namespaced RBAC.
    let full = format!("{CHART}/ci/full-values.yaml");
    let namespaces = json!([team_a, team_b]).to_string();
    let rendered = ok(
        "helm",
        &[
            "template",
            "full",
            CHART,
            "--namespace",
            &release_ns,
            "--kube-version",
            &version,
            "-f",
            &full,
            "--set-json",
            &format!("watchNamespaces={namespaces}"),
        ],
        None,
    );
    ok(
        "kubectl",
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&rendered),
    );
    let docs = documents(&rendered);
    assert!(
        of_kind(&docs, "ClusterRole").is_empty(),
        "namespaced mode needs no ClusterRole"
    );
    let role_namespaces: Vec<&str> = of_kind(&docs, "Role")
        .iter()
        .filter_map(|r| r["metadata"]["namespace"].as_str())
        .collect();
    for ns in [&team_a, &team_b, &release_ns] {
        assert!(
            role_namespaces.contains(&ns.as_str()),
            "no Role in {ns}: {role_namespaces:?}"
        );
    }
    assert_eq!(of_kind(&docs, "RoleBinding").len(), role_namespaces.len());
    assert_eq!(of_kind(&docs, "ServiceMonitor").len(), 1);
    assert_eq!(of_kind(&docs, "NetworkPolicy").len(), 1);
    // Two more policies; every binding limited to the watched namespaces.
    assert_eq!(of_kind(&docs, "GebetaPolicy").len(), 3);
    let bindings = of_kind(&docs, "ValidatingAdmissionPolicyBinding");
    assert_eq!(bindings.len(), 3);
    for binding in bindings {
        let selector = &binding["spec"]["matchResources"]["namespaceSelector"];
        assert!(
            selector["matchExpressions"]
                .as_array()
                .unwrap()
                .contains(&json!({"key": "kubernetes.io/metadata.name", "operator": "In", "values": [team_a, team_b]})),
            "{selector}"
        );
    }
    assert_eq!(
        of_kind(&docs, "PodDisruptionBudget")[0]["spec"]["minAvailable"],
        2
    );
    let deployment = of_kind(&docs, "Deployment")[0];
    let args: Vec<String> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert!(
        args.contains(&format!("--namespaces={team_a},{team_b}")),
        "{args:?}"
    );
    assert!(
        args.contains(&format!(
            "--user-token-secret={release_ns}/gebeta-user-token"
        )),
        "{args:?}"
    );
    assert!(
        args.contains(&"--gebeta-ca-file=/etc/gebeta-operator/ca/ca.crt".to_string()),
        "{args:?}"
    );
    assert!(
        args.contains(&"--default-credentials-namespaces=apps,tools".to_string()),
        "{args:?}"
    );
    assert!(
        args.contains(&"--max-concurrent-reconciles=32".to_string()),
        "{args:?}"
    );
    check_flags_parse(&args);
}

/// The binary accepts the chart's flags: with them it gets past flag parsing and stops at the
/// first step that needs the outside world (a CA file that does not exist here: exit 2 with our
/// own message; otherwise the missing kubeconfig: exit 1).
fn check_flags_parse(args: &[String]) {
    let with_ca = args.iter().any(|a| a.starts_with("--gebeta-ca-file="));
    let mut child = Command::new(OPERATOR)
        .env_clear()
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("gebeta-operator {args:?} did not stop without a kubeconfig");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        !stderr.contains("Usage:"),
        "the binary refused the chart's flags {args:?}:\n{stderr}"
    );
    if with_ca {
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("cannot read --gebeta-ca-file /etc/gebeta-operator/ca/ca.crt"),
            "{stderr}"
        );
    } else {
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("Kubernetes client"), "{stderr}");
    }
}

#[tokio::test]
async fn helm_install_creates_valid_objects() {
    let client = support::client();
    let ns = support::namespace(&client, "chart-install").await;
    let release = release_name("inst");
    // The default values but for the admission policy: cluster-wide, it would apply to the
    // namespaces of the tests running beside this one (tests/admission_policy.rs installs it).
    ok(
        "helm",
        &[
            "install",
            &release,
            CHART,
            "--namespace",
            &ns,
            "--set",
            NO_CLUSTER_WIDE_POLICY,
        ],
        None,
    );
    let status = ok(
        "helm",
        &["status", &release, "--namespace", &ns, "-o", "json"],
        None,
    );
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["info"]["status"], "deployed");
    assert!(
        status["info"]["notes"]
            .as_str()
            .unwrap_or_default()
            .contains("gebeta-operator")
    );

    let fullname = format!("{release}-gebeta-operator");
    let deployment: Deployment = Api::namespaced(client.clone(), &ns)
        .get(&fullname)
        .await
        .expect("Deployment");
    let spec = deployment.spec;
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(fullname.as_str()));
    let container = &pod.containers[0];
    assert_eq!(
        container
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/readyz")
    );
    assert!(
        container
            .args
            .as_ref()
            .unwrap()
            .contains(&format!("--lease-name={fullname}"))
    );
    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .get(&fullname)
        .await
        .expect("ServiceAccount");
    Api::<Service>::namespaced(client.clone(), &ns)
        .get(&format!("{fullname}-metrics"))
        .await
        .expect("Service");
    let pdb: PodDisruptionBudget = Api::namespaced(client.clone(), &ns)
        .get(&fullname)
        .await
        .expect("PDB");
    let pdb = pdb.spec.unwrap();
    assert_eq!(
        pdb.min_available,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    assert_eq!(
        pdb.unhealthy_pod_eviction_policy.as_deref(),
        Some("AlwaysAllow")
    );
    let cluster_role: ClusterRole = Api::all(client.clone())
        .get(&fullname)
        .await
        .expect("ClusterRole");
    assert!(
        cluster_role.rules.unwrap().iter().any(|r| r
            .resources
            .as_ref()
            .unwrap()
            .contains(&"secrets".into()))
    );
    Api::<ClusterRoleBinding>::all(client.clone())
        .get(&fullname)
        .await
        .expect("ClusterRoleBinding");
    Api::<Role>::namespaced(client.clone(), &ns)
        .get(&format!("{fullname}-leader-election"))
        .await
        .expect("lease Role");
    Api::<RoleBinding>::namespaced(client.clone(), &ns)
        .get(&format!("{fullname}-leader-election"))
        .await
        .expect("lease RoleBinding");

    ok(
        "helm",
        &[
            "uninstall",
            &release,
            "--namespace",
            &ns,
            "--wait",
            "--timeout",
            "60s",
        ],
        None,
    );
    assert!(
        Api::<ClusterRole>::all(client.clone())
            .get_opt(&fullname)
            .await
            .unwrap()
            .is_none(),
        "uninstall removes the ClusterRole"
    );
    // CRDs are never removed by helm (objects would go with them).
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    crds.get("gebetaaccesstokens.gebeta.app")
        .await
        .expect("CRDs stay after uninstall");
}

/// The chart's ServiceAccount as a user, through impersonation.
fn service_account_client(ns: &str, name: &str) -> Client {
    let user = format!("system:serviceaccount:{ns}:{name}");
    let ns_group = format!("system:serviceaccounts:{ns}");
    support::control_plane()
        .client_as(
            &user,
            &["system:serviceaccounts", &ns_group, "system:authenticated"],
        )
        .expect("impersonating client")
}

/// One access check: (namespace, group, resource, subresource, name, verb).
type Access<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, &'a str);

async fn allowed(client: &Client, (ns, group, resource, sub, name, verb): Access<'_>) -> bool {
    let review = SelfSubjectAccessReview {
        metadata: ObjectMeta::default(),
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(ns.to_string()).filter(|s| !s.is_empty()),
                group: Some(group.to_string()),
                resource: Some(resource.to_string()),
                subresource: Some(sub.to_string()).filter(|s| !s.is_empty()),
                name: Some(name.to_string()).filter(|s| !s.is_empty()),
                verb: Some(verb.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        },
        status: None,
    };
    let review = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("create a SelfSubjectAccessReview");
    review.status.is_some_and(|s| s.allowed)
}

/// Every verb the controllers use on the resources they work on, in `ns`.
fn workload_access(ns: &str) -> Vec<Access<'_>> {
    let mut checks = Vec::new();
    for resource in ["gebetaserviceaccounts", "gebetaaccesstokens"] {
        for verb in ["get", "list", "watch", "patch", "update"] {
            checks.push((ns, "gebeta.app", resource, "", "", verb));
        }
        for verb in ["get", "patch", "update"] {
            checks.push((ns, "gebeta.app", resource, "status", "", verb));
        }
        checks.push((ns, "gebeta.app", resource, "finalizers", "", "update"));
    }
    for verb in [
        "get", "list", "watch", "create", "patch", "update", "delete",
    ] {
        checks.push((ns, "", "secrets", "", "", verb));
    }
    for resource in ["deployments", "statefulsets", "daemonsets"] {
        checks.push((ns, "apps", resource, "", "", "get"));
        checks.push((ns, "apps", resource, "", "", "patch"));
    }
    checks.push((ns, "events.k8s.io", "events", "", "", "create"));
    checks.push((ns, "events.k8s.io", "events", "", "", "patch"));
    checks
}

/// What the operator never does, in `ns`: the chart must not grant it.
fn not_needed(ns: &str) -> Vec<Access<'_>> {
    vec![
        (ns, "gebeta.app", "gebetaserviceaccounts", "", "", "create"),
        (ns, "gebeta.app", "gebetaaccesstokens", "", "", "delete"),
        (ns, "", "secrets", "", "", "deletecollection"),
        (ns, "", "configmaps", "", "", "get"),
        (ns, "", "pods", "", "", "list"),
        (ns, "", "serviceaccounts", "", "", "create"),
        (ns, "", "events", "", "", "create"),
        (ns, "apps", "deployments", "", "", "update"),
        (ns, "apps", "deployments", "", "", "delete"),
        (ns, "rbac.authorization.k8s.io", "roles", "", "", "create"),
        (ns, "coordination.k8s.io", "leases", "", "", "create"),
    ]
}

async fn assert_access(client: &Client, checks: &[Access<'_>], expected: bool) {
    let mut wrong = Vec::new();
    for check in checks {
        if allowed(client, *check).await != expected {
            wrong.push(*check);
        }
    }
    assert!(
        wrong.is_empty(),
        "expected allowed={expected} for (ns, group, resource, sub, name, verb): {wrong:#?}"
    );
}

fn access_token(name: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "gebeta.app/v1alpha1",
        "kind": "GebetaAccessToken",
        "metadata": {"name": name},
        "spec": {
            "clientToken": {"secretKeyRef": {"name": "dashboard", "key": "client-token"}},
            "serverToken": {"secretKeyRef": {"name": "dashboard", "key": "server-token"}},
            "secretName": format!("{name}-secret"),
        },
    }))
    .unwrap()
}

fn gat_resource() -> ApiResource {
    ApiResource::erase::<gebeta_operator::crd::GebetaAccessToken>(&())
}

#[tokio::test]
async fn cluster_wide_rbac_grants_exactly_what_the_operator_uses() {
    let admin = support::client();
    let release_ns = support::namespace(&admin, "chart-rbac").await;
    let work_ns = support::namespace(&admin, "chart-rbac-work").await;
    let release = release_name("rbac");
    let fullname = format!("{release}-gebeta-operator");
    ok(
        "helm",
        &[
            "install",
            &release,
            CHART,
            "--namespace",
            &release_ns,
            "--set",
            NO_CLUSTER_WIDE_POLICY,
        ],
        None,
    );
    let sa = service_account_client(&release_ns, &fullname);

    assert_access(&sa, &workload_access(&work_ns), true).await;
    assert_access(&sa, &workload_access(""), true).await; // cluster-wide list/watch
    assert_access(&sa, &not_needed(&work_ns), false).await;
    // The Lease: only in the release namespace, reading and renewing only the chart's one.
    assert_access(
        &sa,
        &[
            (
                &release_ns,
                "coordination.k8s.io",
                "leases",
                "",
                "",
                "create",
            ),
            (
                &release_ns,
                "coordination.k8s.io",
                "leases",
                "",
                &fullname,
                "get",
            ),
            (
                &release_ns,
                "coordination.k8s.io",
                "leases",
                "",
                &fullname,
                "update",
            ),
        ],
        true,
    )
    .await;
    assert_access(
        &sa,
        &[
            (
                &release_ns,
                "coordination.k8s.io",
                "leases",
                "",
                "another-lease",
                "update",
            ),
            (
                &release_ns,
                "coordination.k8s.io",
                "leases",
                "",
                &fullname,
                "delete",
            ),
            (
                &work_ns,
                "coordination.k8s.io",
                "leases",
                "",
                &fullname,
                "get",
            ),
        ],
        false,
    )
    .await;

    // Real calls as the ServiceAccount.
    let gats_admin =
        Api::<DynamicObject>::namespaced_with(admin.clone(), &work_ns, &gat_resource());
    gats_admin
        .create(&PostParams::default(), &access_token("maps"))
        .await
        .expect("create as admin");
    let gats = Api::<DynamicObject>::namespaced_with(sa.clone(), &work_ns, &gat_resource());
    assert_eq!(
        gats.list(&ListParams::default())
            .await
            .expect("list as the operator")
            .items
            .len(),
        1
    );
    gats.patch_status(
        "maps",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"observedGeneration": 1}})),
    )
    .await
    .expect("patch status as the operator");
    gats.patch(
        "maps",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": ["gebeta.app/test"]}})),
    )
    .await
    .expect("add a finalizer as the operator");
    gats.patch(
        "maps",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("remove the finalizer");
    let forbidden = gats
        .create(&PostParams::default(), &access_token("other"))
        .await;
    assert!(
        matches!(forbidden, Err(kube::Error::Api(ref s)) if s.code == 403),
        "{forbidden:?}"
    );

    let secrets: Api<Secret> = Api::namespaced(sa.clone(), &work_ns);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("maps-token".into()),
            ..Default::default()
        },
        data: Some([("token".to_string(), ByteString(b"x".to_vec()))].into()),
        ..Default::default()
    };
    secrets
        .patch(
            "maps-token",
            &PatchParams::apply("gebeta-operator"),
            &Patch::Apply(&secret),
        )
        .await
        .expect("apply a Secret");
    secrets
        .delete("maps-token", &DeleteParams::default())
        .await
        .expect("delete a Secret");

    let event: Event = serde_json::from_value(json!({
        "metadata": {"generateName": "maps-"},
        "eventTime": k8s_openapi::jiff::Timestamp::now().to_string(),
        "reportingController": "gebeta-operator",
        "reportingInstance": "test",
        "action": "Reconcile",
        "reason": "Test",
        "type": "Normal",
        "regarding": {"apiVersion": "gebeta.app/v1alpha1", "kind": "GebetaAccessToken", "name": "maps", "namespace": work_ns},
    }))
    .unwrap();
    Api::<Event>::namespaced(sa.clone(), &work_ns)
        .create(&PostParams::default(), &event)
        .await
        .expect("create an Event");

    let leases: Api<Lease> = Api::namespaced(sa.clone(), &release_ns);
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(fullname.clone()),
            ..Default::default()
        },
        spec: None,
    };
    leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("create the Lease");
    let lease = leases.get(&fullname).await.expect("get the Lease");
    leases
        .replace(&fullname, &PostParams::default(), &lease)
        .await
        .expect("update the Lease");

    let configmaps = Api::<ConfigMap>::namespaced(sa.clone(), &work_ns)
        .list(&ListParams::default())
        .await;
    assert!(
        matches!(configmaps, Err(kube::Error::Api(ref s)) if s.code == 403),
        "{configmaps:?}"
    );

    ok(
        "helm",
        &["uninstall", &release, "--namespace", &release_ns],
        None,
    );
}

/// `helm install` of the chart into `release_ns`, watching only `watched`, with the default
/// user token in Secret `gebeta-user`.
fn install_watching_one_namespace(release: &str, release_ns: &str, watched: &str) {
    ok(
        "helm",
        &[
            "install",
            release,
            CHART,
            "--namespace",
            release_ns,
            "--set-json",
            &format!("watchNamespaces=[\"{watched}\"]"),
            "--set",
            "gebeta.userTokenSecret.name=gebeta-user",
        ],
        None,
    );
}

#[tokio::test]
async fn namespaced_rbac_refuses_secrets_outside_the_watched_namespaces() {
    let admin = support::client();
    let release_ns = support::namespace(&admin, "chart-nsrbac").await;
    let watched = support::namespace(&admin, "chart-nsrbac-a").await;
    let other = support::namespace(&admin, "chart-nsrbac-b").await;
    let release = release_name("nsrbac");
    let fullname = format!("{release}-gebeta-operator");
    install_watching_one_namespace(&release, &release_ns, &watched);
    let sa = service_account_client(&release_ns, &fullname);

    assert_access(&sa, &workload_access(&watched), true).await;
    assert_access(&sa, &workload_access(&other), false).await;
    assert_access(&sa, &workload_access(""), false).await;
    // In its own namespace: the one user token Secret, read-only, and the Lease.
    assert_access(
        &sa,
        &[(&release_ns, "", "secrets", "", "gebeta-user", "get")],
        true,
    )
    .await;
    assert_access(
        &sa,
        &[
            (&release_ns, "", "secrets", "", "", "list"),
            (&release_ns, "", "secrets", "", "another-secret", "get"),
            (&release_ns, "", "secrets", "", "gebeta-user", "update"),
        ],
        false,
    )
    .await;

    // Real calls: Secrets elsewhere are Forbidden.
    let in_other: Api<Secret> = Api::namespaced(sa.clone(), &other);
    let listed = in_other.list(&ListParams::default()).await;
    assert!(
        matches!(listed, Err(kube::Error::Api(ref s)) if s.code == 403),
        "{listed:?}"
    );
    let got = in_other.get("anything").await;
    assert!(
        matches!(got, Err(kube::Error::Api(ref s)) if s.code == 403),
        "{got:?}"
    );
    let everywhere = Api::<Secret>::all(sa.clone())
        .list(&ListParams::default())
        .await;
    assert!(
        matches!(everywhere, Err(kube::Error::Api(ref s)) if s.code == 403),
        "{everywhere:?}"
    );
    Api::<Secret>::namespaced(sa.clone(), &watched)
        .list(&ListParams::default())
        .await
        .expect("Secrets in the watched namespace");

    ok(
        "helm",
        &["uninstall", &release, "--namespace", &release_ns],
        None,
    );
}

/// The operator binary, acting as the chart's ServiceAccount through an impersonating kubeconfig.
struct Operator {
    child: Child,
    log: PathBuf,
    admin: String,
    _dir: tempfile::TempDir,
}

impl Operator {
    fn start(kubeconfig: &Path, dir: tempfile::TempDir, args: &[String]) -> Operator {
        let log = dir.path().join("operator.log");
        let out = std::fs::File::create(&log).unwrap();
        let admin = format!("127.0.0.1:{}", free_port().unwrap());
        let child = Command::new(OPERATOR)
            .env_clear()
            .env("KUBECONFIG", kubeconfig)
            .arg(format!("--admin-addr={admin}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start gebeta-operator");
        Operator {
            child,
            log,
            admin,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- operator log ---\n{}", self.log());
        }
    }
}

#[tokio::test]
async fn the_operator_does_its_job_with_exactly_the_charts_rbac() {
    let admin = support::client();
    let release_ns = support::namespace(&admin, "chart-run").await;
    let watched = support::namespace(&admin, "chart-run-a").await;
    let release = release_name("run");
    let fullname = format!("{release}-gebeta-operator");
    install_watching_one_namespace(&release, &release_ns, &watched);
    let sim = Sim::start(SimConfig::default()).await.expect("simulator");
    let user_token = Secret {
        metadata: ObjectMeta {
            name: Some("gebeta-user".into()),
            ..Default::default()
        },
        data: Some([("token".to_string(), ByteString(b"sim-user-token".to_vec()))].into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(admin.clone(), &release_ns)
        .create(&PostParams::default(), &user_token)
        .await
        .unwrap();

    // A kubeconfig whose user impersonates the chart's ServiceAccount.
    let cp = support::control_plane();
    let kubeconfig = std::fs::read_to_string(cp.kubeconfig_path()).unwrap();
    let impersonation = format!(
        "  user:\n    as: system:serviceaccount:{release_ns}:{fullname}\n    as-groups:\n    - system:serviceaccounts\n    - system:serviceaccounts:{release_ns}\n    - system:authenticated\n"
    );
    assert!(
        kubeconfig.contains("  user:\n"),
        "unexpected kubeconfig layout"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, kubeconfig.replacen("  user:\n", &impersonation, 1)).unwrap();

    // The chart's own flags for this release, pointed at the simulator.
    let op = Operator::start(
        &path,
        dir,
        &[
            format!("--gebeta-api-url={}", sim.base_url()),
            format!("--namespaces={watched}"),
            format!("--user-token-secret={release_ns}/gebeta-user"),
            format!("--default-credentials-namespaces={watched}"),
            format!("--lease-namespace={release_ns}"),
            format!("--lease-name={fullname}"),
            "--lease-duration=4".into(),
            "--lease-renew=1".into(),
            "--instance=pod-0".into(),
            "--log-level=info,gebeta_operator=debug".into(),
        ],
    );

    let leases: Api<Lease> = Api::namespaced(admin.clone(), &release_ns);
    support::eventually(
        Duration::from_secs(60),
        "the operator holds the chart's Lease",
        || {
            let leases = &leases;
            let fullname = &fullname;
            async move {
                let holder = leases
                    .get_opt(fullname)
                    .await
                    .ok()??
                    .spec?
                    .holder_identity?;
                (holder == "pod-0").then_some(())
            }
        },
    )
    .await;

    let gsas = Api::<DynamicObject>::namespaced_with(
        admin.clone(),
        &watched,
        &ApiResource::erase::<gebeta_operator::crd::GebetaServiceAccount>(&()),
    );
    let gsa: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gebeta.app/v1alpha1",
        "kind": "GebetaServiceAccount",
        "metadata": {"name": "maps"},
        "spec": {"platform": "WEB", "scopes": ["TILE"], "description": "chart RBAC test"},
    }))
    .unwrap();
    gsas.create(&PostParams::default(), &gsa).await.unwrap();
    let start = Instant::now();
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &watched);
    loop {
        let ready = gsas.get("maps").await.ok().and_then(|o| {
            let conditions = o.data["status"]["conditions"].as_array()?.clone();
            conditions
                .iter()
                .find(|c| c["type"] == "Ready")
                .map(|c| c["status"] == "True")
        });
        let secret = secrets.get_opt("maps-token").await.ok().flatten();
        if ready == Some(true)
            && secret.is_some_and(|s| s.data.is_some_and(|d| d.contains_key("token")))
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the GebetaServiceAccount did not become Ready with its token Secret; status: {}",
            gsas.get("maps")
                .await
                .map(|o| o.data["status"].to_string())
                .unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(sim.live_accounts().len(), 1, "one upstream account");

    // The leader is ready (its watches synced under the chart's RBAC).
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let readyz = format!("http://{}/readyz", op.admin);
    let start = Instant::now();
    loop {
        let answer = http
            .get(&readyz)
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16());
        if answer == Some(200) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "/readyz answered {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = op.log();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the operator hit a Forbidden:\n{log}"
    );

    drop(op);
    ok(
        "helm",
        &["uninstall", &release, "--namespace", &release_ns],
        None,
    );
}
