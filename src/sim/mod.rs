//! `gebeta-sim`: an in-memory simulator of the Gebeta Maps API
//! (`shared/gebeta-api/openapi.yaml`), for tests, benchmarks and the demo.
//!
//! Everything the contract defines is served under `/api/v1` (paths and verbs from
//! [`crate::gebeta::wire`]), so pointing the operator's base URL at the simulator is the
//! only difference from production:
//!
//! - management endpoints need `Authorization: Bearer <user token>` (one of
//!   [`SimConfig::user_tokens`]); create answers the account's token once;
//! - `POST /external/auth` takes the tokens of two existing, ACTIVE accounts and answers
//!   an HS256 JWT (`exp`, `iat`, `sub` = the server account's id, `scopes`) and an opaque
//!   refresh token bound to both accounts; `POST /external/refresh` answers a new access
//!   token, plus a new refresh token (killing the old one) when rotation is on. Both answer
//!   401 unless both accounts are ACTIVE; leaving ACTIVE kills the refresh tokens;
//! - `GET /route?origin=lat,lon&destination=lat,lon` needs a valid, unexpired JWT signed by
//!   this simulator;
//! - 400 `{"error":"Validation failed","code":"FAILED_VALIDATION"}` for malformed JSON,
//!   unknown enum values, missing fields, empty or duplicate scopes, descriptions over 256
//!   characters, PATCH with no field or with `platform`/`isAdmin`, PATCH of a REVOKED
//!   account, bad paging parameters; 401 `{"error":"invalid or missing api key"}`; 404 for
//!   unknown ids. It answers 500 only for injected faults and `fail_rate`.
//!
//! Endpoint labels (counters, faults): `create_account`, `get_account`, `patch_account`,
//! `delete_account`, `list_accounts`, `auth`, `refresh`, `route`.
//!
//! # Control API (`/_sim/`, never counted or faulted)
//!
//! | call | body | answer |
//! |---|---|---|
//! | `GET /_sim/stats` | — | `200` [`SimStats`]: `{"calls": {"<endpoint>": {"total": n, "statuses": {"200": n, ...}, "dropped": n}}, "inFlight": n, "peakInFlight": n, "accounts": [<account>...], "liveRefreshTokens": n, "config": <config>}` |
//! | `POST /_sim/stats/reset` | — | `204`; counters and peak in-flight back to zero |
//! | `POST /_sim/accounts` | `{"platform"?: "WEB", "isAdmin"?: false, "description"?: "", "scopes"?: [all], "status"?: "ACTIVE"}` | `201 {"data": {<account>, "token": "..."}}` (the "made in the dashboard" case) |
//! | `PATCH /_sim/accounts/{id}` | `{"status"?, "description"?, "scopes"?}` (no API rules: drift) | `200 {"data": <account>}` / `404` |
//! | `DELETE /_sim/accounts/{id}` | — | `204` / `404` |
//! | `POST /_sim/faults` | `{"endpoint": "<label>" or "*", "fault": "status" \| "latency" \| "drop" \| "garbage" \| "html" \| "dropAfterCreate", "count"?: 1, "status"?: 503, "retryAfterSeconds"?: 2, "latencyMs"?: 1500}` | `204`; the fault applies to the next `count` calls of the endpoint (queued in order; `"*"` = any endpoint without its own fault) |
//! | `DELETE /_sim/faults` | — | `204`; all pending faults cleared |
//! | `GET /_sim/config` | — | `200` `{"tokenTtlSeconds", "rotateRefreshTokens", "latencyMs", "failRate"}` |
//! | `POST /_sim/config` | any of those four fields | `200` the new config |
//!
//! `<account>` is `{"id", "platform", "isAdmin", "description", "scopes", "status",
//! "createdAt", "updatedAt"}`. Faults are described on [`Fault`].
//!
//! In tests, [`Sim::start`] serves on `127.0.0.1:0` and returns a [`SimHandle`] that
//! offers the same operations directly.

mod admin;
mod api;
mod conn;
mod fault;
mod jwt;
mod store;

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use ring::hmac;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::gebeta::model::{AccountState, Platform, Scope};
use crate::gebeta::wire::AccountConfigWire;
use conn::{Conn, SimListener};
use store::Store;

pub use fault::{ANY_ENDPOINT, Fault};
pub use store::{EndpointStats, IssuedAccessToken, SimAccount, SimRuntimeConfig, SimStats};

/// The base path every API route is served under, as in production.
pub const API_PREFIX: &str = "/api/v1";

