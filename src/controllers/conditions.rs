//! Status conditions: setting one keeps its transition time unless its status changes, so an
//! unchanged condition never causes a status write.

use crate::crd::Condition;

pub const READY: &str = "Ready";
pub const SYNCED: &str = "Synced";

/// `True`/`False` as the API conventions spell them.
pub fn status_str(value: bool) -> &'static str {
    if value { "True" } else { "False" }
}

/// Sets condition `type_` in `conditions`; `now` is used only when the status changes.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &str,
) {
    let status = status_str(status);
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status {
                existing.last_transition_time = now.to_string();
                existing.status = status.to_string();
            }
            existing.reason = reason.to_string();
            existing.message = message;
            existing.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message,
            last_transition_time: now.to_string(),
            observed_generation: generation,
        }),
    }
}

/// The condition of type `type_`, if present.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether condition `type_` is present and `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    get(conditions, type_).is_some_and(|c| c.status == "True")
}

/// The current time as RFC 3339 with second precision, the format of every status time.
pub fn now_rfc3339() -> String {
    format_time(jiff::Timestamp::now())
}

/// A timestamp as RFC 3339 with second precision.
pub fn format_time(ts: jiff::Timestamp) -> String {
    ts.round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ts.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut conds = Vec::new();
        set(
            &mut conds,
            READY,
            false,
            "Pending",
            "waiting",
            Some(1),
            "t1",
        );
        set(
            &mut conds,
            READY,
            false,
            "UpstreamUnavailable",
            "503",
            Some(1),
            "t2",
        );
        assert_eq!(conds[0].last_transition_time, "t1");
        assert_eq!(conds[0].reason, "UpstreamUnavailable");
        set(&mut conds, READY, true, "Ready", "ok", Some(2), "t3");
        assert_eq!(conds[0].last_transition_time, "t3");
        assert!(is_true(&conds, READY));
        set(&mut conds, SYNCED, true, "Synced", "", Some(2), "t4");
        assert_eq!(conds.len(), 2);
    }

    #[test]
    fn times_have_second_precision() {
        let ts: jiff::Timestamp = "2026-11-28T04:14:25.123456Z".parse().unwrap();
        assert_eq!(format_time(ts), "2026-11-28T04:14:25Z");
    }
}
