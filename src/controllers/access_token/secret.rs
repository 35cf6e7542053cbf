//! The two Secrets a `GebetaAccessToken` owns, as pure functions: what they should contain,
//! what the current ones hold, whether they are ours, and whether a write is needed.
//!
//! - the **target Secret** (`spec.secretName`), which workloads mount: `<tokenKey>` = the access
//!   token and `<expiresAtKey>` = its expiry (RFC 3339), plus the template's type, labels and
//!   annotations, and the token's effective times (see `schedule.rs`) in the annotations
//!   `gebeta.app/token-issued-at` and `gebeta.app/token-expires-at`: written in the same
//!   request as the token they describe, so they can never describe another one;
//! - the **refresh Secret** (`<name>-gebeta-refresh`), which only the operator reads:
//!   `refreshToken` and `sourceFingerprint` (SHA-256 of the client and server tokens the
//!   session was opened with, to notice a change of either). It changes only when one of them
//!   does, so a refresh that does not rotate the refresh token does not rewrite it. (Versions
//!   before 0.2 kept the token's times here, as `accessTokenIssuedAt`, `accessTokenExpiresAt`
//!   and `accessTokenDigest`; they are still read, and dropped at the next write.)
//!
//! Both carry `app.kubernetes.io/managed-by: gebeta-operator`,
//! `gebeta.app/access-token: <object name>` and a controller owner reference to the object, so
//! deleting the object deletes them (garbage collection). The refresh Secret also carries
//! `gebeta.app/refresh-for: <object name>`.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use k8s_openapi::{
    ByteString,
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, ObjectMeta, OwnerReference},
};
use kube::{Resource, ResourceExt};

use crate::{
    controllers::{FIELD_MANAGER, MANAGED_BY, MANAGED_BY_LABEL, conditions::format_time},
    crd::{
        GebetaAccessToken,
        access_token::{DEFAULT_EXPIRES_AT_KEY, DEFAULT_TOKEN_KEY},
    },
    gebeta::Token,
};

use super::schedule::TokenTimes;

/// Label on both Secrets: the name of the `GebetaAccessToken` they belong to.
pub const ACCESS_TOKEN_LABEL: &str = "gebeta.app/access-token";
/// Label on the refresh Secret only: the name of the `GebetaAccessToken` it serves.
pub const REFRESH_FOR_LABEL: &str = "gebeta.app/refresh-for";
/// Suffix of the refresh Secret's name.
pub const REFRESH_SECRET_SUFFIX: &str = "-gebeta-refresh";

pub const REFRESH_TOKEN_KEY: &str = "refreshToken";
pub const SOURCE_FINGERPRINT_KEY: &str = "sourceFingerprint";
/// Upstream account ids of the source GebetaServiceAccounts the session was opened with,
/// comma-separated (see `GebetaAccessTokenStatus::source_account_ids`).
pub const SOURCE_ACCOUNTS_KEY: &str = "sourceAccounts";
pub const ACCESS_DIGEST_KEY: &str = "accessTokenDigest";
pub const ACCESS_ISSUED_AT_KEY: &str = "accessTokenIssuedAt";
pub const ACCESS_EXPIRES_AT_KEY: &str = "accessTokenExpiresAt";
/// Annotation on the target Secret: the token's effective issue time.
pub const ISSUED_AT_ANNOTATION: &str = "gebeta.app/token-issued-at";
/// Annotation on the target Secret: the token's effective expiry time.
pub const EXPIRES_AT_ANNOTATION: &str = "gebeta.app/token-expires-at";

const MAX_NAME: usize = 253;

