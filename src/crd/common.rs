//! Types shared by both custom resources: conditions, Secret references, durations.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every resource this operator defines.
pub const GROUP: &str = "gebeta.app";

/// A key in a Secret in the same namespace as the object that refers to it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// Name of the Secret, in the object's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A reference to an object of a known kind in the same namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    /// Name of the object, in the referring object's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A status condition, following the Kubernetes API conventions (metav1.Condition).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of the condition, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A stable CamelCase reason, suitable for alerts and automation.
    pub reason: String,
    /// A human-readable message. Never contains a secret.
    #[serde(default)]
    pub message: String,
    /// When the status last changed (RFC 3339).
    pub last_transition_time: String,
    /// The `.metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The values a string enum's JSON schema allows: a plain enum lists them; one with
/// documented variants has a `const` (or one-value `enum`) per variant.
pub fn enum_values(schema: &schemars::Schema) -> Vec<serde_json::Value> {
    match (schema.get("enum"), schema.get("oneOf")) {
        (Some(serde_json::Value::Array(values)), _) => values.clone(),
        (_, Some(serde_json::Value::Array(variants))) => variants
            .iter()
            .flat_map(|v| match (v.get("const"), v.get("enum")) {
                (Some(c), _) => vec![c.clone()],
                (_, Some(serde_json::Value::Array(e))) => e.clone(),
                _ => Vec::new(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Pattern of a duration: one or more `<number><unit>` with units ms, s, m, h (as `1h30m`).
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h))+$";

/// Parses a duration of the form accepted by [`DURATION_PATTERN`], e.g. `90s`, `1h30m`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    if text.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        total = total.checked_add(unit.checked_mul(u32::try_from(value).ok()?)?)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compound_durations() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_duration("1m500ms"),
            Some(Duration::from_millis(60_500))
        );
    }

    #[test]
    fn rejects_what_the_schema_rejects() {
        for bad in ["", "10", "s", "1d", "-1s", "1.5h", "1h 2m", "99999999999s"] {
            assert_eq!(parse_duration(bad), None, "{bad:?} should not parse");
        }
    }
}
