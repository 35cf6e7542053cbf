//! The `/_sim/` control API (see the module documentation of `crate::sim` for shapes).
//! Calls here are not counted and never faulted.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use serde::Deserialize;
use serde_json::json;

use super::Sim;
use super::fault::{FaultSpec, endpoint_label};
use crate::gebeta::model::{AccountState, Platform, Scope};

pub(crate) fn router() -> Router<Sim> {
    Router::new()
        .route("/stats", get(stats))
        .route("/stats/reset", post(reset_stats))
        .route("/accounts", post(create_account))
        .route("/accounts/{id}", patch(edit_account).delete(delete_account))
        .route("/faults", post(inject).delete(clear_faults))
        .route("/config", get(get_config).post(set_config))
}

fn bad_request(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": message.into()})),
    )
        .into_response()
}

fn no_such_account() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "no such account"})),
    )
        .into_response()
}

/// Parses a JSON body; an empty body means `{}`.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| format!("invalid body: {e}"))
}

async fn stats(State(sim): State<Sim>) -> Response {
    Json(sim.stats()).into_response()
}

async fn reset_stats(State(sim): State<Sim>) -> Response {
    sim.reset_stats();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DashboardAccount {
    #[serde(default = "web")]
    platform: Platform,
    #[serde(default)]
    is_admin: bool,
    #[serde(default)]
    description: String,
    #[serde(default = "all_scopes")]
    scopes: Vec<Scope>,
    #[serde(default = "active")]
    status: AccountState,
}

fn web() -> Platform {
    Platform::Web
}

fn active() -> AccountState {
    AccountState::Active
}

pub(crate) fn all_scopes() -> Vec<Scope> {
    use Scope::*;
    vec![
        Tile,
        Matrix,
        Onm,
        Direction,
        Tss,
        Geocoding,
        ReverseGeocoding,
    ]
}

async fn create_account(State(sim): State<Sim>, body: Bytes) -> Response {
    let spec: DashboardAccount = match parse(&body) {
        Ok(s) => s,
        Err(message) => return bad_request(message),
    };
    let (account, token) = sim.create_account_with(
        spec.platform,
        spec.is_admin,
        spec.description,
        spec.scopes,
        spec.status,
    );
    let mut value = serde_json::to_value(account.to_wire()).expect("account serializes");
    value["token"] = json!(token);
    (StatusCode::CREATED, Json(json!({ "data": value }))).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AccountEdit {
    #[serde(default)]
    status: Option<AccountState>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<Scope>>,
}

async fn edit_account(State(sim): State<Sim>, Path(id): Path<String>, body: Bytes) -> Response {
    let edit: AccountEdit = match parse(&body) {
        Ok(e) => e,
        Err(message) => return bad_request(message),
    };
    match sim
        .store()
        .edit(&id, edit.status, edit.description, edit.scopes)
    {
        Some(a) => Json(json!({ "data": a.to_wire() })).into_response(),
        None => no_such_account(),
    }
}

async fn delete_account(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    if sim.delete_account(&id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        no_such_account()
    }
}

async fn inject(State(sim): State<Sim>, body: Bytes) -> Response {
    let spec: FaultSpec = match parse(&body) {
        Ok(s) => s,
        Err(message) => return bad_request(message),
    };
    let Some(endpoint) = endpoint_label(&spec.endpoint) else {
        return bad_request(format!("unknown endpoint {:?}", spec.endpoint));
    };
    match spec.to_fault() {
        Ok(fault) => {
            sim.store().inject(endpoint, fault, spec.count);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(message) => bad_request(message),
    }
}

async fn clear_faults(State(sim): State<Sim>) -> Response {
    sim.store().clear_faults();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConfigChange {
    #[serde(default)]
    token_ttl_seconds: Option<u64>,
    #[serde(default)]
    rotate_refresh_tokens: Option<bool>,
    #[serde(default)]
    latency_ms: Option<u64>,
    #[serde(default)]
    fail_rate: Option<f64>,
}

async fn get_config(State(sim): State<Sim>) -> Response {
    Json(sim.store().runtime.clone()).into_response()
}

async fn set_config(State(sim): State<Sim>, body: Bytes) -> Response {
    let change: ConfigChange = match parse(&body) {
        Ok(c) => c,
        Err(message) => return bad_request(message),
    };
    if change.token_ttl_seconds == Some(0) {
        return bad_request("tokenTtlSeconds must be at least 1");
    }
    if change.fail_rate.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
        return bad_request("failRate must be within 0..=1");
    }
    if let Some(ttl) = change.token_ttl_seconds {
        sim.set_token_ttl(Duration::from_secs(ttl));
    }
    let mut store = sim.store();
    if let Some(r) = change.rotate_refresh_tokens {
        store.runtime.rotate_refresh_tokens = r;
    }
    if let Some(l) = change.latency_ms {
        store.runtime.latency_ms = l;
    }
    if let Some(f) = change.fail_rate {
        store.runtime.fail_rate = f;
    }
    Json(store.runtime.clone()).into_response()
}
