//! Faults a test can inject into the next N calls of an endpoint.

use std::time::Duration;

use serde::Deserialize;

use crate::gebeta::endpoint;

/// What the simulator does instead of (or before) answering normally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status without processing the request, with `Retry-After: <secs>` when
    /// given. Bodies: 400/401/404/429/500 carry the contract's JSON error; 502/503/504 are
    /// empty (as from a proxy); others carry `{"error": "<reason>"}`.
    Status(u16, Option<u64>),
    /// Wait this long, then process and answer normally.
    Latency(Duration),
    /// Close the connection without processing the request or answering.
    Drop,
    /// Answer 200 with a body that is not JSON, without processing the request.
    Garbage,
    /// Answer 502 with an HTML page (a proxy error), without processing the request.
    Html,
    /// Process the request (for `create_account`: create the account), then close the
    /// connection before answering. Works on any endpoint.
    DropAfterCreate,
}

/// The wildcard endpoint: a fault injected for `"*"` applies to any API endpoint that has
/// no fault of its own queued.
pub const ANY_ENDPOINT: &str = "*";

/// The `&'static` endpoint label (or `"*"`) for `name`.
pub(crate) fn endpoint_label(name: &str) -> Option<&'static str> {
    if name == ANY_ENDPOINT {
        Some(ANY_ENDPOINT)
    } else {
        endpoint::lookup(name)
    }
}

/// JSON form of `POST /_sim/faults`.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct FaultSpec {
    pub endpoint: String,
    pub fault: String,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub retry_after_seconds: Option<u64>,
    #[serde(default)]
    pub latency_ms: Option<u64>,
}

fn one() -> u32 {
    1
}

impl FaultSpec {
    pub(crate) fn to_fault(&self) -> Result<Fault, String> {
        Ok(match self.fault.as_str() {
            "status" => {
                let status = self.status.ok_or("fault \"status\" needs \"status\"")?;
                if !(100..=599).contains(&status) {
                    return Err("status must be within 100..=599".into());
                }
                Fault::Status(status, self.retry_after_seconds)
            }
            "latency" => Fault::Latency(Duration::from_millis(
                self.latency_ms
                    .ok_or("fault \"latency\" needs \"latencyMs\"")?,
            )),
            "drop" => Fault::Drop,
            "garbage" => Fault::Garbage,
            "html" => Fault::Html,
            "dropAfterCreate" | "drop_after_create" | "dropAfterProcessing" => {
                Fault::DropAfterCreate
            }
            other => {
                return Err(format!(
                    "unknown fault {other:?} (status, latency, drop, garbage, html, dropAfterCreate)"
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Result<Fault, String> {
        serde_json::from_str::<FaultSpec>(json)
            .map_err(|e| e.to_string())?
            .to_fault()
    }

    #[test]
    fn parses_fault_specs() {
        assert_eq!(
            spec(r#"{"endpoint":"auth","fault":"status","status":429,"retryAfterSeconds":2}"#),
            Ok(Fault::Status(429, Some(2)))
        );
        assert_eq!(
            spec(r#"{"endpoint":"auth","fault":"latency","latencyMs":150}"#),
            Ok(Fault::Latency(Duration::from_millis(150)))
        );
        assert_eq!(
            spec(r#"{"endpoint":"auth","fault":"dropAfterCreate"}"#),
            Ok(Fault::DropAfterCreate)
        );
        assert!(spec(r#"{"endpoint":"auth","fault":"status"}"#).is_err());
        assert!(spec(r#"{"endpoint":"auth","fault":"explode"}"#).is_err());
        assert!(spec(r#"{"endpoint":"auth","fault":"drop","bogus":1}"#).is_err());
        assert_eq!(endpoint_label("auth"), Some("auth"));
        assert_eq!(endpoint_label("*"), Some("*"));
        assert_eq!(endpoint_label("nope"), None);
    }
}
