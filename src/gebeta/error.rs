//! The client's one error type, classified by HTTP status first, whatever the body.
//!
//! Messages carry the endpoint, the status and at most a short, sanitized snippet of the
//! upstream `error`/`code` fields: never a token, a request body or a header.

use std::time::Duration;

use super::wire;

/// Longest upstream snippet kept in an error message.
const SNIPPET_MAX: usize = 120;
/// Words at least this long made of token-like characters are redacted from snippets.
const TOKENISH_MIN: usize = 20;

#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// 400 (and other non-retryable 4xx): the request was refused as invalid.
    #[error("{endpoint}: request refused as invalid (HTTP {status}){}", suffix(.upstream))]
    Validation {
        endpoint: &'static str,
        status: u16,
        upstream: Option<String>,
    },
    /// 401/403: a credential is missing, unknown or not usable (e.g. account not ACTIVE).
    #[error("{endpoint}: unauthorized (HTTP {status}){}", suffix(.upstream))]
    Unauthorized {
        endpoint: &'static str,
        status: u16,
        upstream: Option<String>,
    },
    /// 404/410: the service account does not exist.
    #[error("{endpoint}: not found (HTTP {status})")]
    NotFound { endpoint: &'static str, status: u16 },
    /// 429, with the server's `Retry-After` if it gave one (capped).
    #[error("{endpoint}: rate limited (HTTP 429){}", retry_suffix(.retry_after))]
    RateLimited {
        endpoint: &'static str,
        retry_after: Option<Duration>,
    },
    /// 5xx.
    #[error("{endpoint}: server error (HTTP {status}){}", suffix(.upstream))]
    Server {
        endpoint: &'static str,
        status: u16,
        retry_after: Option<Duration>,
        upstream: Option<String>,
    },
    /// Connect failure, reset, closed connection, TLS failure... `connect` is true when the
    /// request provably never reached the server.
    #[error("{endpoint}: transport error: {message}")]
    Transport {
        endpoint: &'static str,
        connect: bool,
        message: String,
    },
    /// No complete answer within the per-request timeout (or HTTP 408).
    #[error("{endpoint}: timed out{}", timeout_suffix(.after))]
    Timeout {
        endpoint: &'static str,
        after: Duration,
    },
    /// A success (or unexpected) status whose body we cannot read.
    #[error("{endpoint}: unreadable response (HTTP {status}): {message}")]
    Decode {
        endpoint: &'static str,
        status: u16,
        message: String,
    },
    /// `create_account` failed after the request may have reached the server: the account
    /// may exist upstream without us holding its token. Never retried blindly; reconcile by
    /// listing the organization's accounts.
    #[error("create_account: outcome unknown, the account may exist upstream ({cause})")]
    CreateOutcomeUnknown { cause: Box<Error> },
    /// The client configuration is invalid.
    #[error("gebeta client configuration: {message}")]
    Config { message: String },
}

fn suffix(upstream: &Option<String>) -> String {
    upstream
        .as_deref()
        .map(|s| format!(": {s}"))
        .unwrap_or_default()
}

fn timeout_suffix(after: &Duration) -> String {
    if after.is_zero() {
        " (HTTP 408)".to_owned()
    } else {
        format!(" after {after:?}")
    }
}

fn retry_suffix(retry_after: &Option<Duration>) -> String {
    retry_after
        .map(|d| format!(", retry after {}s", d.as_secs_f64().ceil()))
        .unwrap_or_default()
}

impl Error {
    /// A stable short label for metrics and condition reasons.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Validation { .. } => "validation",
            Error::Unauthorized { .. } => "unauthorized",
            Error::NotFound { .. } => "not_found",
            Error::RateLimited { .. } => "rate_limited",
            Error::Server { .. } => "server",
            Error::Transport { .. } => "transport",
            Error::Timeout { .. } => "timeout",
            Error::Decode { .. } => "decode",
            Error::CreateOutcomeUnknown { .. } => "create_outcome_unknown",
            Error::Config { .. } => "config",
        }
    }

    /// Transient: the same call may succeed later (rate limits, 5xx, transport, timeouts).
    /// `CreateOutcomeUnknown` is not: the caller must look before creating again.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::RateLimited { .. }
                | Error::Server { .. }
                | Error::Transport { .. }
                | Error::Timeout { .. }
        )
    }

    /// The HTTP status behind the error, if there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Validation { status, .. }
            | Error::Unauthorized { status, .. }
            | Error::NotFound { status, .. }
            | Error::Server { status, .. }
            | Error::Decode { status, .. } => Some(*status),
            Error::RateLimited { .. } => Some(429),
            Error::CreateOutcomeUnknown { cause } => cause.status(),
            Error::Transport { .. } | Error::Timeout { .. } | Error::Config { .. } => None,
        }
    }

    /// How long the server asked us to wait (429 or 5xx with `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } | Error::Server { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Error::Unauthorized { .. })
    }

    /// The endpoint label of the failed call (`"config"` for configuration errors).
    pub fn endpoint(&self) -> &'static str {
        match self {
            Error::Validation { endpoint, .. }
            | Error::Unauthorized { endpoint, .. }
            | Error::NotFound { endpoint, .. }
            | Error::RateLimited { endpoint, .. }
            | Error::Server { endpoint, .. }
            | Error::Transport { endpoint, .. }
            | Error::Timeout { endpoint, .. }
            | Error::Decode { endpoint, .. } => endpoint,
            Error::CreateOutcomeUnknown { .. } => "create_account",
            Error::Config { .. } => "config",
        }
    }
}

