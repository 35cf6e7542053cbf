//! What one reconcile reports, as a pure function of what it fetched, what it did and the
//! clock: the status to write, the events to publish (on transitions only), and when to look
//! at the object again. No I/O here; the reconcile applies the [`Report`].

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::{
    BLOCKED_RECHECK, MAX_REQUEUE, RESTART_OPT_IN_ANNOTATION, RESTART_RETRY,
    plan::{self, Decision, Health, Problem, reason},
    schedule::{self, TokenTimes},
};
use crate::{
    controllers::{
        EventNote,
        conditions::{self, format_time},
    },
    crd::GebetaAccessTokenStatus,
};

/// The result of this reconcile's Gebeta exchange, if one was made (or an earlier answer
/// was written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exchanged {
    /// A new token is in the target Secret.
    Issued(TokenTimes),
    /// The call failed; the next attempt is not before `retry_at`.
    Failed {
        problem: Problem,
        retry_at: Option<Timestamp>,
    },
}

/// Everything the report is computed from.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    pub now: Timestamp,
    /// Object name, generation and status as fetched.
    pub name: &'a str,
    pub generation: Option<i64>,
    pub prev: &'a GebetaAccessTokenStatus,
    pub secret_name: &'a str,
    pub suspended: bool,
    pub refresh_before: Option<Duration>,
    pub seed: u64,
    /// The spec or a foreign Secret blocks the object (nothing was done).
    pub hard_blocker: Option<Problem>,
    /// The input tokens cannot be used.
    pub input_problem: Option<Problem>,
    /// What was decided before acting (`None`: nothing was decided, e.g. suspended).
    pub decision: Option<Decision>,
    pub exchanged: Option<Exchanged>,
    /// The token in the target Secret after acting: whether there is one, and its times.
    pub token_present: bool,
    pub times: Option<TokenTimes>,
    /// The target Secret was ours before this reconcile.
    pub had_token_secret: bool,
    /// The `gebeta.app/refresh` value, and whether it is a request not acted on yet.
    pub request: Option<&'a str>,
    pub manual_request: bool,
    /// The live Secret's type was kept over the template's, not reported yet: `(live, wanted)`.
    pub type_kept: Option<(String, String)>,
    /// Rollout-restart targets skipped: `(kind/name, reason)`.
    pub restart_skipped: Vec<(String, &'static str)>,
    /// Restarts still to be made: retried after this (see [`restart_retry`]).
    pub restart_retry: Option<Duration>,
    /// Upstream accounts whose tokens opened the current session.
    pub source_accounts: Vec<String>,
}

/// What the reconcile writes and publishes.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub status: GebetaAccessTokenStatus,
    pub events: Vec<EventNote>,
    /// When to reconcile again (at the latest).
    pub wake_at: Timestamp,
}

/// Ready reasons that are not worth an event of their own.
const QUIET: [&str; 3] = [reason::READY, reason::SUSPENDED, reason::PENDING];

pub fn report(o: &Observed<'_>) -> Report {
    let issued = matches!(o.exchanged, Some(Exchanged::Issued(_)));
    // A failed call is remembered until a call succeeds; other problems are recomputed.
    let failure = match &o.exchanged {
        Some(Exchanged::Issued(_)) => None,
        Some(Exchanged::Failed { problem, .. }) => Some(problem.clone()),
        None => o.prev.last_failure_reason.as_deref().and_then(|r| {
            let reason = reason::CALL_FAILURES.into_iter().find(|c| *c == r)?;
            Some(Problem::new(
                reason,
                o.prev.last_failure_message.clone().unwrap_or_default(),
            ))
        }),
    };
    let blocker = o.hard_blocker.clone().or(o.input_problem.clone());
    let next_refresh = next_refresh(o, blocker.as_ref());
    let (ready, ready_reason, message) = plan::ready(&Health {
        now: o.now,
        secret_name: o.secret_name,
        token_present: o.token_present,
        token: o.times,
        suspended: o.suspended,
        blocker: blocker.as_ref(),
        failure: failure.as_ref(),
        next_refresh,
    });

    let mut status = o.prev.clone();
    status.expires_at = o.times.map(|t| format_time(t.expires_at));
    status.issued_at = o.times.map(|t| format_time(t.issued_at));
    if issued {
        status.last_refresh_time = Some(format_time(o.now));
        if o.manual_request {
            status.observed_refresh_request = o.request.map(str::to_string);
        }
    }
    status.next_refresh_time = next_refresh.map(format_time);
    status.source_account_ids = o.source_accounts.clone();
    let last_failure = failure.as_ref().or(blocker.as_ref());
    status.last_failure_reason = last_failure.map(|p| p.reason.to_string());
    status.last_failure_message = last_failure.map(|p| p.message.clone());
    status.observed_generation = o.generation;
    conditions::set(
        &mut status.conditions,
        conditions::READY,
        ready,
        ready_reason,
        message.clone(),
        o.generation,
        &format_time(o.now),
    );

    let events = events(o, ready_reason, &message, failure.as_ref());
    Report {
        status,
        events,
        wake_at: wake_at(o, next_refresh, blocker.is_some()),
    }
}

