//! The admin HTTP server: `/healthz`, `/readyz`, `/metrics`.
//!
//! Readiness rule (`/readyz` answers 200 when):
//! - without leader election: every watch of the controllers has synced
//!   ([`Readiness::is_ready`]);
//! - the leader: it holds the Lease and every watch has synced;
//! - a standby: its election loop runs and the Lease API answered within the last lease
//!   duration (a standby runs no watches; it is ready to take over).
//!
//! It answers 503 with the reason otherwise, and from the moment shutdown begins.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::lease::Leadership;
use crate::{controllers::Readiness, metrics::Metrics};

/// Content type of prometheus-client's text encoder (OpenMetrics 1.0, ends with `# EOF`).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Everything `/readyz` looks at.
#[derive(Clone)]
pub struct ReadyCheck {
    /// The controllers' watches (meaningful on the leader, or without leader election).
    pub readiness: Readiness,
    /// `None` without leader election.
    pub leadership: Option<(watch::Receiver<Leadership>, Duration)>,
    /// Cancelled when shutdown begins.
    pub shutdown: CancellationToken,
}

impl ReadyCheck {
    /// `Ok(what)` when ready, `Err(why not)` otherwise.
    pub fn check(&self) -> Result<&'static str, &'static str> {
        if self.shutdown.is_cancelled() {
            return Err("shutting down");
        }
        let synced = || {
            if self.readiness.is_ready() {
                Ok("watches synced")
            } else {
                Err("watches not synced yet")
            }
        };
        let Some((leadership, lease_duration)) = &self.leadership else {
            return synced();
        };
        let leadership = leadership.borrow();
        if leadership.leading {
            return synced().map(|_| "leader, watches synced");
        }
        match leadership.last_contact {
            Some(at) if at.elapsed() < *lease_duration => Ok("standby, lease API reachable"),
            Some(_) => Err("standby, lease API not reachable"),
            None => Err("standby, lease not read yet"),
        }
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    ready: ReadyCheck,
}

pub fn router(metrics: Arc<Metrics>, ready: ReadyCheck) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { metrics, ready })
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    match state.ready.check() {
        Ok(what) => (StatusCode::OK, format!("ok: {what}\n")),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics_text(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.metrics.encode(),
    )
}

/// Binds `addr` (an error here is fatal at start-up) and serves until `stop` is cancelled.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: ReadyCheck,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(metrics, ready);
    let task = tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            tracing::error!(error = %err, "admin server failed");
        }
    });
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn leadership(leading: bool, last_contact: Option<Instant>) -> watch::Receiver<Leadership> {
        watch::channel(Leadership {
            leading,
            holder: None,
            last_contact,
        })
        .1
    }

    #[tokio::test]
    async fn readiness_rules() {
        let readiness = Readiness::default();
        let shutdown = CancellationToken::new();
        let d = Duration::from_secs(15);
        let check = |leadership| ReadyCheck {
            readiness: readiness.clone(),
            leadership,
            shutdown: shutdown.clone(),
        };

        // No leader election: ready once every watch synced.
        assert!(check(None).check().is_err());
        let guard = readiness.register();
        assert!(check(None).check().is_err());
        // Standby: ready while the Lease API answers, whatever the watches.
        assert!(
            check(Some((leadership(false, Some(Instant::now())), d)))
                .check()
                .is_ok()
        );
        assert!(check(Some((leadership(false, None), d))).check().is_err());
        // Leader: needs synced watches.
        assert!(
            check(Some((leadership(true, Some(Instant::now())), d)))
                .check()
                .is_err()
        );
        guard.synced();
        assert!(check(None).check().is_ok());
        assert!(
            check(Some((leadership(true, Some(Instant::now())), d)))
                .check()
                .is_ok()
        );
        // Shutdown: never ready.
        shutdown.cancel();
        assert_eq!(check(None).check(), Err("shutting down"));
    }
}
