//! Shared test environment: one real control plane (etcd + kube-apiserver with an audit log +
//! kube-controller-manager) per test binary, with the CRDs from `crds/` installed, and a fresh
//! namespace per test.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod cli;
pub mod rbac;

use std::{path::Path, sync::OnceLock, time::Duration};

use gebeta_operator::testbed::{AuditEvent, ControlPlane, ControlPlaneOptions, wait_until};
use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client, api::PostParams};

static CONTROL_PLANE: OnceLock<ControlPlane> = OnceLock::new();

/// The control plane of this test binary, started on first use. Panics with the reason (and
/// how to fix it) when it cannot start: a test never skips silently.
pub fn control_plane() -> &'static ControlPlane {
    CONTROL_PLANE.get_or_init(|| {
        // Started on a runtime of its own: each #[tokio::test] has a runtime that ends with it.
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
            runtime.block_on(async {
                let cp = ControlPlane::start_with(ControlPlaneOptions { audit_log: true }).await?;
                let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
                cp.install_crds(&cp.client()?, &crds).await?;
                Ok::<_, gebeta_operator::testbed::TestbedError>(cp)
            })
        })
        .join()
        .expect("control-plane start-up thread")
        .unwrap_or_else(|e| panic!("cannot start the test control plane: {e}"))
    })
}

/// A cluster-admin client bound to the calling test's runtime.
pub fn client() -> Client {
    control_plane()
        .client()
        .expect("a client for the test control plane")
}

/// Where the audit log of the test control plane ends now: pass it to [`audit_since`].
pub fn audit_offset() -> u64 {
    control_plane()
        .audit_log()
        .expect("the test control plane keeps an audit log")
        .end()
}

/// The requests the API server audited since `offset` (of [`audit_offset`]).
pub fn audit_since(offset: u64) -> Vec<AuditEvent> {
    control_plane()
        .audit_log()
        .expect("the test control plane keeps an audit log")
        .read_from(offset)
        .expect("read the audit log")
        .0
}

/// Creates a namespace named `<prefix>-<random>` and returns its name.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let name = format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    name
}

/// Polls `probe` until it yields, panicking with `what` after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_until(deadline, what, probe)
        .await
        .unwrap_or_else(|waited| panic!("timed out after {waited:?} waiting for: {what}"))
}
