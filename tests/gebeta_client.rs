//! The Gebeta client against an in-process `gebeta-sim` (and, for a few tolerance checks,
//! a tiny stub server): every endpoint, every error class, retries, timeouts, limits.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gebeta_operator::gebeta::{
    AccountConfig, AccountPatch, AccountState, ClientConfig, Error, GebetaClient, Platform,
    RequestObserver, RetryPolicy, Scope, Token, decode_claims,
};
use gebeta_operator::sim::{Fault, Sim, SimConfig, SimHandle};
use tokio::time::Instant;

const USER: &str = "sim-user-token";

fn user() -> Token {
    Token::new(USER)
}

async fn start_sim() -> SimHandle {
    Sim::start(SimConfig::default()).await.expect("sim starts")
}

/// Fast retries so tests stay quick; everything else default.
fn config(sim: &SimHandle) -> ClientConfig {
    ClientConfig {
        base_url: sim.base_url(),
        request_timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            max_retry_after: Duration::from_secs(60),
            max_total_wait: Duration::from_secs(3),
        },
        ..ClientConfig::default()
    }
}

fn client(sim: &SimHandle) -> GebetaClient {
    GebetaClient::new(config(sim)).expect("client builds")
}

fn account_config() -> AccountConfig {
    AccountConfig {
        platform: Platform::Android,
        is_admin: false,
        description: "made by a test".into(),
        scopes: vec![Scope::Tile, Scope::Direction],
    }
}

