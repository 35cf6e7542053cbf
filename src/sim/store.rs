//! The simulator's in-memory state and the API's rules, free of HTTP: accounts, tokens,
//! refresh tokens, injected faults and call counters. Guarded by one std `Mutex`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::fault::{ANY_ENDPOINT, Fault};
use crate::gebeta::endpoint;
use crate::gebeta::model::{AccountState, Platform, Scope};
use crate::gebeta::wire::{AccountConfigWire, AccountWire, Lenient, PageMetaWire};

/// Longest description accepted (the contract's `maxLength`).
pub(crate) const MAX_DESCRIPTION_CHARS: usize = 256;

/// A service account as the simulator holds it (the token is not part of it).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SimAccount {
    pub id: String,
    pub platform: Platform,
    pub is_admin: bool,
    pub description: String,
    pub scopes: Vec<Scope>,
    pub status: AccountState,
    pub created_at: String,
    pub updated_at: String,
    /// Values the API answers with in place of known ones (`platform`, `status`) or beside
    /// them (`scope`): a newer API than the operator knows.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub odd_values: BTreeMap<String, String>,
}

impl SimAccount {
    pub(crate) fn to_wire(&self) -> AccountWire {
        let odd = &self.odd_values;
        let mut scopes: Vec<_> = self.scopes.iter().copied().map(Lenient::Known).collect();
        scopes.extend(self.odd_values.get("scope").cloned().map(Lenient::Unknown));
        AccountWire {
            id: self.id.clone(),
            platform: odd_or(odd, "platform", self.platform),
            is_admin: self.is_admin,
            description: self.description.clone(),
            scopes,
            status: odd_or(odd, "status", self.status),
            created_at: Some(self.created_at.clone()),
            updated_at: Some(self.updated_at.clone()),
        }
    }
}

fn odd_or<T>(odd_values: &BTreeMap<String, String>, field: &str, known: T) -> Lenient<T> {
    match odd_values.get(field) {
        Some(raw) => Lenient::Unknown(raw.clone()),
        None => Lenient::Known(known),
    }
}

/// The settings that can change while the simulator runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SimRuntimeConfig {
    pub token_ttl_seconds: u64,
    pub rotate_refresh_tokens: bool,
    pub latency_ms: u64,
    pub fail_rate: f64,
    /// [assumed, pessimistic] `/route` refuses an access token once either account that
    /// minted it is no longer ACTIVE (the contract says only that an ACTIVE account's token
    /// is usable). Off by default; tests of retiring accounts turn it on.
    #[serde(default)]
    pub access_tokens_follow_accounts: bool,
}

impl SimRuntimeConfig {
    pub(crate) fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms)
    }
}

/// Call counters of one endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStats {
    /// Requests received (counted on arrival, before faults).
    pub total: u64,
    /// Answers sent, by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Connections dropped instead of answering.
    pub dropped: u64,
}

/// Everything `GET /_sim/stats` reports.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SimStats {
    /// Per endpoint label (every label is present).
    pub calls: BTreeMap<String, EndpointStats>,
    /// API requests being served now, and the most ever served at once.
    pub in_flight: u64,
    pub peak_in_flight: u64,
    /// Live (not deleted) accounts, in creation order, whatever their status.
    pub accounts: Vec<SimAccount>,
    pub live_refresh_tokens: u64,
    pub config: SimRuntimeConfig,
}

impl SimStats {
    /// Requests received by `endpoint`.
    pub fn calls(&self, endpoint: &str) -> u64 {
        self.calls.get(endpoint).map_or(0, |c| c.total)
    }

    /// Answers with `status` sent by `endpoint`.
    pub fn status_count(&self, endpoint: &str, status: u16) -> u64 {
        self.calls
            .get(endpoint)
            .and_then(|c| c.statuses.get(&status))
            .copied()
            .unwrap_or(0)
    }
}

/// Why the API refuses a request (the HTTP layer turns these into the contract's bodies).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Validation,
    Unauthorized,
    NotFound,
}

