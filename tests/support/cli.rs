//! The control plane's command-line tools (`helm`, `kubectl`), run against the test API server
//! with a private Helm home, and reading what they print.

use std::{
    path::PathBuf,
    process::{Command, Output, Stdio},
};

use kube::Client;
use serde_json::Value;

/// The Helm chart of this repository.
pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/gebeta-operator");

/// A control-plane binary (`helm`, `kubectl`, ...).
pub fn bin(name: &str) -> PathBuf {
    super::control_plane().bin_dir().join(name)
}

/// Runs a command with the test kubeconfig and a private Helm home; returns its output.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write as _;
    let cp = super::control_plane();
    let helm_home =
        std::env::temp_dir().join(format!("gebeta-chart-test-helm-{}", std::process::id()));
    let mut child = Command::new(bin(program))
        .args(args)
        .env("KUBECONFIG", cp.kubeconfig_path())
        .env("HELM_CACHE_HOME", helm_home.join("cache"))
        .env("HELM_CONFIG_HOME", helm_home.join("config"))
        .env("HELM_DATA_HOME", helm_home.join("data"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Like [`run`], panicking with stderr when the command fails.
pub fn ok(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    let out = run(program, args, stdin);
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `vX.Y.Z` of the test API server, for `helm --kube-version` (helm's own default is the
/// Kubernetes of the client-go it is built with, which may differ).
pub async fn kube_version(client: &Client) -> String {
    client
        .apiserver_version()
        .await
        .expect("API server version")
        .git_version
}

/// Parses a multi-document YAML stream into JSON values (empty documents skipped).
pub fn documents(yaml: &str) -> Vec<Value> {
    use serde::Deserialize as _;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The documents of one kind.
pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// A Helm release name unique to this run: `<prefix>-<6 hex>`.
pub fn release_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    )
}
