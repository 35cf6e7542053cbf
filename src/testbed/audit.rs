//! The API server's audit log, for counting who wrote what: the benchmark's "Kubernetes
//! writes in a steady state" and the reliability tests' "nothing is written twice".
//!
//! [`ControlPlaneOptions::audit_log`](super::ControlPlaneOptions) starts kube-apiserver with
//! [`POLICY`]: one JSON line per request on objects (get, list, watch, create, update, patch,
//! delete, deletecollection) at the `Metadata` level, after the response was sent (a watch
//! also when its response starts); [`AuditEvent::is_write`] and [`AuditEvent::is_read`] tell
//! writes from reads (a watch is neither: it is recorded so that the chart's RBAC test sees
//! every verb the operator uses). The API server writes in blocking mode, so a request's line
//! is in the file by the time its response reached the client.
//!
//! To attribute writes to one program, give it its own identity: a kubeconfig from
//! [`ControlPlane::kubeconfig_as`](super::ControlPlane::kubeconfig_as) impersonates a user,
//! and [`AuditEvent::user`] is the impersonated user when there is one.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use serde::Deserialize;

/// The audit policy: every request on objects, metadata only; nothing else (discovery and
/// other non-resource requests).
pub const POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, Panic]
rules:
- level: Metadata
  verbs: [get, list, watch, create, update, patch, delete, deletecollection]
- level: None
";

/// The verbs that read objects once (a watch is not counted among them).
pub const READ_VERBS: [&str; 2] = ["get", "list"];

/// The verbs that change objects.
pub const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

/// One request, as the audit log records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// The acting user: the impersonated user if any, else the authenticated one.
    pub user: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// API group of the resource: empty for the core group, e.g. `apps`, `gebeta.app`.
    pub group: String,
    /// Plural resource name, e.g. `secrets`, `gebetaaccesstokens`.
    pub resource: String,
    /// e.g. `status`; empty for the main resource.
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// HTTP status code of the answer (0 when the log has none).
    pub code: u16,
    /// When the API server received the request.
    pub received: jiff::Timestamp,
    /// The client's `User-Agent` (empty when it sent none).
    pub user_agent: String,
}