/// Name of the refresh Secret of object `name`: `<name>-gebeta-refresh`, shortened with a
/// hash when that would exceed 253 characters.
pub fn refresh_secret_name(name: &str) -> String {
    if name.len() + REFRESH_SECRET_SUFFIX.len() <= MAX_NAME {
        return format!("{name}{REFRESH_SECRET_SUFFIX}");
    }
    let hash = &hex(ring::digest::digest(&ring::digest::SHA256, name.as_bytes()).as_ref())[..8];
    let keep = MAX_NAME - REFRESH_SECRET_SUFFIX.len() - hash.len() - 1;
    let prefix = name[..keep].trim_end_matches(['-', '.']);
    format!("{prefix}-{hash}{REFRESH_SECRET_SUFFIX}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 (hex) of the client and server tokens, length-prefixed so that no two different
/// pairs share an input.
pub fn source_fingerprint(client: &Token, server: &Token) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for token in [client, server] {
        let bytes = token.expose().as_bytes();
        ctx.update(&(bytes.len() as u64).to_be_bytes());
        ctx.update(bytes);
    }
    hex(ctx.finish().as_ref())
}

/// SHA-256 (hex) of an access token.
pub fn token_digest(token: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

/// The key names of the target Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    pub token: String,
    pub expires_at: String,
}

impl Keys {
    pub fn of(obj: &GebetaAccessToken) -> Keys {
        let template = obj.spec.secret_template.as_ref();
        Keys {
            token: template
                .and_then(|t| t.token_key.clone())
                .unwrap_or_else(|| DEFAULT_TOKEN_KEY.into()),
            expires_at: template
                .and_then(|t| t.expires_at_key.clone())
                .unwrap_or_else(|| DEFAULT_EXPIRES_AT_KEY.into()),
        }
    }
}

pub use crate::controllers::is_ours;

fn owner_reference(obj: &GebetaAccessToken) -> OwnerReference {
    OwnerReference {
        api_version: GebetaAccessToken::api_version(&()).into_owned(),
        kind: GebetaAccessToken::kind(&()).into_owned(),
        name: obj.name_any(),
        uid: obj.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn base_labels(obj: &GebetaAccessToken) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (ACCESS_TOKEN_LABEL.to_string(), obj.name_any()),
    ])
}

fn secret(name: String, obj: &GebetaAccessToken, labels: BTreeMap<String, String>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: obj.namespace(),
            labels: Some(labels),
            owner_references: Some(vec![owner_reference(obj)]),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The target Secret holding `access_token` with its effective `times`.
pub fn target_secret(obj: &GebetaAccessToken, access_token: &str, times: &TokenTimes) -> Secret {
    let template = obj.spec.secret_template.clone().unwrap_or_default();
    let keys = Keys::of(obj);
    let mut labels = template.labels;
    labels.extend(base_labels(obj));
    let mut s = secret(obj.spec.secret_name.clone(), obj, labels);
    let mut annotations = template.annotations;
    annotations.insert(
        ISSUED_AT_ANNOTATION.to_string(),
        times.issued_at.to_string(),
    );
    annotations.insert(
        EXPIRES_AT_ANNOTATION.to_string(),
        times.expires_at.to_string(),
    );
    s.metadata.annotations = Some(annotations);
    s.type_ = Some(template.type_.unwrap_or_else(|| "Opaque".into()));
    let mut data = BTreeMap::new();
    data.insert(
        keys.expires_at,
        ByteString(format_time(times.expires_at).into_bytes()),
    );
    data.insert(keys.token, ByteString(access_token.as_bytes().to_vec()));
    s.data = Some(data);
    s
}

/// What the refresh Secret holds.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct RefreshState {
    pub refresh_token: Option<Token>,
    pub source_fingerprint: Option<String>,
    /// Upstream accounts whose tokens opened the session (GebetaServiceAccount sources only).
    pub source_accounts: Vec<String>,
    /// Digest and effective times of the access token written with this state.
    pub access: Option<(String, TokenTimes)>,
}

impl std::fmt::Debug for RefreshState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshState")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("source_fingerprint", &self.source_fingerprint)
            .field("source_accounts", &self.source_accounts)
            .field("access", &self.access.as_ref().map(|(_, t)| t))
            .finish()
    }
}

