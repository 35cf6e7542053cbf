//! The controller's decisions as pure functions: whether to call the Gebeta API now (and
//! which endpoint), and what the `Ready` condition says about the result.

use std::time::Duration;

use jiff::Timestamp;

use super::schedule::{self, TokenTimes};
use crate::controllers::conditions::format_time;

pub use crate::controllers::reason;

/// A refresh is due this much before its planned time (timer and clock granularity).
const EARLY: Duration = Duration::from_millis(50);

/// The default of `--refresh-request-interval`: a call that only a manual refresh request or
/// changed inputs ask for (not the schedule) comes at least this long after the object's last
/// call. Both are in the tenant's hands: a loop of new annotation values would otherwise make
/// a Gebeta call each, each taking a permit other tenants' refreshes wait for.
pub const DEFAULT_NUDGE_INTERVAL: Duration = Duration::from_secs(10);

/// The Gebeta call to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// `/external/refresh` with the stored refresh token.
    Refresh,
    /// `/external/auth` with the client and server tokens.
    Auth,
}

/// What the controller knows when it decides.
#[derive(Clone, Debug)]
pub struct Situation<'a> {
    pub now: Timestamp,
    /// Effective times of the token in the target Secret; `None` when there is none, or it
    /// cannot be read (then it is replaced at once).
    pub token: Option<TokenTimes>,
    /// A refresh token is stored.
    pub has_session: bool,
    /// Fingerprint of the current client and server tokens; `None` when they are unusable.
    pub fingerprint: Option<&'a str>,
    /// Fingerprint the stored session was opened with.
    pub session_fingerprint: Option<&'a str>,
    pub refresh_before: Option<Duration>,
    pub seed: u64,
    /// The `gebeta.app/refresh` annotation holds a value not acted on yet.
    pub manual_request: bool,
    /// A failed attempt asked to wait until then (for the same inputs and request).
    pub retry_at: Option<Timestamp>,
    /// The API asked to wait until then (`Retry-After`): whatever changed since, no call
    /// before.
    pub server_not_before: Option<Timestamp>,
    /// When this object last called the API...
    pub last_call: Option<Timestamp>,
    /// ...and how long after it a call the schedule does not ask for waits (see
    /// [`DEFAULT_NUDGE_INTERVAL`]).
    pub nudge_interval: Duration,
    /// The last refresh may have reached the server without its answer reaching us (a
    /// timeout): if refresh tokens rotate, the stored one is already dead, so the next call
    /// authenticates instead of spending a call on a refusal.
    pub refresh_outcome_unknown: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do before the planned refresh.
    Wait {
        refresh_at: Timestamp,
    },
    /// A call is due but a failed attempt asked to wait.
    BackOff {
        until: Timestamp,
    },
    Call(Call),
    /// A call is due but impossible: no session and unusable inputs.
    Blocked,
}

impl Situation<'_> {
    /// The inputs changed since the session was opened (or the session's are unknown).
    pub fn inputs_changed(&self) -> bool {
        match (self.fingerprint, self.session_fingerprint) {
            (Some(now), Some(then)) => now != then,
            (Some(_), None) => self.has_session,
            (None, _) => false,
        }
    }

    pub fn refresh_at(&self) -> Option<Timestamp> {
        self.token
            .map(|t| schedule::refresh_at(&t, self.refresh_before, self.seed))
    }

    pub fn decide(&self) -> Decision {
        let refresh_at = self.refresh_at();
        let early = jiff::SignedDuration::try_from(EARLY).unwrap_or_default();
        let scheduled = match refresh_at {
            None => true,
            Some(at) => self.now.checked_add(early).unwrap_or(self.now) >= at,
        };
        let due = scheduled || self.manual_request || self.inputs_changed();
        if !due && let Some(at) = refresh_at {
            return Decision::Wait { refresh_at: at };
        }
        let nudge_floor = (!scheduled)
            .then(|| {
                let interval = jiff::SignedDuration::try_from(self.nudge_interval).ok()?;
                self.last_call?.checked_add(interval).ok()
            })
            .flatten();
        let hold = [self.retry_at, self.server_not_before, nudge_floor]
            .into_iter()
            .flatten()
            .filter(|u| *u > self.now)
            .max();
        if let Some(until) = hold {
            return Decision::BackOff { until };
        }
        let can_auth = self.fingerprint.is_some();
        if self.inputs_changed() || (can_auth && self.refresh_outcome_unknown) {
            Decision::Call(Call::Auth)
        } else if self.has_session {
            Decision::Call(Call::Refresh)
        } else if can_auth {
            Decision::Call(Call::Auth)
        } else {
            Decision::Blocked
        }
    }
}