/// How the simulator starts.
#[derive(Clone)]
pub struct SimConfig {
    /// Lifetime of issued access tokens (whole seconds, at least 1).
    pub token_ttl: Duration,
    /// Refresh answers a new refresh token and kills the old one.
    pub rotate_refresh_tokens: bool,
    /// Management (user) tokens accepted.
    pub user_tokens: Vec<String>,
    /// Added to every API call.
    pub latency: Duration,
    /// Probability (0..=1) that an API call answers 500 without processing the request.
    pub fail_rate: f64,
    /// HS256 key for access tokens.
    pub signing_key: Vec<u8>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            token_ttl: Duration::from_secs(3600),
            rotate_refresh_tokens: false,
            user_tokens: vec!["sim-user-token".to_owned()],
            latency: Duration::ZERO,
            fail_rate: 0.0,
            signing_key: rand::random::<[u8; 32]>().to_vec(),
        }
    }
}

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("token_ttl", &self.token_ttl)
            .field("rotate_refresh_tokens", &self.rotate_refresh_tokens)
            .field(
                "user_tokens",
                &format_args!("<{} redacted>", self.user_tokens.len()),
            )
            .field("latency", &self.latency)
            .field("fail_rate", &self.fail_rate)
            .field("signing_key", &"<redacted>")
            .finish()
    }
}

struct Shared {
    store: Mutex<Store>,
    key: hmac::Key,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
}

/// The simulator's state and control operations. Cheap to clone.
#[derive(Clone)]
pub struct Sim {
    shared: Arc<Shared>,
}