/// What auth/refresh grant; the JWT is signed outside the lock.
pub(crate) struct Grant {
    pub sub: String,
    /// The client account.
    pub azp: String,
    pub scopes: Vec<Scope>,
    pub ttl_seconds: u64,
    pub refresh_token: Option<String>,
}

struct Rec {
    seq: u64,
    account: SimAccount,
    token: String,
}

pub(crate) struct Store {
    pub(crate) runtime: SimRuntimeConfig,
    user_tokens: HashSet<String>,
    accounts: HashMap<String, Rec>,
    order: BTreeMap<u64, String>,
    next_seq: u64,
    by_token: HashMap<String, String>,
    /// refresh token -> (client account id, server account id)
    refresh: HashMap<String, (String, String)>,
    faults: HashMap<&'static str, VecDeque<(Fault, u32)>>,
    calls: HashMap<&'static str, EndpointStats>,
    issued: VecDeque<IssuedAccessToken>,
}

/// The most issued tokens remembered (the oldest are dropped): a simulator left running for
/// days must not grow without bound.
const ISSUED_REMEMBERED: usize = 100_000;

/// An access token the simulator handed out, for tests that match calls to tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedAccessToken {
    /// `"auth"` or `"refresh"`.
    pub endpoint: &'static str,
    pub token: String,
    pub at: jiff::Timestamp,
}

impl std::fmt::Debug for IssuedAccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedAccessToken")
            .field("endpoint", &self.endpoint)
            .field("token", &"<redacted>")
            .field("at", &self.at)
            .finish()
    }
}

fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    now.round(jiff::Unit::Millisecond)
        .unwrap_or(now)
        .to_string()
}

fn random_token(prefix: &str) -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

impl Store {
    pub(crate) fn new(
        runtime: SimRuntimeConfig,
        user_tokens: impl IntoIterator<Item = String>,
    ) -> Self {
        Store {
            runtime,
            user_tokens: user_tokens.into_iter().collect(),
            accounts: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            by_token: HashMap::new(),
            refresh: HashMap::new(),
            faults: HashMap::new(),
            calls: endpoint::ALL
                .iter()
                .map(|e| (*e, EndpointStats::default()))
                .collect(),
            issued: VecDeque::new(),
        }
    }

    // ---- counters and faults -------------------------------------------------------

    pub(crate) fn count_arrival(&mut self, endpoint: &'static str) {
        self.calls.entry(endpoint).or_default().total += 1;
    }

    /// `None` records a dropped connection.
    pub(crate) fn count_answer(&mut self, endpoint: &'static str, status: Option<u16>) {
        let c = self.calls.entry(endpoint).or_default();
        match status {
            Some(s) => *c.statuses.entry(s).or_default() += 1,
            None => c.dropped += 1,
        }
    }

    pub(crate) fn reset_counters(&mut self) {
        self.calls = endpoint::ALL
            .iter()
            .map(|e| (*e, EndpointStats::default()))
            .collect();
        self.issued.clear();
    }

    pub(crate) fn record_issued(&mut self, endpoint: &'static str, token: &str) {
        if self.issued.len() == ISSUED_REMEMBERED {
            self.issued.pop_front();
        }
        self.issued.push_back(IssuedAccessToken {
            endpoint,
            token: token.to_owned(),
            at: jiff::Timestamp::now(),
        });
    }

    pub(crate) fn issued(&self) -> Vec<IssuedAccessToken> {
        self.issued.iter().cloned().collect()
    }

    pub(crate) fn inject(&mut self, endpoint: &'static str, fault: Fault, count: u32) {
        if count > 0 {
            self.faults
                .entry(endpoint)
                .or_default()
                .push_back((fault, count));
        }
    }

    pub(crate) fn clear_faults(&mut self) {
        self.faults.clear();
    }

    /// The fault for this call of `endpoint`, if any (its own queue first, then `"*"`).
    pub(crate) fn take_fault(&mut self, endpoint: &'static str) -> Option<Fault> {
        for key in [endpoint, ANY_ENDPOINT] {
            if let Some(queue) = self.faults.get_mut(key)
                && let Some((fault, left)) = queue.front_mut()
            {
                let fault = fault.clone();
                *left -= 1;
                if *left == 0 {
                    queue.pop_front();
                }
                return Some(fault);
            }
        }
        None
    }

