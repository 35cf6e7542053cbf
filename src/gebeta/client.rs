//! [`GebetaClient`]: the typed, hardened async client of the Gebeta API.
//!
//! - every attempt is bounded by `request_timeout` (connect: `connect_timeout`);
//! - at most `max_in_flight` attempts run at once across all clones (a semaphore held
//!   only during an attempt, never while sleeping between retries), and an optional
//!   requests-per-second limit is shared the same way;
//! - 429, 5xx, transport errors and timeouts are retried with capped exponential backoff
//!   and full jitter, honouring `Retry-After`; 400/401/404 never are;
//! - account creation is never retried once the request may have reached the server:
//!   such failures come back as [`Error::CreateOutcomeUnknown`];
//! - secrets travel as [`Token`] and are scrubbed from every error message.
//!
//! Paths and body shapes come from [`super::wire`].

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::endpoint;
use super::error::{Error, classify_status, describe_json_error, parse_retry_after, sanitize};
use super::limiter::RateLimiter;
use super::token::Token;
use super::wire::{self, paths};

pub use super::retry::RetryPolicy;
pub use super::types::{Account, AccountConfig, AccountPatch, CreatedAccount, TokenPair};

/// Largest response body the client reads.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Upper bound on organization pages (guards against a server that ignores paging).
/// Listings started over at most, when the organization changes while it is being listed.
const MAX_LIST_PASSES: usize = 5;

/// How one pass over the listing's pages went.
#[derive(Default)]
struct ListPass {
    /// Every page agreed on `meta.total`.
    consistent: bool,
    /// `(accounts seen, meta.total)` when the pages ended before `meta.total` accounts.
    short_by: Option<(u64, u64)>,
}
const MAX_PAGES: u32 = 10_000;
/// Upper bound on the accounts one listing collects: ten times the largest organization the
/// operator is measured with. Each page is capped in bytes, but a server that ignores paging
/// (or answers new ids on every page) would otherwise grow the listing until the operator is
/// out of memory.
const MAX_LISTED_ACCOUNTS: usize = 100_000;

/// How the client talks to the API.
#[derive(Clone)]
pub struct ClientConfig {
    /// e.g. `https://mapapi.gebeta.app/api/v1` or `http://127.0.0.1:PORT/api/v1`.
    pub base_url: String,
    /// Total time per attempt (connect, send, read the whole body).
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Attempts in flight at once, shared by all clones.
    pub max_in_flight: usize,
    /// Requests per second shared by all clones; `None` = unlimited.
    pub rate_limit_per_second: Option<f64>,
    pub retry: RetryPolicy,
    /// Extra trusted CA certificates (PEM bundle), added to the built-in roots.
    pub extra_ca_pem: Option<Vec<u8>>,
    pub user_agent: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            base_url: wire::DEFAULT_BASE_URL.to_owned(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_in_flight: 32,
            rate_limit_per_second: None,
            retry: RetryPolicy::default(),
            extra_ca_pem: None,
            user_agent: concat!("gebeta-operator/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &redact_url(&self.base_url))
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("rate_limit_per_second", &self.rate_limit_per_second)
            .field("retry", &self.retry)
            .field(
                "extra_ca_pem",
                &self
                    .extra_ca_pem
                    .as_ref()
                    .map(|p| format!("<{} bytes>", p.len())),
            )
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

/// A base URL fit for logs: no user info, query or fragment.
fn redact_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) => {
            if !url.username().is_empty() || url.password().is_some() {
                let _ = url.set_username("");
                let _ = url.set_password(None);
            }
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => "<unparseable>".to_owned(),
    }
}

/// Sees every attempt (not every call): for metrics.
pub trait RequestObserver: Send + Sync + 'static {
    /// `endpoint`: a label of [`super::endpoint`]; `outcome`: `"2xx"`, `"3xx"`, `"4xx"`,
    /// `"5xx"` or an error label (`"transport"`, `"timeout"`, `"decode"`, `"config"`).
    fn observe(&self, endpoint: &'static str, outcome: &str, elapsed: Duration);
}

/// The Gebeta API client. Cheap to clone; clones share connections and limits.
#[derive(Clone)]
pub struct GebetaClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    config: ClientConfig,
    in_flight: Arc<Semaphore>,
    limiter: Option<Arc<RateLimiter>>,
    observer: Option<Arc<dyn RequestObserver>>,
}