/// Decrements the in-flight count when an API call ends (or is cancelled).
struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Sim {
    pub fn new(config: SimConfig) -> Sim {
        let runtime = SimRuntimeConfig {
            token_ttl_seconds: config.token_ttl.as_secs().max(1),
            rotate_refresh_tokens: config.rotate_refresh_tokens,
            latency_ms: u64::try_from(config.latency.as_millis()).unwrap_or(u64::MAX),
            fail_rate: if config.fail_rate.is_finite() {
                config.fail_rate.clamp(0.0, 1.0)
            } else {
                0.0
            },
            access_tokens_follow_accounts: false,
        };
        Sim {
            shared: Arc::new(Shared {
                store: Mutex::new(Store::new(runtime, config.user_tokens)),
                key: hmac::Key::new(hmac::HMAC_SHA256, &config.signing_key),
                in_flight: AtomicU64::new(0),
                peak_in_flight: AtomicU64::new(0),
            }),
        }
    }

    /// Serves on `127.0.0.1:0` in a background task.
    pub async fn start(config: SimConfig) -> io::Result<SimHandle> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        Sim::start_on(listener, config)
    }

    /// Serves on `listener` in a background task.
    pub fn start_on(listener: TcpListener, config: SimConfig) -> io::Result<SimHandle> {
        let addr = listener.local_addr()?;
        let sim = Sim::new(config);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(sim.clone().run(listener, async move {
            let _ = rx.await;
        }));
        Ok(SimHandle {
            sim,
            addr,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// Serves on `listener` until the process ends (for the binary).
    pub async fn serve(listener: TcpListener, config: SimConfig) -> io::Result<()> {
        Sim::serve_with_shutdown(listener, config, std::future::pending()).await
    }

    /// Serves on `listener` until `signal` completes, then finishes in-flight calls.
    pub async fn serve_with_shutdown(
        listener: TcpListener,
        config: SimConfig,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        Sim::new(config).run(listener, signal).await
    }

    async fn run(
        self,
        listener: TcpListener,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let app = self.router().into_make_service_with_connect_info::<Conn>();
        axum::serve(SimListener(listener), app)
            .with_graceful_shutdown(signal)
            .await
    }

    /// The whole HTTP surface: `/api/v1/...` and `/_sim/...`.
    pub fn router(&self) -> Router {
        Router::new()
            .nest(API_PREFIX, api::router())
            .nest("/_sim", admin::router())
            .fallback(api::not_found)
            .with_state(self.clone())
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.shared.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enter(&self) -> InFlight<'_> {
        let now = self.shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.shared.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(&self.shared.in_flight)
    }

    /// The same data as `GET /_sim/stats`.
    pub fn stats(&self) -> SimStats {
        let in_flight = self.shared.in_flight.load(Ordering::SeqCst);
        let peak = self.shared.peak_in_flight.load(Ordering::SeqCst);
        self.store().stats(in_flight, peak)
    }

    /// Requests received by one endpoint label (`"auth"`, `"create_account"`, ...).
    pub fn calls(&self, endpoint: &str) -> u64 {
        self.stats().calls(endpoint)
    }

    /// Answers with `status` sent by one endpoint.
    pub fn status_count(&self, endpoint: &str, status: u16) -> u64 {
        self.stats().status_count(endpoint, status)
    }

    /// The most API calls ever served at once.
    pub fn peak_in_flight(&self) -> u64 {
        self.shared.peak_in_flight.load(Ordering::SeqCst)
    }

    /// The access tokens handed out since the start (or the last `reset_stats`), oldest first;
    /// the most recent 100,000.
    pub fn issued_access_tokens(&self) -> Vec<IssuedAccessToken> {
        self.store().issued()
    }

    /// Counters and peak in-flight back to zero (accounts and faults stay).
    pub fn reset_stats(&self) {
        self.store().reset_counters();
        self.shared.peak_in_flight.store(
            self.shared.in_flight.load(Ordering::SeqCst),
            Ordering::SeqCst,
        );
    }

    /// An account made "in the dashboard": returns `(id, token)`.
    pub fn create_dashboard_account(
        &self,
        platform: Platform,
        scopes: Vec<Scope>,
    ) -> (String, String) {
        let (account, token) =
            self.create_account_with(platform, false, String::new(), scopes, AccountState::Active);
        (account.id, token)
    }

    fn create_account_with(
        &self,
        platform: Platform,
        is_admin: bool,
        description: String,
        scopes: Vec<Scope>,
        status: AccountState,
    ) -> (SimAccount, String) {
        self.store().create(
            AccountConfigWire {
                platform,
                is_admin,
                description,
                scopes,
            },
            status,
        )
    }

    /// Applies `fault` to the next `count` calls of `endpoint` (a label, or `"*"`).
    ///
    /// # Panics
    /// On an unknown endpoint label (a bug in the test).
    pub fn inject(&self, endpoint: &str, fault: Fault, count: u32) {
        let label = fault::endpoint_label(endpoint)
            .unwrap_or_else(|| panic!("unknown sim endpoint {endpoint:?}"));
        self.store().inject(label, fault, count);
    }

    pub fn clear_faults(&self) {
        self.store().clear_faults();
    }

    /// Out-of-band status change (no API rules). Returns false for an unknown id.
    pub fn set_account_state(&self, id: &str, state: AccountState) -> bool {
        self.store().edit(id, Some(state), None, None).is_some()
    }

    /// Out-of-band deletion. Returns false for an unknown id.
    pub fn delete_account(&self, id: &str) -> bool {
        self.store().delete(id)
    }

    /// Out-of-band edit (no API rules). Returns false for an unknown id.
    pub fn edit_account(
        &self,
        id: &str,
        description: Option<String>,
        scopes: Option<Vec<Scope>>,
    ) -> bool {
        self.store().edit(id, None, description, scopes).is_some()
    }

    /// Makes the API answer with a value the operator does not know: `field` is
    /// `"platform"` or `"status"` (replaced) or `"scope"` (added). Returns false for an
    /// unknown id.
    pub fn set_odd_value(&self, id: &str, field: &str, raw: &str) -> bool {
        self.store().set_odd_value(id, field, raw)
    }

    pub fn set_token_ttl(&self, ttl: Duration) {
        self.store().runtime.token_ttl_seconds = ttl.as_secs().max(1);
    }

    /// See [`SimRuntimeConfig::access_tokens_follow_accounts`].
    pub fn set_access_tokens_follow_accounts(&self, on: bool) {
        self.store().runtime.access_tokens_follow_accounts = on;
    }

    pub fn set_rotate_refresh_tokens(&self, rotate: bool) {
        self.store().runtime.rotate_refresh_tokens = rotate;
    }

    pub fn set_latency(&self, latency: Duration) {
        self.store().runtime.latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
    }

    pub fn set_fail_rate(&self, rate: f64) {
        self.store().runtime.fail_rate = if rate.is_finite() {
            rate.clamp(0.0, 1.0)
        } else {
            0.0
        };
    }

    /// Accounts not deleted (any status), in creation order.
    pub fn live_accounts(&self) -> Vec<SimAccount> {
        self.store().live_accounts()
    }

    pub fn account(&self, id: &str) -> Option<SimAccount> {
        self.store().account(id)
    }

    /// The token issued for an account (what the operator should have stored).
    pub fn account_token(&self, id: &str) -> Option<String> {
        self.store().account_token(id)
    }

    /// Refresh tokens currently valid.
    pub fn live_refresh_tokens(&self) -> usize {
        self.store().live_refresh_tokens()
    }
}

/// A running simulator. Dereferences to [`Sim`] for the control operations; dropping it
/// stops the server.
pub struct SimHandle {
    sim: Sim,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl SimHandle {
    /// `http://127.0.0.1:PORT/api/v1`
    pub fn base_url(&self) -> String {
        format!("http://{}{API_PREFIX}", self.addr)
    }

    /// `http://127.0.0.1:PORT` (the `/_sim/` API lives under it).
    pub fn root_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    /// Stops accepting connections (in-flight calls finish in the background).
    pub fn shutdown(mut self) {
        self.signal();
    }

    /// Stops and waits (up to `timeout`) until the server has finished.
    pub async fn stop(mut self, timeout: Duration) {
        self.signal();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(timeout, task).await;
        }
    }

    fn signal(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Deref for SimHandle {
    type Target = Sim;
    fn deref(&self) -> &Sim {
        &self.sim
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.signal();
    }
}

impl fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}
