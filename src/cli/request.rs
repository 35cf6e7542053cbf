//! What `refresh` and `rotate` share: set a request annotation to a fresh value with a merge
//! patch, then follow the object until the operator reports it done, or a deadline passes.

use std::time::{Duration, Instant};

use kube::{
    Api, Resource,
    api::{Patch, PatchParams},
};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{CliError, FIELD_MANAGER, advice, time, view::Kind};
use crate::crd::Condition;

/// How often the object is read while waiting.
const POLL: Duration = Duration::from_millis(500);

/// Where a request stands, as judged from the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Done; the line says what was done.
    Done(String),
    /// Not yet; the line describes what is happening (printed when it changes).
    Waiting(String),
}

/// The object a request is about.
pub struct Target<'a> {
    pub kind: Kind,
    pub namespace: &'a str,
    pub name: &'a str,
}

impl Target<'_> {
    pub fn describe(&self) -> String {
        format!("{} {}/{}", self.kind.short(), self.namespace, self.name)
    }

    fn not_found(&self) -> CliError {
        let kind = match self.kind {
            Kind::AccessToken => "GebetaAccessToken",
            Kind::ServiceAccount => "GebetaServiceAccount",
        };
        CliError::Failed(format!(
            "{kind} {} not found in namespace {}",
            self.name, self.namespace
        ))
    }
}

/// A fresh request value: the current time, RFC 3339 with sub-second precision (two requests
/// in one second are still two requests).
pub fn fresh_value() -> String {
    jiff::Timestamp::now().to_string()
}

/// Reads the object (a clear error when it does not exist).
pub async fn get<K>(api: &Api<K>, target: &Target<'_>) -> Result<K, CliError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(target.name).await {
        Ok(Some(obj)) => Ok(obj),
        Ok(None) => Err(target.not_found()),
        Err(e) => Err(CliError::kube(
            format!("cannot read {}", target.describe()),
            e,
        )),
    }
}

/// Sets `annotation` to `value` on the object (a JSON merge patch: nothing else changes).
pub async fn annotate<K>(
    api: &Api<K>,
    target: &Target<'_>,
    annotation: &str,
    value: &str,
) -> Result<(), CliError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({"metadata": {"annotations": {annotation: value}}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    match api.patch(target.name, &params, &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Err(target.not_found()),
        Err(e) => Err(CliError::kube(
            format!("cannot annotate {}", target.describe()),
            e,
        )),
    }
}

/// Reads the object every [`POLL`] until `judge` says it is done (`Ok` with its line) or
/// `timeout` passes (`Err` with [`timeout_message`]). Progress lines go to stderr.
pub async fn follow<K>(
    api: &Api<K>,
    target: &Target<'_>,
    timeout: Duration,
    judge: impl Fn(&K) -> Progress,
    ready_of: impl Fn(&K) -> Option<Condition>,
    acted_on: impl Fn(&K) -> bool,
) -> Result<String, CliError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let deadline = Instant::now() + timeout;
    let mut last_line = String::new();
    let mut last: Option<K> = None;
    loop {
        let error = match api.get_opt(target.name).await {
            Ok(Some(obj)) => {
                match judge(&obj) {
                    Progress::Done(line) => return Ok(line),
                    Progress::Waiting(line) if line != last_line => {
                        eprintln!("  {line}");
                        last_line = line;
                    }
                    Progress::Waiting(_) => {}
                }
                last = Some(obj);
                None
            }
            Ok(None) => {
                return Err(CliError::Failed(format!(
                    "{} was deleted while waiting",
                    target.describe()
                )));
            }
            Err(e) => Some(e.to_string()),
        };
        if Instant::now() >= deadline {
            let message = match (&last, error) {
                (_, Some(error)) => format!(
                    "could not follow {} for {}: {error}",
                    target.describe(),
                    time::flag_duration(timeout)
                ),
                (Some(obj), None) => timeout_message(
                    target,
                    ready_of(obj).as_ref(),
                    acted_on(obj),
                    &last_line,
                    timeout,
                ),
                (None, None) => timeout_message(target, None, false, "", timeout),
            };
            return Err(CliError::Failed(message));
        }
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// Why a request did not complete in time: the object's Ready reason and message (and what to
/// do) when it is not Ready; else, if the operator never picked the request up, a question
/// about the operator; else the last thing seen happening.
pub fn timeout_message(
    target: &Target<'_>,
    ready: Option<&Condition>,
    acted_on: bool,
    last_progress: &str,
    timeout: Duration,
) -> String {
    let within = time::flag_duration(timeout);
    match ready.filter(|c| c.status == "False") {
        Some(c) => {
            let todo = advice::for_not_ready(
                target.kind,
                Some(c.reason.as_str()),
                target.namespace,
                target.name,
            );
            format!(
                "{} is not Ready after {within}: {}: {}\n  -> {todo}",
                target.describe(),
                c.reason,
                c.message
            )
        }
        None if !acted_on => {
            format!("the operator did not act within {within}: is it running?")
        }
        None => format!(
            "the operator did not finish within {within} (last: {last_progress}); it goes on: \
             follow it with kubectl gebeta status -n {}",
            target.namespace
        ),
    }
}

/// A one-line description of a Ready condition, for progress lines.
pub fn describe_ready(ready: Option<&Condition>) -> String {
    match ready {
        None => "no Ready condition yet".into(),
        Some(c) if c.message.is_empty() => format!("Ready={} {}", c.status, c.reason),
        Some(c) => format!("Ready={} {}: {}", c.status, c.reason, c.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            ..Condition::default()
        }
    }

    const TOKEN: Target<'static> = Target {
        kind: Kind::AccessToken,
        namespace: "team",
        name: "tok",
    };

    #[test]
    fn a_request_never_picked_up_asks_whether_the_operator_runs() {
        let ready = cond("True", "Ready", "ok");
        assert_eq!(
            timeout_message(&TOKEN, Some(&ready), false, "", Duration::from_secs(60)),
            "the operator did not act within 60s: is it running?"
        );
        assert_eq!(
            timeout_message(&TOKEN, None, false, "", Duration::from_secs(2)),
            "the operator did not act within 2s: is it running?"
        );
    }

    #[test]
    fn a_failing_object_reports_its_reason_message_and_what_to_do() {
        let ready = cond("False", "SecretNotFound", "Secret \"in\" not found");
        let message = timeout_message(&TOKEN, Some(&ready), false, "", Duration::from_secs(60));
        assert_eq!(
            message,
            "gat team/tok is not Ready after 60s: SecretNotFound: Secret \"in\" not found\n  -> create the input Secret that spec.clientToken or spec.serverToken names"
        );
    }

    #[test]
    fn a_request_in_progress_says_what_it_waits_for() {
        let ready = cond("True", "Rotating", "waiting for gat x");
        let target = Target {
            kind: Kind::ServiceAccount,
            ..TOKEN
        };
        let message = timeout_message(
            &target,
            Some(&ready),
            true,
            "Ready=True Rotating: waiting for gat x",
            Duration::from_secs(120),
        );
        assert!(
            message
                .starts_with("the operator did not finish within 120s (last: Ready=True Rotating"),
            "{message}"
        );
    }

    #[test]
    fn fresh_values_are_rfc3339_and_differ() {
        let a = fresh_value();
        assert!(a.parse::<jiff::Timestamp>().is_ok(), "{a}");
        assert_eq!(
            describe_ready(Some(&cond("False", "Pending", ""))),
            "Ready=False Pending"
        );
        assert_eq!(describe_ready(None), "no Ready condition yet");
    }
}