impl fmt::Debug for GebetaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GebetaClient")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Safe to repeat.
    Idempotent,
    /// Account creation: retried only when the request provably was not processed.
    Create,
}

/// One logical request, replayable per attempt.
struct Request<'a> {
    endpoint: &'static str,
    method: Method,
    url: Url,
    bearer: Option<&'a Token>,
    body: Option<Vec<u8>>,
    /// Secret strings carried by this request, scrubbed from any error text.
    secrets: Vec<&'a str>,
}

struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

impl GebetaClient {
    pub fn new(config: ClientConfig) -> Result<Self, Error> {
        let config_err = |message: &str| Error::Config {
            message: message.to_owned(),
        };
        let mut base = Url::parse(config.base_url.trim())
            .map_err(|_| config_err("base_url is not a valid URL"))?;
        if !matches!(base.scheme(), "http" | "https")
            || base.cannot_be_a_base()
            || base.host().is_none()
        {
            return Err(config_err("base_url must be an http(s) URL"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(config_err("base_url must not have a query or fragment"));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(config_err("base_url must not carry credentials"));
        }
        if let Ok(mut segs) = base.path_segments_mut() {
            segs.pop_if_empty();
        }
        if config.max_in_flight == 0 {
            return Err(config_err("max_in_flight must be at least 1"));
        }
        if config.request_timeout.is_zero() || config.connect_timeout.is_zero() {
            return Err(config_err("timeouts must be positive"));
        }
        if config.retry.max_attempts == 0 {
            return Err(config_err("retry.max_attempts must be at least 1"));
        }
        let limiter = match config.rate_limit_per_second {
            None => None,
            // Below a call per 1,000 s the limiter's spacing (1/rate) is no longer a duration.
            Some(r) if r.is_finite() && r >= 0.001 => Some(Arc::new(RateLimiter::new(r))),
            Some(_) => {
                return Err(config_err(
                    "rate_limit_per_second must be a number of at least 0.001",
                ));
            }
        };
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .https_only(base.scheme() == "https")
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(config.user_agent.clone())
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_keepalive(Duration::from_secs(30));
        if let Some(pem) = &config.extra_ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|_| config_err("extra_ca_pem is not a valid PEM bundle"))?;
            if certs.is_empty() {
                return Err(config_err("extra_ca_pem contains no certificate"));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|_| config_err("cannot build the HTTP client"))?;
        Ok(GebetaClient {
            inner: Arc::new(Inner {
                http,
                base,
                in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
                limiter,
                observer: None,
                config,
            }),
        })
    }

    /// Reports every attempt to `observer`. The returned client still shares connections
    /// and limits with `self`'s other clones.
    pub fn with_observer(self, observer: Arc<dyn RequestObserver>) -> Self {
        let inner = &self.inner;
        GebetaClient {
            inner: Arc::new(Inner {
                http: inner.http.clone(),
                base: inner.base.clone(),
                config: inner.config.clone(),
                in_flight: inner.in_flight.clone(),
                limiter: inner.limiter.clone(),
                observer: Some(observer),
            }),
        }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Creates an account. Retried only on 429 and connect failures (the request provably
    /// was not processed); any failure after the request may have reached the server is
    /// [`Error::CreateOutcomeUnknown`].
    pub async fn create_account(
        &self,
        user: &Token,
        config: &AccountConfig,
    ) -> Result<CreatedAccount, Error> {
        let ep = endpoint::CREATE_ACCOUNT;
        let body = wire::AccountConfigWire {
            platform: config.platform,
            is_admin: config.is_admin,
            description: config.description.clone(),
            scopes: config.scopes.clone(),
        };
        let req = self.request(
            ep,
            wire::CREATE_METHOD,
            paths::ACCOUNTS,
            None,
            Some(user),
            Some(json(&body)?),
        )?;
        let answer = self.execute(&req, Kind::Create).await?;
        let unknown = |cause| Error::CreateOutcomeUnknown {
            cause: Box::new(cause),
        };
        let created: wire::CreatedAccountWire = decode(&req, &answer).map_err(unknown)?;
        if created.token.is_empty() {
            return Err(unknown(Error::Decode {
                endpoint: ep,
                status: answer.status,
                message: "empty token in the create answer".into(),
            }));
        }
        Ok(CreatedAccount {
            account: created.account.into(),
            token: Token::new(created.token),
        })
    }

    pub async fn get_account(&self, user: &Token, id: &str) -> Result<Account, Error> {
        let ep = endpoint::GET_ACCOUNT;
        let req = self.request(
            ep,
            wire::GET_METHOD,
            paths::ACCOUNT_PREFIX,
            Some(id),
            Some(user),
            None,
        )?;
        let answer = self.execute(&req, Kind::Idempotent).await?;
        Ok(decode::<wire::AccountWire>(&req, &answer)?.into())
    }

    pub async fn patch_account(
        &self,
        user: &Token,
        id: &str,
        patch: &AccountPatch,
    ) -> Result<Account, Error> {
        let ep = endpoint::PATCH_ACCOUNT;
        let body = wire::AccountPatchWire {
            status: patch.status,
            description: patch.description.as_deref(),
            scopes: patch.scopes.as_deref(),
        };
        let req = self.request(
            ep,
            wire::PATCH_METHOD,
            paths::ACCOUNT_PREFIX,
            Some(id),
            Some(user),
            Some(json(&body)?),
        )?;
        let answer = self.execute(&req, Kind::Idempotent).await?;
        Ok(decode::<wire::AccountWire>(&req, &answer)?.into())
    }

    /// Deletes an account; 404 comes back as [`Error::NotFound`] (callers usually treat it
    /// as success).
    pub async fn delete_account(&self, user: &Token, id: &str) -> Result<(), Error> {
        let ep = endpoint::DELETE_ACCOUNT;
        let req = self.request(
            ep,
            wire::DELETE_METHOD,
            paths::ACCOUNT_PREFIX,
            Some(id),
            Some(user),
            None,
        )?;
        let answer = self.execute(&req, Kind::Idempotent).await?;
        if wire::is_delete_success(answer.status) {
            Ok(())
        } else {
            Err(Error::Decode {
                endpoint: ep,
                status: answer.status,
                message: "unexpected success status".into(),
            })
        }
    }

    /// Every account of the organization, all pages, in the server's order. Accounts seen
    /// twice (pages shifting under concurrent changes) are kept once.
    pub async fn list_accounts(&self, user: &Token) -> Result<Vec<Account>, Error> {
        // Offset pagination: an account deleted between two page requests moves every later
        // account one place forward, and the one at the page boundary is in neither page. A
        // pass whose pages disagree on `meta.total` saw such a change, so the listing starts
        // over; the answer is the union of all passes (an account that existed throughout is
        // never missed; one deleted meanwhile may be included, which callers treat as gone).
        // A pass that ends with fewer accounts than its `meta.total` is incomplete: concluding
        // "no such account" from it could make recovery create a second account, so it is
        // retried, and still incomplete after every pass it is an error.
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut last = ListPass::default();
        for _pass in 0..MAX_LIST_PASSES {
            last = self.list_pass(user, &mut seen, &mut out).await?;
            if last.consistent && last.short_by.is_none() {
                return Ok(out);
            }
        }
        match last.short_by {
            None => Ok(out),
            Some((got, total)) => Err(Error::Decode {
                endpoint: endpoint::LIST_ACCOUNTS,
                status: 200,
                message: format!(
                    "the listing stayed incomplete: {got} of meta.total {total} accounts after \
                     {MAX_LIST_PASSES} passes"
                ),
            }),
        }
    }

    /// One listing of every page.
    async fn list_pass(
        &self,
        user: &Token,
        union: &mut HashSet<String>,
        out: &mut Vec<Account>,
    ) -> Result<ListPass, Error> {
        let ep = endpoint::LIST_ACCOUNTS;
        let limit = wire::MAX_PAGE_LIMIT;
        let mut seen = HashSet::new();
        let mut first_total = None;
        let mut consistent = true;
        for page in 1..=MAX_PAGES {
            let mut req = self.request(
                ep,
                wire::LIST_METHOD,
                paths::ORGANIZATION,
                None,
                Some(user),
                None,
            )?;
            req.url
                .query_pairs_mut()
                .append_pair(wire::PAGE_PARAM, &page.to_string())
                .append_pair(wire::LIMIT_PARAM, &limit.to_string());
            let answer = self.execute(&req, Kind::Idempotent).await?;
            let page_data: wire::AccountPageWire = decode_raw(&req, &answer)?;
            let received = page_data.data.len();
            let invalid = |message: String| Error::Decode {
                endpoint: ep,
                status: 200,
                message,
            };
            if received > limit as usize {
                return Err(invalid(format!(
                    "a page of at most {limit} accounts answered {received}"
                )));
            }
            let mut new = 0usize;
            for account in page_data.data {
                if seen.insert(account.id.clone()) {
                    new += 1;
                    if union.insert(account.id.clone()) {
                        out.push(account.into());
                    }
                }
            }
            if union.len() > MAX_LISTED_ACCOUNTS {
                return Err(invalid(format!(
                    "the listing went past {MAX_LISTED_ACCOUNTS} accounts (meta.total {})",
                    page_data
                        .meta
                        .as_ref()
                        .and_then(|m| m.total)
                        .map_or("absent".to_string(), |t| t.to_string())
                )));
            }
            let total = page_data.meta.and_then(|m| m.total);
            match first_total {
                None => first_total = Some(total),
                Some(first) if first != total => consistent = false,
                Some(_) => {}
            }
            let done = received == 0
                || new == 0
                || total.is_some_and(|t| seen.len() as u64 >= t)
                || (total.is_none() && received < limit as usize);
            if done {
                let short_by = total
                    .filter(|t| (seen.len() as u64) < *t)
                    .map(|t| (seen.len() as u64, t));
                return Ok(ListPass {
                    consistent,
                    short_by,
                });
            }
        }
        Err(Error::Decode {
            endpoint: ep,
            status: 200,
            message: format!("pagination did not end after {MAX_PAGES} pages"),
        })
    }

    /// Exchanges a client token and a server token for an access token (and a refresh
    /// token). 401 means a credential problem (unknown token or account not ACTIVE).
    pub async fn auth(
        &self,
        client_token: &Token,
        server_token: &Token,
    ) -> Result<TokenPair, Error> {
        let ep = endpoint::AUTH;
        let body = wire::AuthRequestWire {
            client_token: client_token.expose().into(),
            server_token: server_token.expose().into(),
        };
        let mut req = self.request(
            ep,
            Method::POST,
            paths::AUTH,
            None,
            None,
            Some(json(&body)?),
        )?;
        req.secrets = vec![client_token.expose(), server_token.expose()];
        let answer = self.execute(&req, Kind::Idempotent).await?;
        token_pair(&req, &answer)
    }

    /// Trades a refresh token for a new access token. When the answer carries a new refresh
    /// token the old one is dead: store it before using the access token. 401 means the
    /// refresh token is dead: authenticate again with the client and server tokens.
    pub async fn refresh(&self, refresh_token: &Token) -> Result<TokenPair, Error> {
        let ep = endpoint::REFRESH;
        let body = wire::RefreshRequestWire {
            refresh_token: refresh_token.expose().into(),
        };
        let mut req = self.request(
            ep,
            Method::POST,
            paths::REFRESH,
            None,
            None,
            Some(json(&body)?),
        )?;
        req.secrets = vec![refresh_token.expose()];
        let answer = self.execute(&req, Kind::Idempotent).await?;
        token_pair(&req, &answer)
    }

    fn request<'a>(
        &self,
        endpoint: &'static str,
        method: Method,
        path: &str,
        id: Option<&str>,
        bearer: Option<&'a Token>,
        body: Option<Vec<u8>>,
    ) -> Result<Request<'a>, Error> {
        let mut url = self.inner.base.clone();
        {
            let mut segs = url.path_segments_mut().map_err(|_| Error::Config {
                message: "base_url cannot take a path".into(),
            })?;
            segs.extend(path.split('/').filter(|s| !s.is_empty()));
            if let Some(id) = id {
                if id.is_empty() || id == "." || id == ".." {
                    return Err(Error::Config {
                        message: format!("{endpoint}: invalid account id"),
                    });
                }
                segs.push(id);
            }
        }
        Ok(Request {
            endpoint,
            method,
            url,
            bearer,
            body,
            secrets: bearer.map(|t| vec![t.expose()]).unwrap_or_default(),
        })
    }

    /// Runs a request with retries; returns the first 2xx answer.
    async fn execute(&self, req: &Request<'_>, kind: Kind) -> Result<Answer, Error> {
        let policy = &self.inner.config.retry;
        let mut waited = Duration::ZERO;
        let mut retry = 0u32;
        loop {
            let err = match self.attempt(req).await {
                Ok(a) if (200..300).contains(&a.status) => return Ok(a),
                Ok(a) => {
                    classify_status(req.endpoint, a.status, a.retry_after, &a.body, &req.secrets)
                }
                Err(e) => e,
            };
            let may_retry = match kind {
                Kind::Idempotent => err.is_retryable(),
                Kind::Create => not_processed(&err),
            };
            let give_up = |err: Error| -> Result<Answer, Error> {
                Err(match kind {
                    Kind::Create if !provably_not_created(&err) => Error::CreateOutcomeUnknown {
                        cause: Box::new(err),
                    },
                    _ => err,
                })
            };
            if !may_retry || retry + 1 >= policy.max_attempts {
                return give_up(err);
            }
            let delay = match err.retry_after() {
                Some(after) => after.min(policy.max_retry_after),
                None => policy.backoff(retry),
            };
            if waited + delay > policy.max_total_wait {
                debug!(
                    endpoint = req.endpoint,
                    ?delay,
                    "retry wait exceeds the budget; giving up"
                );
                return give_up(err);
            }
            debug!(endpoint = req.endpoint, error = %err, ?delay, attempt = retry + 1, "retrying");
            tokio::time::sleep(delay).await;
            waited += delay;
            retry += 1;
        }
    }

    /// One attempt: in-flight permit, rate limit, send, read the body, all under the timeout.
    /// The permit comes first: a request that passed the rate limit and then waited for a
    /// permit was sent whenever one came free, together with every other such request, in a
    /// burst above the rate.
    async fn attempt(&self, req: &Request<'_>) -> Result<Answer, Error> {
        let _permit = self
            .inner
            .in_flight
            .acquire()
            .await
            .expect("the semaphore is never closed");
        if let Some(limiter) = &self.inner.limiter {
            limiter.acquire().await;
        }
        let timeout = self.inner.config.request_timeout;
        let started = Instant::now();
        let result = match tokio::time::timeout(timeout, self.send(req)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                endpoint: req.endpoint,
                after: timeout,
            }),
        };
        drop(_permit);
        let elapsed = started.elapsed();
        let outcome = match &result {
            Ok(a) => match a.status {
                200..=299 => "2xx",
                300..=399 => "3xx",
                400..=499 => "4xx",
                500..=599 => "5xx",
                _ => "other",
            },
            Err(e) => e.label(),
        };
        match &result {
            Ok(a) => debug!(
                endpoint = req.endpoint,
                status = a.status,
                ?elapsed,
                "gebeta call"
            ),
            Err(e) => warn!(endpoint = req.endpoint, error = %e, ?elapsed, "gebeta call failed"),
        }
        if let Some(observer) = &self.inner.observer {
            observer.observe(req.endpoint, outcome, elapsed);
        }
        result
    }

    async fn send(&self, req: &Request<'_>) -> Result<Answer, Error> {
        let mut builder = self
            .inner
            .http
            .request(req.method.clone(), req.url.clone())
            .header(ACCEPT, "application/json");
        if let Some(token) = req.bearer {
            builder = builder.bearer_auth(token.expose());
        }
        if let Some(body) = &req.body {
            builder = builder
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let mut response = builder.send().await.map_err(|e| self.transport(req, e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, jiff::Timestamp::now()))
            .map(|d| d.min(self.inner.config.retry.max_retry_after));
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(req, e))? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(Error::Decode {
                    endpoint: req.endpoint,
                    status,
                    message: format!("response body larger than {MAX_BODY_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }

    fn transport(&self, req: &Request<'_>, e: reqwest::Error) -> Error {
        let endpoint = req.endpoint;
        if e.is_builder() {
            return Error::Config {
                message: format!("{endpoint}: cannot build the request (invalid token or URL?)"),
            };
        }
        let connect = e.is_connect();
        if e.is_timeout() && !connect {
            return Error::Timeout {
                endpoint,
                after: self.inner.config.request_timeout,
            };
        }
        let e = e.without_url();
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            let text = s.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = s.source();
        }
        Error::Transport {
            endpoint,
            connect,
            message: sanitize(&message, &req.secrets, 200),
        }
    }
}

/// Create may be retried only when the server provably did not process the request.
fn not_processed(err: &Error) -> bool {
    matches!(
        err,
        Error::RateLimited { .. } | Error::Transport { connect: true, .. }
    )
}

/// Errors after which we know no account was created.
fn provably_not_created(err: &Error) -> bool {
    matches!(
        err,
        Error::Validation { .. }
            | Error::Unauthorized { .. }
            | Error::NotFound { .. }
            | Error::RateLimited { .. }
            | Error::Config { .. }
            | Error::Transport { connect: true, .. }
    )
}

fn json<T: serde::Serialize>(body: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(body).map_err(|_| Error::Config {
        message: "cannot serialize the request body".into(),
    })
}

/// Decodes `{"data": T}`.
fn decode<T: DeserializeOwned>(req: &Request<'_>, answer: &Answer) -> Result<T, Error> {
    Ok(decode_raw::<wire::Envelope<T>>(req, answer)?.data)
}

fn decode_raw<T: DeserializeOwned>(req: &Request<'_>, answer: &Answer) -> Result<T, Error> {
    serde_json::from_slice(&answer.body).map_err(|e| Error::Decode {
        endpoint: req.endpoint,
        status: answer.status,
        message: describe_json_error(&e, &req.secrets),
    })
}

fn token_pair(req: &Request<'_>, answer: &Answer) -> Result<TokenPair, Error> {
    let pair: wire::TokenPairWire = decode(req, answer)?;
    if pair.access_token.is_empty() {
        return Err(Error::Decode {
            endpoint: req.endpoint,
            status: answer.status,
            message: "empty access token".into(),
        });
    }
    Ok(TokenPair {
        access_token: Token::new(pair.access_token),
        refresh_token: pair.refresh_token.filter(|t| !t.is_empty()).map(Token::new),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_debug_hides_credentials_and_ca() {
        let config = ClientConfig {
            base_url: "https://user:hunter2-secret@example.com/api/v1?key=qsecret".into(),
            extra_ca_pem: Some(b"-----BEGIN CERTIFICATE-----".to_vec()),
            ..Default::default()
        };
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("qsecret"),
            "{shown}"
        );
        assert!(shown.contains("example.com/api/v1"), "{shown}");
        assert!(shown.contains("<27 bytes>"), "{shown}");
        assert!(!shown.contains("BEGIN"), "{shown}");
    }

    #[test]
    fn secret_holding_types_redact() {
        let secret = "the-secret-token-value";
        let pair = TokenPair {
            access_token: Token::new(secret),
            refresh_token: Some(Token::new(secret)),
        };
        let created = CreatedAccount {
            account: Account {
                id: "a".into(),
                platform: crate::gebeta::model::Platform::Web,
                is_admin: false,
                description: String::new(),
                scopes: vec![],
                status: crate::gebeta::model::AccountState::Active,
                created_at: None,
                updated_at: None,
                unknown: Vec::new(),
            },
            token: Token::new(secret),
        };
        for shown in [format!("{pair:?}"), format!("{created:?}")] {
            assert!(!shown.contains(secret), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
    }

    #[test]
    fn rejects_bad_config() {
        let bad = |c: ClientConfig| GebetaClient::new(c).unwrap_err().label();
        let base = ClientConfig::default;
        assert_eq!(
            bad(ClientConfig {
                base_url: "not a url".into(),
                ..base()
            }),
            "config"
        );
        assert_eq!(
            bad(ClientConfig {
                base_url: "ftp://x/api".into(),
                ..base()
            }),
            "config"
        );
        assert_eq!(
            bad(ClientConfig {
                base_url: "https://u:p@x/api".into(),
                ..base()
            }),
            "config"
        );
        assert_eq!(
            bad(ClientConfig {
                max_in_flight: 0,
                ..base()
            }),
            "config"
        );
        assert_eq!(
            bad(ClientConfig {
                rate_limit_per_second: Some(0.0),
                ..base()
            }),
            "config"
        );
        assert_eq!(
            bad(ClientConfig {
                rate_limit_per_second: Some(f64::NAN),
                ..base()
            }),
            "config"
        );
        assert_eq!(
            bad(ClientConfig {
                extra_ca_pem: Some(b"junk".to_vec()),
                ..base()
            }),
            "config"
        );
        let e = GebetaClient::new(ClientConfig {
            base_url: "https://u:hunter2@x/api".into(),
            ..base()
        })
        .unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
        assert!(GebetaClient::new(base()).is_ok());
    }

    #[test]
    fn urls_join_base_path_and_encoded_id() {
        let client = GebetaClient::new(ClientConfig {
            base_url: "http://127.0.0.1:1/api/v1/".into(),
            ..Default::default()
        })
        .unwrap();
        let r = client
            .request(
                "get_account",
                Method::GET,
                paths::ACCOUNT_PREFIX,
                Some("a/b c"),
                None,
                None,
            )
            .unwrap();
        assert_eq!(
            r.url.as_str(),
            "http://127.0.0.1:1/api/v1/service-accounts/a%2Fb%20c"
        );
        let r = client
            .request("auth", Method::POST, paths::AUTH, None, None, None)
            .unwrap();
        assert_eq!(r.url.as_str(), "http://127.0.0.1:1/api/v1/external/auth");
        assert!(r.body.is_none());
        for id in ["", ".", ".."] {
            assert!(
                client
                    .request(
                        "get_account",
                        Method::GET,
                        paths::ACCOUNT_PREFIX,
                        Some(id),
                        None,
                        None
                    )
                    .is_err()
            );
        }
    }

    #[test]
    fn create_retry_rules() {
        let e = |status| classify_status("create_account", status, None, b"", &[]);
        assert!(not_processed(&e(429)));
        assert!(!not_processed(&e(500)));
        assert!(!not_processed(&e(503)));
        assert!(not_processed(&Error::Transport {
            endpoint: "create_account",
            connect: true,
            message: String::new()
        }));
        assert!(!not_processed(&Error::Transport {
            endpoint: "create_account",
            connect: false,
            message: String::new()
        }));
        assert!(!not_processed(&Error::Timeout {
            endpoint: "create_account",
            after: Duration::ZERO
        }));
        assert!(
            provably_not_created(&e(400))
                && provably_not_created(&e(401))
                && provably_not_created(&e(429))
        );
        assert!(!provably_not_created(&e(500)) && !provably_not_created(&e(502)));
    }
}
