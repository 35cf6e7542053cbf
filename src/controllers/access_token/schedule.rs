//! When to refresh an access token, and how long to wait after a failed attempt. Pure
//! functions of times and durations: no clock is read here, callers pass `now`.
//!
//! # The token's times
//!
//! [`TokenTimes::received`] turns the JWT claims into the times the operator plans with,
//! measured on the operator's clock:
//!
//! - lifetime `L = exp - iat` (the server's clock on both sides, so skew cancels out); without
//!   `iat` (or with `iat >= exp`), `L = exp - received`; without `exp`, `L` is the configured
//!   default lifetime (`--default-token-lifetime`) counted from the time received;
//! - `expiresAt = min(exp, received + L)` and `issuedAt = expiresAt - L`: if the server's clock
//!   runs ahead of ours, the token is treated as expiring earlier, never later;
//! - if the token arrives more than `L/10 + 1s` after its `iat` (the server's clock is behind
//!   ours, or the answer was slow), `issuedAt` is the time received and `expiresAt = exp`: the
//!   schedule then works on what is left of the token, so a skewed clock can shorten the
//!   refresh interval but never turn it into a loop of immediate refreshes.
//!
//! These effective times are stored with the token (see `secret.rs`), so an operator restart
//! plans with exactly the same times.
//!
//! # The refresh time
//!
//! [`refresh_at`] with `L` as above:
//!
//! 1. base: `issuedAt + 2/3·L` (as cert-manager), or `expiresAt - refreshBefore` when set;
//! 2. jitter: minus `f·L/10`, where `f ∈ [0, 1)` is derived from the object's UID
//!    ([`jitter_seed`]): deterministic per object, so a restart keeps the schedule, and spread
//!    across objects, so many tokens issued at once are not refreshed at once;
//! 3. clamp to `[issuedAt + L/2, expiresAt - min(L/10, 30s)]`: never before half the lifetime
//!    (a large `refreshBefore` cannot make the operator hammer the API), never later than
//!    the last tenth of the lifetime, or 30 s before expiry for long-lived tokens (a tiny
//!    `refreshBefore` cannot leave workloads without a valid token).
//!
//! With the defaults a token is refreshed between 57% and 67% of its lifetime.
//!
//! # Backoff after a failed attempt
//!
//! See [`crate::controllers::backoff`], shared with the service-account controller.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::controllers::backoff::fraction;
pub use crate::controllers::backoff::{jitter_seed, retry_delay};

/// The latest refresh is at least this much (or a tenth of the lifetime) before expiry.
pub const MAX_SAFETY_MARGIN: Duration = Duration::from_secs(30);

/// The effective issue and expiry times of an access token, on the operator's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenTimes {
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
}

impl TokenTimes {
    /// The times of a token received at `received` whose JWT carries `exp`/`iat` (seconds
    /// since the epoch, as in the claims). Returns `None` when the token is already expired
    /// when received.
    pub fn received(
        exp: Option<Timestamp>,
        iat: Option<Timestamp>,
        received: Timestamp,
        default_lifetime: Duration,
    ) -> Option<TokenTimes> {
        let (issued_at, expires_at) = match exp {
            None => {
                let lifetime = SignedDuration::try_from(default_lifetime).ok()?;
                (received, received.checked_add(lifetime).ok()?)
            }
            Some(exp) => {
                let server_lifetime = iat
                    .map(|iat| iat.duration_until(exp))
                    .filter(|l| l.is_positive());
                match server_lifetime {
                    Some(lifetime) => {
                        let late = iat
                            .map(|iat| iat.duration_until(received))
                            .unwrap_or_default();
                        let tolerance = lifetime / 10 + SignedDuration::from_secs(1);
                        if late > tolerance {
                            // Issued long before we got it (the server's clock is behind, or
                            // the answer was slow): plan from now, keep the server's expiry.
                            (received, exp)
                        } else {
                            let expires_at = exp.min(received.checked_add(lifetime).ok()?);
                            (expires_at.checked_sub(lifetime).ok()?, expires_at)
                        }
                    }
                    None => (received, exp),
                }
            }
        };
        (expires_at > issued_at && expires_at > received).then_some(TokenTimes {
            issued_at,
            expires_at,
        })
    }

    /// The times of a token read back from a Secret when nothing else is known about it:
    /// both `exp` and `iat` are needed (with `iat < exp`), else `None` (refresh it now).
    pub fn from_claims(exp: Option<Timestamp>, iat: Option<Timestamp>) -> Option<TokenTimes> {
        let (exp, iat) = (exp?, iat?);
        (iat < exp).then_some(TokenTimes {
            issued_at: iat,
            expires_at: exp,
        })
    }

