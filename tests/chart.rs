//! The Helm chart against the test control plane: `helm lint`, `helm template` validated by a
//! server-side dry-run, `helm install`, and the chart's RBAC checked as the chart's
//! ServiceAccount: the operator binary runs with exactly those rights through its whole job,
//! and its requests in the API server's audit log must use every grant and be refused none;
//! access reviews check the scoping the log cannot show (namespaces, the one Lease).

mod support;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use gebeta_operator::{
    bench::objects,
    controllers::{
        access_token::{RESTART_OPT_IN_ANNOTATION, RESTARTED_AT_ANNOTATION},
        service_account::{ROTATE_ANNOTATION, user_token::USER_TOKEN_FINALIZER},
    },
    crd::{GebetaAccessToken, GebetaServiceAccount},
    gebeta::{AccountState, Platform, Scope},
    sim::{Sim, SimConfig},
    testbed::{AuditEvent, free_port},
};
use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::{DaemonSet, Deployment, StatefulSet},
        authorization::v1::{
            ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
        },
        coordination::v1::Lease,
        core::v1::{Secret, Service, ServiceAccount},
        events::v1::Event,
        policy::v1::PodDisruptionBudget,
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    },
};
use kube::{
    Api, Client, ResourceExt,
    api::{
        ApiResource, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams,
        PostParams,
    },
};
use serde_json::{Value, json};
use support::{
    cli::{CHART, documents, kube_version, of_kind, ok, release_name, run},
    rbac::Grant,
};

const OPERATOR: &str = env!("CARGO_BIN_EXE_gebeta-operator");
/// How long one step of the operator's work may take.
const DEADLINE: Duration = Duration::from_secs(60);

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