impl AuditEvent {
    /// `secrets`, or `gebetaaccesstokens/status` for a subresource.
    pub fn kind(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// The request was a write (not a get, a list or a watch).
    pub fn is_write(&self) -> bool {
        WRITE_VERBS.contains(&self.verb.as_str())
    }

    /// The request was a get or a list (not a watch, not a write).
    pub fn is_read(&self) -> bool {
        READ_VERBS.contains(&self.verb.as_str())
    }

    /// The request succeeded (2xx).
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEvent {
    #[serde(default)]
    verb: String,
    #[serde(default)]
    user: Option<RawUser>,
    #[serde(default)]
    impersonated_user: Option<RawUser>,
    #[serde(default)]
    object_ref: Option<RawObjectRef>,
    #[serde(default)]
    response_status: Option<RawStatus>,
    #[serde(default)]
    request_received_timestamp: Option<String>,
    #[serde(default)]
    user_agent: String,
}

#[derive(Deserialize)]
struct RawUser {
    #[serde(default)]
    username: String,
}

#[derive(Deserialize)]
struct RawObjectRef {
    #[serde(default, rename = "apiGroup")]
    api_group: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subresource: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct RawStatus {
    #[serde(default)]
    code: u16,
}

/// Parses one line of the audit log; `None` for anything that is not a request on an object.
pub fn parse_line(line: &str) -> Option<AuditEvent> {
    let raw: RawEvent = serde_json::from_str(line).ok()?;
    let object = raw.object_ref?;
    let user = raw
        .impersonated_user
        .or(raw.user)
        .map(|u| u.username)
        .unwrap_or_default();
    Some(AuditEvent {
        user,
        verb: raw.verb,
        group: object.api_group,
        resource: object.resource,
        subresource: object.subresource,
        namespace: object.namespace,
        name: object.name,
        code: raw.response_status.map_or(0, |s| s.code),
        received: raw
            .request_received_timestamp
            .and_then(|t| t.parse().ok())
            .unwrap_or_default(),
        user_agent: raw.user_agent,
    })
}

/// Reads an audit log file incrementally.
#[derive(Clone, Debug)]
pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    pub fn new(path: &Path) -> AuditLog {
        AuditLog {
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current end of the log: pass it to [`AuditLog::read_from`] to read only what
    /// comes after now.
    pub fn end(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// Every event from byte `offset` to the current end (whole lines only), and the offset
    /// after the last whole line read.
    pub fn read_from(&self, offset: u64) -> std::io::Result<(Vec<AuditEvent>, u64)> {
        let mut events = Vec::new();
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((events, offset)),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(offset))?;
        let mut reader = BufReader::with_capacity(1 << 20, file.by_ref());
        let mut line = String::new();
        let mut position = offset;
        loop {
            line.clear();
            let read = reader.read_line(&mut line)?;
            if read == 0 || !line.ends_with('\n') {
                break;
            }
            position += read as u64;
            if let Some(event) = parse_line(&line) {
                events.push(event);
            }
        }
        Ok((events, position))
    }

    /// Every event in the log.
    pub fn read_all(&self) -> std::io::Result<Vec<AuditEvent>> {
        Ok(self.read_from(0)?.0)
    }
}

/// Counts of events by `(kind, verb)`.
pub fn count_by_kind_and_verb<'a>(
    events: impl IntoIterator<Item = &'a AuditEvent>,
) -> BTreeMap<(String, String), u64> {
    let mut counts = BTreeMap::new();
    for event in events {
        *counts
            .entry((event.kind(), event.verb.clone()))
            .or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_write_and_prefers_the_impersonated_user() {
        let line = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"x","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/a/secrets/s","verb":"patch","userAgent":"gebeta-operator/0.1.0","user":{"username":"gebeta-admin","groups":["system:masters"]},"impersonatedUser":{"username":"gebeta-operator","groups":["system:masters"]},"objectRef":{"resource":"secrets","namespace":"a","name":"s","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2025-01-02T03:04:05.123456Z","stageTimestamp":"2025-01-02T03:04:05.200000Z"}"#;
        let event = parse_line(line).unwrap();
        assert_eq!(event.user, "gebeta-operator");
        assert_eq!(event.user_agent, "gebeta-operator/0.1.0");
        assert_eq!(event.verb, "patch");
        assert!(event.is_write() && !event.is_read());
        assert_eq!(event.group, "");
        assert_eq!(event.kind(), "secrets");
        assert_eq!((event.namespace.as_str(), event.name.as_str()), ("a", "s"));
        assert!(event.succeeded());
        assert_eq!(
            event.received,
            "2025-01-02T03:04:05.123456Z"
                .parse::<jiff::Timestamp>()
                .unwrap()
        );
        let status = r#"{"verb":"update","user":{"username":"u"},"objectRef":{"resource":"gebetaaccesstokens","subresource":"status","namespace":"a","name":"t","apiGroup":"gebeta.app","apiVersion":"v1alpha1"},"responseStatus":{"code":409}}"#;
        let event = parse_line(status).unwrap();
        assert_eq!(event.user, "u");
        assert_eq!(event.group, "gebeta.app");
        assert_eq!(event.kind(), "gebetaaccesstokens/status");
        assert!(!event.succeeded());
        assert_eq!(
            count_by_kind_and_verb([&event, &event])
                .get(&("gebetaaccesstokens/status".into(), "update".into())),
            Some(&2)
        );
        let watch = r#"{"verb":"watch","stage":"ResponseStarted","user":{"username":"u"},"objectRef":{"resource":"secrets","namespace":"a","apiVersion":"v1"},"responseStatus":{"code":200}}"#;
        let event = parse_line(watch).unwrap();
        assert!(!event.is_write() && !event.is_read(), "a watch is neither");
        assert_eq!((event.kind(), event.name.as_str()), ("secrets".into(), ""));
        assert!(parse_line("not json").is_none());
        assert!(parse_line(r#"{"verb":"create"}"#).is_none());
    }

    #[test]
    fn reads_whole_lines_incrementally() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let line = r#"{"verb":"create","user":{"username":"u"},"objectRef":{"resource":"secrets","namespace":"a","name":"s"},"responseStatus":{"code":201}}"#;
        std::fs::write(&path, format!("{line}\n{line}\n{{\"verb\"")).unwrap();
        let log = AuditLog::new(&path);
        let (events, offset) = log.read_from(0).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(offset as usize, 2 * (line.len() + 1));
        let (more, same) = log.read_from(offset).unwrap();
        assert!(more.is_empty(), "a partial line is not read");
        assert_eq!(same, offset);
    }
}
