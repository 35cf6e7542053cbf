//! Every **[assumed]** detail of the Gebeta API lives here: paths, verbs, query parameters,
//! request bodies and response envelopes (see shared/gebeta-api/README.md). Adapting the
//! client to the live API should be a change to this file only. The simulator (`crate::sim`)
//! serves the same paths and verbs, taken from the constants below.
//!
//! Facts marked [doc] come from the public documentation and are unlikely to change.

use std::borrow::Cow;

use reqwest::Method;
use serde::{Deserialize, Deserializer, Serialize};

use super::model::{AccountState, Platform, Scope};

/// [doc] production base URL.
pub const DEFAULT_BASE_URL: &str = "https://mapapi.gebeta.app/api/v1";

/// Paths relative to the base URL (which ends in `/api/v1`).
pub mod paths {
    /// [assumed] `POST` creates an account.
    pub const ACCOUNTS: &str = "/service-accounts";
    /// [doc] "organization list endpoint"; [assumed] its path.
    pub const ORGANIZATION: &str = "/service-accounts/organization";
    /// [assumed] `GET`/`PATCH`/`DELETE {ACCOUNT_PREFIX}/{id}`.
    pub const ACCOUNT_PREFIX: &str = "/service-accounts";
    /// [doc]
    pub const AUTH: &str = "/external/auth";
    /// [doc]
    pub const REFRESH: &str = "/external/refresh";
    /// [doc] a data endpoint that takes the access token (the simulator serves it).
    pub const ROUTE: &str = "/route";
}

/// [assumed] verbs of the management endpoints.
pub const CREATE_METHOD: Method = Method::POST;
pub const GET_METHOD: Method = Method::GET;
pub const PATCH_METHOD: Method = Method::PATCH;
pub const DELETE_METHOD: Method = Method::DELETE;
pub const LIST_METHOD: Method = Method::GET;

/// [assumed] paging query parameters of the organization list, and their bounds.
pub const PAGE_PARAM: &str = "page";
pub const LIMIT_PARAM: &str = "limit";
pub const MAX_PAGE_LIMIT: u32 = 100;
pub const DEFAULT_PAGE_LIMIT: u32 = 50;

/// [assumed] the HTTP statuses that mean "deleted".
pub fn is_delete_success(status: u16) -> bool {
    matches!(status, 200 | 204)
}

/// [doc] configuration fields; [assumed] that create takes exactly them.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccountConfigWire {
    pub platform: Platform,
    pub is_admin: bool,
    pub description: String,
    pub scopes: Vec<Scope>,
}

/// [assumed] PATCH body: any of `status`, `description`, `scopes`.
#[derive(Serialize, Debug, Clone, Default, PartialEq)]
pub struct AccountPatchWire<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<AccountState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<&'a [Scope]>,
}

/// [doc] body of `POST /external/auth`.
#[derive(Serialize, Deserialize)]
pub struct AuthRequestWire<'a> {
    pub client_token: Cow<'a, str>,
    pub server_token: Cow<'a, str>,
}

/// [doc] body of `POST /external/refresh`.
#[derive(Serialize, Deserialize)]
pub struct RefreshRequestWire<'a> {
    pub refresh_token: Cow<'a, str>,
}

/// [doc] every success body is wrapped in `{"data": ...}`.
#[derive(Deserialize)]
pub struct Envelope<T> {
    pub data: T,
}

/// [assumed] the account object: `id`, `status`, `createdAt`, `updatedAt` added by the
/// server. Unknown fields are ignored; `description`/`scopes`/`isAdmin` may be absent.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccountWire {
    pub id: String,
    pub platform: Lenient<Platform>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub is_admin: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub description: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub scopes: Vec<Lenient<Scope>>,
    pub status: Lenient<AccountState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// An enum value in an answer: one this operator knows, or the string the API sent. A new
/// scope, platform or status upstream must not make a whole listing unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lenient<T> {
    Known(T),
    Unknown(String),
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Ok(
            match serde_json::from_value(serde_json::Value::String(raw.clone())) {
                Ok(known) => Lenient::Known(known),
                Err(_) => Lenient::Unknown(raw),
            },
        )
    }
}