/// `helm template` with no `--kube-version`, as tools that render the chart offline run it
/// (scanners, GitOps previews): the helm of hack/control-plane.sh assumes a Kubernetes version
/// that meets the chart's `kubeVersion` (helm's fallback without its build-time version, 1.20,
/// does not), and the chart renders what it renders for an explicit version.
#[test]
fn helm_template_renders_without_a_kube_version() {
    let full = format!("{CHART}/ci/full-values.yaml");
    for values in [&[][..], &["-f", full.as_str()][..]] {
        let mut args = vec!["template", "x", CHART];
        args.extend(values);
        let out = run("helm", &args, None);
        assert!(
            out.status.success(),
            "helm template {values:?} without --kube-version failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let docs = documents(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(of_kind(&docs, "Deployment").len(), 1);
        assert_eq!(docs, render(values), "{values:?}");
    }
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

/// Every verb the chart's ClusterRole grants (default values), as access checks in `ns`: what
/// the per-namespace Roles must grant in the watched namespaces, and nothing elsewhere.
fn workload_access<'a>(grants: &'a [Grant], ns: &'a str) -> Vec<Access<'a>> {
    grants
        .iter()
        .filter(|g| g.role.starts_with("ClusterRole "))
        .map(|g| {
            (
                ns,
                g.group.as_str(),
                g.resource.as_str(),
                g.subresource.as_str(),
                "",
                g.verb.as_str(),
            )
        })
        .collect()
}

/// The grants of the chart rendered with default values.
fn default_grants() -> Vec<Grant> {
    support::rbac::grants(&render(&[]))
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

/// Grants the operator needs that no request of it shows in the audit log. Each entry says why;
/// the scenario checks that the reason still holds.
const NOT_SEEN_IN_THE_AUDIT_LOG: &[(&str, &str)] = &[(
    // The access-token Secrets carry an owner reference with blockOwnerDeletion: true (the
    // Secret is garbage-collected with its GebetaAccessToken, in foreground deletions too). On
    // clusters with the OwnerReferencesPermissionEnforcement admission plugin (on in the test
    // control plane, as on OpenShift) writing such a reference needs `update` on the owner's
    // `finalizers` subresource. The plugin asks the authorizer directly: no request, so no
    // audit line; without the grant every access-token Secret write is refused (403) and the
    // scenario stalls. (The service-account token Secrets set no blockOwnerDeletion: no such
    // grant for GebetaServiceAccounts.)
    "update gebeta.app gebetaaccesstokens/finalizers",
    "blockOwnerDeletion on the access-token Secrets",
)];

/// The label that ties objects to one run of [`the_operator_through_its_whole_job`].
const RUN_LABEL: &str = "gebeta.app/rbac-audit";

/// Which RBAC variant of the chart a scenario runs under.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RbacMode {
    /// Default values: a ClusterRole.
    ClusterWide,
    /// `watchNamespaces`: a Role per watched namespace and one for the user-token Secret.
    Namespaced,
}

/// Runs the operator binary as the chart's ServiceAccount, with the chart's flags, through its
/// whole job, and returns the chart's grants and every request the operator made (from the
/// API server's audit log).
async fn the_operator_through_its_whole_job(mode: RbacMode) -> (Vec<Grant>, Vec<AuditEvent>) {
    let admin = support::client();
    let prefix = match mode {
        RbacMode::ClusterWide => "audit-cw",
        RbacMode::Namespaced => "audit-ns",
    };
    let release_ns = support::namespace(&admin, &format!("chart-{prefix}")).await;
    let work = support::namespace(&admin, &format!("chart-{prefix}-work")).await;
    let release = release_name(prefix);
    let fullname = format!("{release}-gebeta-operator");

    // The chart, with the operator's default user token in the release namespace, allowed in
    // the work namespace. Only objects labelled for this run: an operator watching all
    // namespaces must leave alone those of the tests running beside this one. (The admission
    // policy is no part of the operator's RBAC.)
    let credentials = format!("gebeta.defaultCredentialsNamespaces=[\"{work}\"]");
    let watched = format!("watchNamespaces=[\"{work}\"]");
    let selector = format!("labelSelector=\"{RUN_LABEL}={release}\"");
    let mut args = vec![
        "install",
        &release,
        CHART,
        "--namespace",
        &release_ns,
        "--set",
        NO_CLUSTER_WIDE_POLICY,
        "--set",
        "gebeta.userTokenSecret.name=gebeta-user",
        "--set-json",
        &credentials,
        "--set-json",
        &selector,
    ];
    if mode == RbacMode::Namespaced {
        args.extend(["--set-json", &watched]);
    }
    ok("helm", &args, None);
    let manifest = ok(
        "helm",
        &["get", "manifest", &release, "--namespace", &release_ns],
        None,
    );
    let grants = support::rbac::grants(&documents(&manifest));
    let has_cluster_role = grants.iter().any(|g| g.namespace.is_none());
    assert_eq!(has_cluster_role, mode == RbacMode::ClusterWide);

    // Gebeta: short-lived tokens (refreshes within the test), dashboard-made tokens, and an
    // account that exists upstream to adopt.
    let sim = Sim::start(SimConfig {
        token_ttl: Duration::from_secs(8),
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let (_, client_token) = sim.create_dashboard_account(Platform::Web, vec![Scope::Tile]);
    let (_, server_token) = sim.create_dashboard_account(Platform::Web, vec![Scope::Tile]);
    let (existing, _) = sim.create_dashboard_account(Platform::Web, vec![Scope::Tile]);

    let secret = |name: &str, data: &[(&str, &str)]| -> Secret {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "stringData": data.iter().copied().collect::<BTreeMap<_, _>>(),
        }))
        .unwrap()
    };
    let pp = PostParams::default();
    Api::<Secret>::namespaced(admin.clone(), &release_ns)
        .create(&pp, &secret("gebeta-user", &[("token", "sim-user-token")]))
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &work);
    secrets
        .create(&pp, &secret("team-user", &[("token", "sim-user-token")]))
        .await
        .unwrap();
    secrets
        .create(
            &pp,
            &secret(
                "dashboard",
                &[
                    ("client-token", &client_token),
                    ("server-token", &server_token),
                ],
            ),
        )
        .await
        .unwrap();

    // One workload of each kind, opted in to restarts by the access token "from-secrets".
    let template = json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]},
    });
    let workload = |kind: &str| -> Value {
        let mut spec = json!({"selector": {"matchLabels": {"app": "web"}}, "template": template});
        match kind {
            "Deployment" => spec["replicas"] = json!(0),
            "StatefulSet" => {
                spec["replicas"] = json!(0);
                spec["serviceName"] = json!("web");
            }
            _ => {}
        }
        json!({
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": {"name": "web", "annotations": {RESTART_OPT_IN_ANNOTATION: "from-secrets"}},
            "spec": spec,
        })
    };
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &work);
    let statefulsets: Api<StatefulSet> = Api::namespaced(admin.clone(), &work);
    let daemonsets: Api<DaemonSet> = Api::namespaced(admin.clone(), &work);
    deployments
        .create(
            &pp,
            &serde_json::from_value(workload("Deployment")).unwrap(),
        )
        .await
        .unwrap();
    statefulsets
        .create(
            &pp,
            &serde_json::from_value(workload("StatefulSet")).unwrap(),
        )
        .await
        .unwrap();
    daemonsets
        .create(&pp, &serde_json::from_value(workload("DaemonSet")).unwrap())
        .await
        .unwrap();

    // The operator: the chart's Deployment's flags and environment, as the chart's
    // ServiceAccount, pointed at the simulator.
    let deployment = Api::<Deployment>::namespaced(admin.clone(), &release_ns)
        .get(&fullname)
        .await
        .expect("the chart's Deployment");
    let chart_args = deployment.spec.template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    let mut op_args: Vec<String> = chart_args
        .into_iter()
        .filter(|a| !a.starts_with("--admin-addr="))
        .map(|a| {
            if a.starts_with("--gebeta-api-url=") {
                format!("--gebeta-api-url={}", sim.base_url())
            } else if a.starts_with("--lease-duration=") {
                "--lease-duration=4".into()
            } else if a.starts_with("--lease-renew=") {
                "--lease-renew=1".into()
            } else if a.starts_with("--log-level=") {
                "--log-level=info,gebeta_operator=debug".into()
            } else {
                a
            }
        })
        .collect();
    op_args.push("--log-format=text".into());
    let user = format!("system:serviceaccount:{release_ns}:{fullname}");
    let ns_group = format!("system:serviceaccounts:{release_ns}");
    let cp = support::control_plane();
    let kubeconfig = cp
        .kubeconfig_as(
            &user,
            &["system:serviceaccounts", &ns_group, "system:authenticated"],
        )
        .unwrap();
    let audit = cp
        .audit_log()
        .expect("the test control plane keeps an audit log");
    let offset = audit.end();
    let op = Operator::start(
        &kubeconfig,
        tempfile::tempdir().unwrap(),
        &op_args,
        &[("POD_NAME", "pod-0"), ("POD_NAMESPACE", &release_ns)],
    );

    let leases: Api<Lease> = Api::namespaced(admin.clone(), &release_ns);
    support::eventually(DEADLINE, "the operator holds the chart's Lease", || {
        let (leases, fullname) = (&leases, &fullname);
        async move {
            let holder = leases
                .get_opt(fullname)
                .await
                .ok()??
                .spec?
                .holder_identity?;
            (holder == "pod-0").then_some(())
        }
    })
    .await;

    // Service accounts: one per deletion policy, one with its own user token (the guarded
    // user-token Secret), one adopted, two rotated on demand.
    let gsas: Api<GebetaServiceAccount> = Api::namespaced(admin.clone(), &work);
    let gsa = |name: &str, spec: Value| -> GebetaServiceAccount {
        serde_json::from_value(json!({
            "apiVersion": "gebeta.app/v1alpha1",
            "kind": "GebetaServiceAccount",
            "metadata": {"name": name, "labels": {RUN_LABEL: release}},
            "spec": spec,
        }))
        .unwrap()
    };
    for account in [
        gsa(
            "client",
            json!({"platform": "WEB", "scopes": ["TILE"], "deletionPolicy": "Delete",
                   "rotation": {"interval": "720h", "gracePeriod": "0s"}}),
        ),
        gsa(
            "server",
            json!({"platform": "WEB", "scopes": ["TILE", "DIRECTION"], "deletionPolicy": "Revoke",
                   "userTokenSecretRef": {"name": "team-user", "key": "token"},
                   "rotation": {"interval": "720h", "gracePeriod": "1h"}}),
        ),
        gsa(
            "spare",
            json!({"platform": "WEB", "scopes": ["TILE"], "deletionPolicy": "Orphan"}),
        ),
        gsa(
            "adopted",
            json!({"platform": "WEB", "scopes": ["TILE"], "accountId": existing}),
        ),
    ] {
        gsas.create(&pp, &account).await.unwrap();
    }
    // Access tokens: from dashboard tokens in a Secret (restarting the workloads), and from
    // the service accounts.
    let gats: Api<GebetaAccessToken> = Api::namespaced(admin.clone(), &work);
    let gat = |name: &str, spec: Value| -> GebetaAccessToken {
        serde_json::from_value(json!({
            "apiVersion": "gebeta.app/v1alpha1",
            "kind": "GebetaAccessToken",
            "metadata": {"name": name, "labels": {RUN_LABEL: release}},
            "spec": spec,
        }))
        .unwrap()
    };
    gats.create(
        &pp,
        &gat(
            "from-secrets",
            json!({
                "clientToken": {"secretKeyRef": {"name": "dashboard", "key": "client-token"}},
                "serverToken": {"secretKeyRef": {"name": "dashboard", "key": "server-token"}},
                "secretName": "from-secrets-token",
                "rolloutRestartTargets": [
                    {"kind": "Deployment", "name": "web"},
                    {"kind": "StatefulSet", "name": "web"},
                    {"kind": "DaemonSet", "name": "web"},
                ],
            }),
        ),
    )
    .await
    .unwrap();
    gats.create(
        &pp,
        &gat(
            "from-accounts",
            json!({
                "clientToken": {"serviceAccountRef": {"name": "client"}},
                "serverToken": {"serviceAccountRef": {"name": "server"}},
                "secretName": "from-accounts-token",
            }),
        ),
    )
    .await
    .unwrap();

    for name in ["client", "server", "spare", "adopted"] {
        wait_ready(&format!("GebetaServiceAccount {name}"), || {
            let gsas = &gsas;
            async move {
                let gsa = gsas.get(name).await.ok()?;
                Some(objects::is_ready(objects::account_conditions(&gsa)))
            }
        })
        .await;
    }
    for name in ["from-secrets", "from-accounts"] {
        wait_ready(&format!("GebetaAccessToken {name}"), || {
            let gats = &gats;
            async move {
                let gat = gats.get(name).await.ok()?;
                Some(objects::is_ready(objects::token_conditions(&gat)))
            }
        })
        .await;
    }
    // The user-token Secret a service account of its namespace uses is guarded.
    let guarded = |on: bool| {
        let secrets = &secrets;
        move || async move {
            let s = secrets.get("team-user").await.ok()?;
            (s.finalizers().iter().any(|f| f == USER_TOKEN_FINALIZER) == on).then_some(())
        }
    };
    support::eventually(
        DEADLINE,
        "the finalizer on the user-token Secret",
        guarded(true),
    )
    .await;
    // The access-token Secret blocks its owner's deletion (see NOT_SEEN_IN_THE_AUDIT_LOG).
    let written = secrets.get("from-secrets-token").await.unwrap();
    assert!(
        written
            .owner_references()
            .iter()
            .any(|o| o.kind == "GebetaAccessToken" && o.block_owner_deletion == Some(true)),
        "{:?}",
        written.metadata.owner_references
    );

    // Refreshes, each restarting the opted-in workloads.
    let token_of = |name: &'static str| {
        let secrets = &secrets;
        async move {
            let s = secrets.get(name).await.ok()?;
            Some(s.data?.get("token")?.0.clone())
        }
    };
    let first = token_of("from-secrets-token").await.expect("a token");
    support::eventually(DEADLINE, "a refreshed token", || async {
        token_of("from-secrets-token")
            .await
            .filter(|t| *t != first)
            .map(|_| ())
    })
    .await;
    support::eventually(DEADLINE, "the workloads restarted", || async {
        let restarted = |annotations: Option<BTreeMap<String, String>>| {
            annotations.is_some_and(|a| a.contains_key(RESTARTED_AT_ANNOTATION))
        };
        let d = deployments.get("web").await.ok()?.spec.template.metadata?;
        let s = statefulsets.get("web").await.ok()?.spec.template.metadata?;
        let ds = daemonsets.get("web").await.ok()?.spec.template.metadata?;
        (restarted(d.annotations) && restarted(s.annotations) && restarted(ds.annotations))
            .then_some(())
    })
    .await;

    // Suspend one account; rotate two: one to the end, one still in its grace period when it
    // is deleted (its two accounts are revoked: two events of one kind, the second one
    // patched into a series).
    let merge = |v: Value| Patch::Merge(v);
    gsas.patch(
        "spare",
        &PatchParams::default(),
        &merge(json!({"spec": {"suspended": true}})),
    )
    .await
    .unwrap();
    let account_of = |name: &'static str| {
        let gsas = &gsas;
        async move {
            gsas.get(name)
                .await
                .unwrap()
                .status
                .unwrap()
                .account_id
                .unwrap()
        }
    };
    let (before_rotation, server_before) = (account_of("client").await, account_of("server").await);
    for name in ["client", "server"] {
        gsas.patch(
            name,
            &PatchParams::default(),
            &merge(json!({"metadata": {"annotations": {ROTATE_ANNOTATION: "1"}}})),
        )
        .await
        .unwrap();
    }
    support::eventually(DEADLINE, "spare suspended", || async {
        let status = gsas.get("spare").await.ok()?.status?;
        (status.state == Some(AccountState::Suspended)).then_some(())
    })
    .await;
    let rotated = support::eventually(DEADLINE, "client rotated", || async {
        let status = gsas.get("client").await.ok()?.status?;
        (status.observed_rotation.as_deref() == Some("1")).then_some(status)
    })
    .await;
    assert_ne!(rotated.account_id.as_ref(), Some(&before_rotation));
    support::eventually(
        DEADLINE,
        "server rotated, the old account retiring",
        || async {
            let status = gsas.get("server").await.ok()?.status?;
            (status.retiring == [server_before.clone()]
                && status.account_id.is_some_and(|id| id != server_before))
            .then_some(())
        },
    )
    .await;
    let accounts: BTreeMap<String, String> = {
        let mut ids = BTreeMap::new();
        for name in ["client", "server", "spare", "adopted"] {
            let status = gsas.get(name).await.unwrap().status.unwrap();
            ids.insert(name.to_string(), status.account_id.unwrap());
        }
        ids
    };

    // Delete everything: the access tokens, then the accounts, each with its deletion policy.
    let dp = DeleteParams::default();
    for name in ["from-secrets", "from-accounts"] {
        gats.delete(name, &dp).await.unwrap();
    }
    for name in ["client", "server", "spare", "adopted"] {
        gsas.delete(name, &dp).await.unwrap();
    }
    support::eventually(DEADLINE, "every object gone", || async {
        let left = gsas.list(&ListParams::default()).await.ok()?.items.len()
            + gats.list(&ListParams::default()).await.ok()?.items.len();
        (left == 0).then_some(())
    })
    .await;
    let upstream = |name: &str| sim.account(&accounts[name]).map(|a| a.status);
    assert_eq!(upstream("client"), None, "Delete: the account is gone");
    assert_eq!(upstream("server"), Some(AccountState::Revoked), "Revoke");
    assert_eq!(
        sim.account(&server_before).map(|a| a.status),
        Some(AccountState::Revoked),
        "Revoke: the account in its grace period too"
    );
    assert_eq!(upstream("spare"), Some(AccountState::Suspended), "Orphan");
    assert_eq!(
        upstream("adopted"),
        Some(AccountState::Active),
        "Orphan (adopted)"
    );
    support::eventually(DEADLINE, "the user-token Secret released", guarded(false)).await;
    // Events of the operator's own.
    support::eventually(DEADLINE, "the operator's events", || async {
        let events = Api::<Event>::namespaced(admin.clone(), &work)
            .list(&ListParams::default())
            .await
            .ok()?;
        events
            .items
            .iter()
            .any(|e| e.reporting_controller.as_deref() == Some("gebeta-operator"))
            .then_some(())
    })
    .await;

    // Stop (SIGTERM: the Lease is released), then read what it did.
    let log = op.stop();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the operator hit a Forbidden:\n{log}"
    );
    let (events, _) = audit.read_from(offset).expect("read the audit log");
    ok(
        "helm",
        &["uninstall", &release, "--namespace", &release_ns],
        None,
    );
    let requests = events.into_iter().filter(|e| e.user == user).collect();
    (grants, requests)
}