    pub(crate) fn stats(&self, in_flight: u64, peak_in_flight: u64) -> SimStats {
        SimStats {
            calls: self
                .calls
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            in_flight,
            peak_in_flight,
            accounts: self.live_accounts(),
            live_refresh_tokens: self.refresh.len() as u64,
            config: self.runtime.clone(),
        }
    }

    // ---- accounts (also used out of band) -------------------------------------------

    pub(crate) fn live_accounts(&self) -> Vec<SimAccount> {
        self.order
            .values()
            .filter_map(|id| self.accounts.get(id))
            .map(|r| r.account.clone())
            .collect()
    }

    pub(crate) fn account(&self, id: &str) -> Option<SimAccount> {
        self.accounts.get(id).map(|r| r.account.clone())
    }

    pub(crate) fn account_token(&self, id: &str) -> Option<String> {
        self.accounts.get(id).map(|r| r.token.clone())
    }

    pub(crate) fn create(
        &mut self,
        config: AccountConfigWire,
        status: AccountState,
    ) -> (SimAccount, String) {
        let id = uuid::Uuid::new_v4().to_string();
        let token = random_token("gbt_");
        let now = now_rfc3339();
        let account = SimAccount {
            id: id.clone(),
            platform: config.platform,
            is_admin: config.is_admin,
            description: config.description,
            scopes: config.scopes,
            status,
            created_at: now.clone(),
            updated_at: now,
            odd_values: BTreeMap::new(),
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, id.clone());
        self.by_token.insert(token.clone(), id.clone());
        self.accounts.insert(
            id.clone(),
            Rec {
                seq,
                account: account.clone(),
                token: token.clone(),
            },
        );
        tracing::debug!(id = %id, "account created");
        (account, token)
    }

    /// Applies a change without the API's rules (out-of-band drift), keeping the token
    /// rules: leaving ACTIVE kills the refresh tokens bound to the account.
    pub(crate) fn edit(
        &mut self,
        id: &str,
        status: Option<AccountState>,
        description: Option<String>,
        scopes: Option<Vec<Scope>>,
    ) -> Option<SimAccount> {
        let rec = self.accounts.get_mut(id)?;
        if let Some(s) = status {
            rec.account.status = s;
        }
        if let Some(d) = description {
            rec.account.description = d;
        }
        if let Some(s) = scopes {
            rec.account.scopes = s;
        }
        rec.account.updated_at = now_rfc3339();
        let account = rec.account.clone();
        if account.status != AccountState::Active {
            self.refresh.retain(|_, (c, s)| c != id && s != id);
        }
        Some(account)
    }

    pub(crate) fn set_odd_value(&mut self, id: &str, field: &str, raw: &str) -> bool {
        let Some(rec) = self.accounts.get_mut(id) else {
            return false;
        };
        rec.account.odd_values.insert(field.into(), raw.into());
        true
    }

    pub(crate) fn delete(&mut self, id: &str) -> bool {
        let Some(rec) = self.accounts.remove(id) else {
            return false;
        };
        self.order.remove(&rec.seq);
        self.by_token.remove(&rec.token);
        self.refresh.retain(|_, (c, s)| c != id && s != id);
        tracing::debug!(id = %id, "account deleted");
        true
    }

    pub(crate) fn live_refresh_tokens(&self) -> usize {
        self.refresh.len()
    }

    // ---- the API --------------------------------------------------------------------

    pub(crate) fn check_user(&self, bearer: Option<&str>) -> Result<(), Refusal> {
        match bearer {
            Some(t) if self.user_tokens.contains(t) => Ok(()),
            _ => Err(Refusal::Unauthorized),
        }
    }

    pub(crate) fn api_create(&mut self, body: &[u8]) -> Result<(SimAccount, String), Refusal> {
        let config: AccountConfigWire =
            serde_json::from_slice(body).map_err(|_| Refusal::Validation)?;
        validate_description(&config.description)?;
        validate_scopes(&config.scopes)?;
        Ok(self.create(config, AccountState::Active))
    }

