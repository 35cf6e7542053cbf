//! Keeps a user-token Secret readable for as long as a `GebetaServiceAccount` of its namespace
//! may need it, so that deleting a namespace never hangs.
//!
//! When a namespace is deleted, its Secrets and its `GebetaServiceAccount`s go at the same
//! time; an object's cleanup (revoke or delete the upstream account) needs the management
//! credentials in one of those Secrets. Without protection the Secret goes first, cleanup fails
//! for good and the namespace stays `Terminating`. So the first time the controller uses a
//! user-token Secret of the object's own namespace it adds the finalizer
//! [`USER_TOKEN_FINALIZER`] (and the label [`USER_TOKEN_LABEL`]) to it, as Kubernetes itself
//! protects a PersistentVolumeClaim in use. A small controller over the labelled Secrets
//! removes both once no `GebetaServiceAccount` of the namespace refers to the Secret any more;
//! it is woken by every change of those objects, and decides from a fresh list, so the
//! deletion of the last object always releases the Secret.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{controller::Action, reflector::ObjectRef, watcher},
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{
    controllers::{Context, FIELD_MANAGER, Settings, WatchScope},
    crd::GebetaServiceAccount,
};

/// Finalizer on a user-token Secret that a `GebetaServiceAccount` of its namespace uses.
pub const USER_TOKEN_FINALIZER: &str = "gebeta.app/user-token-in-use";
/// Label on such a Secret, so that the guard watches only those.
pub const USER_TOKEN_LABEL: &str = "gebeta.app/user-token-in-use";

/// Errors of the guard's reconcile (retried).
#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// The name of the user-token Secret in its own namespace that `gsa` uses, if any.
pub fn secret_used_by(gsa: &GebetaServiceAccount, settings: &Settings) -> Option<String> {
    let ns = gsa.namespace()?;
    match (
        &gsa.spec.user_token_secret_ref,
        &settings.default_user_token,
    ) {
        (Some(r), _) => Some(r.name.clone()),
        (None, Some(default)) if default.namespace == ns => Some(default.name.clone()),
        _ => None,
    }
}

/// Adds the finalizer and label to `secret` (in the object's namespace) unless it has them or
/// is being deleted. The write is conditional on the version read.
pub async fn protect(ctx: &Context, secret: &Secret) -> Result<(), kube::Error> {
    let finalizers = secret.finalizers();
    if finalizers.iter().any(|f| f == USER_TOKEN_FINALIZER)
        || secret.metadata.deletion_timestamp.is_some()
    {
        return Ok(());
    }
    let mut wanted = finalizers.to_vec();
    wanted.push(USER_TOKEN_FINALIZER.to_string());
    let patch = json!({"metadata": {
        "finalizers": wanted,
        "labels": {USER_TOKEN_LABEL: "true"},
        "resourceVersion": secret.resource_version(),
    }});
    let api: Api<Secret> =
        Api::namespaced(ctx.kube.clone(), &secret.namespace().unwrap_or_default());
    api.patch(&secret.name_any(), &params(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// Runs the guard until `shutdown`: one controller over labelled Secrets per watched
/// namespace (or one for the cluster), woken by every `GebetaServiceAccount` change.
pub async fn run(ctx: Arc<Context>, scope: WatchScope, shutdown: CancellationToken) {
    let runs = scope.namespaces().into_iter().map(|ns| {
        let secrets: Api<Secret> = scope.api_in(&ctx.kube, ns.as_deref());
        let accounts: Api<GebetaServiceAccount> = scope.api_in(&ctx.kube, ns.as_deref());
        let mapper_ctx = ctx.clone();
        crate::controllers::settled_controller(
            secrets,
            watcher::Config::default()
                .labels(USER_TOKEN_LABEL)
                .any_semantic(),
            |_: &mut Secret| {},
        )
        .watches(
            accounts,
            watcher::Config::default().any_semantic(),
            move |gsa: GebetaServiceAccount| {
                let ns = gsa.namespace().unwrap_or_default();
                secret_used_by(&gsa, &mapper_ctx.settings)
                    .map(|name| ObjectRef::new(&name).within(&ns))
            },
        )
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(release_if_unused, error_policy, ctx.clone())
        .for_each(|result| {
            if let Err(err) = result {
                tracing::debug!(%err, "user-token guard reconcile ended with an error");
            }
            std::future::ready(())
        })
    });
    futures::future::join_all(runs).await;
}

/// Removes the finalizer and label from `secret` when no `GebetaServiceAccount` of its
/// namespace uses it (decided from a fresh list, never a cache that may lag).
async fn release_if_unused(secret: Arc<Secret>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = secret.namespace().unwrap_or_default();
    let name = secret.name_any();
    if !secret
        .finalizers()
        .iter()
        .any(|f| f == USER_TOKEN_FINALIZER)
    {
        return Ok(Action::await_change());
    }
    let accounts: Api<GebetaServiceAccount> = Api::namespaced(ctx.kube.clone(), &ns);
    let in_use = accounts
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .any(|gsa| secret_used_by(gsa, &ctx.settings).as_deref() == Some(name.as_str()));
    if in_use {
        return Ok(Action::await_change());
    }
    let finalizers: Vec<&String> = secret
        .finalizers()
        .iter()
        .filter(|f| *f != USER_TOKEN_FINALIZER)
        .collect();
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "labels": {USER_TOKEN_LABEL: null},
        "resourceVersion": secret.resource_version(),
    }});
    let api: Api<Secret> = Api::namespaced(ctx.kube.clone(), &ns);
    match api.patch(&name, &params(), &Patch::Merge(&patch)).await {
        Ok(_) => {
            tracing::info!(namespace = %ns, secret = %name, "user-token Secret no longer in use; released");
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

fn error_policy(_: Arc<Secret>, err: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(%err, "user-token guard failed; retrying");
    Action::requeue(std::time::Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_in_use_is_the_reference_or_a_local_default() {
        let gsa = |reference: Option<&str>| {
            let mut spec: crate::crd::GebetaServiceAccountSpec = serde_json::from_value(json!({
                "platform": "WEB", "scopes": ["TILE"]
            }))
            .unwrap();
            spec.user_token_secret_ref = reference.map(|name| crate::crd::SecretKeySelector {
                name: name.into(),
                key: "token".into(),
            });
            let mut gsa = GebetaServiceAccount::new("a", spec);
            gsa.metadata.namespace = Some("team".into());
            gsa
        };
        let with_default = |ns: &str| Settings {
            default_user_token: Some(crate::controllers::SecretLocation {
                namespace: ns.into(),
                name: "ops-token".into(),
                key: "token".into(),
            }),
            ..Default::default()
        };
        let check = |gsa: &GebetaServiceAccount, settings: Settings| secret_used_by(gsa, &settings);
        assert_eq!(
            check(&gsa(Some("mine")), with_default("ops")).as_deref(),
            Some("mine")
        );
        assert_eq!(check(&gsa(None), with_default("ops")), None);
        assert_eq!(
            check(&gsa(None), with_default("team")).as_deref(),
            Some("ops-token")
        );
    }
}