/// Every request the operator made was allowed, and every grant of the chart was used (but
/// those of [`NOT_SEEN_IN_THE_AUDIT_LOG`]).
fn assert_grants_are_exactly_what_is_used(mode: &str, grants: &[Grant], requests: &[AuditEvent]) {
    let usage = support::rbac::usage(requests);
    println!(
        "Requests of the operator under the chart's RBAC ({mode}):\n{}",
        support::rbac::table(&usage)
    );
    let denied: Vec<String> = requests
        .iter()
        .filter(|e| e.code == 403)
        .map(|e| format!("{} {}/{}", e.verb, e.kind(), e.name))
        .collect();
    assert!(
        denied.is_empty(),
        "requests of the operator denied ({mode}): {denied:#?}"
    );
    for (what, why) in NOT_SEEN_IN_THE_AUDIT_LOG {
        assert!(
            grants.iter().any(|g| g.what() == *what),
            "the allow-list names {what} ({why}), which the chart does not grant: remove it"
        );
    }
    let unused: Vec<String> = support::rbac::unused(grants, requests)
        .into_iter()
        .filter(|g| {
            !NOT_SEEN_IN_THE_AUDIT_LOG
                .iter()
                .any(|(w, _)| g.what() == *w)
        })
        .map(|g| format!("{}: {} {:?}", g.role, g.what(), g.names))
        .collect();
    assert!(
        unused.is_empty(),
        "the chart grants what the operator never used ({mode}): {unused:#?}\nused:\n{}",
        support::rbac::table(&usage)
    );
}