/// Classifies a non-2xx answer by its status code first; the body only adds a snippet.
/// `secrets` are the secret strings this request carried; they are scrubbed from snippets.
pub(crate) fn classify_status(
    endpoint: &'static str,
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
    secrets: &[&str],
) -> Error {
    let upstream = || upstream_snippet(body, secrets);
    match status {
        401 | 403 => Error::Unauthorized {
            endpoint,
            status,
            upstream: upstream(),
        },
        404 | 410 => Error::NotFound { endpoint, status },
        408 => Error::Timeout {
            endpoint,
            after: Duration::ZERO,
        },
        429 => Error::RateLimited {
            endpoint,
            retry_after,
        },
        400..=499 => Error::Validation {
            endpoint,
            status,
            upstream: upstream(),
        },
        500..=599 => Error::Server {
            endpoint,
            status,
            retry_after,
            upstream: upstream(),
        },
        _ => Error::Decode {
            endpoint,
            status,
            message: format!("unexpected HTTP status {status}"),
        },
    }
}

/// `error`/`code` of a JSON error body, sanitized; `None` for empty, HTML or other bodies.
pub(crate) fn upstream_snippet(body: &[u8], secrets: &[&str]) -> Option<String> {
    let parsed: wire::ErrorBody = serde_json::from_slice(body).ok()?;
    let text = match (parsed.error(), parsed.code()) {
        (Some(e), Some(c)) => format!("{e} ({c})"),
        (Some(e), None) => e.to_owned(),
        (None, Some(c)) => c.to_owned(),
        (None, None) => return None,
    };
    let clean = sanitize(&text, secrets, SNIPPET_MAX);
    (!clean.is_empty()).then_some(clean)
}