    pub(crate) fn api_get(&self, id: &str) -> Result<SimAccount, Refusal> {
        self.account(id).ok_or(Refusal::NotFound)
    }

    pub(crate) fn api_patch(&mut self, id: &str, body: &[u8]) -> Result<SimAccount, Refusal> {
        let map: Map<String, Value> =
            serde_json::from_slice(body).map_err(|_| Refusal::Validation)?;
        if map.contains_key("platform") || map.contains_key("isAdmin") {
            return Err(Refusal::Validation);
        }
        let field = |name: &str| map.get(name).cloned();
        let status: Option<AccountState> = parse_field(field("status"))?;
        let description: Option<String> = parse_field(field("description"))?;
        let scopes: Option<Vec<Scope>> = parse_field(field("scopes"))?;
        if status.is_none() && description.is_none() && scopes.is_none() {
            return Err(Refusal::Validation);
        }
        if let Some(d) = &description {
            validate_description(d)?;
        }
        if let Some(s) = &scopes {
            validate_scopes(s)?;
        }
        let current = self.accounts.get(id).ok_or(Refusal::NotFound)?;
        if current.account.status == AccountState::Revoked {
            return Err(Refusal::Validation);
        }
        self.edit(id, status, description, scopes)
            .ok_or(Refusal::NotFound)
    }

    pub(crate) fn api_delete(&mut self, id: &str) -> Result<(), Refusal> {
        if self.delete(id) {
            Ok(())
        } else {
            Err(Refusal::NotFound)
        }
    }

    pub(crate) fn api_list(&self, page: u64, limit: u64) -> (Vec<AccountWire>, PageMetaWire) {
        let skip = usize::try_from((page - 1).saturating_mul(limit)).unwrap_or(usize::MAX);
        let data = self
            .order
            .values()
            .skip(skip)
            .take(limit as usize)
            .filter_map(|id| self.accounts.get(id))
            .map(|r| r.account.to_wire())
            .collect();
        (
            data,
            PageMetaWire {
                page: Some(page),
                limit: Some(limit),
                total: Some(self.accounts.len() as u64),
            },
        )
    }

    /// Whether an access token minted by these accounts may still be used.
    pub(crate) fn access_allowed(&self, sub: &str, azp: &str) -> bool {
        let active = |id: &str| {
            self.accounts
                .get(id)
                .is_some_and(|r| r.account.status == AccountState::Active)
        };
        !self.runtime.access_tokens_follow_accounts || (active(sub) && active(azp))
    }

    fn active_by_token(&self, token: &str) -> Option<&Rec> {
        let id = self.by_token.get(token)?;
        self.accounts
            .get(id)
            .filter(|r| r.account.status == AccountState::Active)
    }

    pub(crate) fn api_auth(
        &mut self,
        client_token: &str,
        server_token: &str,
    ) -> Result<Grant, Refusal> {
        let client = self
            .active_by_token(client_token)
            .ok_or(Refusal::Unauthorized)?;
        let server = self
            .active_by_token(server_token)
            .ok_or(Refusal::Unauthorized)?;
        let (cid, sid, scopes) = (
            client.account.id.clone(),
            server.account.id.clone(),
            server.account.scopes.clone(),
        );
        let refresh = random_token("gbr_");
        self.refresh
            .insert(refresh.clone(), (cid.clone(), sid.clone()));
        Ok(Grant {
            sub: sid,
            azp: cid,
            scopes,
            ttl_seconds: self.runtime.token_ttl_seconds,
            refresh_token: Some(refresh),
        })
    }