/// An existing account id in the sim.
fn existing(sim: &SimHandle) -> String {
    sim.create_dashboard_account(Platform::Web, vec![Scope::Tile])
        .0
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn management_endpoints_round_trip() {
    let sim = start_sim().await;
    let c = client(&sim);

    let created = c.create_account(&user(), &account_config()).await.unwrap();
    let a = &created.account;
    assert_eq!(
        (a.platform, a.is_admin, a.status),
        (Platform::Android, false, AccountState::Active)
    );
    assert_eq!(a.description, "made by a test");
    assert_eq!(a.scopes, vec![Scope::Tile, Scope::Direction]);
    assert!(a.created_at.is_some() && a.updated_at.is_some());
    assert_eq!(
        Some(created.token.expose().to_owned()),
        sim.account_token(&a.id)
    );
    assert!(!format!("{created:?}").contains(created.token.expose()));

    let got = c.get_account(&user(), &a.id).await.unwrap();
    assert_eq!(&got, a);

    let patched = c
        .patch_account(
            &user(),
            &a.id,
            &AccountPatch {
                status: Some(AccountState::Suspended),
                description: Some("changed".into()),
                scopes: Some(vec![Scope::Onm]),
            },
        )
        .await
        .unwrap();
    assert_eq!(patched.status, AccountState::Suspended);
    assert_eq!(patched.description, "changed");
    assert_eq!(patched.scopes, vec![Scope::Onm]);
    assert_eq!(sim.account(&a.id).unwrap().status, AccountState::Suspended);
    let only_status = AccountPatch {
        status: Some(AccountState::Active),
        ..Default::default()
    };
    assert_eq!(
        c.patch_account(&user(), &a.id, &only_status)
            .await
            .unwrap()
            .description,
        "changed"
    );

    let other = existing(&sim);
    let listed: Vec<String> = c
        .list_accounts(&user())
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(listed, vec![a.id.clone(), other.clone()]);

    c.delete_account(&user(), &a.id).await.unwrap();
    assert!(sim.account(&a.id).is_none());
    let e = c.get_account(&user(), &a.id).await.unwrap_err();
    assert_eq!(e.label(), "not_found");
    let e = c.delete_account(&user(), &a.id).await.unwrap_err();
    assert!(e.is_not_found());
    assert_eq!(sim.calls("delete_account"), 2);

    // Validation errors (from the sim's own rules): not retried.
    let revoke = AccountPatch {
        status: Some(AccountState::Revoked),
        ..Default::default()
    };
    c.patch_account(&user(), &other, &revoke).await.unwrap();
    let before = sim.calls("patch_account");
    let e = c
        .patch_account(&user(), &other, &only_status)
        .await
        .unwrap_err();
    assert_eq!((e.label(), e.status()), ("validation", Some(400)));
    assert_eq!(sim.calls("patch_account"), before + 1);
    let e = c
        .patch_account(&user(), &other, &AccountPatch::default())
        .await
        .unwrap_err();
    assert_eq!(e.label(), "validation");
    let empty_scopes = AccountConfig {
        scopes: vec![],
        ..account_config()
    };
    let e = c.create_account(&user(), &empty_scopes).await.unwrap_err();
    assert_eq!(e.label(), "validation");
    let long = AccountConfig {
        description: "x".repeat(257),
        ..account_config()
    };
    assert_eq!(
        c.create_account(&user(), &long).await.unwrap_err().label(),
        "validation"
    );
    assert_eq!(sim.calls("create_account"), 3);
}

#[tokio::test]
async fn wrong_user_token_is_unauthorized_and_not_retried() {
    let sim = start_sim().await;
    let c = client(&sim);
    let id = existing(&sim);
    let wrong = Token::new("not-the-user-token-0123456789");
    let e = c.get_account(&wrong, &id).await.unwrap_err();
    assert_eq!((e.label(), e.status()), ("unauthorized", Some(401)));
    assert!(!e.is_retryable());
    assert!(e.to_string().contains("invalid or missing api key"), "{e}");
    assert!(!format!("{e} {e:?}").contains(wrong.expose()));
    assert_eq!(sim.calls("get_account"), 1);
    let e = c
        .create_account(&wrong, &account_config())
        .await
        .unwrap_err();
    assert_eq!(e.label(), "unauthorized");
    assert_eq!(sim.calls("create_account"), 1);
    assert!(sim.live_accounts().len() == 1);
    let e = c.list_accounts(&wrong).await.unwrap_err();
    assert_eq!(e.label(), "unauthorized");
}

#[tokio::test]
async fn auth_and_refresh_without_rotation() {
    let sim = Sim::start(SimConfig {
        token_ttl: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .unwrap();
    let c = client(&sim);
    let (client_id, client_token) = sim.create_dashboard_account(Platform::Web, vec![Scope::Tile]);
    let (server_id, server_token) =
        sim.create_dashboard_account(Platform::Web, vec![Scope::Tile, Scope::Geocoding]);
    let (ct, st) = (Token::new(client_token), Token::new(server_token));

    let pair = c.auth(&ct, &st).await.unwrap();
    let claims = decode_claims(pair.access_token.expose()).unwrap();
    assert_eq!(claims.sub.as_deref(), Some(server_id.as_str()));
    assert_eq!(claims.exp.unwrap() - claims.iat.unwrap(), 120);
    assert_eq!(claims.scopes, vec!["TILE", "GEOCODING"]);
    let refresh = pair
        .refresh_token
        .clone()
        .expect("auth answers a refresh token");
    assert!(!format!("{pair:?}").contains(refresh.expose()));

    let again = c.refresh(&refresh).await.unwrap();
    assert!(
        again.refresh_token.is_none(),
        "no rotation: no new refresh token"
    );
    assert_ne!(again.access_token, pair.access_token);
    c.refresh(&refresh)
        .await
        .expect("the refresh token keeps working without rotation");

    // Auth with an unknown token: 401, one call, no secret in the message.
    let bogus = Token::new("gbt_this-is-not-a-known-token-value");
    let e = c.auth(&ct, &bogus).await.unwrap_err();
    assert_eq!(e.label(), "unauthorized");
    assert!(
        !format!("{e} {e:?}").contains(bogus.expose()) && !format!("{e}").contains(ct.expose())
    );
    assert_eq!(sim.calls("auth"), 2);

    // A suspended account kills auth and refresh (and refresh does not come back).
    assert!(sim.set_account_state(&client_id, AccountState::Suspended));
    assert_eq!(c.auth(&ct, &st).await.unwrap_err().label(), "unauthorized");
    assert_eq!(
        c.refresh(&refresh).await.unwrap_err().label(),
        "unauthorized"
    );
    sim.set_account_state(&client_id, AccountState::Active);
    assert!(c.refresh(&refresh).await.unwrap_err().is_unauthorized());
    assert!(c.auth(&ct, &st).await.is_ok());
    assert_eq!(sim.status_count("refresh", 401), 2);
}

#[tokio::test]
async fn refresh_with_rotation() {
    let sim = Sim::start(SimConfig {
        rotate_refresh_tokens: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let c = client(&sim);
    let (_, a) = sim.create_dashboard_account(Platform::Web, vec![Scope::Tile]);
    let (_, b) = sim.create_dashboard_account(Platform::Ios, vec![Scope::Tile]);
    let pair = c.auth(&Token::new(a), &Token::new(b)).await.unwrap();
    let r1 = pair.refresh_token.unwrap();
    let next = c.refresh(&r1).await.unwrap();
    let r2 = next
        .refresh_token
        .expect("rotation answers a new refresh token");
    assert_ne!(r1, r2);
    assert_eq!(
        c.refresh(&r1).await.unwrap_err().label(),
        "unauthorized",
        "the old one is dead"
    );
    let r3 = c.refresh(&r2).await.unwrap().refresh_token.unwrap();
    // Switch rotation off at runtime: the current token keeps working and is not replaced.
    sim.set_rotate_refresh_tokens(false);
    assert!(c.refresh(&r3).await.unwrap().refresh_token.is_none());
    assert!(c.refresh(&r3).await.is_ok());
    assert_eq!(sim.calls("refresh"), 5);
}

#[tokio::test]
async fn transient_server_errors_are_retried_exactly() {
    let sim = start_sim().await;
    let c = client(&sim);
    let id = existing(&sim);

    sim.inject("get_account", Fault::Status(503, None), 2);
    c.get_account(&user(), &id).await.unwrap();
    assert_eq!(sim.calls("get_account"), 3);
    assert_eq!(sim.status_count("get_account", 503), 2);

    // Persistent 500: gives up after max_attempts with a server error.
    sim.inject("get_account", Fault::Status(500, None), 10);
    let e = c.get_account(&user(), &id).await.unwrap_err();
    assert_eq!((e.label(), e.status()), ("server", Some(500)));
    assert!(e.is_retryable());
    assert!(e.to_string().contains("Internal server error"), "{e}");
    assert_eq!(sim.calls("get_account"), 3 + 4);
    sim.clear_faults();

    // An HTML proxy page and an empty 504 are still server errors, by status.
    sim.inject("list_accounts", Fault::Html, 4);
    let e = c.list_accounts(&user()).await.unwrap_err();
    assert_eq!((e.label(), e.status()), ("server", Some(502)));
    assert!(!e.to_string().to_lowercase().contains("html"), "{e}");
    sim.inject("list_accounts", Fault::Status(504, None), 1);
    assert_eq!(c.list_accounts(&user()).await.unwrap().len(), 1);
    assert_eq!(sim.calls("list_accounts"), 4 + 2);

    // Injected 4xx are not retried.
    for status in [400, 401, 404] {
        let before = sim.calls("patch_account");
        sim.inject("patch_account", Fault::Status(status, None), 5);
        let patch = AccountPatch {
            description: Some("x".into()),
            ..Default::default()
        };
        let e = c.patch_account(&user(), &id, &patch).await.unwrap_err();
        assert_eq!(e.status(), Some(status));
        assert_eq!(
            sim.calls("patch_account"),
            before + 1,
            "HTTP {status} must not be retried"
        );
        sim.clear_faults();
    }
}

#[tokio::test]
async fn rate_limits_honour_retry_after() {
    let sim = start_sim().await;
    let c = client(&sim);
    let id = existing(&sim);

    // Retry-After: 1 makes the client wait at least a second (its own backoff is <= 20ms).
    sim.inject("get_account", Fault::Status(429, Some(1)), 1);
    let started = Instant::now();
    c.get_account(&user(), &id).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(sim.calls("get_account"), 2);

    // A Retry-After beyond the wait budget (3s) goes back to the caller at once.
    sim.inject("get_account", Fault::Status(429, Some(30)), 1);
    let started = Instant::now();
    let e = c.get_account(&user(), &id).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(e.label(), "rate_limited");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(30)));
    assert!(
        matches!(e, Error::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(30))
    );
    assert_eq!(sim.calls("get_account"), 3);

    // Retry-After above the cap is clamped to it.
    let capped = GebetaClient::new(ClientConfig {
        retry: RetryPolicy {
            max_retry_after: Duration::from_secs(7),
            ..config(&sim).retry
        },
        ..config(&sim)
    })
    .unwrap();
    sim.inject("get_account", Fault::Status(429, Some(3600)), 1);
    assert_eq!(
        capped
            .get_account(&user(), &id)
            .await
            .unwrap_err()
            .retry_after(),
        Some(Duration::from_secs(7))
    );

    // 429 without Retry-After: backoff, then give up after max_attempts.
    sim.inject("get_account", Fault::Status(429, None), 10);
    let before = sim.calls("get_account");
    let e = c.get_account(&user(), &id).await.unwrap_err();
    assert_eq!((e.label(), e.retry_after()), ("rate_limited", None));
    assert_eq!(sim.calls("get_account"), before + 4);
}

#[tokio::test]
async fn timeouts_come_from_request_timeout() {
    let sim = start_sim().await;
    let id = existing(&sim);
    let c = GebetaClient::new(ClientConfig {
        request_timeout: Duration::from_secs(1),
        retry: RetryPolicy {
            max_attempts: 2,
            ..config(&sim).retry
        },
        ..config(&sim)
    })
    .unwrap();

    sim.inject("get_account", Fault::Latency(Duration::from_secs(6)), 2);
    let started = Instant::now();
    let e = c.get_account(&user(), &id).await.unwrap_err();
    assert_eq!(e.label(), "timeout");
    assert!(matches!(e, Error::Timeout { after, .. } if after == Duration::from_secs(1)));
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "did not wait for the slow answers"
    );
    eventually("both attempts reach the sim", || {
        sim.calls("get_account") == 2
    })
    .await;

    // One slow answer, then a fast one: the retry succeeds.
    sim.inject("get_account", Fault::Latency(Duration::from_secs(6)), 1);
    c.get_account(&user(), &id).await.unwrap();
    eventually("two more calls", || sim.calls("get_account") == 4).await;
}

#[tokio::test]
async fn dropped_connections_and_garbage() {
    let sim = start_sim().await;
    let c = client(&sim);
    let id = existing(&sim);

    sim.inject("get_account", Fault::Drop, 1);
    c.get_account(&user(), &id).await.unwrap();
    assert_eq!(sim.calls("get_account"), 2);
    assert_eq!(sim.stats().calls["get_account"].dropped, 1);

    sim.inject("get_account", Fault::Drop, 10);
    let e = c.get_account(&user(), &id).await.unwrap_err();
    assert_eq!(e.label(), "transport");
    assert!(matches!(e, Error::Transport { connect: false, .. }));
    assert!(
        !e.to_string().contains(&sim.addr().port().to_string()),
        "no URL in the message: {e}"
    );
    assert_eq!(sim.calls("get_account"), 2 + 4);
    sim.clear_faults();

    // A 200 with a body we cannot read: decode, not retried.
    sim.inject("get_account", Fault::Garbage, 5);
    let e = c.get_account(&user(), &id).await.unwrap_err();
    assert_eq!((e.label(), e.status()), ("decode", Some(200)));
    assert!(!e.is_retryable());
    assert!(!e.to_string().contains("garbage"), "{e}");
    assert_eq!(sim.calls("get_account"), 7);
    sim.inject("auth", Fault::Garbage, 1);
    let e = c
        .auth(&Token::new("a"), &Token::new("b"))
        .await
        .unwrap_err();
    assert_eq!(e.label(), "decode");
}

#[tokio::test]
async fn connection_refused_is_a_connect_error() {
    // A port with nothing listening: bind, read the port, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = GebetaClient::new(ClientConfig {
        base_url: format!("http://127.0.0.1:{port}/api/v1"),
        retry: RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(5),
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    let e = c.get_account(&user(), "x").await.unwrap_err();
    assert!(matches!(e, Error::Transport { connect: true, .. }), "{e:?}");
    // Create was provably never sent: a plain transport error, not "outcome unknown".
    let e = c
        .create_account(&user(), &account_config())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Transport { connect: true, .. }), "{e:?}");
    assert!(e.is_retryable());
}