/// The planned next Gebeta call, if one is planned at all.
fn next_refresh(o: &Observed<'_>, blocker: Option<&Problem>) -> Option<Timestamp> {
    let stuck = blocker.is_some_and(|b| o.times.is_none() || is_hard(b));
    if o.suspended || stuck {
        return None;
    }
    match (&o.exchanged, o.decision) {
        (Some(Exchanged::Issued(t)), _) => Some(schedule::refresh_at(t, o.refresh_before, o.seed)),
        (Some(Exchanged::Failed { retry_at, .. }), _) => *retry_at,
        (None, Some(Decision::Wait { refresh_at })) => Some(refresh_at),
        (None, Some(Decision::BackOff { until })) => Some(until),
        _ => None,
    }
}

/// Problems that no call can get past (the spec or a foreign Secret).
fn is_hard(p: &Problem) -> bool {
    p.reason == reason::SECRET_CONFLICT || p.reason == reason::INVALID_SPEC
}

fn events(
    o: &Observed<'_>,
    ready_reason: &'static str,
    message: &str,
    failure: Option<&Problem>,
) -> Vec<EventNote> {
    let mut events = Vec::new();
    let prev_reason =
        conditions::get(&o.prev.conditions, conditions::READY).map(|c| c.reason.as_str());
    if prev_reason != Some(ready_reason) && !QUIET.contains(&ready_reason) {
        events.push(EventNote::warning(ready_reason, "Reconcile", message));
    } else if let Some(f) =
        failure.filter(|f| o.prev.last_failure_reason.as_deref() != Some(f.reason))
    {
        // A new failure that did not change the Ready reason (e.g. behind a blocker).
        events.push(EventNote::warning(f.reason, "Refresh", &f.message));
    }
    let issued = matches!(o.exchanged, Some(Exchanged::Issued(_)));
    if issued && !o.had_token_secret {
        let note = format!("wrote the first access token to Secret {}", o.secret_name);
        events.push(EventNote::normal(reason::ISSUED, "Refresh", &note));
    } else if ready_reason == reason::READY && prev_reason.is_some_and(|r| !QUIET.contains(&r)) {
        events.push(EventNote::normal(reason::RECOVERED, "Refresh", message));
    }
    if let Some((live, wanted)) = &o.type_kept {
        let note = format!(
            "secretTemplate.type is {wanted} but Secret {} is of type {live}, and Secret types \
             cannot change: the operator keeps writing it as {live}; delete the Secret to have \
             it recreated as {wanted}",
            o.secret_name
        );
        events.push(EventNote::warning(
            reason::SECRET_TYPE_IMMUTABLE,
            "Refresh",
            &note,
        ));
    }
    for (target, why) in &o.restart_skipped {
        let note = if *why == reason::ROLLOUT_TARGET_NOT_FOUND {
            format!("rollout-restart target {target} not found")
        } else if *why == reason::ROLLOUT_RESTART_FAILED {
            format!("rollout restart of {target} failed; retried with backoff")
        } else {
            format!(
                "rollout-restart target {target} was not restarted: it does not carry the \
                 annotation {RESTART_OPT_IN_ANNOTATION}: {}",
                o.name
            )
        };
        events.push(EventNote::warning(why, "Restart", &note));
    }
    events
}

/// How long a pending rollout restart waits after `failures` failed attempts in a row: from
/// [`RESTART_RETRY`] doubling to about five minutes (a target that always refuses, e.g. one
/// whose annotations are at their size limit, is not patched every few seconds for ever).
pub fn restart_retry(failures: u32) -> Duration {
    RESTART_RETRY * 2u32.pow(failures.saturating_sub(1).min(6))
}

/// The earliest of: the planned refresh, the token's expiry, a recheck of a blocker or of a
/// pending restart, and the periodic look.
fn wake_at(o: &Observed<'_>, next_refresh: Option<Timestamp>, blocked: bool) -> Timestamp {
    let after = |d: Duration| {
        o.now
            .checked_add(SignedDuration::try_from(d).unwrap_or_default())
            .unwrap_or(o.now)
    };
    let mut wake = vec![after(MAX_REQUEUE)];
    wake.extend(next_refresh);
    wake.extend(
        o.times
            .filter(|t| t.is_valid_at(o.now))
            .map(|t| t.expires_at),
    );
    if blocked {
        wake.push(after(BLOCKED_RECHECK));
    }
    wake.extend(o.restart_retry.map(after));
    wake.into_iter().min().unwrap_or(o.now)
}