impl RefreshState {
    pub fn from_secret(secret: &Secret) -> RefreshState {
        let get = |key: &str| read_value(secret, key);
        let parse = |key: &str| get(key).and_then(|v| v.parse::<Timestamp>().ok());
        let access = match (
            get(ACCESS_DIGEST_KEY),
            parse(ACCESS_ISSUED_AT_KEY),
            parse(ACCESS_EXPIRES_AT_KEY),
        ) {
            (Some(digest), Some(issued_at), Some(expires_at)) if issued_at < expires_at => Some((
                digest,
                TokenTimes {
                    issued_at,
                    expires_at,
                },
            )),
            _ => None,
        };
        RefreshState {
            refresh_token: get(REFRESH_TOKEN_KEY).map(Token::new),
            source_fingerprint: get(SOURCE_FINGERPRINT_KEY),
            source_accounts: get(SOURCE_ACCOUNTS_KEY)
                .map(|v| v.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
            access,
        }
    }

    /// The stored times, if they describe `token`.
    pub fn times_of(&self, token: &str) -> Option<TokenTimes> {
        let (digest, times) = self.access.as_ref()?;
        (*digest == token_digest(token)).then_some(*times)
    }
}

/// The effective times the target Secret records for the token it holds.
pub fn recorded_times(target: &Secret) -> Option<TokenTimes> {
    let annotations = target.metadata.annotations.as_ref()?;
    let parse = |key: &str| annotations.get(key)?.parse::<Timestamp>().ok();
    let (issued_at, expires_at) = (parse(ISSUED_AT_ANNOTATION)?, parse(EXPIRES_AT_ANNOTATION)?);
    (issued_at < expires_at).then_some(TokenTimes {
        issued_at,
        expires_at,
    })
}

/// The refresh Secret holding `state`'s refresh token and source fingerprint.
pub fn refresh_secret(obj: &GebetaAccessToken, state: &RefreshState) -> Secret {
    let mut labels = base_labels(obj);
    labels.insert(REFRESH_FOR_LABEL.to_string(), obj.name_any());
    let mut s = secret(refresh_secret_name(&obj.name_any()), obj, labels);
    s.type_ = Some("Opaque".into());
    let mut data = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        data.insert(k.to_string(), ByteString(v.as_bytes().to_vec()));
    };
    if let Some(token) = &state.refresh_token {
        put(REFRESH_TOKEN_KEY, token.expose());
    }
    if let Some(fp) = &state.source_fingerprint {
        put(SOURCE_FINGERPRINT_KEY, fp);
    }
    if !state.source_accounts.is_empty() {
        put(SOURCE_ACCOUNTS_KEY, &state.source_accounts.join(","));
    }
    s.data = Some(data);
    s
}

/// The value of `key` as trimmed UTF-8, `None` when absent, empty or not UTF-8.
pub fn read_value(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    let text = std::str::from_utf8(&bytes.0).ok()?.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// Why a value read from an input Secret is unusable as a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueProblem {
    Missing,
    Empty,
    Malformed,
}

/// Reads an input token: surrounding whitespace (a trailing newline from `echo`) is dropped;
/// an empty value, invalid UTF-8 or whitespace/control characters inside are refused.
pub fn read_input_token(secret: &Secret, key: &str) -> Result<Token, ValueProblem> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or(ValueProblem::Missing)?;
    let text = std::str::from_utf8(&bytes.0)
        .map_err(|_| ValueProblem::Malformed)?
        .trim();
    if text.is_empty() {
        return Err(ValueProblem::Empty);
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ValueProblem::Malformed);
    }
    Ok(Token::new(text))
}

/// Whether the Secret's type must change (types are immutable: delete and recreate).
pub fn type_differs(current: &Secret, desired: &Secret) -> bool {
    let ty = |s: &Secret| s.type_.clone().unwrap_or_else(|| "Opaque".into());
    ty(current) != ty(desired)
}

/// The parts of our managed-fields entry that [`needs_apply`] reads, as (name in the compact
/// form, path in the API server's tree).
const APPLIED_SECTIONS: [(&str, &[&str]); 3] = [
    ("labels", &["metadata", "labels"]),
    ("annotations", &["metadata", "annotations"]),
    ("data", &["data"]),
];

fn is_our_apply(entry: &ManagedFieldsEntry) -> bool {
    entry.manager.as_deref() == Some(FIELD_MANAGER)
        && entry.operation.as_deref() == Some("Apply")
        && entry.subresource.as_deref().unwrap_or_default().is_empty()
}