#[tokio::test]
async fn create_is_never_retried_once_it_may_have_landed() {
    let sim = start_sim().await;
    let c = client(&sim);

    // The server creates the account, then drops the connection.
    sim.inject("create_account", Fault::DropAfterCreate, 1);
    let e = c
        .create_account(&user(), &account_config())
        .await
        .unwrap_err();
    assert_eq!(e.label(), "create_outcome_unknown");
    assert!(!e.is_retryable());
    assert!(
        matches!(&e, Error::CreateOutcomeUnknown { cause } if cause.label() == "transport"),
        "{e:?}"
    );
    assert_eq!(sim.calls("create_account"), 1);
    let live = sim.live_accounts();
    assert_eq!(live.len(), 1, "the account exists upstream");
    assert_eq!(live[0].description, "made by a test");

    // 5xx: outcome unknown, one call.
    sim.inject("create_account", Fault::Status(503, None), 1);
    let e = c
        .create_account(&user(), &account_config())
        .await
        .unwrap_err();
    assert_eq!(
        (e.label(), e.status()),
        ("create_outcome_unknown", Some(503))
    );
    assert_eq!(sim.calls("create_account"), 2);

    // Timeout: outcome unknown, one call; the account appears once the slow call ends.
    let slow = GebetaClient::new(ClientConfig {
        request_timeout: Duration::from_secs(1),
        ..config(&sim)
    })
    .unwrap();
    sim.inject("create_account", Fault::Latency(Duration::from_secs(3)), 1);
    let e = slow
        .create_account(&user(), &account_config())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::CreateOutcomeUnknown { cause } if cause.label() == "timeout"),
        "{e:?}"
    );
    eventually("the slow create lands", || sim.live_accounts().len() == 2).await;
    assert_eq!(sim.calls("create_account"), 3);

    // A 2xx we cannot read: the account may exist, the token is lost.
    sim.inject("create_account", Fault::Garbage, 1);
    let e = c
        .create_account(&user(), &account_config())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::CreateOutcomeUnknown { cause } if cause.label() == "decode"),
        "{e:?}"
    );
    assert_eq!(sim.calls("create_account"), 4);

    // 429 means "not processed": retried, and it succeeds.
    sim.inject("create_account", Fault::Status(429, None), 2);
    let created = c.create_account(&user(), &account_config()).await.unwrap();
    assert_eq!(sim.calls("create_account"), 7);
    assert_eq!(sim.live_accounts().len(), 3);
    assert_eq!(
        sim.account_token(&created.account.id).as_deref(),
        Some(created.token.expose())
    );

    // 429 for longer than the attempts: rate_limited (known not created), not "unknown".
    sim.inject("create_account", Fault::Status(429, None), 10);
    assert_eq!(
        c.create_account(&user(), &account_config())
            .await
            .unwrap_err()
            .label(),
        "rate_limited"
    );
    assert_eq!(sim.live_accounts().len(), 3);
}

