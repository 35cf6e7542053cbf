//! The client's domain types: what controllers see, independent of the wire shapes.

use super::model::{AccountState, Platform, Scope};
use super::token::Token;
use super::wire::{AccountWire, Lenient};

/// The configuration of a service account, as sent at creation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountConfig {
    pub platform: Platform,
    pub is_admin: bool,
    pub description: String,
    pub scopes: Vec<Scope>,
}

/// A service account as the API reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub platform: Platform,
    pub is_admin: bool,
    pub description: String,
    pub scopes: Vec<Scope>,
    pub status: AccountState,
    /// RFC 3339, when the server sends it.
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    /// Values the API sent that this operator does not know, e.g. `status "LOCKED"` (their
    /// fields hold the `Unknown` variant).
    pub unknown: Vec<String>,
}

impl From<AccountWire> for Account {
    fn from(w: AccountWire) -> Self {
        let mut unknown = Vec::new();
        let platform = known(&mut unknown, "platform", w.platform, Platform::Unknown);
        let status = known(&mut unknown, "status", w.status, AccountState::Unknown);
        let scopes = w
            .scopes
            .into_iter()
            .map(|s| known(&mut unknown, "scope", s, Scope::Unknown))
            .collect();
        Account {
            id: w.id,
            platform,
            is_admin: w.is_admin,
            description: w.description,
            scopes,
            status,
            created_at: w.created_at,
            updated_at: w.updated_at,
            unknown,
        }
    }
}

/// The known value, or `fallback` with the raw value noted in `unknown`.
fn known<T>(unknown: &mut Vec<String>, field: &str, value: Lenient<T>, fallback: T) -> T {
    match value {
        Lenient::Known(v) => v,
        Lenient::Unknown(raw) => {
            unknown.push(format!("{field} {raw:?}"));
            fallback
        }
    }
}

impl Account {
    /// The state, when it is one this operator knows.
    pub fn known_state(&self) -> Option<AccountState> {
        (self.status != AccountState::Unknown).then_some(self.status)
    }
}

/// A freshly created account and its token (returned once, only at creation).
#[derive(Clone, Debug)]
pub struct CreatedAccount {
    pub account: Account,
    pub token: Token,
}

/// A change to an account: only the fields that are `Some` are sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountPatch {
    pub status: Option<AccountState>,
    pub description: Option<String>,
    pub scopes: Option<Vec<Scope>>,
}

impl AccountPatch {
    pub fn is_empty(&self) -> bool {
        self.status.is_none() && self.description.is_none() && self.scopes.is_none()
    }
}

/// The answer of auth and refresh. `refresh_token` is `None` when refresh did not rotate.
#[derive(Clone, Debug)]
pub struct TokenPair {
    pub access_token: Token,
    pub refresh_token: Option<Token>,
}