/// Cuts the managed fields of a cached owned Secret down to what [`needs_apply`] reads: the
/// keys this operator applied under labels, annotations and data, as one string of lines
/// `<section>:<key> <key>…` (keys of labels, annotations and data cannot hold whitespace).
/// The API server's tree is a JSON map per level and cost more than the rest of the Secret:
/// measured 7.8 KiB per cached token Secret with it, 3.5 KiB compacted, which is most of the
/// operator's memory at thousands of tokens. Other managers' entries are dropped. The cached
/// copy is only read, never written back.
pub fn compact_managed_fields(s: &mut Secret) {
    let Some(entries) = s.metadata.managed_fields.take() else {
        return;
    };
    s.metadata.managed_fields = entries.into_iter().find(is_our_apply).map(|entry| {
        let lines: Vec<String> = APPLIED_SECTIONS
            .iter()
            .map(|(name, path)| {
                let keys: Vec<String> = applied_keys(&entry, path).into_iter().collect();
                format!("{name}:{}", keys.join(" "))
            })
            .collect();
        vec![ManagedFieldsEntry {
            manager: entry.manager,
            operation: entry.operation,
            fields_v1: Some(FieldsV1(serde_json::Value::String(lines.join("\n")))),
            ..Default::default()
        }]
    });
}

