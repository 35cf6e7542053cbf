//! Times as people read them in a terminal: `in 41m`, `expired 3m ago`, `12m ago`. Pure.

use jiff::{SignedDuration, Timestamp};

/// A duration, rounded down to its largest one or two units: `45s`, `41m`, `2h5m`, `3d4h`.
pub fn short_duration(d: SignedDuration) -> String {
    let secs = d.as_secs().unsigned_abs();
    let (days, hours, minutes) = (secs / 86_400, (secs % 86_400) / 3600, (secs % 3600) / 60);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{minutes}m"),
        3600..86_400 if minutes == 0 => format!("{hours}h"),
        3600..86_400 => format!("{hours}h{minutes}m"),
        _ if hours == 0 => format!("{days}d"),
        _ => format!("{days}d{hours}h"),
    }
}

/// When a token expires, from `now`: `in 41m`, or `expired 3m ago`; `-` without a token.
pub fn expiry(expires_at: Option<Timestamp>, now: Timestamp) -> String {
    match expires_at {
        None => "-".into(),
        Some(t) if t > now => format!("in {}", short_duration(t.duration_since(now))),
        Some(t) => format!("expired {} ago", short_duration(now.duration_since(t))),
    }
}

/// When something planned happens: `in 27m`, or `overdue 2m` once its time has passed.
pub fn due(at: Option<Timestamp>, now: Timestamp) -> String {
    match at {
        None => "-".into(),
        Some(t) if t >= now => format!("in {}", short_duration(t.duration_since(now))),
        Some(t) => format!("overdue {}", short_duration(now.duration_since(t))),
    }
}

/// When something happened: `12m ago` (`in 5s` for a clock ahead of ours).
pub fn ago(at: Option<Timestamp>, now: Timestamp) -> String {
    match at {
        None => "-".into(),
        Some(t) if t <= now => format!("{} ago", short_duration(now.duration_since(t))),
        Some(t) => format!("in {}", short_duration(t.duration_since(now))),
    }
}

/// A status time (RFC 3339); `None` when absent or unreadable.
pub fn parse(text: Option<&str>) -> Option<Timestamp> {
    text.and_then(|t| t.parse().ok())
}

/// A `std` duration as a flag value is written: `60s`, `1500ms`.
pub fn flag_duration(d: std::time::Duration) -> String {
    if d.subsec_millis() != 0 || d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn durations_keep_two_units_at_most() {
        let s = SignedDuration::from_secs;
        assert_eq!(short_duration(s(0)), "0s");
        assert_eq!(short_duration(s(59)), "59s");
        assert_eq!(short_duration(s(60)), "1m");
        assert_eq!(short_duration(s(41 * 60 + 59)), "41m");
        assert_eq!(short_duration(s(3600)), "1h");
        assert_eq!(short_duration(s(2 * 3600 + 5 * 60 + 30)), "2h5m");
        assert_eq!(short_duration(s(86_400)), "1d");
        assert_eq!(short_duration(s(3 * 86_400 + 4 * 3600 + 59)), "3d4h");
        assert_eq!(short_duration(s(-90)), "1m", "the sign is the caller's");
    }

    #[test]
    fn expiry_counts_down_then_up() {
        let now = at("2026-11-28T05:00:00Z");
        assert_eq!(expiry(Some(at("2026-11-28T05:41:30Z")), now), "in 41m");
        assert_eq!(
            expiry(Some(at("2026-11-28T04:57:00Z")), now),
            "expired 3m ago"
        );
        assert_eq!(
            expiry(Some(now), now),
            "expired 0s ago",
            "valid strictly before exp"
        );
        assert_eq!(expiry(None, now), "-");
    }

    #[test]
    fn planned_and_past_times() {
        let now = at("2026-11-28T05:00:00Z");
        assert_eq!(due(Some(at("2026-11-28T05:27:00Z")), now), "in 27m");
        assert_eq!(due(Some(at("2026-11-28T04:58:00Z")), now), "overdue 2m");
        assert_eq!(ago(Some(at("2026-11-28T04:48:00Z")), now), "12m ago");
        assert_eq!(ago(Some(at("2026-11-28T05:00:05Z")), now), "in 5s");
        assert_eq!(ago(None, now), "-");
    }

    #[test]
    fn status_times_parse_or_are_absent() {
        assert_eq!(
            parse(Some("2026-11-28T05:00:00Z")),
            Some(at("2026-11-28T05:00:00Z"))
        );
        assert_eq!(parse(Some("soon")), None);
        assert_eq!(parse(None), None);
    }

    #[test]
    fn flag_durations_read_back() {
        use std::time::Duration;
        assert_eq!(flag_duration(Duration::from_secs(60)), "60s");
        assert_eq!(flag_duration(Duration::from_secs(2)), "2s");
        assert_eq!(flag_duration(Duration::from_secs(5400)), "5400s");
        assert_eq!(flag_duration(Duration::from_millis(1500)), "1500ms");
    }
}
