//! Reads the claims of a JWT access token without verifying its signature: the operator
//! has no key, it only needs `exp`/`iat` to schedule refreshes. Pure, no I/O.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// The claims the operator cares about. Other claims are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claims {
    /// Expiry, seconds since the Unix epoch.
    pub exp: Option<i64>,
    /// Issue time, seconds since the Unix epoch.
    pub iat: Option<i64>,
    /// Subject (for Gebeta: the server account's id) [assumed].
    pub sub: Option<String>,
    /// `scopes` (array of strings, or a space-separated `scope`/`scopes` string).
    pub scopes: Vec<String>,
}

impl Claims {
    pub fn expires_at(&self) -> Option<jiff::Timestamp> {
        self.exp.and_then(|s| jiff::Timestamp::from_second(s).ok())
    }

    pub fn issued_at(&self) -> Option<jiff::Timestamp> {
        self.iat.and_then(|s| jiff::Timestamp::from_second(s).ok())
    }
}

/// Why a string is not a readable JWT. The text never includes the token.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    #[error("not a JWT: expected three dot-separated parts, found {parts}")]
    NotAJwt { parts: usize },
    #[error("JWT {part} is not valid base64url")]
    BadBase64 { part: &'static str },
    #[error("JWT {part} is not a JSON object{detail}")]
    BadJson {
        part: &'static str,
        detail: &'static str,
    },
}

/// Decodes the header and payload of a compact JWS (`header.payload.signature`) and returns
/// the payload's claims. The signature is not checked.
pub fn decode_claims(token: &str) -> Result<Claims, JwtError> {
    let token = token.trim();
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 || parts.iter().take(2).any(|p| p.is_empty()) {
        return Err(JwtError::NotAJwt { parts: parts.len() });
    }
    let header = decode_object(parts[0], "header")?;
    if header.get("alg").is_some_and(|a| !a.is_string()) {
        return Err(JwtError::BadJson {
            part: "header",
            detail: " (alg is not a string)",
        });
    }
    let payload = decode_object(parts[1], "payload")?;
    Ok(Claims {
        exp: numeric_date(payload.get("exp"), "exp")?,
        iat: numeric_date(payload.get("iat"), "iat")?,
        sub: match payload.get("sub") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(JwtError::BadJson {
                    part: "payload",
                    detail: " (sub is not a string)",
                });
            }
        },
        scopes: scopes(payload.get("scopes").or_else(|| payload.get("scope"))),
    })
}

fn decode_object(
    part: &str,
    name: &'static str,
) -> Result<serde_json::Map<String, Value>, JwtError> {
    // Accept padded base64url too: some issuers keep the '='.
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| JwtError::BadBase64 { part: name })?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(JwtError::BadJson {
            part: name,
            detail: "",
        }),
        Err(_) => Err(JwtError::BadJson {
            part: name,
            detail: " (unparseable)",
        }),
    }
}

/// RFC 7519 NumericDate: a JSON number, possibly with a fraction (truncated here).
fn numeric_date(value: Option<&Value>, name: &'static str) -> Result<Option<i64>, JwtError> {
    let detail = match name {
        "exp" => " (exp is not a number)",
        _ => " (iat is not a number)",
    };
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 1e15)
                    .map(|f| f as i64)
            })
            .map(Some)
            .ok_or(JwtError::BadJson {
                part: "payload",
                detail,
            }),
        Some(_) => Err(JwtError::BadJson {
            part: "payload",
            detail,
        }),
    }
}

fn scopes(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn jwt(payload: &str) -> String {
        format!(
            "{}.{}.c2lnbmF0dXJl",
            b64(r#"{"alg":"HS256","typ":"JWT"}"#),
            b64(payload)
        )
    }

    #[test]
    fn reads_claims() {
        let t = jwt(
            r#"{"exp":1700003600,"iat":1700000000,"sub":"acc-1","scopes":["TILE","ONM"],"x":{"y":1}}"#,
        );
        let c = decode_claims(&t).unwrap();
        assert_eq!(
            c,
            Claims {
                exp: Some(1_700_003_600),
                iat: Some(1_700_000_000),
                sub: Some("acc-1".into()),
                scopes: vec!["TILE".into(), "ONM".into()],
            }
        );
        assert_eq!(c.expires_at().unwrap().as_second(), 1_700_003_600);
        assert_eq!(c.issued_at().unwrap().as_second(), 1_700_000_000);
    }

    #[test]
    fn optional_claims_and_variants() {
        let c = decode_claims(&jwt("{}")).unwrap();
        assert_eq!(c, Claims::default());
        assert_eq!(c.expires_at(), None);
        let c = decode_claims(&jwt(r#"{"exp":1700000000.75,"scope":"TILE MATRIX"}"#)).unwrap();
        assert_eq!(c.exp, Some(1_700_000_000));
        assert_eq!(c.scopes, vec!["TILE", "MATRIX"]);
        // Padded base64 and surrounding whitespace are tolerated; an empty signature is fine.
        let padded = format!("{}=.{}==.", b64(r#"{"alg":"none"}"#), b64(r#"{"exp":5}"#));
        assert_eq!(decode_claims(&format!(" {padded}\n")).unwrap().exp, Some(5));
    }

    #[test]
    fn rejects_non_jwts_without_echoing_them() {
        let secret = "not-a-jwt-secret-value";
        let e = decode_claims(secret).unwrap_err();
        assert_eq!(e, JwtError::NotAJwt { parts: 1 });
        assert!(!e.to_string().contains(secret));
        assert_eq!(
            decode_claims("a.b.c.d").unwrap_err(),
            JwtError::NotAJwt { parts: 4 }
        );
        assert_eq!(
            decode_claims("").unwrap_err(),
            JwtError::NotAJwt { parts: 1 }
        );
        assert!(matches!(
            decode_claims("..sig").unwrap_err(),
            JwtError::NotAJwt { .. }
        ));
        let e = decode_claims("secret!!.secret$$.sig").unwrap_err();
        assert_eq!(e, JwtError::BadBase64 { part: "header" });
        assert!(!e.to_string().contains("secret"));
        let bad_payload = format!("{}.%%%.sig", b64("{}"));
        assert_eq!(
            decode_claims(&bad_payload).unwrap_err(),
            JwtError::BadBase64 { part: "payload" }
        );
        let not_json = format!("{}.{}.sig", b64("{}"), b64("secret text"));
        let e = decode_claims(&not_json).unwrap_err();
        assert!(matches!(
            e,
            JwtError::BadJson {
                part: "payload",
                ..
            }
        ));
        assert!(!e.to_string().contains("secret"));
        let array = format!("{}.{}.sig", b64("{}"), b64("[1,2]"));
        assert!(matches!(
            decode_claims(&array).unwrap_err(),
            JwtError::BadJson {
                part: "payload",
                ..
            }
        ));
        assert!(matches!(
            decode_claims(&jwt(r#"{"exp":"soon"}"#)).unwrap_err(),
            JwtError::BadJson { .. }
        ));
        assert!(matches!(
            decode_claims(&jwt(r#"{"sub":5}"#)).unwrap_err(),
            JwtError::BadJson { .. }
        ));
    }
}
