//! The simulator's access tokens: real HS256 JWTs (header `{"alg":"HS256","typ":"JWT"}`,
//! claims `iss`, `sub`, `iat`, `exp`, `scopes`, `jti`), signed with `ring::hmac`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::gebeta::model::Scope;

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct SimClaims {
    pub iss: String,
    pub sub: String,
    /// The client account ("authorized party").
    #[serde(default)]
    pub azp: String,
    pub iat: i64,
    pub exp: i64,
    pub scopes: Vec<Scope>,
    pub jti: String,
}

pub(crate) fn sign(key: &hmac::Key, claims: &SimClaims) -> String {
    let header = URL_SAFE_NO_PAD.encode(HEADER);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"));
    let input = format!("{header}.{payload}");
    let tag = hmac::sign(key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// Why a bearer token was refused (for logs; the API answer is always the same 401).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    Malformed,
    BadSignature,
    Expired,
}

/// Checks the signature, the algorithm and `exp > now`.
pub(crate) fn verify(key: &hmac::Key, token: &str, now: i64) -> Result<SimClaims, Rejection> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Rejection::Malformed);
    };
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| Rejection::Malformed)?;
    let input_len = h.len() + 1 + p.len();
    hmac::verify(key, &token.as_bytes()[..input_len], &sig).map_err(|_| Rejection::BadSignature)?;
    let header: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(h)
            .map_err(|_| Rejection::Malformed)?,
    )
    .map_err(|_| Rejection::Malformed)?;
    if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err(Rejection::Malformed);
    }
    let claims: SimClaims = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| Rejection::Malformed)?,
    )
    .map_err(|_| Rejection::Malformed)?;
    if claims.exp <= now {
        return Err(Rejection::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> SimClaims {
        SimClaims {
            iss: "gebeta-sim".into(),
            sub: "acc".into(),
            azp: "client".into(),
            iat: 100,
            exp,
            scopes: vec![Scope::Tile],
            jti: "j".into(),
        }
    }

    #[test]
    fn round_trip_and_rejections() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"k1");
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"k2");
        let t = sign(&key, &claims(200));
        assert_eq!(verify(&key, &t, 150), Ok(claims(200)));
        assert_eq!(verify(&key, &t, 200), Err(Rejection::Expired));
        assert_eq!(verify(&other, &t, 150), Err(Rejection::BadSignature));
        assert_eq!(verify(&key, "a.b", 150), Err(Rejection::Malformed));
        assert_eq!(
            verify(&key, &format!("{t}.x"), 150),
            Err(Rejection::Malformed)
        );
        // The client's pure decoder reads what the sim signs.
        let c = crate::gebeta::jwt::decode_claims(&t).unwrap();
        assert_eq!(
            (c.exp, c.iat, c.sub.as_deref()),
            (Some(200), Some(100), Some("acc"))
        );
        assert_eq!(c.scopes, vec!["TILE"]);
        // Tampered payload with the original signature fails.
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(10_000)).unwrap());
        parts[1] = &forged;
        assert_eq!(
            verify(&key, &parts.join("."), 150),
            Err(Rejection::BadSignature)
        );
    }
}