/// A problem with a reason and a message for humans (never a secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

impl Problem {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Problem {
        Problem {
            reason,
            message: message.into(),
        }
    }
}

/// What the `Ready` condition is computed from.
#[derive(Clone, Debug)]
pub struct Health<'a> {
    pub now: Timestamp,
    pub secret_name: &'a str,
    /// A token is in the target Secret.
    pub token_present: bool,
    /// Its effective times, when known.
    pub token: Option<TokenTimes>,
    pub suspended: bool,
    /// The spec, the inputs or a foreign Secret block the object.
    pub blocker: Option<&'a Problem>,
    /// The last Gebeta call failed (kept until a call succeeds).
    pub failure: Option<&'a Problem>,
    pub next_refresh: Option<Timestamp>,
}

/// `(status, reason, message)` of the `Ready` condition.
pub fn ready(h: &Health<'_>) -> (bool, &'static str, String) {
    let valid = h.token.is_some_and(|t| t.is_valid_at(h.now));
    let token_state = match (h.token_present, h.token) {
        (false, _) => format!("Secret {} holds no token yet", h.secret_name),
        (true, Some(t)) if t.is_valid_at(h.now) => {
            format!(
                "the token in Secret {} is valid until {}",
                h.secret_name,
                format_time(t.expires_at)
            )
        }
        (true, Some(t)) => format!(
            "the token in Secret {} expired at {}",
            h.secret_name,
            format_time(t.expires_at)
        ),
        (true, None) => format!("the token in Secret {} is unreadable", h.secret_name),
    };
    if let Some(b) = h
        .blocker
        .filter(|b| b.reason == reason::SECRET_CONFLICT || b.reason == reason::INVALID_SPEC)
    {
        return (false, b.reason, b.message.clone());
    }
    if h.suspended {
        return (
            valid,
            reason::SUSPENDED,
            format!("refreshing is suspended; {token_state}"),
        );
    }
    if let Some(b) = h.blocker {
        return (false, b.reason, format!("{}; {token_state}", b.message));
    }
    if let Some(f) = h.failure {
        return match (reason::is_transient(f.reason), valid, h.token_present) {
            (true, true, _) => (true, f.reason, format!("{}; {token_state}", f.message)),
            (true, false, true) => (
                false,
                reason::TOKEN_EXPIRED,
                format!("{token_state}; {}", f.message),
            ),
            _ => (false, f.reason, format!("{}; {token_state}", f.message)),
        };
    }
    match (valid, h.next_refresh) {
        (true, Some(next)) => (
            true,
            reason::READY,
            format!("{token_state}; next refresh at {}", format_time(next)),
        ),
        (true, None) => (true, reason::READY, token_state),
        (false, _) if h.token_present => (false, reason::TOKEN_EXPIRED, token_state),
        (false, _) => (false, reason::PENDING, token_state),
    }
}

/// The deadline of the call a reconcile will most likely make, judged from the object's last
/// status alone, before anything is copied out of the caches: its token's planned refresh has
/// come, the token has expired, or a new refresh request is waiting. `None` when the status
/// names no token (a new or blocked object) or nothing is due. A hint for when to queue at the
/// deadline gate, not a decision: [`Situation::decide`] still makes that.
pub fn due_from_status(
    status: Option<&crate::crd::GebetaAccessTokenStatus>,
    request: Option<&str>,
    suspended: bool,
    now: Timestamp,
) -> Option<Timestamp> {
    let status = status.filter(|_| !suspended)?;
    let expires: Timestamp = status.expires_at.as_deref()?.parse().ok()?;
    let requested = request.is_some_and(|r| Some(r) != status.observed_refresh_request.as_deref());
    let planned = status
        .next_refresh_time
        .as_deref()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .is_some_and(|t| t <= now);
    (requested || planned || expires <= now).then_some(expires.max(now))
}

/// True when an object's status names no token (a new object, or one that never got one)
/// and it is not suspended: its first call is due as soon as its inputs read well.
pub fn names_no_token(
    status: Option<&crate::crd::GebetaAccessTokenStatus>,
    suspended: bool,
) -> bool {
    !suspended && status.and_then(|s| s.expires_at.as_deref()).is_none()
}

