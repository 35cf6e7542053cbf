//! The Gebeta API as the simulator serves it under `/api/v1`, with per-endpoint counters,
//! injected faults, global latency and the random failure rate applied around each call.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use serde_json::json;

use super::Sim;
use super::conn::Conn;
use super::fault::Fault;
use super::jwt::{SimClaims, sign, verify};
use super::store::{Grant, Refusal};
use crate::gebeta::endpoint;
use crate::gebeta::wire::{self, AuthRequestWire, RefreshRequestWire, paths};

pub(crate) fn router() -> Router<Sim> {
    let filter = |m| MethodFilter::try_from(m).expect("standard method");
    Router::new()
        .route(paths::ACCOUNTS, on(filter(wire::CREATE_METHOD), create))
        .route(paths::ORGANIZATION, on(filter(wire::LIST_METHOD), list))
        .route(
            &format!("{}/{{id}}", paths::ACCOUNT_PREFIX),
            on(filter(wire::GET_METHOD), get_one)
                .on(filter(wire::PATCH_METHOD), patch)
                .on(filter(wire::DELETE_METHOD), delete),
        )
        .route(paths::AUTH, on(MethodFilter::POST, auth))
        .route(paths::REFRESH, on(MethodFilter::POST, refresh))
        .route(paths::ROUTE, on(MethodFilter::GET, route))
}

// ---- answers ---------------------------------------------------------------------------

pub(crate) fn refusal(r: Refusal) -> Response {
    match r {
        Refusal::Validation => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "Validation failed", "code": "FAILED_VALIDATION"})),
        )
            .into_response(),
        Refusal::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid or missing api key"})),
        )
            .into_response(),
        Refusal::NotFound => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "Service account not found"})),
        )
            .into_response(),
    }
}

fn internal_error() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({"error": "Internal server error"})),
    )
        .into_response()
}