    pub(crate) fn api_refresh(&mut self, refresh_token: &str) -> Result<Grant, Refusal> {
        let (cid, sid) = self
            .refresh
            .get(refresh_token)
            .cloned()
            .ok_or(Refusal::Unauthorized)?;
        let active = |id: &str| {
            self.accounts
                .get(id)
                .is_some_and(|r| r.account.status == AccountState::Active)
        };
        if !active(&cid) || !active(&sid) {
            self.refresh.remove(refresh_token);
            return Err(Refusal::Unauthorized);
        }
        let scopes = self
            .accounts
            .get(&sid)
            .map(|r| r.account.scopes.clone())
            .unwrap_or_default();
        let rotated = if self.runtime.rotate_refresh_tokens {
            self.refresh.remove(refresh_token);
            let next = random_token("gbr_");
            self.refresh
                .insert(next.clone(), (cid.clone(), sid.clone()));
            Some(next)
        } else {
            None
        };
        Ok(Grant {
            sub: sid,
            azp: cid,
            scopes,
            ttl_seconds: self.runtime.token_ttl_seconds,
            refresh_token: rotated,
        })
    }
}

fn parse_field<T: serde::de::DeserializeOwned>(value: Option<Value>) -> Result<Option<T>, Refusal> {
    match value {
        None => Ok(None),
        Some(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(|_| Refusal::Validation),
    }
}

fn validate_description(d: &str) -> Result<(), Refusal> {
    if d.chars().count() > MAX_DESCRIPTION_CHARS {
        Err(Refusal::Validation)
    } else {
        Ok(())
    }
}

fn validate_scopes(scopes: &[Scope]) -> Result<(), Refusal> {
    let unique: HashSet<_> = scopes.iter().collect();
    if scopes.is_empty() || unique.len() != scopes.len() {
        Err(Refusal::Validation)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(rotate: bool) -> Store {
        Store::new(
            SimRuntimeConfig {
                token_ttl_seconds: 60,
                rotate_refresh_tokens: rotate,
                latency_ms: 0,
                fail_rate: 0.0,
                access_tokens_follow_accounts: false,
            },
            ["u".to_owned()],
        )
    }

    fn create(s: &mut Store) -> (SimAccount, String) {
        s.api_create(br#"{"platform":"WEB","isAdmin":false,"description":"d","scopes":["TILE"]}"#)
            .unwrap()
    }

    #[test]
    fn create_validation() {
        let mut s = store(false);
        let bad: [&[u8]; 8] = [
            b"not json",
            br#"{"platform":"LINUX","isAdmin":false,"description":"d","scopes":["TILE"]}"#,
            br#"{"platform":"WEB","isAdmin":false,"description":"d","scopes":[]}"#,
            br#"{"platform":"WEB","isAdmin":false,"description":"d","scopes":["TILE","TILE"]}"#,
            br#"{"platform":"WEB","isAdmin":false,"description":"d","scopes":["FLY"]}"#,
            br#"{"platform":"WEB","description":"d","scopes":["TILE"]}"#,
            br#"{"platform":"WEB","isAdmin":"no","description":"d","scopes":["TILE"]}"#,
            br#"[1]"#,
        ];
        for b in bad {
            assert_eq!(
                s.api_create(b).unwrap_err(),
                Refusal::Validation,
                "{}",
                String::from_utf8_lossy(b)
            );
        }
        let long = format!(
            r#"{{"platform":"WEB","isAdmin":false,"description":"{}","scopes":["TILE"]}}"#,
            "é".repeat(257)
        );
        assert_eq!(
            s.api_create(long.as_bytes()).unwrap_err(),
            Refusal::Validation
        );
        let ok = format!(
            r#"{{"platform":"WEB","isAdmin":false,"description":"{}","scopes":["TILE"]}}"#,
            "é".repeat(256)
        );
        assert!(s.api_create(ok.as_bytes()).is_ok());
        assert!(s.live_accounts().len() == 1);
    }

    #[test]
    fn patch_rules() {
        let mut s = store(false);
        let (a, _) = create(&mut s);
        for b in [
            &br#"{}"#[..],
            br#"{"platform":"IOS"}"#,
            br#"{"isAdmin":true}"#,
            br#"{"status":"GONE"}"#,
            br#"{"scopes":[]}"#,
            br#"{"description":null}"#,
            b"x",
        ] {
            assert_eq!(s.api_patch(&a.id, b).unwrap_err(), Refusal::Validation);
        }
        assert_eq!(
            s.api_patch("nope", br#"{"status":"SUSPENDED"}"#)
                .unwrap_err(),
            Refusal::NotFound
        );
        let p = s
            .api_patch(
                &a.id,
                br#"{"status":"SUSPENDED","description":"x","scopes":["ONM"]}"#,
            )
            .unwrap();
        assert_eq!(
            (p.status, p.description.as_str(), p.scopes.as_slice()),
            (AccountState::Suspended, "x", &[Scope::Onm][..])
        );
        s.api_patch(&a.id, br#"{"status":"REVOKED"}"#).unwrap();
        assert_eq!(
            s.api_patch(&a.id, br#"{"status":"ACTIVE"}"#).unwrap_err(),
            Refusal::Validation
        );
        assert_eq!(
            s.api_patch(&a.id, br#"{"description":"y"}"#).unwrap_err(),
            Refusal::Validation
        );
        assert!(s.api_get(&a.id).is_ok());
        assert!(s.api_delete(&a.id).is_ok());
        assert_eq!(s.api_get(&a.id).unwrap_err(), Refusal::NotFound);
        assert_eq!(s.api_delete(&a.id).unwrap_err(), Refusal::NotFound);
    }

    #[test]
    fn auth_and_refresh_rules() {
        let mut s = store(true);
        let (c, ct) = create(&mut s);
        let (_, st) = create(&mut s);
        assert_eq!(
            s.api_auth(&ct, "unknown").err(),
            Some(Refusal::Unauthorized)
        );
        let g = s.api_auth(&ct, &st).unwrap();
        let r1 = g.refresh_token.unwrap();
        let g2 = s.api_refresh(&r1).unwrap();
        let r2 = g2.refresh_token.unwrap();
        assert_ne!(r1, r2);
        assert_eq!(
            s.api_refresh(&r1).err(),
            Some(Refusal::Unauthorized),
            "rotated away"
        );
        // Suspension kills the refresh token for good.
        s.edit(&c.id, Some(AccountState::Suspended), None, None);
        assert_eq!(s.api_auth(&ct, &st).err(), Some(Refusal::Unauthorized));
        assert_eq!(s.api_refresh(&r2).err(), Some(Refusal::Unauthorized));
        s.edit(&c.id, Some(AccountState::Active), None, None);
        assert_eq!(s.api_refresh(&r2).err(), Some(Refusal::Unauthorized));
        // Without rotation the same refresh token keeps working.
        s.runtime.rotate_refresh_tokens = false;
        let r3 = s.api_auth(&ct, &st).unwrap().refresh_token.unwrap();
        assert!(s.api_refresh(&r3).unwrap().refresh_token.is_none());
        assert!(s.api_refresh(&r3).is_ok());
        s.delete(&c.id);
        assert_eq!(s.api_refresh(&r3).err(), Some(Refusal::Unauthorized));
        assert_eq!(s.live_refresh_tokens(), 0);
    }

    #[test]
    fn list_pages_in_creation_order() {
        let mut s = store(false);
        let ids: Vec<String> = (0..5).map(|_| create(&mut s).0.id).collect();
        s.delete(&ids[1]);
        let (p1, m1) = s.api_list(1, 2);
        let (p2, _) = s.api_list(2, 2);
        let (p3, _) = s.api_list(3, 2);
        let got: Vec<_> = p1
            .iter()
            .chain(&p2)
            .chain(&p3)
            .map(|a| a.id.clone())
            .collect();
        assert_eq!(
            got,
            vec![
                ids[0].clone(),
                ids[2].clone(),
                ids[3].clone(),
                ids[4].clone()
            ]
        );
        assert_eq!(m1.total, Some(4));
        assert!(p3.is_empty());
    }

    #[test]
    fn faults_queue_per_endpoint_then_wildcard() {
        let mut s = store(false);
        s.inject("auth", Fault::Status(503, None), 2);
        s.inject("*", Fault::Garbage, 1);
        assert_eq!(s.take_fault("auth"), Some(Fault::Status(503, None)));
        assert_eq!(s.take_fault("auth"), Some(Fault::Status(503, None)));
        assert_eq!(s.take_fault("auth"), Some(Fault::Garbage));
        assert_eq!(s.take_fault("auth"), None);
        assert_eq!(s.take_fault("refresh"), None);
    }
}