/// The chart's cluster-wide RBAC (a ClusterRole and the leader-election Role) grants exactly
/// what the operator uses: derived from the API server's audit log of the operator doing its
/// whole job as the chart's ServiceAccount.
#[tokio::test]
async fn cluster_wide_rbac_grants_exactly_what_the_operator_uses() {
    let (grants, requests) = the_operator_through_its_whole_job(RbacMode::ClusterWide).await;
    assert_grants_are_exactly_what_is_used("cluster-wide", &grants, &requests);

    // What the audit log cannot tell: the leader-election grants are limited to the release
    // namespace and, but for create, to the one Lease.
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
    let lease = |ns, name, verb| (ns, "coordination.k8s.io", "leases", "", name, verb);
    assert_access(
        &sa,
        &[
            lease(release_ns.as_str(), "", "create"),
            lease(&release_ns, &fullname, "get"),
            lease(&release_ns, &fullname, "update"),
        ],
        true,
    )
    .await;
    assert_access(
        &sa,
        &[
            lease(&release_ns, "another-lease", "update"),
            lease(&release_ns, &fullname, "delete"),
            lease(&work_ns, &fullname, "get"),
            lease(&work_ns, "", "create"),
        ],
        false,
    )
    .await;
    ok(
        "helm",
        &["uninstall", &release, "--namespace", &release_ns],
        None,
    );
}

