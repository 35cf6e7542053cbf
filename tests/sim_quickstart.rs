//! `gebeta-sim` driven as the public quick start does it, with a plain HTTP client and only
//! the base URL changed; plus the `/route` token checks and the `/_sim/` control API.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gebeta_operator::gebeta::{Platform, Scope};
use gebeta_operator::sim::{Sim, SimConfig, SimHandle, SimStats};
use serde_json::{Value, json};
use tokio::time::Instant;

const ROUTE_QUERY: &str = "origin=9.0222,38.7469&destination=9.0500,38.7500";

async fn post(http: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let r = http.post(url).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn route(http: &reqwest::Client, sim: &SimHandle, bearer: &str) -> u16 {
    let url = format!("{}/route?{ROUTE_QUERY}", sim.base_url());
    http.get(url)
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The two tokens "made in the dashboard".
fn dashboard_tokens(sim: &SimHandle) -> (String, String) {
    let (_, client) =
        sim.create_dashboard_account(Platform::Web, vec![Scope::Tile, Scope::Direction]);
    let (_, server) = sim.create_dashboard_account(Platform::Web, vec![Scope::Direction]);
    (client, server)
}

#[tokio::test]
async fn quick_start_sequence() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let base = sim.base_url();
    let http = reqwest::Client::new();
    let (client_token, server_token) = dashboard_tokens(&sim);

    // 1. auth with the two tokens; read data.accessToken and data.refreshToken.
    let (status, body) = post(
        &http,
        format!("{base}/external/auth"),
        json!({"client_token": client_token, "server_token": server_token}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let access = body["data"]["accessToken"]
        .as_str()
        .expect("data.accessToken")
        .to_owned();
    let refresh = body["data"]["refreshToken"]
        .as_str()
        .expect("data.refreshToken")
        .to_owned();

    // 2. call /route with the access token.
    let r = http
        .get(format!("{base}/route?{ROUTE_QUERY}"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let routed: Value = r.json().await.unwrap();
    assert!(
        routed["data"]["distanceMeters"].as_f64().unwrap() > 0.0,
        "{routed}"
    );

    // 3. refresh; read data.accessToken and use it.
    let (status, body) = post(
        &http,
        format!("{base}/external/refresh"),
        json!({"refresh_token": refresh}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let fresh = body["data"]["accessToken"]
        .as_str()
        .expect("data.accessToken")
        .to_owned();
    assert_ne!(fresh, access);
    assert_eq!(route(&http, &sim, &fresh).await, 200);

    let stats = sim.stats();
    assert_eq!(
        (
            stats.calls("auth"),
            stats.calls("refresh"),
            stats.status_count("route", 200)
        ),
        (1, 1, 2)
    );
}

#[tokio::test]
async fn route_rejects_expired_tokens() {
    let sim = Sim::start(SimConfig {
        token_ttl: Duration::from_secs(2),
        ..Default::default()
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let (c, s) = dashboard_tokens(&sim);
    let (_, body) = post(
        &http,
        format!("{}/external/auth", sim.base_url()),
        json!({"client_token": c, "server_token": s}),
    )
    .await;
    let access = body["data"]["accessToken"].as_str().unwrap().to_owned();
    let claims = gebeta_operator::gebeta::decode_claims(&access).unwrap();
    assert_eq!(claims.exp.unwrap() - claims.iat.unwrap(), 2);
    assert_eq!(
        route(&http, &sim, &access).await,
        200,
        "valid right after issue"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = route(&http, &sim, &access).await;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(Instant::now() < deadline, "the token never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        jiff::Timestamp::now().as_second() >= claims.exp.unwrap(),
        "refused only once expired"
    );
}

#[tokio::test]
async fn route_rejects_forged_and_malformed_tokens() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let http = reqwest::Client::new();
    let (c, s) = dashboard_tokens(&sim);
    let (_, body) = post(
        &http,
        format!("{}/external/auth", sim.base_url()),
        json!({"client_token": c, "server_token": s}),
    )
    .await;
    let access = body["data"]["accessToken"].as_str().unwrap().to_owned();
    assert_eq!(route(&http, &sim, &access).await, 200);

    let parts: Vec<&str> = access.split('.').collect();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    payload["exp"] = json!(payload["exp"].as_i64().unwrap() + 86_400);
    let longer = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap());

    // Same claims signed with another key.
    let other_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"not-the-sim-key");
    let input = format!("{}.{}", parts[0], parts[1]);
    let forged_sig =
        URL_SAFE_NO_PAD.encode(ring::hmac::sign(&other_key, input.as_bytes()).as_ref());
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);

    for forged in [
        format!("{input}.{forged_sig}"),
        format!("{}.{longer}.{}", parts[0], parts[2]),
        format!("{none_header}.{}.", parts[1]),
        format!("{none_header}.{}.{}", parts[1], parts[2]),
        "garbage".to_owned(),
        format!("{access}x"),
    ] {
        assert_eq!(route(&http, &sim, &forged).await, 401, "{forged}");
    }
    let url = format!("{}/route?{ROUTE_QUERY}", sim.base_url());
    let no_header = http.get(&url).send().await.unwrap();
    assert_eq!(no_header.status().as_u16(), 401);
    let body: Value = no_header.json().await.unwrap();
    assert_eq!(body, json!({"error": "invalid or missing api key"}));
    // Valid token, missing parameters: 400, never 500.
    let r = http
        .get(format!("{}/route", sim.base_url()))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

#[tokio::test]
async fn malformed_requests_get_4xx_never_500() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let http = reqwest::Client::new();
    let base = sim.base_url();
    let (id, _) = sim.create_dashboard_account(Platform::Web, vec![Scope::Tile]);
    let user = "sim-user-token";
    let validation = json!({"error": "Validation failed", "code": "FAILED_VALIDATION"});

    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (http.post(format!("{base}/service-accounts")).bearer_auth(user).body("{not json"), 400),
        (http.post(format!("{base}/service-accounts")).bearer_auth(user).json(&json!({"platform": "WEB"})), 400),
        (
            http.post(format!("{base}/service-accounts"))
                .bearer_auth(user)
                .json(&json!({"platform": "WEB", "isAdmin": false, "description": "", "scopes": ["SPACE"]})),
            400,
        ),
        (http.post(format!("{base}/service-accounts")).json(&json!({})), 401),
        (http.patch(format!("{base}/service-accounts/{id}")).bearer_auth(user).json(&json!({})), 400),
        (http.patch(format!("{base}/service-accounts/{id}")).bearer_auth(user).json(&json!({"isAdmin": true})), 400),
        (http.patch(format!("{base}/service-accounts/nope")).bearer_auth(user).json(&json!({"description": "x"})), 404),
        (http.get(format!("{base}/service-accounts/nope")).bearer_auth(user), 404),
        (http.delete(format!("{base}/service-accounts/nope")).bearer_auth(user), 404),
        (http.get(format!("{base}/service-accounts/organization?limit=500")).bearer_auth(user), 400),
        (http.get(format!("{base}/service-accounts/organization?page=x")).bearer_auth(user), 400),
        (http.post(format!("{base}/external/auth")).body("[]"), 400),
        (http.post(format!("{base}/external/auth")).json(&json!({"client_token": 1, "server_token": 2})), 400),
        (http.post(format!("{base}/external/auth")).json(&json!({"client_token": "a", "server_token": "b"})), 401),
        (http.post(format!("{base}/external/refresh")).json(&json!({})), 400),
        (http.post(format!("{base}/external/refresh")).json(&json!({"refresh_token": "gbr_unknown"})), 401),
        (http.get(format!("{base}/no-such-path")), 404),
    ];
    for (request, expected) in cases {
        let r = request.send().await.unwrap();
        let (status, url) = (r.status().as_u16(), r.url().clone());
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, expected, "{url}: {body}");
        if expected == 400 {
            assert_eq!(body, validation, "{url}");
        }
    }
    let stats = sim.stats();
    assert!(stats.calls.values().all(|c| !c.statuses.contains_key(&500)));
}

#[tokio::test]
async fn control_api_over_http() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let http = reqwest::Client::new();
    let (root, base) = (sim.root_url(), sim.base_url());

    // A dashboard account over HTTP.
    let (status, created) = post(
        &http,
        format!("{root}/_sim/accounts"),
        json!({"platform": "IOS", "scopes": ["TILE"]}),
    )
    .await;
    assert_eq!(status, 201);
    let (id, token) = (
        created["data"]["id"].as_str().unwrap().to_owned(),
        created["data"]["token"].as_str().unwrap().to_owned(),
    );
    assert_eq!(created["data"]["platform"], "IOS");
    let (_, other) = post(&http, format!("{root}/_sim/accounts"), json!({})).await;
    let other_token = other["data"]["token"].as_str().unwrap().to_owned();
    let auth_body = json!({"client_token": token, "server_token": other_token});

    // Faults over HTTP.
    let r = http
        .post(format!("{root}/_sim/faults"))
        .json(&json!({"endpoint": "auth", "fault": "status", "status": 429, "retryAfterSeconds": 3, "count": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let r = http
        .post(format!("{base}/external/auth"))
        .json(&auth_body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "3");
    let bad = post(
        &http,
        format!("{root}/_sim/faults"),
        json!({"endpoint": "nope", "fault": "drop"}),
    )
    .await;
    assert_eq!(bad.0, 400);

    // Config over HTTP: rotation on.
    let (status, config) = post(
        &http,
        format!("{root}/_sim/config"),
        json!({"rotateRefreshTokens": true, "tokenTtlSeconds": 60}),
    )
    .await;
    assert_eq!(
        (
            status,
            config["rotateRefreshTokens"].as_bool(),
            config["tokenTtlSeconds"].as_u64()
        ),
        (200, Some(true), Some(60))
    );
    let (_, pair) = post(&http, format!("{base}/external/auth"), auth_body.clone()).await;
    let (_, refreshed) = post(
        &http,
        format!("{base}/external/refresh"),
        json!({"refresh_token": pair["data"]["refreshToken"]}),
    )
    .await;
    assert!(refreshed["data"]["refreshToken"].is_string());

    // Drift over HTTP: suspend, then auth is refused.
    let r = http
        .patch(format!("{root}/_sim/accounts/{id}"))
        .json(&json!({"status": "SUSPENDED"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        post(&http, format!("{base}/external/auth"), auth_body)
            .await
            .0,
        401
    );
    let r = http
        .delete(format!("{root}/_sim/accounts/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(
        http.delete(format!("{root}/_sim/accounts/{id}"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );

    // Stats over HTTP parse into SimStats and match the in-process view.
    let stats: SimStats = http
        .get(format!("{root}/_sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats.calls("auth"), 3);
    assert_eq!(stats.status_count("auth", 429), 1);
    assert_eq!(stats.status_count("auth", 401), 1);
    assert_eq!(stats.accounts.len(), 1);
    assert_eq!(stats.calls, sim.stats().calls);
}
