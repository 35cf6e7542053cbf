//! [`Token`]: every secret the client handles (service-account tokens, access tokens,
//! refresh tokens, user tokens) travels in this wrapper, whose `Debug` and `Display`
//! never show the value.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// A secret token. `Debug` and `Display` print `Token(<redacted>)`; the value is only
/// reachable through [`Token::expose`], so every place that reads it is greppable.
#[derive(Clone)]
pub struct Token(SecretString);

/// A Gebeta dashboard user token (management credential).
pub type UserToken = Token;

impl Token {
    pub fn new(value: impl Into<String>) -> Self {
        Token(SecretString::from(value.into()))
    }

    /// The secret value. Never log it or put it in an error message.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl From<String> for Token {
    fn from(value: String) -> Self {
        Token::new(value)
    }
}

impl From<&str> for Token {
    fn from(value: &str) -> Self {
        Token::new(value)
    }
}

/// Constant-time comparison (the length is not secret).
impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(self.expose().as_bytes(), other.expose().as_bytes())
    }
}

impl Eq for Token {}

/// Compares two byte strings in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let t = Token::new("super-secret-value");
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert_eq!(format!("{t}"), "Token(<redacted>)");
        assert_eq!(format!("{:?}", Some(t.clone())), "Some(Token(<redacted>))");
        assert_eq!(t.expose(), "super-secret-value");
    }

    #[test]
    fn equality() {
        assert_eq!(Token::new("abc"), Token::from("abc"));
        assert_ne!(Token::new("abc"), Token::new("abd"));
        assert_ne!(Token::new("abc"), Token::new("abcd"));
        assert!(Token::new("").is_empty());
    }
}