fn fault_status(status: u16, retry_after: Option<u64>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = match code.as_u16() {
        400 => refusal(Refusal::Validation),
        401 => refusal(Refusal::Unauthorized),
        404 => refusal(Refusal::NotFound),
        500 => internal_error(),
        429 => (code, Json(json!({"error": "Too many requests"}))).into_response(),
        502..=504 => code.into_response(),
        _ => (
            code,
            Json(json!({"error": code.canonical_reason().unwrap_or("error")})),
        )
            .into_response(),
    };
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

fn garbage() -> Response {
    let mut r = (
        StatusCode::OK,
        &b"\x00\x01<<garbage>> {\"data\": [unterminated"[..],
    )
        .into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn html() -> Response {
    let mut r = (StatusCode::BAD_GATEWAY, "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>").into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    r
}

fn data(status: StatusCode, value: serde_json::Value) -> Response {
    (status, Json(json!({ "data": value }))).into_response()
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

// ---- the wrapper every API call goes through -------------------------------------------

impl Sim {
    /// Counts the call, applies latency, faults and the failure rate, runs `work` (which
    /// holds the store lock only briefly) and counts the answer. The call runs in its own
    /// task, so a client that gives up (timeout, closed connection) does not stop it: as
    /// with a real server, the request is processed all the same.
    async fn call(
        &self,
        endpoint: &'static str,
        conn: Conn,
        work: impl FnOnce(&Sim) -> Response + Send + 'static,
    ) -> Response {
        let sim = self.clone();
        let task = tokio::spawn(async move { sim.call_inner(endpoint, &conn, work).await });
        task.await.unwrap_or_else(|_| internal_error())
    }

    async fn call_inner(
        &self,
        endpoint: &'static str,
        conn: &Conn,
        work: impl FnOnce(&Sim) -> Response,
    ) -> Response {
        let _in_flight = self.enter();
        let (latency, fault, fail) = {
            let mut store = self.store();
            store.count_arrival(endpoint);
            let fault = store.take_fault(endpoint);
            let rate = store.runtime.fail_rate;
            let fail = fault.is_none() && rate > 0.0 && rand::random::<f64>() < rate;
            (store.runtime.latency(), fault, fail)
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let response = match fault {
            None if fail => internal_error(),
            None => work(self),
            Some(Fault::Latency(d)) => {
                tokio::time::sleep(d).await;
                work(self)
            }
            Some(Fault::Status(status, retry_after)) => fault_status(status, retry_after),
            Some(Fault::Garbage) => garbage(),
            Some(Fault::Html) => html(),
            Some(Fault::Drop) => return self.drop_connection(endpoint, conn),
            Some(Fault::DropAfterCreate) => {
                let _ = work(self);
                return self.drop_connection(endpoint, conn);
            }
        };
        tracing::debug!(
            endpoint,
            status = response.status().as_u16(),
            "sim answered"
        );
        self.store()
            .count_answer(endpoint, Some(response.status().as_u16()));
        response
    }

    fn drop_connection(&self, endpoint: &'static str, conn: &Conn) -> Response {
        conn.kill();
        tracing::debug!(endpoint, "sim dropped the connection");
        self.store().count_answer(endpoint, None);
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    }

    fn grant_response(&self, endpoint: &'static str, grant: Grant) -> Response {
        let now = jiff::Timestamp::now().as_second();
        let claims = SimClaims {
            iss: "gebeta-sim".into(),
            sub: grant.sub,
            azp: grant.azp,
            iat: now,
            exp: now
                .saturating_add(i64::try_from(grant.ttl_seconds.max(1)).unwrap_or(i64::MAX / 2)),
            scopes: grant.scopes,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let access = sign(&self.shared.key, &claims);
        self.store().record_issued(endpoint, &access);
        let body = match grant.refresh_token {
            Some(r) => json!({"accessToken": access, "refreshToken": r}),
            None => json!({"accessToken": access}),
        };
        data(StatusCode::OK, body)
    }
}

type Id = Result<Path<String>, axum::extract::rejection::PathRejection>;

fn manage<T>(
    sim: &Sim,
    headers: &HeaderMap,
    f: impl FnOnce(&mut super::store::Store) -> Result<T, Refusal>,
) -> Result<T, Refusal> {
    let mut store = sim.store();
    store.check_user(bearer(headers))?;
    f(&mut store)
}

async fn create(
    State(sim): State<Sim>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sim.call(endpoint::CREATE_ACCOUNT, conn, move |sim| {
        match manage(sim, &headers, |s| s.api_create(&body)) {
            Ok((account, token)) => {
                let mut value =
                    serde_json::to_value(account.to_wire()).expect("account serializes");
                value["token"] = json!(token);
                data(StatusCode::CREATED, value)
            }
            Err(r) => refusal(r),
        }
    })
    .await
}

async fn get_one(
    State(sim): State<Sim>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    headers: HeaderMap,
    id: Id,
) -> Response {
    sim.call(endpoint::GET_ACCOUNT, conn, move |sim| {
        let result = manage(sim, &headers, |s| {
            let Ok(Path(id)) = id else {
                return Err(Refusal::Validation);
            };
            s.api_get(&id)
        });
        match result {
            Ok(a) => data(StatusCode::OK, json!(a.to_wire())),
            Err(r) => refusal(r),
        }
    })
    .await
}

async fn patch(
    State(sim): State<Sim>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    headers: HeaderMap,
    id: Id,
    body: Bytes,
) -> Response {
    sim.call(endpoint::PATCH_ACCOUNT, conn, move |sim| {
        let result = manage(sim, &headers, |s| {
            let Ok(Path(id)) = id else {
                return Err(Refusal::Validation);
            };
            s.api_patch(&id, &body)
        });
        match result {
            Ok(a) => data(StatusCode::OK, json!(a.to_wire())),
            Err(r) => refusal(r),
        }
    })
    .await
}

async fn delete(
    State(sim): State<Sim>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    headers: HeaderMap,
    id: Id,
) -> Response {
    sim.call(endpoint::DELETE_ACCOUNT, conn, move |sim| {
        let result = manage(sim, &headers, |s| {
            let Ok(Path(id)) = id else {
                return Err(Refusal::Validation);
            };
            s.api_delete(&id)
        });
        match result {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(r) => refusal(r),
        }
    })
    .await
}

type Params = Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>;

/// `page` (>= 1, default 1) and `limit` (1..=100, default 50).
fn page_params(params: Params) -> Result<(u64, u64), Refusal> {
    let Ok(Query(params)) = params else {
        return Err(Refusal::Validation);
    };
    let get = |name: &str, default: u64| -> Result<u64, Refusal> {
        match params.iter().find(|(k, _)| k == name) {
            None => Ok(default),
            Some((_, v)) => v.trim().parse::<u64>().map_err(|_| Refusal::Validation),
        }
    };
    let page = get(wire::PAGE_PARAM, 1)?;
    let limit = get(wire::LIMIT_PARAM, u64::from(wire::DEFAULT_PAGE_LIMIT))?;
    if page == 0 || !(1..=u64::from(wire::MAX_PAGE_LIMIT)).contains(&limit) {
        return Err(Refusal::Validation);
    }
    Ok((page, limit))
}

async fn list(
    State(sim): State<Sim>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    headers: HeaderMap,
    params: Params,
) -> Response {
    sim.call(endpoint::LIST_ACCOUNTS, conn, move |sim| {
        let result = manage(sim, &headers, |s| {
            let (page, limit) = page_params(params)?;
            Ok(s.api_list(page, limit))
        });
        match result {
            Ok((accounts, meta)) => (
                StatusCode::OK,
                Json(json!({"data": accounts, "meta": meta})),
            )
                .into_response(),
            Err(r) => refusal(r),
        }
    })
    .await
}

async fn auth(
    State(sim): State<Sim>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    body: Bytes,
) -> Response {
    sim.call(endpoint::AUTH, conn, move |sim| {
        let Ok(req) = serde_json::from_slice::<AuthRequestWire>(&body) else {
            return refusal(Refusal::Validation);
        };
        let grant = sim.store().api_auth(&req.client_token, &req.server_token);
        match grant {
            Ok(g) => sim.grant_response(endpoint::AUTH, g),
            Err(r) => refusal(r),
        }
    })
    .await
}

async fn refresh(
    State(sim): State<Sim>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    body: Bytes,
) -> Response {
    sim.call(endpoint::REFRESH, conn, move |sim| {
        let Ok(req) = serde_json::from_slice::<RefreshRequestWire>(&body) else {
            return refusal(Refusal::Validation);
        };
        let grant = sim.store().api_refresh(&req.refresh_token);
        match grant {
            Ok(g) => sim.grant_response(endpoint::REFRESH, g),
            Err(r) => refusal(r),
        }
    })
    .await
}

/// `"lat,lon"` with lat in -90..=90 and lon in -180..=180.
fn coordinate(value: Option<&String>) -> Option<(f64, f64)> {
    let (lat, lon) = value?.split_once(',')?;
    let (lat, lon): (f64, f64) = (lat.trim().parse().ok()?, lon.trim().parse().ok()?);
    ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)).then_some((lat, lon))
}

fn haversine_m((lat1, lon1): (f64, f64), (lat2, lon2): (f64, f64)) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let (dp, dl) = ((lat2 - lat1).to_radians(), (lon2 - lon1).to_radians());
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6_371_000.0 * a.sqrt().asin()
}

async fn route(
    State(sim): State<Sim>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    headers: HeaderMap,
    params: Params,
) -> Response {
    sim.call(endpoint::ROUTE, conn, move |sim| {
        let now = jiff::Timestamp::now().as_second();
        let Some(token) = bearer(&headers) else {
            return refusal(Refusal::Unauthorized);
        };
        let claims = match verify(&sim.shared.key, token, now) {
            Ok(claims) => claims,
            Err(why) => {
                tracing::debug!(?why, "route refused a bearer token");
                return refusal(Refusal::Unauthorized);
            }
        };
        if !sim.store().access_allowed(&claims.sub, &claims.azp) {
            tracing::debug!("route refused a token of an account no longer active");
            return refusal(Refusal::Unauthorized);
        }
        let Ok(Query(params)) = params else {
            return refusal(Refusal::Validation);
        };
        let find = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let (Some(origin), Some(destination)) =
            (coordinate(find("origin")), coordinate(find("destination")))
        else {
            return refusal(Refusal::Validation);
        };
        let distance = haversine_m(origin, destination);
        let duration = Duration::from_secs_f64(distance / 11.0);
        data(
            StatusCode::OK,
            json!({
                "origin": [origin.0, origin.1],
                "destination": [destination.0, destination.1],
                "distanceMeters": (distance * 10.0).round() / 10.0,
                "durationSeconds": duration.as_secs(),
                "path": [[origin.0, origin.1], [destination.0, destination.1]],
            }),
        )
    })
    .await
}

/// Unknown paths.
pub(crate) async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"error": "Not found"}))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn page_params_bounds() {
        let p = |q: &[(&str, &str)]| {
            page_params(Ok(Query(
                q.iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect(),
            )))
        };
        assert_eq!(p(&[]), Ok((1, 50)));
        assert_eq!(p(&[("page", "3"), ("limit", "100")]), Ok((3, 100)));
        for bad in [
            [("page", "0")],
            [("limit", "0")],
            [("limit", "101")],
            [("page", "x")],
            [("limit", "-1")],
        ] {
            assert_eq!(p(&bad), Err(Refusal::Validation));
        }
    }

    #[test]
    fn coordinates() {
        assert_eq!(
            coordinate(Some(&"9.0222,38.7469".to_string())),
            Some((9.0222, 38.7469))
        );
        assert_eq!(coordinate(Some(&"91,0".to_string())), None);
        assert_eq!(coordinate(Some(&"x".to_string())), None);
        assert_eq!(coordinate(None), None);
        let d = haversine_m((9.0222, 38.7469), (9.05, 38.75));
        assert!((3000.0..3200.0).contains(&d), "{d}");
    }
}