#[cfg(test)]
mod tests {
    use kube::runtime::events::EventType;

    use super::*;
    use crate::crd::Condition;

    const T0: i64 = 1_800_000_000;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn token(issued: i64) -> TokenTimes {
        TokenTimes {
            issued_at: at(issued),
            expires_at: at(issued + 3000),
        }
    }

    fn ready_status(reason: &str, failure: Option<&str>) -> GebetaAccessTokenStatus {
        GebetaAccessTokenStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: reason.into(),
                message: "m".into(),
                last_transition_time: format_time(at(T0)),
                observed_generation: Some(1),
            }],
            last_failure_reason: failure.map(str::to_string),
            last_failure_message: failure.map(|_| "503 from the API".into()),
            ..Default::default()
        }
    }

    fn observed<'a>(prev: &'a GebetaAccessTokenStatus, now: i64) -> Observed<'a> {
        Observed {
            now: at(now),
            name: "maps",
            generation: Some(1),
            prev,
            secret_name: "maps-token",
            suspended: false,
            refresh_before: None,
            seed: 0,
            hard_blocker: None,
            input_problem: None,
            decision: None,
            exchanged: None,
            token_present: true,
            times: Some(token(T0)),
            had_token_secret: true,
            request: None,
            manual_request: false,
            type_kept: None,
            restart_skipped: Vec::new(),
            restart_retry: None,
            source_accounts: Vec::new(),
        }
    }

    fn reasons(r: &Report) -> Vec<&str> {
        r.events.iter().map(|e| e.reason).collect()
    }

    fn ready_reason(r: &Report) -> &str {
        &conditions::get(&r.status.conditions, conditions::READY)
            .unwrap()
            .reason
    }

    #[test]
    fn a_first_token_is_reported_once_and_scheduled() {
        let prev = GebetaAccessTokenStatus::default();
        let o = Observed {
            decision: Some(Decision::Call(plan::Call::Auth)),
            exchanged: Some(Exchanged::Issued(token(T0))),
            had_token_secret: false,
            ..observed(&prev, T0)
        };
        let r = report(&o);
        assert_eq!(ready_reason(&r), reason::READY);
        assert_eq!(reasons(&r), ["Issued"]);
        let next = schedule::refresh_at(&token(T0), None, 0);
        assert_eq!(
            r.status.next_refresh_time.as_deref(),
            Some(&*format_time(next))
        );
        assert_eq!(
            r.status.last_refresh_time.as_deref(),
            Some(&*format_time(at(T0)))
        );
        assert_eq!(r.wake_at, next);
        // The same facts again (nothing issued this time): same status, no event.
        let o = Observed {
            prev: &r.status,
            decision: Some(Decision::Wait { refresh_at: next }),
            exchanged: None,
            had_token_secret: true,
            ..observed(&prev, T0 + 5)
        };
        let again = report(&o);
        assert_eq!(again.status, r.status);
        assert!(again.events.is_empty());
    }

    #[test]
    fn a_failed_refresh_keeps_ready_while_the_token_is_valid_and_is_remembered() {
        let prev = ready_status(reason::READY, None);
        let problem = Problem::new(reason::UPSTREAM_UNAVAILABLE, "503 from the API");
        let o = Observed {
            decision: Some(Decision::Call(plan::Call::Refresh)),
            exchanged: Some(Exchanged::Failed {
                problem,
                retry_at: Some(at(T0 + 2010)),
            }),
            ..observed(&prev, T0 + 2000)
        };
        let r = report(&o);
        assert!(conditions::is_true(&r.status.conditions, conditions::READY));
        assert_eq!(ready_reason(&r), reason::UPSTREAM_UNAVAILABLE);
        assert_eq!(reasons(&r), [reason::UPSTREAM_UNAVAILABLE]);
        assert_eq!(r.wake_at, at(T0 + 2010));
        // Waiting out the backoff: the failure stays, no second event.
        let o = Observed {
            prev: &r.status,
            decision: Some(Decision::BackOff {
                until: at(T0 + 2010),
            }),
            ..observed(&prev, T0 + 2005)
        };
        let waiting = report(&o);
        assert_eq!(ready_reason(&waiting), reason::UPSTREAM_UNAVAILABLE);
        assert!(waiting.events.is_empty());
        // Past expiry without a new token: not Ready, an event says so.
        let o = Observed {
            prev: &waiting.status,
            decision: Some(Decision::BackOff {
                until: at(T0 + 3100),
            }),
            ..observed(&prev, T0 + 3001)
        };
        let expired = report(&o);
        assert!(!conditions::is_true(
            &expired.status.conditions,
            conditions::READY
        ));
        assert_eq!(reasons(&expired), [reason::TOKEN_EXPIRED]);
        // The next success clears the failure and says it recovered.
        let o = Observed {
            prev: &expired.status,
            exchanged: Some(Exchanged::Issued(token(T0 + 3050))),
            times: Some(token(T0 + 3050)),
            ..observed(&prev, T0 + 3050)
        };
        let recovered = report(&o);
        assert_eq!(recovered.status.last_failure_reason, None);
        assert_eq!(reasons(&recovered), ["Recovered"]);
    }

    #[test]
    fn a_hard_blocker_plans_no_call_and_rechecks() {
        let prev = ready_status(reason::READY, None);
        let o = Observed {
            hard_blocker: Some(Problem::new(reason::SECRET_CONFLICT, "not ours")),
            ..observed(&prev, T0 + 10)
        };
        let r = report(&o);
        assert_eq!(ready_reason(&r), reason::SECRET_CONFLICT);
        assert_eq!(r.status.next_refresh_time, None);
        assert_eq!(reasons(&r), [reason::SECRET_CONFLICT]);
        let recheck = at(T0 + 10)
            .checked_add(SignedDuration::try_from(BLOCKED_RECHECK).unwrap())
            .unwrap();
        assert_eq!(r.wake_at, recheck.min(token(T0).expires_at));
    }

    #[test]
    fn a_manual_request_is_observed_only_when_a_token_was_issued() {
        let prev = ready_status(reason::READY, None);
        let asked = Observed {
            request: Some("now"),
            manual_request: true,
            decision: Some(Decision::BackOff { until: at(T0 + 20) }),
            ..observed(&prev, T0 + 10)
        };
        assert_eq!(report(&asked).status.observed_refresh_request, None);
        let done = Observed {
            exchanged: Some(Exchanged::Issued(token(T0 + 10))),
            times: Some(token(T0 + 10)),
            ..asked
        };
        assert_eq!(
            report(&done).status.observed_refresh_request.as_deref(),
            Some("now")
        );
    }

    #[test]
    fn skipped_restarts_and_kept_types_are_events_and_pending_restarts_retry_soon() {
        let prev = ready_status(reason::READY, None);
        let o = Observed {
            decision: Some(Decision::Wait {
                refresh_at: at(T0 + 2000),
            }),
            type_kept: Some(("Opaque".into(), "kubernetes.io/basic-auth".into())),
            restart_skipped: vec![
                ("Deployment/web".into(), reason::ROLLOUT_TARGET_NOT_OPTED_IN),
                ("Deployment/gone".into(), reason::ROLLOUT_TARGET_NOT_FOUND),
            ],
            restart_retry: Some(RESTART_RETRY),
            ..observed(&prev, T0 + 10)
        };
        let r = report(&o);
        assert_eq!(
            reasons(&r),
            [
                reason::SECRET_TYPE_IMMUTABLE,
                reason::ROLLOUT_TARGET_NOT_OPTED_IN,
                reason::ROLLOUT_TARGET_NOT_FOUND
            ]
        );
        assert!(
            r.events[1]
                .note
                .contains("gebeta.app/restart-on-new-token: maps")
        );
        assert!(r.events.iter().all(|e| e.type_ == EventType::Warning));
        let retry = at(T0 + 10)
            .checked_add(SignedDuration::try_from(RESTART_RETRY).unwrap())
            .unwrap();
        assert_eq!(r.wake_at, retry);
    }

    #[test]
    fn a_failing_restart_backs_off_to_minutes() {
        let waits: Vec<u64> = (0..10).map(|n| restart_retry(n).as_secs()).collect();
        assert_eq!(waits, [5, 5, 10, 20, 40, 80, 160, 320, 320, 320]);
        let prev = ready_status(reason::READY, None);
        let o = Observed {
            decision: Some(Decision::Wait {
                refresh_at: at(T0 + 2000),
            }),
            restart_skipped: vec![(
                "Deployment/web (too large (HTTP 422))".into(),
                reason::ROLLOUT_RESTART_FAILED,
            )],
            restart_retry: Some(restart_retry(4)),
            ..observed(&prev, T0 + 10)
        };
        let r = report(&o);
        assert_eq!(r.wake_at, at(T0 + 50));
        assert_eq!(reasons(&r), [reason::ROLLOUT_RESTART_FAILED]);
        assert!(r.events[0].note.contains("Deployment/web (too large"));
    }

    #[test]
    fn suspended_objects_plan_nothing_and_stay_quiet() {
        let prev = ready_status(reason::READY, None);
        let o = Observed {
            suspended: true,
            ..observed(&prev, T0 + 10)
        };
        let r = report(&o);
        assert_eq!(ready_reason(&r), reason::SUSPENDED);
        assert_eq!(r.status.next_refresh_time, None);
        assert!(r.events.is_empty());
        // The token's expiry still wakes it (to report the expiry).
        assert_eq!(r.wake_at, token(T0).expires_at);
    }
}