/// The same with `watchNamespaces`: a Role per watched namespace, the user-token Role and the
/// leader-election Role grant exactly what the operator uses.
#[tokio::test]
async fn namespaced_rbac_grants_exactly_what_the_operator_uses() {
    let (grants, requests) = the_operator_through_its_whole_job(RbacMode::Namespaced).await;
    assert_grants_are_exactly_what_is_used("namespaced", &grants, &requests);
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

    // What the ClusterRole grants, the Roles grant in the watched namespace only.
    let grants = default_grants();
    assert_access(&sa, &workload_access(&grants, &watched), true).await;
    assert_access(&sa, &workload_access(&grants, &other), false).await;
    assert_access(&sa, &workload_access(&grants, ""), false).await;
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
    fn start(
        kubeconfig: &Path,
        dir: tempfile::TempDir,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Operator {
        let log = dir.path().join("operator.log");
        let out = std::fs::File::create(&log).unwrap();
        let admin = format!("127.0.0.1:{}", free_port().unwrap());
        let child = Command::new(OPERATOR)
            .env_clear()
            .env("KUBECONFIG", kubeconfig)
            .envs(env.iter().copied())
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

    /// SIGTERM, as Kubernetes stops a pod (a graceful shutdown releases the Lease); waits for
    /// the exit and returns the log.
    fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        ok_status(Command::new("kill").args(["-TERM", &pid]).status());
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the operator did not stop within 30 s of SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.log()
    }
}

fn ok_status(status: std::io::Result<std::process::ExitStatus>) {
    let status = status.expect("run kill");
    assert!(status.success(), "kill: {status}");
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
        &[],
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

/// Polls `probe` (`Some(ready)`) until it says ready.
async fn wait_ready<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<bool>>,
{
    support::eventually(DEADLINE, &format!("{what} Ready"), || {
        let ready = probe();
        async move { ready.await.filter(|r| *r).map(|_| ()) }
    })
    .await
}