#[tokio::test]
async fn list_reads_every_page() {
    let sim = start_sim().await;
    let c = client(&sim);
    let mut ids: Vec<String> = (0..250).map(|_| existing(&sim)).collect();
    assert!(sim.delete_account(&ids.remove(17)));
    let listed = c.list_accounts(&user()).await.unwrap();
    let got: Vec<String> = listed.iter().map(|a| a.id.clone()).collect();
    assert_eq!(got, ids, "all 249 accounts, in creation order");
    assert_eq!(sim.calls("list_accounts"), 3, "pages of 100");
    assert_eq!(sim.status_count("list_accounts", 200), 3);

    // A failing page is retried on its own.
    sim.reset_stats();
    sim.inject("list_accounts", Fault::Status(503, None), 1);
    assert_eq!(c.list_accounts(&user()).await.unwrap().len(), 249);
    assert_eq!(sim.calls("list_accounts"), 4);

    let empty = start_sim().await;
    assert!(
        client(&empty)
            .list_accounts(&user())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(empty.calls("list_accounts"), 1);
}

#[tokio::test]
async fn in_flight_requests_are_bounded() {
    let sim = start_sim().await;
    let id = existing(&sim);
    let run = |max_in_flight: usize| {
        let c = GebetaClient::new(ClientConfig {
            max_in_flight,
            ..config(&sim)
        })
        .unwrap();
        let id = id.clone();
        async move {
            let calls = (0..8).map(|_| {
                let (c, id) = (c.clone(), id.clone());
                async move { c.get_account(&user(), &id).await }
            });
            for r in futures::future::join_all(calls).await {
                r.unwrap();
            }
        }
    };

    sim.inject("get_account", Fault::Latency(Duration::from_millis(300)), 8);
    run(2).await;
    assert_eq!(
        sim.peak_in_flight(),
        2,
        "at most 2 at once, and the 8 calls did overlap"
    );
    assert_eq!(sim.calls("get_account"), 8);

    // Control: with a larger bound the sim does see more at once.
    sim.reset_stats();
    sim.inject("get_account", Fault::Latency(Duration::from_millis(300)), 8);
    run(8).await;
    assert!(sim.peak_in_flight() > 2, "peak {}", sim.peak_in_flight());
}

#[tokio::test]
async fn requests_per_second_limit_is_shared_by_clones() {
    let sim = start_sim().await;
    let id = existing(&sim);
    let c = GebetaClient::new(ClientConfig {
        rate_limit_per_second: Some(10.0),
        ..config(&sim)
    })
    .unwrap();
    let started = Instant::now();
    // 10 pass at once (one second of burst), the next 10 are paced at 100ms across clones.
    let calls = (0..20).map(|i| {
        let c = if i % 2 == 0 {
            c.clone()
        } else {
            c.clone().with_observer(Arc::new(Recorder::default()))
        };
        let id = id.clone();
        async move { c.get_account(&user(), &id).await }
    });
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(sim.calls("get_account"), 20);
}

/// Requests that wait for an in-flight slot do not go out together when it frees: the rate
/// limit is taken after the slot. Calls complete (one in flight) at least a rate interval
/// apart once the slow first call is done; taking the limit first sent every request that
/// had passed it in one burst.
#[tokio::test]
async fn the_rate_limit_holds_when_in_flight_slots_free_up() {
    #[derive(Default)]
    struct Completions(Mutex<Vec<std::time::Instant>>);
    impl RequestObserver for Completions {
        fn observe(&self, _: &'static str, _: &str, _: Duration) {
            self.0.lock().unwrap().push(std::time::Instant::now());
        }
    }
    let sim = start_sim().await;
    let id = existing(&sim);
    let done = Arc::new(Completions::default());
    let c = GebetaClient::new(ClientConfig {
        rate_limit_per_second: Some(1.0),
        max_in_flight: 1,
        ..config(&sim)
    })
    .unwrap()
    .with_observer(done.clone());
    sim.inject("get_account", Fault::Latency(Duration::from_secs(3)), 1);
    let calls = (0..5).map(|_| {
        let (c, id) = (c.clone(), id.clone());
        async move { c.get_account(&user(), &id).await }
    });
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    let at = done.0.lock().unwrap().clone();
    assert_eq!(at.len(), 5);
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps[1..].iter().all(|g| *g >= Duration::from_millis(900)),
        "completions after the slow call came {gaps:?} apart at 1 call/s"
    );
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(String, String)>>);