/// Describes a JSON decode failure without echoing values from the body: quoted
/// fragments are kept only when they look like a field or enum name.
pub(crate) fn describe_json_error(err: &serde_json::Error, secrets: &[&str]) -> String {
    let msg = err.to_string();
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg.as_str();
    while let Some(start) = rest.find(['"', '`']) {
        let quote = rest.as_bytes()[start] as char;
        out.push_str(&rest[..=start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find(quote) else {
            out.push('…');
            rest = "";
            break;
        };
        let inner = &after[..end];
        if !inner.is_empty()
            && inner.len() <= 24
            && inner.chars().all(|c| c.is_ascii_alphabetic() || c == '_')
        {
            out.push_str(inner);
        } else {
            out.push('…');
        }
        out.push(quote);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    sanitize(&out, secrets, 200)
}

/// Removes secrets and token-looking words, control characters, and truncates.
pub(crate) fn sanitize(text: &str, secrets: &[&str], max: usize) -> String {
    let mut s = text.to_owned();
    for secret in secrets {
        if secret.len() >= 4 {
            s = s.replace(secret, "<redacted>");
        }
    }
    let mut out = String::with_capacity(s.len().min(max + 16));
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.chars().count() >= TOKENISH_MIN {
            out.push_str("<redacted>");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '+' | '/' | '=') {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(if c.is_control() { ' ' } else { c });
        }
    }
    flush(&mut word, &mut out);
    let trimmed = out.trim();
    if trimmed.chars().count() > max {
        let cut: String = trimmed.chars().take(max).collect();
        format!("{cut}…")
    } else {
        trimmed.to_owned()
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date, relative to `now`.
pub(crate) fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Some(Duration::from_secs_f64(secs.min(1e9)));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    let ms = at.as_millisecond() - now.as_millisecond();
    Some(Duration::from_millis(ms.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "sk_live_7f3a9c2e4b1d8f6a0c5e";

    fn all_variants() -> Vec<Error> {
        let body = format!(r#"{{"error":"bad token {SECRET}","code":"FAILED_VALIDATION"}}"#);
        let b = body.as_bytes();
        let secrets = [SECRET];
        vec![
            classify_status("auth", 400, None, b, &secrets),
            classify_status("auth", 401, None, b, &secrets),
            classify_status("get_account", 404, None, b, &secrets),
            classify_status("auth", 429, Some(Duration::from_secs(3)), b, &secrets),
            classify_status("auth", 503, None, b, &secrets),
            classify_status("auth", 302, None, b, &secrets),
            Error::Transport {
                endpoint: "auth",
                connect: false,
                message: sanitize(SECRET, &[], 100),
            },
            Error::Timeout {
                endpoint: "auth",
                after: Duration::from_secs(1),
            },
            Error::Decode {
                endpoint: "auth",
                status: 200,
                message: describe_json_error(
                    &serde_json::from_str::<u64>(&format!("\"{SECRET}\"")).unwrap_err(),
                    &[],
                ),
            },
            Error::CreateOutcomeUnknown {
                cause: Box::new(classify_status("create_account", 500, None, b, &secrets)),
            },
            Error::Config {
                message: "bad".into(),
            },
        ]
    }

    #[test]
    fn no_variant_leaks_the_secret() {
        for e in all_variants() {
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(SECRET), "{shown}");
            assert!(!shown.contains("7f3a9c2e4b1d8f6a0c5e"), "{shown}");
        }
    }

    #[test]
    fn labels_are_stable() {
        let labels: Vec<_> = all_variants().iter().map(Error::label).collect();
        assert_eq!(
            labels,
            [
                "validation",
                "unauthorized",
                "not_found",
                "rate_limited",
                "server",
                "decode",
                "transport",
                "timeout",
                "decode",
                "create_outcome_unknown",
                "config"
            ]
        );
    }

    #[test]
    fn status_first_whatever_the_body() {
        let bodies: [&[u8]; 5] = [
            br#"{"error":"Validation failed","code":"FAILED_VALIDATION"}"#,
            b"",
            b"<html><body><h1>502 Bad Gateway</h1></body></html>",
            b"\x00\xff garbage",
            br#"{"error": 12, "unexpected": true}"#,
        ];
        for body in bodies {
            let c = |s| classify_status("get_account", s, None, body, &[]);
            assert_eq!(c(400).label(), "validation");
            assert_eq!(c(422).label(), "validation");
            assert_eq!(c(409).label(), "validation");
            assert_eq!(c(401).label(), "unauthorized");
            assert_eq!(c(403).label(), "unauthorized");
            assert_eq!(c(404).label(), "not_found");
            assert_eq!(c(429).label(), "rate_limited");
            assert_eq!(c(408).label(), "timeout");
            assert_eq!(c(408).to_string(), "get_account: timed out (HTTP 408)");
            for s in [500, 502, 503, 504] {
                let e = c(s);
                assert_eq!(e.label(), "server");
                assert_eq!(e.status(), Some(s));
                assert!(e.is_retryable());
            }
            for s in [400, 401, 404] {
                assert!(!c(s).is_retryable());
                assert_eq!(c(s).status(), Some(s));
            }
            // No HTML or garbage ever reaches the message.
            let shown = c(502).to_string();
            assert!(
                !shown.contains("html") && !shown.contains("garbage"),
                "{shown}"
            );
        }
    }

    #[test]
    fn snippet_of_the_json_error_fields() {
        let e = classify_status(
            "create_account",
            400,
            None,
            br#"{"error":"Validation failed","code":"FAILED_VALIDATION","details":"x"}"#,
            &[],
        );
        assert_eq!(
            e.to_string(),
            "create_account: request refused as invalid (HTTP 400): Validation failed (FAILED_VALIDATION)"
        );
        let e = classify_status(
            "auth",
            401,
            None,
            br#"{"error":"invalid or missing api key"}"#,
            &[],
        );
        assert_eq!(
            e.to_string(),
            "auth: unauthorized (HTTP 401): invalid or missing api key"
        );
        let e = classify_status("auth", 500, None, b"", &[]);
        assert_eq!(e.to_string(), "auth: server error (HTTP 500)");
        let long = format!(r#"{{"error":"{}"}}"#, "word ".repeat(100));
        let e = classify_status("auth", 500, None, long.as_bytes(), &[]);
        assert!(e.to_string().len() < 200, "{e}");
    }

    #[test]
    fn sanitize_redacts_tokens_and_control_chars() {
        assert_eq!(
            sanitize("key abc123 bad", &["abc123"], 100),
            "key <redacted> bad"
        );
        assert_eq!(
            sanitize(
                "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig here",
                &[],
                100
            ),
            "jwt <redacted> here"
        );
        assert_eq!(sanitize("a\nb\tc", &[], 100), "a b c");
        assert_eq!(sanitize("abcdef", &[], 3), "abc…");
    }

    #[test]
    fn json_errors_keep_names_not_values() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            id: String,
            status: crate::gebeta::model::AccountState,
        }
        let e = serde_json::from_str::<T>(r#"{"id":"x","status":"PENDING"}"#).unwrap_err();
        let d = describe_json_error(&e, &[]);
        assert!(d.contains("`PENDING`"), "{d}");
        let e = serde_json::from_str::<T>(r#"{"status":"ACTIVE"}"#).unwrap_err();
        assert!(describe_json_error(&e, &[]).contains("missing field `id`"));
        let e = serde_json::from_str::<T>(r#"{"id":5,"status":"ACTIVE"}"#).unwrap_err();
        assert!(describe_json_error(&e, &[]).contains("invalid type"));
        let e = serde_json::from_str::<u32>(r#""tok-123-secret""#).unwrap_err();
        assert!(!describe_json_error(&e, &[]).contains("secret"));
    }

    #[test]
    fn retry_after_forms() {
        let now = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("1.5", now),
            Some(Duration::from_millis(1500))
        );
        let date = jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&jiff::Timestamp::from_second(1_700_000_030).unwrap())
            .unwrap();
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }
}