impl<T: Serialize> Serialize for Lenient<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Lenient::Known(v) => v.serialize(s),
            Lenient::Unknown(raw) => raw.serialize(s),
        }
    }
}

/// [assumed] create answers the account with its token beside the account fields.
#[derive(Deserialize)]
pub struct CreatedAccountWire {
    #[serde(flatten)]
    pub account: AccountWire,
    pub token: String,
}

/// [assumed] organization list page.
#[derive(Deserialize)]
pub struct AccountPageWire {
    #[serde(deserialize_with = "null_as_default", default)]
    pub data: Vec<AccountWire>,
    #[serde(default)]
    pub meta: Option<PageMetaWire>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageMetaWire {
    #[serde(default)]
    pub page: Option<u64>,
    #[serde(default)]
    pub limit: Option<u64>,
    #[serde(default)]
    pub total: Option<u64>,
}

/// [doc] `{"accessToken", "refreshToken"}`; [assumed] refresh may rotate `refreshToken`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenPairWire {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
}

/// [doc] error bodies: `{"error": "...", "code": "..."}`; any other shape is ignored.
#[derive(Deserialize, Default)]
pub struct ErrorBody {
    #[serde(default)]
    error: serde_json::Value,
    #[serde(default)]
    code: serde_json::Value,
}

impl ErrorBody {
    pub fn error(&self) -> Option<&str> {
        self.error.as_str()
    }
    pub fn code(&self) -> Option<&str> {
        self.code.as_str()
    }
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_tolerates_missing_and_unknown_fields() {
        let a: AccountWire = serde_json::from_str(
            r#"{"id":"a1","platform":"WEB","status":"ACTIVE","description":null,"extra":{"x":1},"organizationId":"o"}"#,
        )
        .unwrap();
        assert_eq!(a.description, "");
        assert!(a.scopes.is_empty());
        assert!(!a.is_admin);
        assert_eq!(a.created_at, None);
    }

    #[test]
    fn unknown_enum_values_are_kept_not_fatal() {
        let page: AccountPageWire = serde_json::from_str(
            r#"{"data":[
                {"id":"a1","platform":"LINUX","status":"LOCKED","scopes":["TILE","TRAFFIC"]},
                {"id":"a2","platform":"WEB","status":"ACTIVE","scopes":["TILE"]}
            ],"meta":{"total":2}}"#,
        )
        .unwrap();
        let odd = &page.data[0];
        assert_eq!(odd.platform, Lenient::Unknown("LINUX".into()));
        assert_eq!(odd.status, Lenient::Unknown("LOCKED".into()));
        assert_eq!(
            odd.scopes,
            [
                Lenient::Known(Scope::Tile),
                Lenient::Unknown("TRAFFIC".into())
            ]
        );
        assert_eq!(page.data[1].status, Lenient::Known(AccountState::Active));
        // Written back as they came (the simulator serves such values).
        let again = serde_json::to_value(odd).unwrap();
        assert_eq!(again["status"], "LOCKED");
        assert_eq!(again["scopes"][1], "TRAFFIC");
    }

    #[test]
    fn created_account_carries_the_token() {
        let c: Envelope<CreatedAccountWire> = serde_json::from_str(
            r#"{"data":{"id":"a1","platform":"IOS","isAdmin":true,"description":"d","scopes":["TILE"],"status":"ACTIVE","createdAt":"2024-01-01T00:00:00Z","token":"t"}}"#,
        )
        .unwrap();
        assert_eq!(c.data.token, "t");
        assert_eq!(c.data.account.scopes, vec![Lenient::Known(Scope::Tile)]);
        assert!(c.data.account.is_admin);
    }

    #[test]
    fn patch_serializes_only_present_fields() {
        let p = AccountPatchWire {
            status: Some(AccountState::Suspended),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"status":"SUSPENDED"}"#
        );
    }
}
