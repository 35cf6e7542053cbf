//! The enumerations of the Gebeta API, shared by the client, the simulator and the CRDs.
//! All values here are [doc] in shared/gebeta-api/README.md.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The platform a service account is issued for.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Platform {
    Web,
    Android,
    Ios,
    Desktop,
    /// A value this operator does not know, sent by the API (the raw value is kept in
    /// `Account::unknown`). Never sent to the API, never in a spec or the CRD schema.
    #[serde(skip)]
    Unknown,
}

/// A permission granted to a service account.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Scope {
    Tile,
    Matrix,
    Onm,
    Direction,
    Tss,
    Geocoding,
    ReverseGeocoding,
    /// A value this operator does not know, sent by the API (the raw value is kept in
    /// `Account::unknown`). Never sent to the API, never in a spec or the CRD schema.
    #[serde(skip)]
    Unknown,
}

/// The lifecycle state of a service account upstream.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "UPPERCASE")]
pub enum AccountState {
    Active,
    Suspended,
    Revoked,
    /// A value this operator does not know, sent by the API (the raw value is kept in
    /// `Account::unknown`). Never sent to the API, never in a spec or the CRD schema.
    #[serde(skip)]
    Unknown,
}

impl Platform {
    /// Every platform the API knows (all but [`Platform::Unknown`]).
    pub const ALL: [Platform; 4] = [
        Platform::Web,
        Platform::Android,
        Platform::Ios,
        Platform::Desktop,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Web => "WEB",
            Platform::Android => "ANDROID",
            Platform::Ios => "IOS",
            Platform::Desktop => "DESKTOP",
            Platform::Unknown => "UNKNOWN",
        }
    }
}

impl Scope {
    /// Every scope the API knows (all but [`Scope::Unknown`]).
    pub const ALL: [Scope; 7] = [
        Scope::Tile,
        Scope::Matrix,
        Scope::Onm,
        Scope::Direction,
        Scope::Tss,
        Scope::Geocoding,
        Scope::ReverseGeocoding,
    ];
}

impl AccountState {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountState::Active => "ACTIVE",
            AccountState::Suspended => "SUSPENDED",
            AccountState::Revoked => "REVOKED",
            AccountState::Unknown => "UNKNOWN",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_the_contract() {
        let scopes =
            serde_json::to_value([Scope::ReverseGeocoding, Scope::Onm, Scope::Tss]).unwrap();
        assert_eq!(
            scopes,
            serde_json::json!(["REVERSEGEOCODING", "ONM", "TSS"])
        );
        assert_eq!(serde_json::to_value(Platform::Ios).unwrap(), "IOS");
        assert_eq!(
            serde_json::from_str::<AccountState>("\"REVOKED\"").unwrap(),
            AccountState::Revoked
        );
        assert!(serde_json::from_str::<Platform>("\"LINUX\"").is_err());
        // The stand-in for values from the API that this operator does not know is never
        // read from or written to the wire.
        assert!(serde_json::from_str::<Platform>("\"Unknown\"").is_err());
        assert!(serde_json::to_value(AccountState::Unknown).is_err());
    }

    /// The values of a string enum's JSON schema.
    fn schema_values<T: JsonSchema>() -> Vec<serde_json::Value> {
        let schema = schemars::schema_for!(T);
        let values = crate::crd::common::enum_values(&schema);
        assert!(!values.is_empty(), "not a string enum: {schema:?}");
        values
    }

    #[test]
    fn all_lists_every_known_value() {
        assert_eq!(
            serde_json::to_value(Scope::ALL).unwrap(),
            serde_json::Value::Array(schema_values::<Scope>())
        );
        assert_eq!(
            serde_json::to_value(Platform::ALL).unwrap(),
            serde_json::Value::Array(schema_values::<Platform>())
        );
    }
}
