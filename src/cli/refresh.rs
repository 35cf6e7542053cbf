//! `kubectl gebeta refresh TOKEN`: ask for a new access token now and wait until the operator
//! has written it (`status.observedRefreshRequest` equals the request and Ready is True).

use std::time::Duration;

use jiff::Timestamp;

use super::{
    CliError, Kube,
    request::{self, Progress, Target},
    time,
    view::Kind,
};
use crate::{
    controllers::{access_token::REFRESH_ANNOTATION, conditions},
    crd::{GebetaAccessToken, GebetaAccessTokenStatus},
    runtime::cli::parse_duration,
};

/// `refresh` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct RefreshArgs {
    /// The GebetaAccessToken to refresh.
    #[arg(value_name = "TOKEN", value_parser = super::parse_object_name)]
    pub name: String,
    /// How long to wait for the operator (e.g. `60s`, `2m`).
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Duration,
}

pub async fn run(kube: &Kube, args: &RefreshArgs) -> Result<(), CliError> {
    let api = kube.api::<GebetaAccessToken>(Some(&kube.namespace));
    let target = Target {
        kind: Kind::AccessToken,
        namespace: &kube.namespace,
        name: &args.name,
    };
    let gat = request::get(&api, &target).await?;
    if gat.spec.suspended {
        return Err(CliError::Failed(format!(
            "{} is suspended (spec.suspended: true): the operator does not refresh it",
            target.describe()
        )));
    }
    let value = request::fresh_value();
    request::annotate(&api, &target, REFRESH_ANNOTATION, &value).await?;
    eprintln!(
        "{}: {REFRESH_ANNOTATION}={value} set; waiting for the operator (up to {})",
        target.describe(),
        time::flag_duration(args.timeout)
    );
    let done = request::follow(
        &api,
        &target,
        args.timeout,
        |gat: &GebetaAccessToken| progress(gat.status.as_ref(), &value, Timestamp::now()),
        |gat| ready_of(gat.status.as_ref()),
        |_| false,
    )
    .await?;
    println!("{}: {done}", target.describe());
    Ok(())
}

fn ready_of(status: Option<&GebetaAccessTokenStatus>) -> Option<crate::crd::Condition> {
    status.and_then(|s| conditions::get(&s.conditions, conditions::READY).cloned())
}

/// Done once the operator recorded this request and the object is Ready.
pub fn progress(status: Option<&GebetaAccessTokenStatus>, value: &str, now: Timestamp) -> Progress {
    let ready = ready_of(status);
    let observed = status.and_then(|s| s.observed_refresh_request.as_deref()) == Some(value);
    let is_ready = ready.as_ref().is_some_and(|c| c.status == "True");
    match status {
        Some(s) if observed && is_ready => {
            let expires_at = time::parse(s.expires_at.as_deref());
            Progress::Done(format!(
                "refreshed; the new token expires {}{}",
                time::expiry(expires_at, now),
                s.expires_at
                    .as_deref()
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default()
            ))
        }
        _ if observed => Progress::Waiting(format!(
            "new token issued; {}",
            request::describe_ready(ready.as_ref())
        )),
        _ => Progress::Waiting(format!(
            "waiting for a new token; {}",
            request::describe_ready(ready.as_ref())
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::view::tests::{at, ready};
    use serde_json::json;

    fn status(v: serde_json::Value) -> GebetaAccessTokenStatus {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn done_only_when_this_request_was_observed_and_ready() {
        let now = at("2026-11-28T05:00:00Z");
        let value = "2026-11-28T04:59:59.5Z";
        let done = status(
            json!({"observedRefreshRequest": value, "expiresAt": "2026-11-28T06:00:00Z",
                                 "conditions": ready(true, "Ready")}),
        );
        assert_eq!(
            progress(Some(&done), value, now),
            Progress::Done("refreshed; the new token expires in 1h (2026-11-28T06:00:00Z)".into())
        );
        let older = status(
            json!({"observedRefreshRequest": "earlier", "conditions": ready(true, "Ready")}),
        );
        assert!(
            matches!(progress(Some(&older), value, now), Progress::Waiting(l) if l.starts_with("waiting for a new token; Ready=True Ready"))
        );
        let failing = status(
            json!({"observedRefreshRequest": value, "conditions": ready(false, "SecretWriteFailed")}),
        );
        assert!(
            matches!(progress(Some(&failing), value, now), Progress::Waiting(l) if l.contains("SecretWriteFailed"))
        );
        assert!(matches!(progress(None, value, now), Progress::Waiting(_)));
    }
}