/// The deadline of an object's work judged from its last status: its token's expiry, or now
/// when the status names no valid token.
pub fn deadline_from_status(
    status: Option<&crate::crd::GebetaAccessTokenStatus>,
    now: Timestamp,
) -> Timestamp {
    status
        .and_then(|s| s.expires_at.as_deref())
        .and_then(|t| t.parse::<Timestamp>().ok())
        .map_or(now, |expires| expires.max(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn token() -> TokenTimes {
        TokenTimes {
            issued_at: at(T0),
            expires_at: at(T0 + 3000),
        }
    }

    fn healthy(now: i64) -> Situation<'static> {
        Situation {
            now: at(now),
            token: Some(token()),
            has_session: true,
            fingerprint: Some("fp"),
            session_fingerprint: Some("fp"),
            refresh_before: None,
            seed: 0,
            manual_request: false,
            retry_at: None,
            server_not_before: None,
            last_call: None,
            nudge_interval: DEFAULT_NUDGE_INTERVAL,
            refresh_outcome_unknown: false,
        }
    }

    #[test]
    fn calls_the_schedule_does_not_ask_for_keep_an_interval_after_the_last_call() {
        let last = Some(at(T0 + 100));
        // A manual request or new inputs right after a call wait out the interval...
        for s in [
            Situation {
                manual_request: true,
                last_call: last,
                ..healthy(T0 + 103)
            },
            Situation {
                fingerprint: Some("new"),
                last_call: last,
                ..healthy(T0 + 103)
            },
        ] {
            assert_eq!(
                s.decide(),
                Decision::BackOff {
                    until: at(T0 + 110)
                }
            );
            assert_eq!(
                Situation {
                    now: at(T0 + 110),
                    ..s.clone()
                }
                .decide(),
                if s.manual_request {
                    Decision::Call(Call::Refresh)
                } else {
                    Decision::Call(Call::Auth)
                }
            );
        }
        // ...a refresh the schedule asks for does not.
        let s = Situation {
            last_call: Some(at(T0 + 1995)),
            ..healthy(T0 + 2000)
        };
        assert_eq!(s.decide(), Decision::Call(Call::Refresh));
    }

    #[test]
    fn the_apis_retry_after_holds_whatever_changed() {
        let held = Decision::BackOff {
            until: at(T0 + 2100),
        };
        for s in [
            healthy(T0 + 2050),
            Situation {
                manual_request: true,
                ..healthy(T0 + 50)
            },
            Situation {
                fingerprint: Some("new"),
                ..healthy(T0 + 50)
            },
        ] {
            let s = Situation {
                server_not_before: Some(at(T0 + 2100)),
                ..s
            };
            assert_eq!(s.decide(), held, "{s:?}");
        }
    }

    #[test]
    fn a_refresh_that_may_have_rotated_the_token_is_followed_by_an_auth() {
        let s = Situation {
            refresh_outcome_unknown: true,
            ..healthy(T0 + 2000)
        };
        assert_eq!(s.decide(), Decision::Call(Call::Auth));
        // Without usable inputs the stored refresh token is the only way left.
        let s = Situation {
            fingerprint: None,
            ..s
        };
        assert_eq!(s.decide(), Decision::Call(Call::Refresh));
        // Not due: nothing, whatever happened before.
        let s = Situation {
            refresh_outcome_unknown: true,
            ..healthy(T0 + 10)
        };
        assert!(matches!(s.decide(), Decision::Wait { .. }));
    }

    #[test]
    fn waits_until_due_then_refreshes() {
        assert_eq!(
            healthy(T0 + 10).decide(),
            Decision::Wait {
                refresh_at: at(T0 + 2000)
            }
        );
        assert_eq!(healthy(T0 + 2000).decide(), Decision::Call(Call::Refresh));
        // A timer firing a hair early still counts.
        let mut s = healthy(T0 + 2000);
        s.now = Timestamp::from_millisecond((T0 + 2000) * 1000 - 20).unwrap();
        assert_eq!(s.decide(), Decision::Call(Call::Refresh));
    }

    #[test]
    fn first_token_needs_auth_and_inputs() {
        let s = Situation {
            token: None,
            has_session: false,
            session_fingerprint: None,
            ..healthy(T0)
        };
        assert_eq!(s.decide(), Decision::Call(Call::Auth));
        let s = Situation {
            fingerprint: None,
            ..s
        };
        assert_eq!(s.decide(), Decision::Blocked);
    }

    #[test]
    fn changed_inputs_reauthenticate_at_once() {
        let s = Situation {
            fingerprint: Some("fp2"),
            ..healthy(T0 + 10)
        };
        assert!(s.inputs_changed());
        assert_eq!(s.decide(), Decision::Call(Call::Auth));
        // A session whose inputs are unknown is reopened once.
        let s = Situation {
            session_fingerprint: None,
            ..healthy(T0 + 10)
        };
        assert_eq!(s.decide(), Decision::Call(Call::Auth));
    }

    #[test]
    fn broken_inputs_keep_an_open_session_alive() {
        let s = Situation {
            fingerprint: None,
            ..healthy(T0 + 10)
        };
        assert!(!s.inputs_changed());
        assert_eq!(
            s.decide(),
            Decision::Wait {
                refresh_at: at(T0 + 2000)
            }
        );
        let s = Situation {
            fingerprint: None,
            ..healthy(T0 + 2500)
        };
        assert_eq!(s.decide(), Decision::Call(Call::Refresh));
    }

    #[test]
    fn manual_requests_and_unreadable_tokens_are_due_now() {
        let s = Situation {
            manual_request: true,
            ..healthy(T0 + 10)
        };
        assert_eq!(s.decide(), Decision::Call(Call::Refresh));
        let s = Situation {
            token: None,
            ..healthy(T0 + 10)
        };
        assert_eq!(s.decide(), Decision::Call(Call::Refresh));
    }

    #[test]
    fn backoff_holds_due_calls_only() {
        let s = Situation {
            retry_at: Some(at(T0 + 2100)),
            ..healthy(T0 + 2050)
        };
        assert_eq!(
            s.decide(),
            Decision::BackOff {
                until: at(T0 + 2100)
            }
        );
        let s = Situation {
            retry_at: Some(at(T0 + 2100)),
            ..healthy(T0 + 2100)
        };
        assert_eq!(s.decide(), Decision::Call(Call::Refresh));
        let s = Situation {
            retry_at: Some(at(T0 + 2100)),
            ..healthy(T0 + 10)
        };
        assert_eq!(
            s.decide(),
            Decision::Wait {
                refresh_at: at(T0 + 2000)
            }
        );
    }

    fn health(now: i64) -> Health<'static> {
        Health {
            now: at(now),
            secret_name: "out",
            token_present: true,
            token: Some(token()),
            suspended: false,
            blocker: None,
            failure: None,
            next_refresh: Some(at(T0 + 2000)),
        }
    }

    #[test]
    fn ready_when_the_token_is_valid() {
        let (ok, r, m) = ready(&health(T0 + 1));
        assert!(ok);
        assert_eq!(r, reason::READY);
        assert_eq!(
            m,
            "the token in Secret out is valid until 2027-01-15T08:50:00Z; \
             next refresh at 2027-01-15T08:33:20Z"
        );
        let (ok, r, _) = ready(&health(T0 + 3000));
        assert_eq!((ok, r), (false, reason::TOKEN_EXPIRED));
        let (ok, r, _) = ready(&Health {
            token_present: false,
            token: None,
            ..health(T0)
        });
        assert_eq!((ok, r), (false, reason::PENDING));
    }

    #[test]
    fn transient_failures_keep_ready_while_valid() {
        let failure = Problem::new(
            reason::UPSTREAM_UNAVAILABLE,
            "refresh: server error (HTTP 503)",
        );
        let h = Health {
            failure: Some(&failure),
            ..health(T0 + 2100)
        };
        let (ok, r, m) = ready(&h);
        assert_eq!((ok, r), (true, reason::UPSTREAM_UNAVAILABLE));
        assert!(m.contains("valid until 2027-01-15T08:50:00Z"), "{m}");
        let (ok, r, m) = ready(&Health {
            now: at(T0 + 3001),
            ..h.clone()
        });
        assert_eq!((ok, r), (false, reason::TOKEN_EXPIRED));
        assert!(m.contains("HTTP 503"), "{m}");
        let (ok, r, _) = ready(&Health {
            token_present: false,
            token: None,
            ..h
        });
        assert_eq!((ok, r), (false, reason::UPSTREAM_UNAVAILABLE));
    }

    #[test]
    fn hard_failures_and_blockers_are_not_ready() {
        let creds = Problem::new(reason::INVALID_CREDENTIALS, "auth: unauthorized (HTTP 401)");
        let (ok, r, _) = ready(&Health {
            failure: Some(&creds),
            ..health(T0 + 1)
        });
        assert_eq!((ok, r), (false, reason::INVALID_CREDENTIALS));
        let missing = Problem::new(
            reason::SECRET_NOT_FOUND,
            "Secret in (client token) not found",
        );
        let (ok, r, m) = ready(&Health {
            blocker: Some(&missing),
            failure: Some(&creds),
            ..health(T0 + 1)
        });
        assert_eq!((ok, r), (false, reason::SECRET_NOT_FOUND));
        assert!(
            m.starts_with("Secret in (client token) not found; the token in Secret out is valid"),
            "{m}"
        );
        let conflict = Problem::new(
            reason::SECRET_CONFLICT,
            "Secret out exists and is not managed by this object",
        );
        let h = Health {
            blocker: Some(&conflict),
            suspended: true,
            ..health(T0 + 1)
        };
        assert_eq!(
            ready(&h),
            (false, reason::SECRET_CONFLICT, conflict.message.clone())
        );
    }

    #[test]
    fn suspended_reflects_validity() {
        let (ok, r, m) = ready(&Health {
            suspended: true,
            ..health(T0 + 1)
        });
        assert_eq!((ok, r), (true, reason::SUSPENDED));
        assert!(
            m.starts_with("refreshing is suspended; the token in Secret out is valid until"),
            "{m}"
        );
        let (ok, r, _) = ready(&Health {
            suspended: true,
            ..health(T0 + 4000)
        });
        assert_eq!((ok, r), (false, reason::SUSPENDED));
    }
    #[test]
    fn the_deadline_from_status_is_the_expiry_of_a_valid_token_or_now() {
        let now = at(T0 + 100);
        let expiring = |expires: i64| crate::crd::GebetaAccessTokenStatus {
            expires_at: Some(format_time(at(expires))),
            ..Default::default()
        };
        assert_eq!(
            deadline_from_status(Some(&expiring(T0 + 300)), now),
            at(T0 + 300)
        );
        assert_eq!(deadline_from_status(Some(&expiring(T0 + 50)), now), now);
        let unreadable = crate::crd::GebetaAccessTokenStatus {
            expires_at: Some("soon".into()),
            ..Default::default()
        };
        assert_eq!(deadline_from_status(Some(&unreadable), now), now);
        assert_eq!(deadline_from_status(None, now), now);
    }

    #[test]
    fn due_from_status_names_the_deadline_of_likely_calls_only() {
        let status = |expires: i64, next: Option<i64>, observed: Option<&str>| {
            crate::crd::GebetaAccessTokenStatus {
                expires_at: Some(format_time(at(expires))),
                next_refresh_time: next.map(|n| format_time(at(n))),
                observed_refresh_request: observed.map(String::from),
                ..Default::default()
            }
        };
        let now = at(T0 + 100);
        // Planned refresh has come: the deadline is the token's expiry.
        let s = status(T0 + 300, Some(T0 + 90), None);
        assert_eq!(
            due_from_status(Some(&s), None, false, now),
            Some(at(T0 + 300))
        );
        // Not yet due; suspended; no status; no token named.
        let s = status(T0 + 300, Some(T0 + 200), None);
        assert_eq!(due_from_status(Some(&s), None, false, now), None);
        let s = status(T0 + 300, Some(T0 + 90), None);
        assert_eq!(due_from_status(Some(&s), None, true, now), None);
        assert_eq!(due_from_status(None, None, false, now), None);
        let none = crate::crd::GebetaAccessTokenStatus::default();
        assert_eq!(due_from_status(Some(&none), Some("1"), false, now), None);
        // ...which names_no_token tells apart (a first call is due once inputs read well).
        assert!(names_no_token(None, false));
        assert!(names_no_token(Some(&none), false));
        assert!(!names_no_token(Some(&none), true));
        assert!(!names_no_token(Some(&s), false));
        // A new refresh request is due; one already acted on is not.
        let s = status(T0 + 300, Some(T0 + 200), Some("1"));
        assert_eq!(
            due_from_status(Some(&s), Some("2"), false, now),
            Some(at(T0 + 300))
        );
        assert_eq!(due_from_status(Some(&s), Some("1"), false, now), None);
        // Expired (no refresh planned, e.g. after failures): due now.
        let s = status(T0 + 50, None, None);
        assert_eq!(due_from_status(Some(&s), None, false, now), Some(now));
    }
}
