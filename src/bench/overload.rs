//! The overload phase's figures, from what the token watch saw: when more refreshes are due
//! than the operator can serve, are they served earliest expiry first, and which tokens
//! expire? Pure functions; the run collects the writes and scrapes the gauges.

use serde::{Deserialize, Serialize};

use super::{observe::TokenWrite, stats::Summary};

/// What the overload phase measured.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OverloadReport {
    pub seconds: f64,
    /// Simulator latency added to every call, and the operator's permits
    /// (`--max-concurrent-reconciles`): capacity ≈ permits ÷ latency.
    pub latency_ms: u64,
    pub permits: u16,
    pub capacity_per_second: f64,
    /// Refreshes that came due in the window (old token's planned time inside it) per second,
    /// estimated as tokens ÷ (0.62 × lifetime).
    pub demand_per_second: f64,
    /// New tokens written in the window, per second.
    pub served: u64,
    pub served_per_second: f64,
    /// Pairs of refreshes served in the window where the one served first was due more than
    /// `slack_seconds` later than the one served after it (goal: none while demand ≤
    /// capacity), out of all pairs served.
    pub inversions: u64,
    pub pairs: u64,
    pub slack_seconds: f64,
    /// The worst inversion: how much later (seconds) the token served first was due.
    pub worst_inversion_seconds: f64,
    /// Tokens that expired before their replacement was written (in the window).
    pub expired: u64,
    /// Of those, how many were due later than the median of the tokens served in the
    /// window (goal: all of them, when capacity cannot suffice: the latest-due expire).
    pub expired_due_after_median: u64,
    /// Secrets holding an expired token when the window ended (expired and not yet served).
    #[serde(default)]
    pub expired_at_end: u64,
    /// Margin left on the old token when the new one was written (seconds).
    pub margin_seconds: Option<Summary>,
    /// Peaks of the operator's gauges during the window.
    pub overdue_peak: f64,
    pub oldest_overdue_peak_seconds: f64,
    /// Each replacement as `[seen at, margin]`: seconds from the run's start, seconds left on
    /// the old token (negative: expired; absent from reports made before plots).
    #[serde(default)]
    pub margins: Vec<[f64; 2]>,
}

/// Order figures of the writes seen in the window, in the order they were seen.
pub fn analyze(writes: &[TokenWrite], slack_seconds: f64) -> OverloadReport {
    // (seen at, old token's expiry) of each replacement.
    let served: Vec<(f64, f64)> = writes
        .iter()
        .filter_map(|w| {
            let at = w.at.as_millisecond() as f64 / 1000.0;
            Some((at, w.old_exp? as f64))
        })
        .collect();
    let mut inversions = 0u64;
    let mut worst = 0.0f64;
    for (i, (_, due_first)) in served.iter().enumerate() {
        for (_, due_after) in &served[i + 1..] {
            let late_by = due_first - due_after;
            if late_by > slack_seconds {
                inversions += 1;
                worst = worst.max(late_by);
            }
        }
    }
    let n = served.len() as u64;
    let mut dues: Vec<f64> = served.iter().map(|s| s.1).collect();
    dues.sort_by(f64::total_cmp);
    let median = dues.get(dues.len() / 2).copied();
    let margins: Vec<f64> = served.iter().map(|(at, due)| due - at).collect();
    let expired: Vec<f64> = served
        .iter()
        .filter(|(at, due)| due <= at)
        .map(|s| s.1)
        .collect();
    OverloadReport {
        served: n,
        inversions,
        pairs: n * n.saturating_sub(1) / 2,
        slack_seconds,
        worst_inversion_seconds: (worst * 10.0).round() / 10.0,
        expired: expired.len() as u64,
        expired_due_after_median: median
            .map_or(0, |m| expired.iter().filter(|d| **d >= m).count() as u64),
        margin_seconds: Summary::of(&margins),
        ..OverloadReport::default()
    }
}

/// The value of a gauge in Prometheus text format (the sum over its series).
pub fn gauge(metrics: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    fn write(at: i64, old_exp: i64) -> TokenWrite {
        TokenWrite {
            namespace: "ns".into(),
            name: format!("t{old_exp}"),
            at: Timestamp::from_second(at).unwrap(),
            exp: Some(at + 60),
            iat: Some(at),
            old_exp: Some(old_exp),
            old_iat: Some(old_exp - 60),
        }
    }

    #[test]
    fn earliest_due_first_has_no_inversions() {
        let writes = [
            write(100, 110),
            write(101, 112),
            write(102, 111),
            write(103, 130),
        ];
        let r = analyze(&writes, 1.5);
        assert_eq!(
            (r.inversions, r.pairs),
            (0, 6),
            "112 before 111 is within slack"
        );
        assert_eq!(r.expired, 0);
        let r = analyze(&writes, 0.5);
        assert_eq!(r.inversions, 1);
        assert_eq!(r.worst_inversion_seconds, 1.0);
    }

    #[test]
    fn latest_first_is_counted_and_expiries_are_placed() {
        // Served latest-due first: every pair is inverted, and the early ones expire.
        let writes = [
            write(100, 140),
            write(101, 130),
            write(102, 120),
            write(103, 101),
        ];
        let r = analyze(&writes, 1.0);
        assert_eq!(r.inversions, 6);
        assert_eq!(r.worst_inversion_seconds, 39.0);
        assert_eq!(r.expired, 1);
        assert_eq!(
            r.expired_due_after_median, 0,
            "the one that expired was the earliest due: the wrong one"
        );
        // Served in due order with too little capacity: the last one, due latest, expires.
        let writes = [write(100, 101), write(110, 120), write(130, 125)];
        let r = analyze(&writes, 1.0);
        assert_eq!(
            (r.inversions, r.expired, r.expired_due_after_median),
            (0, 1, 1)
        );
    }

    #[test]
    fn gauges_are_read_from_the_text_format() {
        let text = "# HELP gebeta_operator_refreshes_overdue x\n\
                    gebeta_operator_refreshes_overdue 7\n\
                    gebeta_operator_refreshes_overdue_total 99\n\
                    gebeta_operator_refresh_oldest_overdue_seconds 2.5\n";
        assert_eq!(gauge(text, "gebeta_operator_refreshes_overdue"), Some(7.0));
        assert_eq!(
            gauge(text, "gebeta_operator_refresh_oldest_overdue_seconds"),
            Some(2.5)
        );
        assert_eq!(gauge(text, "missing"), None);
    }
}
