//! `kubectl gebeta rotate ACCOUNT`: replace a service account by a new one and wait until the
//! operator has stored the new token and retired the old account (`status.observedRotation`
//! equals the request). With `spec.rotation.gracePeriod` the old account is retired only
//! after it, so give `--timeout` room for it.

use std::time::Duration;

use super::{
    CliError, Kube,
    request::{self, Progress, Target},
    time,
    view::{Kind, short_id},
};
use crate::{
    controllers::{conditions, service_account::ROTATE_ANNOTATION},
    crd::{Condition, GebetaServiceAccount, GebetaServiceAccountStatus},
    runtime::cli::parse_duration,
};

/// `rotate` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct RotateArgs {
    /// The GebetaServiceAccount to rotate.
    #[arg(value_name = "ACCOUNT", value_parser = super::parse_object_name)]
    pub name: String,
    /// How long to wait for the operator (e.g. `120s`, `15m`).
    #[arg(long, default_value = "120s", value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Duration,
}

pub async fn run(kube: &Kube, args: &RotateArgs) -> Result<(), CliError> {
    let api = kube.api::<GebetaServiceAccount>(Some(&kube.namespace));
    let target = Target {
        kind: Kind::ServiceAccount,
        namespace: &kube.namespace,
        name: &args.name,
    };
    let gsa = request::get(&api, &target).await?;
    let status = gsa.status.clone().unwrap_or_default();
    if gsa.spec.account_id.is_some() || status.adopted {
        return Err(CliError::Failed(format!(
            "{} adopts an existing account (spec.accountId): its token is not the operator's, so it cannot be rotated",
            target.describe()
        )));
    }
    let old = status.account_id.clone();
    let value = request::fresh_value();
    request::annotate(&api, &target, ROTATE_ANNOTATION, &value).await?;
    eprintln!(
        "{}: {ROTATE_ANNOTATION}={value} set{}; waiting for the operator (up to {})",
        target.describe(),
        old.as_deref()
            .map(|id| format!(" (current account {})", short_id(id)))
            .unwrap_or_default(),
        time::flag_duration(args.timeout)
    );
    let done = request::follow(
        &api,
        &target,
        args.timeout,
        |gsa: &GebetaServiceAccount| progress(gsa.status.as_ref(), &value, old.as_deref()),
        |gsa| ready_of(gsa.status.as_ref()),
        |gsa| acted_on(gsa.status.as_ref(), &value, old.as_deref()),
    )
    .await?;
    println!("{}: {done}", target.describe());
    Ok(())
}

fn ready_of(status: Option<&GebetaServiceAccountStatus>) -> Option<Condition> {
    status.and_then(|s| conditions::get(&s.conditions, conditions::READY).cloned())
}

/// Whether the operator has started on this request.
pub fn acted_on(
    status: Option<&GebetaServiceAccountStatus>,
    value: &str,
    old: Option<&str>,
) -> bool {
    status.is_some_and(|s| {
        s.rotation_in_progress.as_deref() == Some(value)
            || s.observed_rotation.as_deref() == Some(value)
            || s.account_id.as_deref() != old
    })
}

/// Done once the operator recorded this rotation (the new account exists and every replaced
/// one is retired).
pub fn progress(
    status: Option<&GebetaServiceAccountStatus>,
    value: &str,
    old: Option<&str>,
) -> Progress {
    let Some(s) = status else {
        return Progress::Waiting("no status yet".into());
    };
    let ready = request::describe_ready(ready_of(status).as_ref());
    let new = s.account_id.as_deref().filter(|id| Some(*id) != old);
    if s.observed_rotation.as_deref() == Some(value) {
        return Progress::Done(match (old, s.account_id.as_deref()) {
            (Some(old), Some(new)) if old != new => format!(
                "rotated: account {} replaced {}, which is retired",
                short_id(new),
                short_id(old)
            ),
            (_, Some(new)) => format!("rotated: account {}", short_id(new)),
            _ => "rotated".into(),
        });
    }
    match new {
        Some(new) if !s.retiring.is_empty() => Progress::Waiting(format!(
            "new account {} created, token stored; retiring {}{}; {ready}",
            short_id(new),
            s.retiring
                .iter()
                .map(|id| short_id(id))
                .collect::<Vec<_>>()
                .join(","),
            s.retire_after
                .as_deref()
                .map(|t| format!(" (grace until {t})"))
                .unwrap_or_default()
        )),
        Some(new) => Progress::Waiting(format!("new account {} created; {ready}", short_id(new))),
        None if s.rotation_in_progress.as_deref() == Some(value) => Progress::Waiting(format!(
            "rotation started, creating the new account; {ready}"
        )),
        None => Progress::Waiting(format!("waiting for the operator to start; {ready}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::view::tests::ready;
    use serde_json::json;

    fn status(v: serde_json::Value) -> GebetaServiceAccountStatus {
        serde_json::from_value(v).unwrap()
    }

    const OLD: &str = "aaaaaaaa-1111";
    const NEW: &str = "bbbbbbbb-2222";

    #[test]
    fn a_rotation_goes_through_its_steps() {
        let v = "2026-11-28T05:00:00.1Z";
        let untouched = status(json!({"accountId": OLD, "conditions": ready(true, "Ready")}));
        assert_eq!(
            progress(Some(&untouched), v, Some(OLD)),
            Progress::Waiting(
                "waiting for the operator to start; Ready=True Ready: Ready message".into()
            )
        );
        assert!(!acted_on(Some(&untouched), v, Some(OLD)));

        let started = status(json!({"accountId": OLD, "rotationInProgress": v, "retiring": [OLD]}));
        assert!(
            matches!(progress(Some(&started), v, Some(OLD)), Progress::Waiting(l) if l.starts_with("rotation started"))
        );
        assert!(acted_on(Some(&started), v, Some(OLD)));

        let created = status(
            json!({"accountId": NEW, "rotationInProgress": v, "retiring": [OLD],
                                    "retireAfter": "2026-11-28T05:10:00Z", "conditions": ready(true, "Rotating")}),
        );
        assert!(matches!(progress(Some(&created), v, Some(OLD)),
            Progress::Waiting(l) if l.starts_with("new account bbbbbbbb created, token stored; retiring aaaaaaaa (grace until 2026-11-28T05:10:00Z); Ready=True Rotating")));

        let done = status(
            json!({"accountId": NEW, "observedRotation": v, "conditions": ready(true, "Ready")}),
        );
        assert_eq!(
            progress(Some(&done), v, Some(OLD)),
            Progress::Done("rotated: account bbbbbbbb replaced aaaaaaaa, which is retired".into())
        );
        let other = status(json!({"accountId": NEW, "observedRotation": "an earlier one"}));
        assert!(matches!(
            progress(Some(&other), v, Some(OLD)),
            Progress::Waiting(_)
        ));
    }
}
