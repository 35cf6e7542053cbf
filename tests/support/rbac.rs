//! RBAC rules as single grants, and audit-log requests as the verbs they were authorized for, so
//! that a test can compare what a chart grants with what a program really does.

use std::collections::BTreeMap;

use gebeta_operator::testbed::AuditEvent;
use serde_json::Value;

/// One verb on one resource that one rule of a Role or ClusterRole grants.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    /// `ClusterRole <name>` or `Role <namespace>/<name>`.
    pub role: String,
    /// A Role's namespace; `None` for a ClusterRole (bound cluster-wide).
    pub namespace: Option<String>,
    pub verb: String,
    /// API group; empty for the core group.
    pub group: String,
    pub resource: String,
    pub subresource: String,
    /// The rule's `resourceNames`; empty for any object.
    pub names: Vec<String>,
}

impl Grant {
    /// `verb group resource[/subresource]`, the way the table prints it.
    pub fn what(&self) -> String {
        what(&self.verb, &self.group, &self.resource, &self.subresource)
    }

    /// The grant allows `verb` for the request `e`.
    pub fn permits(&self, verb: &str, e: &AuditEvent) -> bool {
        self.verb == verb
            && self.group == e.group
            && self.resource == e.resource
            && self.subresource == e.subresource
            && self.namespace.as_ref().is_none_or(|ns| *ns == e.namespace)
            && (self.names.is_empty() || self.names.contains(&e.name))
    }
}

fn what(verb: &str, group: &str, resource: &str, subresource: &str) -> String {
    let group = if group.is_empty() { "core" } else { group };
    if subresource.is_empty() {
        format!("{verb} {group} {resource}")
    } else {
        format!("{verb} {group} {resource}/{subresource}")
    }
}

/// Every grant of the Roles and ClusterRoles among `docs` (a rendered chart). Panics on a
/// wildcard, which least privilege never needs.
pub fn grants(docs: &[Value]) -> Vec<Grant> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|s| s.as_str().expect("a string").to_string())
            .collect()
    };
    let mut out = Vec::new();
    for doc in docs {
        let namespace = match doc["kind"].as_str() {
            Some("ClusterRole") => None,
            Some("Role") => Some(doc["metadata"]["namespace"].as_str().unwrap().to_string()),
            _ => continue,
        };
        let name = doc["metadata"]["name"].as_str().unwrap();
        let role = match &namespace {
            Some(ns) => format!("Role {ns}/{name}"),
            None => format!("ClusterRole {name}"),
        };
        for rule in doc["rules"].as_array().into_iter().flatten() {
            let (groups, resources, verbs) = (
                strings(&rule["apiGroups"]),
                strings(&rule["resources"]),
                strings(&rule["verbs"]),
            );
            assert!(
                !groups
                    .iter()
                    .chain(&resources)
                    .chain(&verbs)
                    .any(|s| s.contains('*')),
                "a wildcard in {role}: {rule}"
            );
            for group in &groups {
                for resource in &resources {
                    let (resource, subresource) =
                        resource.split_once('/').unwrap_or((resource.as_str(), ""));
                    for verb in &verbs {
                        out.push(Grant {
                            role: role.clone(),
                            namespace: namespace.clone(),
                            verb: verb.clone(),
                            group: group.clone(),
                            resource: resource.to_string(),
                            subresource: subresource.to_string(),
                            names: strings(&rule["resourceNames"]),
                        });
                    }
                }
            }
        }
    }
    out
}

/// The verbs the API server authorized `e` for: its own, and `create` too for a patch or an
/// update that created the object (201): the API server checks `create` for those as well.
pub fn verbs_authorized(e: &AuditEvent) -> Vec<&str> {
    let mut verbs = vec![e.verb.as_str()];
    if matches!(e.verb.as_str(), "patch" | "update") && e.code == 201 {
        verbs.push("create");
    }
    verbs
}

/// How often each `verb group resource[/subresource]` was used by `requests`.
pub fn usage(requests: &[AuditEvent]) -> BTreeMap<String, usize> {
    let mut table = BTreeMap::new();
    for e in requests {
        for verb in verbs_authorized(e) {
            *table
                .entry(what(verb, &e.group, &e.resource, &e.subresource))
                .or_default() += 1;
        }
    }
    table
}

/// The grants no request used.
pub fn unused<'a>(grants: &'a [Grant], requests: &[AuditEvent]) -> Vec<&'a Grant> {
    grants
        .iter()
        .filter(|g| {
            !requests
                .iter()
                .any(|e| verbs_authorized(e).iter().any(|verb| g.permits(verb, e)))
        })
        .collect()
}

/// The table of [`usage`], one line per verb and resource.
pub fn table(usage: &BTreeMap<String, usize>) -> String {
    let mut out = String::from("| verb | group | resource | requests |\n|---|---|---|---|\n");
    for (what, n) in usage {
        let mut parts = what.splitn(3, ' ');
        let (verb, group, resource) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        out.push_str(&format!("| {verb} | {group} | {resource} | {n} |\n"));
    }
    out
}
