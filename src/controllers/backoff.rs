//! How long to wait after a failed attempt, for both controllers, and the per-object seed
//! that spreads their schedules.
//!
//! [`retry_delay`]: `2s · 2^(failures-1)`, capped at 5 minutes, ±10% random jitter; at least
//! the server's `Retry-After`. While the current token is still valid the delay is also capped
//! at a third of its remaining time (but never under 1 s), so an outage shorter than the
//! remaining lifetime is bridged by a retry before the token expires.
//! Without a token (service accounts) the cap by remaining lifetime does not apply.

use std::time::Duration;

/// First retry delay after a failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(2);
/// Largest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Shortest retry delay, whatever the remaining lifetime.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);

/// A number in `[0, 2^64)` derived from the object's UID (SHA-256), stable across restarts.
pub fn jitter_seed(uid: &str) -> u64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, uid.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(bytes)
}

/// `seed` as a fraction in `[0, 1)`.
pub(crate) fn fraction(seed: u64) -> f64 {
    (seed >> 11) as f64 / (1u64 << 53) as f64
}

/// How long to wait before the next attempt after `failures` consecutive failures (≥ 1).
/// `random` in `[0, 1)` spreads retries (±10%); `remaining` is the current token's time left,
/// if it is still valid.
pub fn retry_delay(
    failures: u32,
    retry_after: Option<Duration>,
    remaining: Option<Duration>,
    random: f64,
) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let backoff = BACKOFF_BASE
        .saturating_mul(1u32 << exponent)
        .min(BACKOFF_MAX);
    let mut delay = backoff.mul_f64(0.9 + 0.2 * random.clamp(0.0, 1.0));
    if let Some(remaining) = remaining.filter(|r| !r.is_zero()) {
        delay = delay.min((remaining / 3).max(BACKOFF_MIN));
    }
    delay = delay.max(BACKOFF_MIN);
    match retry_after {
        Some(after) => delay.max(after.min(BACKOFF_MAX)),
        None => delay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn backoff_grows_and_caps() {
        let d = |n| retry_delay(n, None, None, 0.5);
        assert_eq!(
            [d(1), d(2), d(3), d(4)],
            [secs(2), secs(4), secs(8), secs(16)]
        );
        assert_eq!(d(9), secs(300));
        assert_eq!(d(u32::MAX), secs(300));
        assert_eq!(retry_delay(1, None, None, 0.0), Duration::from_millis(1800));
        assert_eq!(retry_delay(1, None, None, 1.0), Duration::from_millis(2200));
    }

    #[test]
    fn backoff_retries_before_the_token_expires_and_honours_retry_after() {
        // 30 s left: at most 10 s between attempts.
        assert_eq!(retry_delay(6, None, Some(secs(30)), 0.5), secs(10));
        // Never under a second, however close the expiry.
        assert_eq!(
            retry_delay(6, None, Some(Duration::from_millis(300)), 0.5),
            secs(1)
        );
        // Retry-After wins over a shorter backoff, within the cap.
        assert_eq!(
            retry_delay(1, Some(secs(20)), Some(secs(30)), 0.5),
            secs(20)
        );
        assert_eq!(retry_delay(1, Some(secs(9999)), None, 0.5), secs(300));
    }
}