    pub fn lifetime(&self) -> Duration {
        Duration::try_from(self.issued_at.duration_until(self.expires_at)).unwrap_or(Duration::ZERO)
    }

    pub fn is_valid_at(&self, now: Timestamp) -> bool {
        now < self.expires_at
    }

    /// Time left at `now` (zero once expired).
    pub fn remaining(&self, now: Timestamp) -> Duration {
        Duration::try_from(now.duration_until(self.expires_at)).unwrap_or(Duration::ZERO)
    }
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// When to refresh a token with `times` (see the module docs for the rule).
pub fn refresh_at(times: &TokenTimes, refresh_before: Option<Duration>, seed: u64) -> Timestamp {
    let lifetime = times.lifetime();
    let add = |ts: Timestamp, d: Duration| ts.checked_add(signed(d)).unwrap_or(ts);
    let sub = |ts: Timestamp, d: Duration| ts.checked_sub(signed(d)).unwrap_or(ts);
    let lower = add(times.issued_at, lifetime / 2);
    let upper = sub(times.expires_at, (lifetime / 10).min(MAX_SAFETY_MARGIN));
    let base = match refresh_before {
        Some(before) => sub(times.expires_at, before),
        None => add(times.issued_at, lifetime * 2 / 3),
    };
    let jittered = sub(base, (lifetime / 10).mul_f64(fraction(seed)));
    jittered.clamp(lower, upper.max(lower))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    const T0: i64 = 1_800_000_000;

    #[test]
    fn lifetime_from_exp_and_iat() {
        let t = TokenTimes::received(Some(ts(T0 + 3600)), Some(ts(T0)), ts(T0), secs(60)).unwrap();
        assert_eq!(
            t,
            TokenTimes {
                issued_at: ts(T0),
                expires_at: ts(T0 + 3600)
            }
        );
        assert_eq!(t.lifetime(), secs(3600));
        // Received a little after iat (iat is whole seconds): same times.
        let late = Timestamp::from_millisecond(T0 * 1000 + 800).unwrap();
        assert_eq!(
            TokenTimes::received(Some(ts(T0 + 3600)), Some(ts(T0)), late, secs(60)),
            Some(t)
        );
    }

    #[test]
    fn server_clock_ahead_shortens_the_token_never_lengthens_it() {
        // Server 100 s ahead: iat is 100 s in our future; the token dies 100 s earlier for us.
        let t = TokenTimes::received(Some(ts(T0 + 3700)), Some(ts(T0 + 100)), ts(T0), secs(60))
            .unwrap();
        assert_eq!(
            t,
            TokenTimes {
                issued_at: ts(T0),
                expires_at: ts(T0 + 3600)
            }
        );
        // Server 100 s behind: exp is trusted as is.
        let t = TokenTimes::received(Some(ts(T0 + 3500)), Some(ts(T0 - 100)), ts(T0), secs(60))
            .unwrap();
        assert_eq!(
            t,
            TokenTimes {
                issued_at: ts(T0 - 100),
                expires_at: ts(T0 + 3500)
            }
        );
    }

    #[test]
    fn server_clock_far_behind_plans_from_the_time_received() {
        // Issued "30 minutes ago" by a server clock that is behind: what is left is planned.
        let t = TokenTimes::received(Some(ts(T0 + 1800)), Some(ts(T0 - 1800)), ts(T0), secs(60))
            .unwrap();
        assert_eq!(
            t,
            TokenTimes {
                issued_at: ts(T0),
                expires_at: ts(T0 + 1800)
            }
        );
        let at = refresh_at(&t, None, u64::MAX);
        assert!(at >= ts(T0 + 900), "{at}: not an immediate refresh");
        // A second of whole-second iat plus a tenth of the lifetime is normal latency.
        let t = TokenTimes::received(Some(ts(T0 + 4)), Some(ts(T0)), ts(T0 + 1), secs(60)).unwrap();
        assert_eq!(
            t,
            TokenTimes {
                issued_at: ts(T0),
                expires_at: ts(T0 + 4)
            }
        );
    }

    #[test]
    fn missing_iat_or_exp() {
        let t = TokenTimes::received(Some(ts(T0 + 600)), None, ts(T0), secs(60)).unwrap();
        assert_eq!(
            t,
            TokenTimes {
                issued_at: ts(T0),
                expires_at: ts(T0 + 600)
            }
        );
        // iat not before exp: ignored.
        let t =
            TokenTimes::received(Some(ts(T0 + 600)), Some(ts(T0 + 600)), ts(T0), secs(60)).unwrap();
        assert_eq!(t.lifetime(), secs(600));
        // No exp: the default lifetime from the time received.
        let t = TokenTimes::received(None, Some(ts(T0 - 5)), ts(T0), secs(3600)).unwrap();
        assert_eq!(
            t,
            TokenTimes {
                issued_at: ts(T0),
                expires_at: ts(T0 + 3600)
            }
        );
    }

    #[test]
    fn expired_tokens_are_refused() {
        assert_eq!(
            TokenTimes::received(Some(ts(T0)), Some(ts(T0 - 60)), ts(T0), secs(60)),
            None
        );
        assert_eq!(
            TokenTimes::received(Some(ts(T0 - 1)), None, ts(T0), secs(60)),
            None
        );
        assert!(TokenTimes::received(Some(ts(T0 + 1)), None, ts(T0), secs(60)).is_some());
    }

    #[test]
    fn from_claims_needs_both() {
        assert_eq!(TokenTimes::from_claims(Some(ts(T0 + 1)), None), None);
        assert_eq!(TokenTimes::from_claims(None, Some(ts(T0))), None);
        assert_eq!(TokenTimes::from_claims(Some(ts(T0)), Some(ts(T0))), None);
        assert_eq!(
            TokenTimes::from_claims(Some(ts(T0 + 9)), Some(ts(T0))),
            Some(TokenTimes {
                issued_at: ts(T0),
                expires_at: ts(T0 + 9)
            })
        );
    }

    fn hour() -> TokenTimes {
        TokenTimes {
            issued_at: ts(T0),
            expires_at: ts(T0 + 3600),
        }
    }

    #[test]
    fn default_is_two_thirds_minus_jitter() {
        assert_eq!(refresh_at(&hour(), None, 0), ts(T0 + 2400));
        // The largest jitter takes off (almost) a tenth of the lifetime.
        let at = refresh_at(&hour(), None, u64::MAX);
        assert!(at >= ts(T0 + 2040) && at <= ts(T0 + 2041), "{at}");
        // Spread: different UIDs, different times, all within [57%, 67%].
        let times: std::collections::BTreeSet<_> = (0..50)
            .map(|i| refresh_at(&hour(), None, jitter_seed(&format!("uid-{i}"))))
            .collect();
        assert!(times.len() > 40, "{}", times.len());
        assert!(
            times
                .iter()
                .all(|t| *t >= ts(T0 + 2040) && *t <= ts(T0 + 2400))
        );
    }

    #[test]
    fn jitter_is_stable_per_uid() {
        assert_eq!(jitter_seed("0b6c1e3a"), jitter_seed("0b6c1e3a"));
        assert_ne!(jitter_seed("0b6c1e3a"), jitter_seed("0b6c1e3b"));
    }

    #[test]
    fn refresh_before_is_clamped() {
        assert_eq!(refresh_at(&hour(), Some(secs(600)), 0), ts(T0 + 3000));
        // Too early: not before half the lifetime.
        assert_eq!(refresh_at(&hour(), Some(secs(3000)), 0), ts(T0 + 1800));
        assert_eq!(
            refresh_at(&hour(), Some(secs(99_999)), u64::MAX),
            ts(T0 + 1800)
        );
        // Too late: at least 30 s before expiry for long tokens...
        assert_eq!(refresh_at(&hour(), Some(secs(1)), 0), ts(T0 + 3570));
        assert_eq!(refresh_at(&hour(), Some(Duration::ZERO), 0), ts(T0 + 3570));
        // ...and a tenth of the lifetime for short ones.
        let short = TokenTimes {
            issued_at: ts(T0),
            expires_at: ts(T0 + 100),
        };
        assert_eq!(refresh_at(&short, Some(secs(1)), 0), ts(T0 + 90));
    }

    #[test]
    fn short_lifetimes_keep_a_margin() {
        let three = TokenTimes {
            issued_at: ts(T0),
            expires_at: ts(T0 + 3),
        };
        for seed in [0, u64::MAX / 2, u64::MAX] {
            let at = refresh_at(&three, None, seed);
            assert!(
                at >= Timestamp::from_millisecond(T0 * 1000 + 1500).unwrap(),
                "{at}"
            );
            assert!(at <= ts(T0 + 2), "{at}");
        }
    }
}
