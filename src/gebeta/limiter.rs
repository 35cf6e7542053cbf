//! A requests-per-second limit shared by every clone of the client (GCRA, i.e. a token
//! bucket holding up to one second of requests).

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct RateLimiter {
    interval: Duration,
    burst: Duration,
    /// Theoretical arrival time of the next request.
    tat: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// `per_second` must be finite and > 0.
    pub(crate) fn new(per_second: f64) -> Self {
        let interval = Duration::from_secs_f64(1.0 / per_second);
        let burst_count = per_second.ceil().clamp(1.0, 1e6);
        RateLimiter {
            interval,
            burst: interval.mul_f64(burst_count),
            tat: Mutex::new(None),
        }
    }

    /// Reserves a slot and returns how long to wait before using it.
    pub(crate) fn reserve(&self, now: Instant) -> Duration {
        let mut tat = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        let start = tat.map_or(now, |t| t.max(now));
        let next = start + self.interval;
        *tat = Some(next);
        (next - now).saturating_sub(self.burst)
    }

    pub(crate) async fn acquire(&self) {
        let wait = self.reserve(Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_paces() {
        let l = RateLimiter::new(10.0);
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(l.reserve(now), Duration::ZERO);
        }
        let w1 = l.reserve(now);
        let w2 = l.reserve(now);
        assert!((w1.as_secs_f64() - 0.1).abs() < 1e-6, "{w1:?}");
        assert!((w2.as_secs_f64() - 0.2).abs() < 1e-6, "{w2:?}");
        // After enough idle time the bucket refills.
        let later = now + Duration::from_secs(5);
        assert_eq!(l.reserve(later), Duration::ZERO);
    }

    #[test]
    fn slow_rates_pace_every_request() {
        let l = RateLimiter::new(0.5);
        let now = Instant::now();
        assert_eq!(l.reserve(now), Duration::ZERO);
        assert_eq!(l.reserve(now), Duration::from_secs(2));
    }
}