impl RequestObserver for Recorder {
    fn observe(&self, endpoint: &'static str, outcome: &str, _elapsed: Duration) {
        self.0
            .lock()
            .unwrap()
            .push((endpoint.to_owned(), outcome.to_owned()));
    }
}

#[tokio::test]
async fn observer_sees_every_attempt() {
    let sim = start_sim().await;
    let id = existing(&sim);
    let recorder = Arc::new(Recorder::default());
    let c = client(&sim).with_observer(recorder.clone());
    sim.inject("get_account", Fault::Status(503, None), 1);
    c.get_account(&user(), &id).await.unwrap();
    sim.inject("get_account", Fault::Drop, 1);
    c.get_account(&user(), &id).await.unwrap();
    let _ = c.get_account(&user(), "missing").await;
    let seen = recorder.0.lock().unwrap().clone();
    let expected = [
        ("get_account", "5xx"),
        ("get_account", "2xx"),
        ("get_account", "transport"),
        ("get_account", "2xx"),
        ("get_account", "4xx"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(seen, expected);
}

/// A stub API for what the sim never does: extra and missing fields, 200 on DELETE, a list
/// without `meta`; it also records the User-Agent.
#[tokio::test]
async fn tolerant_decoding_and_user_agent() {
    use axum::routing::get;
    let agents = Arc::new(Mutex::new(HashSet::new()));
    let seen = agents.clone();
    let app = axum::Router::new()
        .route(
            "/api/v1/service-accounts/{id}",
            get(|| async {
                axum::Json(serde_json::json!({"data": {
                    "id": "a1", "platform": "WEB", "status": "SUSPENDED", "organizationId": "o", "extra": [1, 2]
                }, "requestId": "r"}))
            })
            .delete(|| async { (axum::http::StatusCode::OK, "{\"message\":\"deleted\"}") }),
        )
        .route(
            "/api/v1/service-accounts/organization",
            get(|| async {
                axum::Json(serde_json::json!({"data": [
                    {"id": "a", "platform": "WEB", "status": "ACTIVE"},
                    {"id": "b", "platform": "IOS", "status": "REVOKED", "scopes": ["TILE"]}
                ]}))
            }),
        )
        .layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
            let seen = seen.clone();
            async move {
                if let Some(ua) = req.headers().get("user-agent") {
                    seen.lock().unwrap().insert(ua.to_str().unwrap().to_owned());
                }
                next.run(req).await
            }
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let c = GebetaClient::new(ClientConfig {
        base_url: format!("http://{addr}/api/v1"),
        ..Default::default()
    })
    .unwrap();
    let a = c.get_account(&user(), "a1").await.unwrap();
    assert_eq!(
        (
            a.status,
            a.description.as_str(),
            a.scopes.len(),
            a.created_at
        ),
        (AccountState::Suspended, "", 0, None)
    );
    c.delete_account(&user(), "a1").await.unwrap();
    let all = c.list_accounts(&user()).await.unwrap();
    assert_eq!(
        all.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    let agents = agents.lock().unwrap().clone();
    assert_eq!(
        agents,
        HashSet::from([format!("gebeta-operator/{}", env!("CARGO_PKG_VERSION"))])
    );
}

/// A listing that ends with fewer accounts than its `meta.total` is not taken as complete: it
/// is asked again, and one that stays short is an error, never "these are all the accounts".
#[tokio::test]
async fn short_listings_are_retried_and_never_taken_as_complete() {
    use axum::routing::get;
    use std::sync::atomic::{AtomicU32, Ordering};
    let serve = |short_passes: u32| async move {
        let requests = Arc::new(AtomicU32::new(0));
        let counter = requests.clone();
        let app = axum::Router::new().route(
            "/api/v1/service-accounts/organization",
            get(
                move |q: axum::extract::Query<std::collections::HashMap<String, String>>| {
                    let counter = counter.clone();
                    async move {
                        let n = counter.fetch_add(1, Ordering::SeqCst);
                        let page: u32 = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
                        // Page 1 then an empty page 2 make one pass.
                        let pass = n / 2;
                        let data = match (page, pass < short_passes) {
                            (1, true) => serde_json::json!([
                                {"id": "a", "platform": "WEB", "status": "ACTIVE"},
                                {"id": "b", "platform": "WEB", "status": "ACTIVE"}
                            ]),
                            (1, false) => serde_json::json!([
                                {"id": "a", "platform": "WEB", "status": "ACTIVE"},
                                {"id": "b", "platform": "WEB", "status": "ACTIVE"},
                                {"id": "c", "platform": "WEB", "status": "ACTIVE"}
                            ]),
                            _ => serde_json::json!([]),
                        };
                        axum::Json(serde_json::json!({"data": data, "meta": {"total": 3}}))
                    }
                },
            ),
        );
        client_of(app).await
    };
    // Short twice, then whole: the third pass is believed.
    let listed = serve(2).await.list_accounts(&user()).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    // Always short: an error that says so.
    let err = serve(u32::MAX)
        .await
        .list_accounts(&user())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("2 of meta.total 3"), "{err}");
}

/// A server that ignores paging cannot grow a listing without bound: a page with more
/// accounts than asked for is an error, and so is a listing past 100,000 accounts.
#[tokio::test]
async fn listings_that_never_end_are_bounded() {
    use axum::routing::get;
    use std::sync::atomic::{AtomicU64, Ordering};
    let serve = |per_page: u64| async move {
        let next = Arc::new(AtomicU64::new(0));
        let app = axum::Router::new().route(
            "/api/v1/service-accounts/organization",
            get(move || {
                let next = next.clone();
                async move {
                    let first = next.fetch_add(per_page, Ordering::SeqCst);
                    let data: Vec<_> = (first..first + per_page)
                        .map(|i| serde_json::json!({"id": format!("acct-{i}"), "platform": "WEB", "status": "ACTIVE"}))
                        .collect();
                    axum::Json(serde_json::json!({"data": data, "meta": {"total": 1_000_000_000_000u64}}))
                }
            }),
        );
        client_of(app).await
    };
    let err = serve(150).await.list_accounts(&user()).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("at most 100 accounts answered 150"),
        "{err}"
    );
    let err = serve(100).await.list_accounts(&user()).await.unwrap_err();
    assert!(err.to_string().contains("past 100000 accounts"), "{err}");
}

/// A client of a stub API serving `app` (routes under `/api/v1`) on a free local port.
async fn client_of(app: axum::Router) -> GebetaClient {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    GebetaClient::new(ClientConfig {
        base_url: format!("http://{addr}/api/v1"),
        ..Default::default()
    })
    .unwrap()
}