/// Keys under `path` in one managed-fields entry, in the API server's tree or in the compact
/// form of [`compact_managed_fields`].
fn applied_keys(entry: &ManagedFieldsEntry, path: &[&str]) -> BTreeSet<String> {
    let Some(fields) = entry.fields_v1.as_ref() else {
        return BTreeSet::new();
    };
    if let Some(compact) = fields.0.as_str() {
        let section = APPLIED_SECTIONS
            .iter()
            .find(|(_, p)| *p == path)
            .map(|(name, _)| *name);
        return compact
            .lines()
            .filter_map(|line| line.split_once(':'))
            .filter(|(name, _)| Some(*name) == section)
            .flat_map(|(_, keys)| keys.split_whitespace().map(str::to_string))
            .collect();
    }
    let mut node = Some(&fields.0);
    for segment in path {
        node = node.and_then(|n| n.get(format!("f:{segment}")));
    }
    node.and_then(|n| n.as_object())
        .map(|map| {
            map.keys()
                .filter_map(|k| k.strip_prefix("f:"))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Keys under `path` in the fields this operator last applied to `meta`.
fn applied_keys_of(meta: &ObjectMeta, path: &[&str]) -> BTreeSet<String> {
    meta.managed_fields
        .iter()
        .flatten()
        .filter(|e| is_our_apply(e))
        .flat_map(|e| applied_keys(e, path))
        .collect()
}

fn map_in_sync<V: PartialEq>(
    current: Option<&BTreeMap<String, V>>,
    desired: Option<&BTreeMap<String, V>>,
    applied: BTreeSet<String>,
) -> bool {
    let empty = BTreeMap::new();
    let current = current.unwrap_or(&empty);
    let desired = desired.unwrap_or(&empty);
    desired.iter().all(|(k, v)| current.get(k) == Some(v))
        && applied
            .iter()
            .all(|k| desired.contains_key(k) || !current.contains_key(k))
}

/// Whether applying `desired` would change `current`: a desired label, annotation, data key,
/// type or owner reference differs, or a key this operator applied before is no longer
/// desired but still present. Keys added by others are ignored (an apply keeps them).
pub fn needs_apply(current: &Secret, desired: &Secret) -> bool {
    let (cm, dm) = (&current.metadata, &desired.metadata);
    let owner_ok = dm.owner_references.iter().flatten().all(|want| {
        cm.owner_references.iter().flatten().any(|have| {
            have.uid == want.uid && have.controller == want.controller && have.name == want.name
        })
    });
    !(owner_ok
        && !type_differs(current, desired)
        && map_in_sync(
            cm.labels.as_ref(),
            dm.labels.as_ref(),
            applied_keys_of(cm, &["metadata", "labels"]),
        )
        && map_in_sync(
            cm.annotations.as_ref(),
            dm.annotations.as_ref(),
            applied_keys_of(cm, &["metadata", "annotations"]),
        )
        && map_in_sync(
            current.data.as_ref(),
            desired.data.as_ref(),
            applied_keys_of(cm, &["data"]),
        ))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::crd::{
        GebetaAccessTokenSpec, SecretKeySelector,
        access_token::{SecretTemplate, TokenSource},
    };

    /// Object `maps` in namespace `ns` writing `maps-token`, both tokens from Secret `in`.
    pub(crate) fn gat(template: Option<SecretTemplate>) -> GebetaAccessToken {
        let source = TokenSource {
            service_account_ref: None,
            secret_key_ref: Some(SecretKeySelector {
                name: "in".into(),
                key: "k".into(),
            }),
        };
        let mut obj = GebetaAccessToken::new(
            "maps",
            GebetaAccessTokenSpec {
                client_token: source.clone(),
                server_token: source,
                secret_name: "maps-token".into(),
                secret_template: template,
                refresh_before: None,
                rollout_restart_targets: vec![],
                suspended: false,
            },
        );
        obj.metadata.namespace = Some("ns".into());
        obj.metadata.uid = Some("uid-1".into());
        obj
    }

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    /// A token issued an hour before `expires`.
    fn times(expires: Timestamp) -> TokenTimes {
        TokenTimes {
            issued_at: expires - jiff::SignedDuration::from_hours(1),
            expires_at: expires,
        }
    }

    /// What the API server would hold after our apply of `desired`.
    fn applied(desired: &Secret) -> Secret {
        let mut s = desired.clone();
        let keys = |m: Option<&BTreeMap<String, String>>| -> serde_json::Value {
            m.into_iter()
                .flatten()
                .map(|(k, _)| (format!("f:{k}"), serde_json::json!({})))
                .collect()
        };
        let data: serde_json::Value = desired
            .data
            .iter()
            .flatten()
            .map(|(k, _)| (format!("f:{k}"), serde_json::json!({})))
            .collect();
        s.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some(FIELD_MANAGER.into()),
            operation: Some("Apply".into()),
            fields_v1: Some(FieldsV1(serde_json::json!({
                "f:data": data,
                "f:metadata": {
                    "f:labels": keys(desired.metadata.labels.as_ref()),
                    "f:annotations": keys(desired.metadata.annotations.as_ref()),
                },
                "f:type": {},
            }))),
            ..Default::default()
        }]);
        s.metadata.resource_version = Some("7".into());
        s
    }

    #[test]
    fn target_secret_shape() {
        let template = SecretTemplate {
            type_: Some("example.com/token".into()),
            labels: BTreeMap::from([
                ("team".into(), "maps".into()),
                (MANAGED_BY_LABEL.into(), "someone".into()),
            ]),
            annotations: BTreeMap::from([("note".into(), "x".into())]),
            token_key: Some("GEBETA_TOKEN".into()),
            expires_at_key: None,
        };
        let s = target_secret(&gat(Some(template)), "a.b.c", &times(ts(1_800_000_000)));
        assert_eq!(s.metadata.name.as_deref(), Some("maps-token"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(s.type_.as_deref(), Some("example.com/token"));
        let labels = s.metadata.labels.clone().unwrap();
        assert_eq!(
            labels[MANAGED_BY_LABEL], MANAGED_BY,
            "ours wins over the template"
        );
        assert_eq!(labels[ACCESS_TOKEN_LABEL], "maps");
        assert_eq!(labels["team"], "maps");
        let annotations = s.metadata.annotations.clone().unwrap();
        assert_eq!(annotations["note"], "x");
        assert_eq!(recorded_times(&s), Some(times(ts(1_800_000_000))));
        assert_eq!(annotations[EXPIRES_AT_ANNOTATION], "2027-01-15T08:00:00Z");
        assert_eq!(read_value(&s, "GEBETA_TOKEN").as_deref(), Some("a.b.c"));
        assert_eq!(
            read_value(&s, "expiresAt").as_deref(),
            Some("2027-01-15T08:00:00Z")
        );
        assert_eq!(s.data.as_ref().unwrap().len(), 2);
        assert!(is_ours(&s.metadata, "uid-1"));
        assert!(!is_ours(&s.metadata, "uid-2"));
        let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("GebetaAccessToken", "maps")
        );
        assert_eq!(owner.api_version, "gebeta.app/v1alpha1");
        // Default shape.
        let s = target_secret(&gat(None), "a.b.c", &times(ts(1_800_000_000)));
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        assert_eq!(read_value(&s, "token").as_deref(), Some("a.b.c"));
        assert_eq!(
            s.metadata.annotations.as_ref().map(|a| a.len()),
            Some(2),
            "only the token's times"
        );
        assert_eq!(recorded_times(&Secret::default()), None);
    }

    #[test]
    fn foreign_secrets_are_not_ours() {
        let mut s = target_secret(&gat(None), "a.b.c", &times(ts(1_800_000_000)));
        s.metadata.labels = None;
        assert!(!is_ours(&s.metadata, "uid-1"), "no label");
        let mut s = target_secret(&gat(None), "a.b.c", &times(ts(1_800_000_000)));
        s.metadata.owner_references.as_mut().unwrap()[0].controller = Some(false);
        assert!(!is_ours(&s.metadata, "uid-1"), "not the controller");
        assert!(!is_ours(&ObjectMeta::default(), "uid-1"));
    }

    #[test]
    fn refresh_state_round_trip_and_redaction() {
        let times = TokenTimes {
            issued_at: ts(1_800_000_000),
            expires_at: ts(1_800_003_600),
        };
        let state = RefreshState {
            refresh_token: Some(Token::new("gbr_secret_value")),
            source_fingerprint: Some("fp".into()),
            source_accounts: vec!["acc-client".into(), "acc-server".into()],
            access: Some((token_digest("a.b.c"), times)),
        };
        let s = refresh_secret(&gat(None), &state);
        assert_eq!(s.metadata.name.as_deref(), Some("maps-gebeta-refresh"));
        assert_eq!(
            s.metadata.labels.as_ref().unwrap()[REFRESH_FOR_LABEL],
            "maps"
        );
        assert_eq!(
            s.metadata.labels.as_ref().unwrap()[ACCESS_TOKEN_LABEL],
            "maps"
        );
        let back = RefreshState::from_secret(&s);
        assert_eq!(
            back,
            RefreshState {
                access: None,
                ..state.clone()
            },
            "the token's times live in the target Secret now"
        );
        // Written by an earlier version: still read.
        let mut legacy = s.clone();
        let data = legacy.data.as_mut().unwrap();
        for (k, v) in [
            (ACCESS_DIGEST_KEY, token_digest("a.b.c")),
            (ACCESS_ISSUED_AT_KEY, times.issued_at.to_string()),
            (ACCESS_EXPIRES_AT_KEY, times.expires_at.to_string()),
        ] {
            data.insert(k.into(), ByteString(v.into_bytes()));
        }
        let back = RefreshState::from_secret(&legacy);
        assert_eq!(back, state);
        assert_eq!(back.times_of("a.b.c"), Some(times));
        assert_eq!(
            back.times_of("a.b.d"),
            None,
            "times belong to one token only"
        );
        assert!(!format!("{back:?}").contains("gbr_secret_value"));
        assert_eq!(
            RefreshState::from_secret(&Secret::default()),
            RefreshState::default()
        );
    }

    #[test]
    fn fingerprints_distinguish_pairs() {
        let fp = |a: &str, b: &str| source_fingerprint(&Token::new(a), &Token::new(b));
        assert_eq!(fp("ab", "c"), fp("ab", "c"));
        assert_ne!(fp("ab", "c"), fp("a", "bc"));
        assert_ne!(fp("ab", "c"), fp("c", "ab"));
        assert_eq!(fp("a", "b").len(), 64);
        assert!(!fp("secret-client", "secret-server").contains("secret"));
    }

    #[test]
    fn long_names_stay_valid() {
        assert_eq!(refresh_secret_name("maps"), "maps-gebeta-refresh");
        let long = format!("{}.{}", "a".repeat(200), "b".repeat(52));
        let name = refresh_secret_name(&long);
        assert!(name.len() <= 253, "{}", name.len());
        assert!(name.ends_with(REFRESH_SECRET_SUFFIX));
        assert_ne!(
            refresh_secret_name(&long),
            refresh_secret_name(&format!("{long}c"))
        );
    }

    #[test]
    fn input_tokens() {
        let mut s = Secret::default();
        let mut put = |k: &str, v: &[u8]| {
            s.data
                .get_or_insert_with(BTreeMap::new)
                .insert(k.into(), ByteString(v.to_vec()));
        };
        put("ok", b"tok_123\n");
        put("empty", b"  \n");
        put("spaces", b"tok 123");
        put("binary", &[0xff, 0xfe]);
        assert_eq!(read_input_token(&s, "ok").unwrap().expose(), "tok_123");
        assert_eq!(
            read_input_token(&s, "missing").unwrap_err(),
            ValueProblem::Missing
        );
        assert_eq!(
            read_input_token(&s, "empty").unwrap_err(),
            ValueProblem::Empty
        );
        assert_eq!(
            read_input_token(&s, "spaces").unwrap_err(),
            ValueProblem::Malformed
        );
        assert_eq!(
            read_input_token(&s, "binary").unwrap_err(),
            ValueProblem::Malformed
        );
    }

    #[test]
    fn writes_only_when_something_we_own_differs() {
        writes_only_when_something_we_own_differs_as(applied);
    }

    #[test]
    fn compacted_managed_fields_decide_writes_as_the_full_tree_does() {
        writes_only_when_something_we_own_differs_as(|desired| {
            let mut s = applied(desired);
            compact_managed_fields(&mut s);
            s
        });
    }

    #[test]
    fn compaction_keeps_only_our_applied_keys() {
        let desired = target_secret(&gat(None), "a.b.c", &times(ts(1_800_000_000)));
        let mut s = applied(&desired);
        let ours = s.metadata.managed_fields.as_ref().unwrap()[0].clone();
        s.metadata.managed_fields = Some(vec![
            ManagedFieldsEntry {
                manager: Some("kubectl".into()),
                operation: Some("Update".into()),
                fields_v1: Some(FieldsV1(serde_json::json!({
                    "f:metadata": {"f:labels": {"f:theirs": {}}}
                }))),
                ..Default::default()
            },
            ours,
        ]);
        compact_managed_fields(&mut s);
        let entries = s.metadata.managed_fields.as_ref().unwrap();
        assert_eq!(entries.len(), 1, "other managers' entries are dropped");
        assert_eq!(
            entries[0].fields_v1.as_ref().unwrap().0,
            serde_json::Value::String(
                "labels:app.kubernetes.io/managed-by gebeta.app/access-token\n\
                 annotations:gebeta.app/token-expires-at gebeta.app/token-issued-at\n\
                 data:expiresAt token"
                    .into()
            )
        );
        // A Secret without our entry keeps none.
        let mut foreign = applied(&desired);
        foreign.metadata.managed_fields.as_mut().unwrap()[0].manager = Some("kubectl".into());
        compact_managed_fields(&mut foreign);
        assert_eq!(foreign.metadata.managed_fields, None);
    }

    fn writes_only_when_something_we_own_differs_as(applied: impl Fn(&Secret) -> Secret) {
        let obj = gat(None);
        let desired = target_secret(&obj, "a.b.c", &times(ts(1_800_000_000)));
        let mut current = applied(&desired);
        assert!(!needs_apply(&current, &desired));
        // Someone else's additions are left alone.
        current
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("extra".into(), "1".into());
        current
            .data
            .as_mut()
            .unwrap()
            .insert("other".into(), ByteString(b"x".to_vec()));
        assert!(!needs_apply(&current, &desired));
        // A new token.
        assert!(needs_apply(
            &current,
            &target_secret(&obj, "a.b.d", &times(ts(1_800_000_000)))
        ));
        // A key we applied but no longer want (tokenKey renamed).
        let renamed = target_secret(
            &gat(Some(SecretTemplate {
                token_key: Some("t2".into()),
                ..Default::default()
            })),
            "a.b.c",
            &times(ts(1_800_000_000)),
        );
        let renamed_current = applied(&desired);
        assert!(needs_apply(&renamed_current, &renamed));
        // Edited by someone: our value comes back.
        let mut edited = applied(&desired);
        edited
            .data
            .as_mut()
            .unwrap()
            .insert("token".into(), ByteString(b"tampered".to_vec()));
        assert!(needs_apply(&edited, &desired));
        // Lost owner reference, changed type.
        let mut orphan = applied(&desired);
        orphan.metadata.owner_references = None;
        assert!(needs_apply(&orphan, &desired));
        let mut typed = applied(&desired);
        typed.type_ = Some("kubernetes.io/basic-auth".into());
        assert!(type_differs(&typed, &desired));
        assert!(needs_apply(&typed, &desired));
        assert!(
            !type_differs(&Secret::default(), &desired),
            "no type means Opaque"
        );
    }
}
